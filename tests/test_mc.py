"""The Monte-Carlo locator (arca.tasks.mc): the search on known value curves,
the cut points, the whole locator on a stub model whose values are known, its
cost bound, seeding, and its agreement with the exact locator on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from arca.models.tiny import build_tokenizer
from arca.tasks.arithmetic import locate_error, parse_problem, problems, worked_solution
from arca.tasks.base import Located, make_prompt
from arca.tasks.grading import math_rewards
from arca.tasks.locate import ground_truth, locate_tokens, token_spans
from arca.tasks.mc import (
    CUT_SHORT,
    NEVER_CORRECT,
    MCResult,
    MCSettings,
    MonteCarloLocator,
    agreement,
    binary_bound,
    located,
    search_first_zero,
    step_boundaries,
    token_cuts,
)

# ------------------------------------------------------------ the search


def _curve_estimator(curves: list[list[float]], calls: list[int]):
    def estimate(queries):
        calls.append(len(queries))
        return [curves[i][c] for i, c in queries]

    return estimate


@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 40)), min_size=1, max_size=6))
def test_binary_search_finds_the_first_zero_of_monotone_curves_within_the_bound(shape):
    # Value > 0 up to cut z-1, 0 from cut z on (z in 1..S): the first error ends at cut z.
    curves, firsts = [], []
    for s, z in shape:
        z = 1 + z % s
        curves.append([0.5] * z + [0.0] * (s + 1 - z))
        firsts.append(z)
    calls: list[int] = []
    found = search_first_zero(
        [len(c) - 1 for c in curves], [True] * len(curves), _curve_estimator(curves, calls)
    )
    for (status, _, values, hard, soft, queried), z, c in zip(found, firsts, curves, strict=True):
        assert status == "located" and hard == z
        assert values[z] == 0 and values[z - 1] > 0
        S = len(c) - 1
        assert queried * 4 <= binary_bound(S, 4)  # k (ceil(log2 S) + 1)
        assert soft == z  # one drop: the largest is the first error
    # Every item's queries of a round are asked together.
    assert len(calls) <= max(math.ceil(math.log2(len(c) - 1)) + 1 for c in curves)


@given(st.lists(st.floats(0, 1), min_size=2, max_size=30))
def test_binary_search_always_ends_on_a_drop_to_zero(vals):
    curve = [0.5, *vals[:-1], 0.0]  # positive at the prompt, 0 at the (finished) end
    ((status, _, values, hard, _, _),) = search_first_zero(
        [len(curve) - 1], [True], _curve_estimator([curve], [])
    )
    assert status == "located" and values[hard] == 0 and values[hard - 1] > 0


def test_search_all_estimates_every_prefix_and_takes_the_first_drop():
    curve = [0.8, 0.6, 0.0, 0.5, 0.0, 0.0]  # noisy: a zero, then recovery
    calls: list[int] = []
    ((status, _, values, hard, soft, queried),) = search_first_zero(
        [5], [True], _curve_estimator([curve], calls), search="all"
    )
    assert calls == [5] and queried == 5 and sorted(values) == list(range(6))
    assert hard == 2  # the first cut at 0 after one above 0
    assert soft == 2  # the largest drop (0.6), the earliest of equal drops
    ((_, _, _, hard, soft, _),) = search_first_zero(
        [4], [True], _curve_estimator([[0.9, 0.2, 0.2, 0.1, 0.0]], []), search="all"
    )
    assert hard == 4 and soft == 1  # first error at the end, largest drop at the start


def test_value_zero_at_the_prompt_and_cut_short_are_not_locatable():
    found = search_first_zero(
        [3, 3, 3],
        [True, False, False],
        _curve_estimator([[0.0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.0, 0.0]], []),
    )
    assert found[0][:2] == ("not_locatable", NEVER_CORRECT) and found[0][3] is None
    assert found[1][:2] == ("not_locatable", CUT_SHORT)
    assert found[2][0] == "located" and found[2][3] == 2  # its end was estimated: 0
    assert found[2][5] == 4  # prompt + end in round 1, then ceil(log2 3) = 2 midpoints


# ------------------------------------------------------------ cut points

P = "What is 47 - 8 + 15?"


def test_step_boundaries_split_after_sentences_newlines_and_equals():
    text = " 47 - 8 = 39. 39 + 15 = 54.\nSo \\boxed{54}"
    ends = step_boundaries(text)
    assert [text[:e][-1] for e in ends] == ["=", ".", "=", ".", "\n"]
    assert step_boundaries("pi is 3.14 and e = 2.7") == [18]  # no split inside a decimal


def test_token_cuts_for_steps_and_tokens():
    tok = build_tokenizer()
    ids = tok(" 47 - 8 = 39. 39 + 15 = 54.", add_special_tokens=False)["input_ids"] + [2]
    text, spans = token_spans(tok, ids)
    cuts = token_cuts(text, spans, ids, special=frozenset(tok.all_special_ids))
    assert cuts[0] == 0 and cuts[-1] == len(ids) and cuts[-2] == len(ids) - 1  # before <eos>
    assert [text[: spans[c - 1][1]] for c in cuts[1:-2]] == [
        " 47 - 8 =",
        " 47 - 8 = 39.",
        " 47 - 8 = 39. 39 + 15 =",
    ]
    every = token_cuts(text, spans, ids, cut="token", special=frozenset(tok.all_special_ids))
    assert every == list(range(len(ids) + 1))


# ------------------------------------------------------------ a stub model


class SolutionModel(torch.nn.Module):
    """Continues a prompt + prefix with the rest of the worked solution when the
    prefix is a correct prefix of it, else with a wrong answer: V(prefix) is 1
    exactly on the correct prefixes. ``recovers``: it also reaches the right
    answer after a wrong step (a model whose value never drops to 0);
    ``never``: it always answers wrong (value 0 from the prompt on)."""

    def __init__(self, tok, recovers: bool = False, never: bool = False) -> None:
        super().__init__()
        self.tok, self.recovers, self.never = tok, recovers, never
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def generate(self, input_ids, attention_mask, num_return_sequences, max_new_tokens, **_):
        self.calls += 1
        tok, rows = self.tok, []
        for ids, m in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = tok.decode([t for t, a in zip(ids, m, strict=True) if a])
            prompt, prefix = text.split("Solution:", 1)
            problem = prompt.split("Problem: ", 1)[1].strip()
            solution, value = worked_solution(*parse_problem(problem))
            full = " " + solution
            if self.never:
                rest = " \\boxed{-1}"
            elif full.startswith(prefix):
                rest = full[len(prefix) :]
            else:
                rest = f" \\boxed{{{value if self.recovers else -1}}}"
            new = tok(rest, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for _ in range(num_return_sequences):
                rows.append(ids + new[:max_new_tokens])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])


def _score(texts, rows):
    return math_rewards(texts, [r["answer"] for r in rows])


def _corrupt(problem: str, k: int) -> str:
    """The worked solution with its k-th digit changed and a wrong answer (so
    that the reward, too, says it is wrong)."""
    solution, value = worked_solution(*parse_problem(problem))
    steps = " " + solution[: solution.rindex("\\boxed")]
    digits = [i for i, ch in enumerate(steps) if ch.isdigit()]
    i = digits[k % len(digits)]
    steps = steps[:i] + str((int(steps[i]) + 1) % 10) + steps[i + 1 :]
    return steps + f"\\boxed{{{value + 1}}}"


def _batch(tok, n: int = 12, level: int = 3):
    rows, prompts, comps = [], [], []
    for j, p in zip(range(n), problems(seed=7, level=level), strict=False):
        rows.append(p)
        prompts.append(tok(make_prompt(p["problem"]), add_special_tokens=False)["input_ids"])
        text = _corrupt(p["problem"], 3 * j + 1) if j % 4 else " " + p["solution"]
        comps.append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    return rows, prompts, comps


@pytest.mark.parametrize("cut", ["step", "token"])
def test_locator_on_known_values_matches_the_exact_locator(cut):
    tok = build_tokenizer()
    rows, prompts, comps = _batch(tok)
    settings = MCSettings(k=2, cut=cut, max_new_tokens=80, batch_size=5)
    loc = MonteCarloLocator(SolutionModel(tok), tok, _score, settings=settings)
    results = loc.locate(prompts, comps, rows)
    for row, ids, r in zip(rows, comps, results, strict=True):
        text, spans = token_spans(tok, ids)
        exact = locate_tokens(locate_error(row, text), text, spans, ids, tok.eos_token_id)
        mc = locate_tokens(located(r, text, spans), text, spans, ids, tok.eos_token_id)
        assert mc.correct == exact.correct
        if exact.correct:
            assert r.status == "correct" and r.continuations == 0
            continue
        assert r.status == "located"
        if cut == "token":
            assert mc.error_token == exact.error_token  # V drops exactly at the wrong digit
        else:
            # The step that holds the wrong digit, blamed on its first non-space token.
            assert r.cuts[r.hard - 1] <= exact.error_token < r.cuts[r.hard]
            assert mc.error_token == r.hard_token and text[spans[r.hard_token][0]].strip()
        S = len(r.cuts) - 1
        assert r.continuations <= binary_bound(S, settings.k)
        assert all(v in (0.0, 1.0) for v in r.values.values())


def test_locator_says_not_locatable_and_never_blames_the_first_token():
    tok = build_tokenizer()
    rows, prompts, comps = _batch(tok, 8)
    never = MonteCarloLocator(SolutionModel(tok, never=True), tok, _score, settings=MCSettings(k=2))
    for r in never.locate(prompts, comps, rows):
        assert r.status in ("correct", "not_locatable")
        if r.status == "not_locatable":
            assert r.reason == NEVER_CORRECT and r.hard_token is None
            text, spans = token_spans(tok, comps[0])
            loc = located(r, text, spans)
            assert loc.first_error is None and loc.unlocated == NEVER_CORRECT
    # A model that recovers after any error has no zero-value prefix before
    # the end: the blame goes to the end of the completion (later than exact).
    rec = MonteCarloLocator(
        SolutionModel(tok, recovers=True), tok, _score, settings=MCSettings(k=2)
    )
    res = rec.locate(prompts, comps, rows)
    for r, ids in zip(res, comps, strict=True):
        if r.status == "located":
            assert r.hard == len(r.cuts) - 1 and r.hard_token == len(ids) - 1  # the <eos>


def test_ground_truth_takes_the_locations_and_marks_unlocated_rows_wrong():
    tok = build_tokenizer()
    rows, prompts, comps = _batch(tok, 4)
    width = max(map(len, comps))
    ids = torch.tensor([c + [0] * (width - len(c)) for c in comps])
    mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in comps])
    texts = [token_spans(tok, c) for c in comps]
    locs = [
        Located(None),  # correct
        Located(5),
        Located(None, unlocated=NEVER_CORRECT),
        None,  # not checked
    ]
    gt = ground_truth(None, rows, ids, mask, tok, located=locs)
    assert gt["correct"].tolist() == [True, False, False, False]
    assert gt["checked"].tolist() == [True, True, True, False]
    assert gt["located"].tolist() == [False, True, False, False]
    assert gt["error_index"][1] == next(i for i, (a, b) in enumerate(texts[1][1]) if a <= 5 < b)
    with pytest.raises(ValueError, match="unlocated must be None"):
        Located(3, unlocated="why")


def test_results_round_trip_through_their_records():
    r = MCResult("located", None, [0, 3, 7], {0: 0.5, 2: 0.0, 1: 0.25}, 2, 1, 4, 0, 12)
    again = MCResult.from_record(r.record())
    assert again == r


def test_agreement_counts():
    cuts = [0, 4, 8, 12]
    a = agreement([(5, 5, cuts), (5, 6, cuts), (5, 2, cuts), (9, 4, cuts), (3, None, cuts)])
    assert a["both"] == 4 and a["exact_only"] == 1 and a["mc_only"] == 0
    assert a["same_token"] == 0.25 and a["same_step"] == 0.5
    assert a["earlier"] == 0.5 and a["later"] == 0.25


# ------------------------------------------------------------ on the tiny model


@pytest.fixture(scope="module")
def tiny_l1():
    from arca.models import tiny

    model, tok = tiny.load(tiny.SPECS["tiny-l1"])
    return model.eval(), tok


def _sampled(model, tok, n, level):
    from arca.diagnose import sample_completions
    from arca.tasks.loaders import load_task

    task = load_task("arithmetic", level=level, train_size=1, heldout_size=n)
    return task, sample_completions(model, tok, task.heldout.to_list(), n, max_new_tokens=32)


def test_same_seed_same_locations_and_the_callers_random_state_is_kept(tiny_l1):
    model, tok = tiny_l1
    task, items = _sampled(model, tok, 16, level=1)
    args = (
        [c.prompt_ids for c in items],
        [c.completion_ids for c in items],
        [c.row for c in items],
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        before = torch.get_rng_state()
        loc = MonteCarloLocator(model, tok, task.score, settings=MCSettings(k=4, max_new_tokens=32))
        runs.append([r.record() for r in loc.locate(*args)])
        assert torch.equal(torch.get_rng_state(), before)
    assert runs[0] == runs[1]
    assert any(r["status"] == "located" for r in runs[0])


# Measured 2026-12-04 on tiny-l1, level 1, k = 8, step cuts, binary search
# (benchmarks/mc_locator.py, docs/ground-truth.md): on 256 completions sampled
# by the base model, the same step as the exact locator for 0.69 of the 122
# wrong completions both located; this test's 96 completions (seeded, so the
# same every run) give 0.90 of 29. A step cut off by one token, or blame on a
# whitespace token, drops it far below; 0.5 sits about 2 standard errors (0.09
# at n = 29) under the 256-completion value, so a changed but sound sampler
# does not fail it. Same token is not asserted: a step is blamed on its first
# non-space token, while the exact locator names the first wrong character.
AGREE_SAME_STEP = 0.5
AGREE_LOCATED = 10


def test_agreement_with_the_exact_locator_on_level_1(tiny_l1):
    model, tok = tiny_l1
    task, items = _sampled(model, tok, 96, level=1)
    loc = MonteCarloLocator(model, tok, task.score, settings=MCSettings(k=8, max_new_tokens=32))
    results = loc.locate(
        [c.prompt_ids for c in items], [c.completion_ids for c in items], [c.row for c in items]
    )
    special = frozenset(tok.all_special_ids)
    pairs = []
    for c, r in zip(items, results, strict=True):
        text, spans = token_spans(tok, c.completion_ids)
        ex = locate_tokens(locate_error(c.row, text), text, spans, c.completion_ids, 2)
        if ex.correct or r.status == "correct":
            continue
        mc = locate_tokens(located(r, text, spans), text, spans, c.completion_ids, 2)
        pairs.append(
            (
                ex.error_token,
                mc.error_token,
                token_cuts(text, spans, c.completion_ids, special=special),
            )
        )
    a = agreement(pairs)
    assert a["both"] >= AGREE_LOCATED
    assert a["same_step"] >= AGREE_SAME_STEP, a
