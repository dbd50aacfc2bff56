"""Monte-Carlo ground truth: where a wrong completion went wrong, on any task with a verifier.

The exact locator (:func:`arca.tasks.arithmetic.locate_error`) needs a task
whose every problem has one worked solution to compare with. This one needs
only a model and the task's reward, as the field labels reasoning steps:

- the **value** of a prefix, ``V(prefix) = P(correct | prompt + prefix)``, is
  estimated from ``k`` continuations of ``prompt + prefix`` sampled from an
  estimating model (temperature and top-p recorded) within the completion's
  remaining length budget, each graded by the task's own reward (correct when
  the reward is at least ``correct_reward``): Math-Shepherd's step values
  (Wang et al. 2024), VinePPO's rollout values of prefixes (Kazemnejad et al.
  2024);
- **cut points** are where a prefix may end: after each step (``cut="step"``:
  a task's own step boundaries, by default :func:`step_boundaries`: after a
  sentence end, a newline or an ``=``), or after every token (``"token"``);
  the prompt alone (cut 0) and the whole completion are always cut points;
- the **first error** (the *hard* estimate) is the first cut point whose
  prefix has estimated value 0 while the previous one's is above 0: from
  there on the model no longer reaches a correct answer. The blamed token is
  the first token of that step that is not whitespace (a step that is only
  whitespace or the end-of-sequence token is blamed on its first token);
- it is found by **binary search** over the cut points (OmegaPRM, Luo et al.
  2024): ``V`` at the prompt, then halving the interval between a cut with
  value above 0 and one with value 0. A finished wrong completion (it ended
  with end-of-sequence, or used its whole length budget) has value 0 at its
  end without sampling, so it costs ``k * (ceil(log2 S) + 1)`` continuations
  for ``S`` steps, against ``k * S`` for estimating every prefix
  (``search="all"``). Continuations of every completion's query of a round
  are generated together, in batches;
- the *soft* estimate is the step with the largest drop in value between
  consecutive estimated cut points (with binary search, only the cut points
  it visited);
- **not locatable**: a wrong completion whose value is 0 at the prompt (the
  estimating model never succeeds on this problem, so no token can be
  blamed), or one cut short with budget left whose end still has value above 0.

Seeded: the same completions, settings and seed give the same locations. The
caller's random state is left as it was. Results carry every value estimated
(the value curve) and convert to the :class:`arca.tasks.base.Located` the
exact locator returns, so every correctness metric works on them unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from arca.tasks.base import Located
from arca.tasks.locate import locate_tokens, token_spans

CUT_RULES = ("step", "token")
SEARCHES = ("binary", "all")

# A step ends after a sentence end (followed by whitespace or the end), a
# newline, or an "=" (so a result after "=" is a step of its own).
_STEP_END = re.compile(r"[.!?;](?=\s|$)|\n|=")


def step_boundaries(text: str) -> list[int]:
    """Character offsets where a step of ``text`` ends (the default cut rule):
    after ``. ! ? ;`` followed by whitespace or the end, after a newline, and
    after ``=``. ``"8 * 15 = 120. 47 + 120 = 167."`` -> ``[6, 12, 22, 28]``."""
    return sorted({m.end() for m in _STEP_END.finditer(text)})


#: ``text -> sorted character offsets where steps end``: a task's step rule.
StepRule = Callable[[str], list[int]]


@dataclass(frozen=True)
class MCSettings:
    """How values are estimated; everything here is recorded with the results."""

    k: int = 8
    cut: str = "step"
    search: str = "binary"
    temperature: float = 1.0
    top_p: float = 0.95
    #: The completion length budget: a prefix of ``p`` tokens continues for at
    #: most ``max_new_tokens - p`` tokens, as the rollout it came from.
    max_new_tokens: int = 64
    seed: int = 1337
    #: Prefixes per ``generate`` call (each with ``k`` continuations).
    batch_size: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"mc_k (--mc-k): must be a whole number >= 1, got {self.k!r}")
        if self.cut not in CUT_RULES:
            raise ValueError(
                f"mc_cut (--mc-cut): must be {' or '.join(CUT_RULES)}, got {self.cut!r}"
            )
        if self.search not in SEARCHES:
            raise ValueError(
                f"mc_search (--mc-search): must be {' or '.join(SEARCHES)}, got {self.search!r}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature (--mc-temperature): must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p (--mc-top-p): must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(
                f"max_completion_length (--max-new-tokens) and --mc-batch-size: must be >= 1, got {self.max_new_tokens}, {self.batch_size}"
            )


@dataclass
class MCResult:
    """One completion's Monte-Carlo location.

    ``status``: ``"correct"`` (its reward says so), ``"located"`` or
    ``"not_locatable"`` (``reason`` says why). ``cuts``: the cut points, as
    numbers of completion tokens (``cuts[0] == 0``: the prompt alone).
    ``values``: ``{cut index: estimated value}`` for every cut estimated (a
    finished completion's last cut is 0 by its own reward, not sampled).
    ``hard`` / ``soft``: the index of the cut that ends the step holding the
    first error (hard) or the largest drop (soft); ``hard_token`` /
    ``soft_token``: the blamed token's index among the completion's tokens.
    ``continuations``: how many were sampled for it.
    """

    status: str
    reason: str | None = None
    cuts: list[int] = field(default_factory=list)
    values: dict[int, float] = field(default_factory=dict)
    hard: int | None = None
    soft: int | None = None
    hard_token: int | None = None
    soft_token: int | None = None
    continuations: int = 0

    def record(self) -> dict[str, Any]:
        """JSON-ready (``values`` as ``[[cut index, value], ...]``)."""
        d = asdict(self)
        d["values"] = [[i, v] for i, v in sorted(self.values.items())]
        return d

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> MCResult:
        d = dict(rec)
        d["values"] = {int(i): float(v) for i, v in d.get("values", [])}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ------------------------------------------------------------------ search


@dataclass
class _Item:
    segments: int  # S: cut indices 0..S
    end_known: bool  # V(cut S) = 0 without sampling
    values: dict[int, float] = field(default_factory=dict)
    lo: int = 0
    hi: int = 0
    queried: int = 0
    status: str = "searching"
    reason: str | None = None


#: ``[(item, cut index), ...] -> [value in [0, 1], ...]``: the estimator the search calls.
Estimate = Callable[[list[tuple[int, int]]], list[float]]

NEVER_CORRECT = "value 0 at the prompt: the estimating model never reached a correct answer"
CUT_SHORT = "cut short with budget left, and its end can still be completed correctly"


def search_first_zero(
    segments: Sequence[int],
    end_known: Sequence[bool],
    estimate: Estimate,
    *,
    search: str = "binary",
) -> list[tuple[str, str | None, dict[int, float], int | None, int | None, int]]:
    """The first cut whose value is 0 after one above 0, for many items at once.

    Args:
        segments: per item ``S``, its number of steps (cut indices ``0..S``).
        end_known: per item, is ``V(cut S) = 0`` known (a finished wrong
            completion)? If not, cut ``S`` is estimated too.
        estimate: the value estimator, called once per round with every
            active item's queries.
        search: ``"binary"`` (OmegaPRM) or ``"all"`` (every cut point, one round).

    Returns per item ``(status, reason, values, hard, soft, queries)``: hard
    and soft are cut indices (the step ending there holds the error).
    Binary search queries ``ceil(log2 S) + 1`` cuts of a finished item.
    """
    if search not in SEARCHES:
        raise ValueError(f"search: must be {' or '.join(SEARCHES)}, got {search!r}")
    items = [_Item(s, k) for s, k in zip(segments, end_known, strict=True)]
    for it in items:
        if it.segments < 1:
            it.status, it.reason = "not_locatable", "no completion tokens to blame"
        it.hi = it.segments
        if it.end_known:
            it.values[it.segments] = 0.0

    def ask(queries: list[tuple[int, int]]) -> None:
        if not queries:
            return
        vals = estimate(queries)
        if len(vals) != len(queries):
            raise ValueError(f"estimate returned {len(vals)} values for {len(queries)} queries")
        for (i, c), v in zip(queries, vals, strict=True):
            items[i].values[c] = float(v)
            items[i].queried += 1

    active = [i for i, it in enumerate(items) if it.status == "searching"]
    if search == "all":
        ask(
            [
                (i, c)
                for i in active
                for c in range(items[i].segments + 1)
                if c not in items[i].values
            ]
        )
    else:
        # Round 1: the prompt alone, and the end where it is not known.
        ask(
            [(i, 0) for i in active]
            + [(i, items[i].segments) for i in active if not items[i].end_known]
        )
    for i in active:
        it = items[i]
        if it.values[0] == 0:
            it.status, it.reason = "not_locatable", NEVER_CORRECT
        elif it.values.get(it.segments, 0.0) > 0 and not it.end_known:
            it.status, it.reason = "not_locatable", CUT_SHORT
    if search == "binary":
        while True:
            live = [
                i
                for i in active
                if items[i].status == "searching" and items[i].hi - items[i].lo > 1
            ]
            if not live:
                break
            ask([(i, (items[i].lo + items[i].hi) // 2) for i in live])
            for i in live:
                it = items[i]
                mid = (it.lo + it.hi) // 2
                if it.values[mid] > 0:
                    it.lo = mid
                else:
                    it.hi = mid
    out = []
    for it in items:
        hard = soft = None
        if it.status == "searching":
            it.status = "located"
            cuts = sorted(it.values)
            if search == "all":
                hard = next(
                    c
                    for a, c in zip(cuts, cuts[1:], strict=False)
                    if it.values[c] == 0 and it.values[a] > 0
                )
            else:
                hard = it.hi
            drops = [(it.values[a] - it.values[c], c) for a, c in zip(cuts, cuts[1:], strict=False)]
            # The largest drop; the earliest of equal drops.
            soft = max(drops, key=lambda d: (d[0], -d[1]))[1]
        out.append((it.status, it.reason, dict(it.values), hard, soft, it.queried))
    return out


def binary_bound(segments: int, k: int) -> int:
    """Continuations binary search takes for a finished wrong completion of
    ``segments`` steps: ``k * (ceil(log2 S) + 1)``."""
    return k * (math.ceil(math.log2(segments)) + 1) if segments > 1 else k


# ------------------------------------------------------------------ cuts


def token_cuts(
    text: str,
    spans: Sequence[tuple[int, int]],
    ids: Sequence[int],
    *,
    cut: str = "step",
    rule: StepRule = step_boundaries,
    special: frozenset[int] = frozenset(),
) -> list[int]:
    """The cut points of one completion as token counts: 0, the end of each
    step (or every token), the end of its text and, when it ends with a
    special token (end-of-sequence), after that too. A step boundary inside a
    token cuts after that token."""
    n = len(ids)
    text_end = n
    while text_end > 0 and ids[text_end - 1] in special:
        text_end -= 1
    cuts = {0, text_end, n}
    if cut == "token":
        cuts |= set(range(1, text_end))
    else:
        ends = [b for _, b in spans]
        for b in rule(text):
            j = next((t + 1 for t, e in enumerate(ends) if e >= b), text_end)
            cuts.add(min(j, text_end))
    return sorted(cuts)


def blamed_token(
    cuts: Sequence[int], index: int, text: str, spans: Sequence[tuple[int, int]]
) -> int:
    """The token blamed for the step ending at ``cuts[index]``: its first token
    whose text is not whitespace, else its first token."""
    lo, hi = cuts[index - 1], cuts[index]
    for t in range(lo, hi):
        a, b = spans[t]
        if text[a:b].strip():
            return t
    return lo


def located(
    result: MCResult, text: str, spans: Sequence[tuple[int, int]], *, soft: bool = False
) -> Located:
    """``result`` as the exact locator's :class:`Located` (character offsets of
    ``text``, the completion decoded without special tokens; ``spans`` from
    :func:`arca.tasks.locate.token_spans`). The blamed token's first
    non-space character; a special token (end-of-sequence) is ``len(text)``,
    which :func:`arca.tasks.locate.locate_tokens` maps back onto it."""
    if result.status == "correct":
        return Located(None)
    if result.status != "located":
        return Located(None, unlocated=result.reason or "not locatable")
    t = result.soft_token if soft else result.hard_token
    assert t is not None
    a, b = spans[t]
    if a == b:  # a special token: end-of-sequence
        return Located(len(text), step=result.soft if soft else result.hard)
    off = a + next((i for i, ch in enumerate(text[a:b]) if not ch.isspace()), 0)
    return Located(off, step=result.soft if soft else result.hard)


# ------------------------------------------------------------------ locator


Score = Callable[[Sequence[str], Sequence[Mapping[str, Any]]], list[float]]


class MonteCarloLocator:
    """Locates the first error of wrong completions by Monte-Carlo values.

    Args:
        model: the estimating model (a causal LM with ``generate``), used as it
            is: put it in ``eval()`` and the adapter state you want (the base
            model: inside ``disable_adapter()``) before calling :meth:`locate`.
        tokenizer: its tokenizer.
        score: the task's reward, ``(completion texts, their rows) -> rewards``
            (:meth:`arca.tasks.base.Task.score`).
        correct_reward: a completion is correct when its reward is at least this.
        settings: :class:`MCSettings`.
        rule: the task's step rule (``cut="step"``).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        score: Score,
        *,
        correct_reward: float = 1.0,
        settings: MCSettings | None = None,
        rule: StepRule = step_boundaries,
    ) -> None:
        self.model, self.tokenizer, self.score = model, tokenizer, score
        self.correct_reward = correct_reward
        self.settings = settings or MCSettings()
        self.rule = rule
        self.continuations = 0
        self.seconds = 0.0

    @torch.no_grad()
    def locate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        rows: Sequence[Mapping[str, Any]],
        *,
        rewards: Sequence[float] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[MCResult]:
        """One :class:`MCResult` per completion. ``rewards``: the completions'
        own rewards if known (else scored here); ``progress`` is called with the
        number of continuations generated after each batch."""
        t0 = time.perf_counter()
        st, tok = self.settings, self.tokenizer
        n = len(completion_ids)
        if not len(prompt_ids) == len(rows) == n:
            raise ValueError(f"{len(prompt_ids)} prompts and {len(rows)} rows for {n} completions")
        special = frozenset(int(t) for t in tok.all_special_ids)
        decoded = [token_spans(tok, ids) for ids in completion_ids]
        if rewards is None:
            rewards = self.score([t for t, _ in decoded], rows)
        results: list[MCResult] = []
        wrong: list[int] = []
        for i, ((text, spans), ids) in enumerate(zip(decoded, completion_ids, strict=True)):
            if rewards[i] >= self.correct_reward:
                results.append(MCResult("correct"))
                continue
            cuts = token_cuts(text, spans, list(ids), cut=st.cut, rule=self.rule, special=special)
            results.append(MCResult("searching", cuts=cuts))
            wrong.append(i)
        eos = tok.eos_token_id
        ends = [
            bool(completion_ids[i])
            and (completion_ids[i][-1] == eos or len(completion_ids[i]) >= st.max_new_tokens)
            for i in wrong
        ]
        rounds = [0]
        memo: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}

        def estimate(queries: list[tuple[int, int]]) -> list[float]:
            rounds[0] += 1
            items = [(wrong[j], results[wrong[j]].cuts[c]) for j, c in queries]
            return self._values(items, prompt_ids, completion_ids, rows, rounds[0], memo, progress)

        found = search_first_zero(
            [len(results[i].cuts) - 1 for i in wrong], ends, estimate, search=st.search
        )
        for i, (status, reason, values, hard, soft, queried) in zip(wrong, found, strict=True):
            r = results[i]
            text, spans = decoded[i]
            r.status, r.reason, r.values = status, reason, values
            r.continuations = queried * st.k
            if status == "located":
                assert hard is not None and soft is not None
                r.hard, r.soft = hard, soft
                r.hard_token = blamed_token(r.cuts, hard, text, spans)
                r.soft_token = blamed_token(r.cuts, soft, text, spans)
        self.seconds += time.perf_counter() - t0
        return results

    def _values(
        self,
        items: list[tuple[int, int]],
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        rows: Sequence[Mapping[str, Any]],
        round_no: int,
        memo: dict[tuple[tuple[int, ...], tuple[int, ...]], float],
        progress: Callable[[int], None] | None,
    ) -> list[float]:
        """Estimated values of ``(completion, cut in tokens)`` prefixes: the
        fraction of ``k`` continuations graded correct. Identical prefixes
        (completions of one prompt share the prompt alone, and often their
        first steps) are estimated once and share the value: within a round,
        and across rounds through ``memo`` (prefix -> value)."""
        st, tok, model = self.settings, self.tokenizer, self.model
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        device = next(model.parameters()).device
        prefix = {
            q: (tuple(prompt_ids[i]), tuple(completion_ids[i][:c]))
            for q, (i, c) in enumerate(items)
        }
        first: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        for q in range(len(items)):
            if prefix[q] not in memo:
                first.setdefault(prefix[q], q)
        # One query per distinct prefix; similar lengths together (less padding).
        unique = sorted(first.values(), key=lambda q: (len(prefix[q][0]) + len(prefix[q][1]), q))
        texts: dict[int, list[str]] = {}
        known: dict[int, float] = {}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(st.seed * 1_000_003 + round_no)
            for s in range(0, len(unique), st.batch_size):
                batch = unique[s : s + st.batch_size]
                run = []
                for q in batch:
                    i, c = items[q]
                    if st.max_new_tokens - c <= 0:
                        # No budget left: the prefix is the completion as graded.
                        text = tok.decode(completion_ids[i][:c], skip_special_tokens=True)
                        known[q] = float(self._correct([text], [rows[i]])[0])
                    else:
                        run.append(q)
                if not run:
                    continue
                seqs = [list(prefix[q][0]) + list(prefix[q][1]) for q in run]
                width = max(len(x) for x in seqs)
                ids = torch.full((len(run), width), pad, dtype=torch.long)
                attn = torch.zeros((len(run), width), dtype=torch.long)
                for r, x in enumerate(seqs):
                    ids[r, width - len(x) :] = torch.tensor(x, dtype=torch.long)
                    attn[r, width - len(x) :] = 1
                budgets = [st.max_new_tokens - items[q][1] for q in run]
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=attn.to(device),
                    do_sample=True,
                    temperature=st.temperature,
                    top_p=st.top_p,
                    top_k=0,  # as TRL's rollouts: nucleus sampling alone
                    num_return_sequences=st.k,
                    max_new_tokens=max(budgets),
                    pad_token_id=pad,
                    eos_token_id=eos,
                )
                gen = out[:, width:].tolist()
                for r, (q, b) in enumerate(zip(run, budgets, strict=True)):
                    conts = []
                    for j in range(st.k):
                        cont = gen[r * st.k + j][:b]
                        if eos in cont:
                            cont = cont[: cont.index(eos) + 1]
                        full = list(prefix[q][1]) + cont
                        conts.append(tok.decode(full, skip_special_tokens=True))
                    texts[q] = conts
                self.continuations += len(run) * st.k
                if progress is not None:
                    progress(len(run) * st.k)
        todo = sorted(texts)
        flat_texts = [t for q in todo for t in texts[q]]
        flat_rows = [rows[items[q][0]] for q in todo for _ in range(st.k)]
        ok = self._correct(flat_texts, flat_rows) if flat_texts else []
        for q, v in known.items():
            memo[prefix[q]] = v
        for n, q in enumerate(todo):
            memo[prefix[q]] = sum(ok[n * st.k : (n + 1) * st.k]) / st.k
        return [memo[prefix[q]] for q in range(len(items))]

    def _correct(self, texts: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        return [r >= self.correct_reward for r in self.score(texts, rows)]


# ------------------------------------------------------------------ training

#: The ``error_locator`` value that asks for Monte-Carlo ground truth in training.
MC = "mc"
ESTIMATORS = ("base", "policy")


@dataclass(frozen=True)
class MCSchedule:
    """Monte-Carlo ground truth during training (``error_locator: mc``).

    On the batch generated at step 1 and on every batch whose steps hold a
    multiple of ``every``, each process locates up to ``count`` of its
    completions, those with a negative advantage first (the rows the
    correctness metrics apply to), with values estimated by ``model``:
    ``"base"`` (the adapter disabled, or the initial model under full
    fine-tuning: one fixed ground truth for every step and run) or
    ``"policy"`` (the current policy, VinePPO's choice). Every other row, and
    every other batch, has no ground truth.
    """

    settings: MCSettings
    score: Score
    correct_reward: float = 1.0
    every: int = 10
    count: int = 8
    model: str = "base"
    rule: StepRule = step_boundaries

    def __post_init__(self) -> None:
        if self.every < 1 or self.count < 1:
            raise ValueError(
                f"mc_every and mc_completions: must be >= 1, got {self.every}, {self.count}"
            )
        if self.model not in ESTIMATORS:
            raise ValueError(f"mc_model: must be {' or '.join(ESTIMATORS)}, got {self.model!r}")

    def due(self, step: int, span: int = 1) -> bool:
        """Locate the batch generated at ``step`` (from 1), trained on for
        ``span`` steps? Yes if those steps hold step 1 or a multiple of ``every``."""
        end = step + max(span, 1) - 1
        return step == 1 or end // self.every > (step - 1) // self.every

    def describe(self) -> str:
        who = "the base model" if self.model == "base" else "the current policy"
        return (
            f"{describe(self.settings, who)}, every {self.every} steps on up to "
            f"{self.count} completions per process"
        )


# ------------------------------------------------------------------ records


def cache_key(settings: MCSettings, estimator: str, grader: str, cut_rule: str = "default") -> str:
    """The identity of a set of Monte-Carlo locations: settings, the
    estimating model, the grader and the step rule. A cached location is
    reused only under the same key."""
    blob = json.dumps(
        {"settings": asdict(settings), "estimator": estimator, "grader": grader, "rule": cut_rule},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe(settings: MCSettings, estimator: str) -> str:
    """One line naming the ground truth: ``Monte-Carlo (k = 8, step cuts, ...)``."""
    return (
        f"Monte-Carlo (k = {settings.k}, {settings.cut} cuts, {settings.search} search, "
        f"estimated by {estimator}, temperature {settings.temperature:g}, top-p {settings.top_p:g})"
    )


def step_of(cuts: Sequence[int], token: int) -> int:
    """The 1-based step (between consecutive cut points) holding ``token``."""
    return sum(1 for c in cuts[1:] if c <= token) + 1


def agreement_pairs(
    exact_token: int | None,
    result: MCResult,
    text: str,
    spans: Sequence[tuple[int, int]],
    completion_ids: Sequence[int],
    *,
    eos: int | None,
    special: frozenset[int],
) -> dict[str, tuple[int | None, int | None, list[int]]]:
    """One wrong completion's entry for :func:`agreement`, per variant (``"hard"``:
    the first zero-value cut; ``"soft"``: the largest drop): ``(exact token, mc
    token, step cuts)``, the cuts by the default step rule for both. What
    ``arca diagnose`` and benchmarks/mc_locator.py compare, so they compare alike."""
    steps = token_cuts(text, spans, completion_ids, special=special)
    return {
        variant: (
            exact_token,
            locate_tokens(
                located(result, text, spans, soft=soft), text, spans, completion_ids, eos
            ).error_token,
            steps,
        )
        for variant, soft in (("hard", False), ("soft", True))
    }


def agreement(pairs: Sequence[tuple[int | None, int | None, Sequence[int]]]) -> dict[str, Any]:
    """Agreement of Monte-Carlo locations with exact ones, over wrong
    completions both located: ``pairs`` of ``(exact token, mc token, step
    cuts)`` (``None``: not located by that locator; the step cuts are the
    default step rule's, for both). Fractions of the completions both located:
    ``same_token``, ``same_step``, ``earlier`` / ``later`` (the Monte-Carlo
    token before / after the exact one); counts ``both``, ``exact_only``,
    ``mc_only``."""
    both = [(e, m, c) for e, m, c in pairs if e is not None and m is not None]
    n = len(both)

    def frac(x: int) -> float:
        return x / n if n else math.nan

    return {
        "same_token": frac(sum(e == m for e, m, _ in both)),
        "same_step": frac(sum(step_of(c, e) == step_of(c, m) for e, m, c in both)),
        "earlier": frac(sum(m < e for e, m, _ in both)),
        "later": frac(sum(m > e for e, m, _ in both)),
        "both": n,
        "exact_only": sum(e is not None and m is None for e, m, _ in pairs),
        "mc_only": sum(e is None and m is not None for e, m, _ in pairs),
    }


# ------------------------------------------------------------------ CLI


def add_locator_arguments(p: argparse.ArgumentParser) -> None:
    """The ground-truth options ``arca diagnose`` and ``arca scan`` share."""
    g = p.add_argument_group("ground truth (where a wrong completion first went wrong)")
    g.add_argument(
        "--locator",
        choices=["auto", "exact", "mc", "none"],
        default="auto",
        help="exact: the task's own locator (arithmetic's worked solutions, a custom "
        "error_locator); mc: Monte-Carlo values of prefixes (any task with a reward); auto "
        "(default): exact where the task has one, else mc; none: no correctness metrics",
    )
    g.add_argument("--mc-k", type=int, default=8, help="mc: continuations per prefix value")
    g.add_argument(
        "--mc-cut",
        choices=list(CUT_RULES),
        default="step",
        help="mc: cut points after each step (sentence end, newline, '=') or every token",
    )
    g.add_argument(
        "--mc-search",
        choices=list(SEARCHES),
        default="binary",
        help="mc: binary search for the first zero-value cut (OmegaPRM), or every cut point",
    )
    g.add_argument(
        "--mc-model",
        default="base",
        help="mc: the model whose continuations estimate the values: base (default), policy "
        "(the last policy given), or a model folder or LoRA adapter folder (on the base model)",
    )
    g.add_argument("--mc-temperature", type=float, default=1.0, help="mc: sampling temperature")
    g.add_argument("--mc-top-p", type=float, default=0.95, help="mc: nucleus sampling top-p")
    g.add_argument(
        "--mc-batch-size", type=int, default=32, help="mc: prefixes per generate call (x k)"
    )


def mc_settings(args: argparse.Namespace) -> MCSettings:
    """:class:`MCSettings` from the shared ``--mc-*`` options."""
    return MCSettings(
        k=args.mc_k,
        cut=args.mc_cut,
        search=args.mc_search,
        temperature=args.mc_temperature,
        top_p=args.mc_top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_size=args.mc_batch_size,
    )


__all__ = [
    "CUT_RULES",
    "SEARCHES",
    "MC",
    "MCResult",
    "MCSchedule",
    "MCSettings",
    "MonteCarloLocator",
    "add_locator_arguments",
    "mc_settings",
    "agreement",
    "binary_bound",
    "blamed_token",
    "cache_key",
    "describe",
    "located",
    "search_first_zero",
    "step_boundaries",
    "step_of",
    "token_cuts",
]
