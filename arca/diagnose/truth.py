"""Which ground truth a diagnosis grades credit against: the task's exact
locator, Monte-Carlo values of prefixes (estimated once, cached with the
completions, compared with the exact locator where the task has one), or none."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from arca.diagnose.completions import Completion
from arca.diagnose.policies import Models
from arca.models import resolve
from arca.models.load import load_policy
from arca.scoring import (
    eval_mode,
)
from arca.tasks.base import ErrorLocator, Located
from arca.tasks.locate import locate_tokens, token_spans
from arca.tasks.mc import (
    MCResult,
    MCSettings,
    MonteCarloLocator,
    StepRule,
    agreement,
    agreement_pairs,
    binary_bound,
    cache_key,
    describe,
    step_boundaries,
)
from arca.tasks.mc import located as mc_located


def choose_locator(kind: str, exact: ErrorLocator | None, graded: bool, task: str) -> str:
    """Which ground truth ``--locator`` asks for on this task: ``exact``,
    ``mc`` or ``none``; an error naming the fix when it cannot be had."""
    if kind == "auto":
        return "exact" if exact is not None else "mc" if graded else "none"
    if kind == "exact" and exact is None:
        raise ValueError(
            f"--locator exact: the {task} task has no exact locator (arithmetic has one, a "
            "custom task names its error_locator); use --locator mc"
        )
    if kind == "mc" and not graded:
        raise ValueError(
            "--locator mc: grading continuations needs the task's reward: give --task or --config"
        )
    return kind


@dataclass
class Truth:
    """The ground truth of one diagnosis: which (``record``, diagnose.json's
    ``"locator"``) and, for Monte-Carlo, the locations and their agreement
    with the exact locator where the task has one."""

    kind: str
    record: dict[str, Any]
    locate: ErrorLocator | None = None
    located: list[Located | None] | None = None
    results: list[MCResult] | None = None
    key: str | None = None
    agreement: dict[str, Any] | None = None


def monte_carlo_truth(
    estimator: nn.Module,
    tokenizer: Any,
    items: Sequence[Completion],
    *,
    score: Callable[..., list[float]],
    correct_reward: float,
    settings: MCSettings,
    estimator_label: str,
    grader: str,
    exact: ErrorLocator | None = None,
    rule: StepRule = step_boundaries,
    progress: Callable[[int], None] | None = None,
) -> Truth:
    """Locate every item's first error by Monte-Carlo values (:mod:`arca.tasks.mc`)
    with ``estimator`` (used as given: in eval mode, its adapter state set);
    items whose cached location (:attr:`Completion.mc`) has the same key are
    not located again. With ``exact``, also the agreement of the two."""
    t0 = time.perf_counter()
    key = cache_key(settings, estimator_label, grader)
    results: list[MCResult | None] = [
        MCResult.from_record(c.mc) if c.mc and c.mc.get("key") == key else None for c in items
    ]
    todo = [i for i, r in enumerate(results) if r is None]
    loc = MonteCarloLocator(
        estimator, tokenizer, score, correct_reward=correct_reward, settings=settings, rule=rule
    )
    if todo:
        with eval_mode(estimator):
            fresh = loc.locate(
                [items[i].prompt_ids for i in todo],
                [items[i].completion_ids for i in todo],
                [items[i].row for i in todo],
                progress=progress,
            )
        for i, r in zip(todo, fresh, strict=True):
            results[i] = r
    done = [r for r in results if r is not None]
    special = frozenset(int(t) for t in tokenizer.all_special_ids)
    located_list: list[Located | None] = []
    pairs: dict[str, list[tuple[int | None, int | None, list[int]]]] = {"hard": [], "soft": []}
    for c, r in zip(items, done, strict=True):
        text, spans = token_spans(tokenizer, c.completion_ids)
        located_list.append(mc_located(r, text, spans))
        if exact is None or r.status == "correct":
            continue
        eos = tokenizer.eos_token_id
        ex = locate_tokens(exact(c.row, text), text, spans, c.completion_ids, eos)
        if ex.correct:
            continue
        for variant, pair in agreement_pairs(
            ex.error_token, r, text, spans, c.completion_ids, eos=eos, special=special
        ).items():
            pairs[variant].append(pair)
    wrong = [r for r in done if r.status != "correct"]
    reasons: dict[str, int] = {}
    for r in wrong:
        if r.status == "not_locatable":
            reasons[r.reason or "?"] = reasons.get(r.reason or "?", 0) + 1
    segs = [len(r.cuts) - 1 for r in wrong]
    record = {
        "kind": "mc",
        "description": describe(settings, estimator_label),
        **asdict(settings),
        "model": estimator_label,
        "grader": grader,
        # Generated in this run: identical prefixes share their continuations,
        # and cached locations (same key) cost none.
        "continuations": loc.continuations,
        "cached": len(items) - len(todo),
        "wrong": len(wrong),
        "located": sum(r.status == "located" for r in wrong),
        "not_locatable": reasons,
        "per_wrong": {
            # What the search asked for: k per prefix value it needed.
            "queried": sum(r.continuations for r in wrong) / len(wrong) if wrong else 0.0,
            "generated": loc.continuations / len(wrong)
            if wrong and not len(items) - len(todo)
            else None,
            "binary_bound": sum(binary_bound(s, settings.k) for s in segs) / len(segs)
            if segs
            else 0.0,
            "all_prefixes": sum(settings.k * s for s in segs) / len(segs) if segs else 0.0,
            "steps": sum(segs) / len(segs) if segs else 0.0,
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "key": key,
    }
    agree = None
    if exact is not None:
        agree = agreement(pairs["hard"]) | {"soft": agreement(pairs["soft"])}
    return Truth("mc", record, located=located_list, results=done, key=key, agreement=agree)


def estimating_model(choice: str, models: Models, base: str, dtype: str) -> tuple[Any, str]:
    """The context giving ``--mc-model``'s estimating model, and its label
    (the base model's label names the folder it was loaded from, which for
    arca's tiny models holds its build hash)."""
    if choice == "base":
        return models.base_ctx(), f"the base model {base} ({resolve(base)})"
    if choice == "policy":
        if not models.policies:
            raise ValueError(
                "--mc-model policy: no policy given (--adapter or --ref-model/--model)"
            )
        pol = models.policies[-1]
        return pol.active(), f"policy {pol.label}"
    path = Path(choice)
    if (path / "adapter_config.json").is_file():
        m, _ = load_policy(base, str(path), dtype=dtype)
        return nullcontext(m), f"adapter {path.resolve()} on {base}"
    if path.is_dir() or choice in ("tiny", "tiny-l1", "smollm2"):
        m, _ = load_policy(choice, dtype=dtype)
        return nullcontext(m), f"model {choice} ({resolve(choice)})"
    raise ValueError(
        f"--mc-model: {choice!r} is not base, policy, a model folder or a LoRA adapter folder"
    )
