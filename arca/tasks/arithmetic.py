"""Synthetic multi-step integer arithmetic: an offline task with a real signal.

Problems like ``What is 47 - 8 + 15?`` with a worked solution
``47 - 8 = 39. 39 + 15 = 54. \\boxed{54}``. Multiplication binds first, then
left to right, one step per sentence. Seeded, unlimited, and the held-out set
is disjoint from every training problem.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from arca.tasks.base import Task, make_prompt, rows_to_dataset


@dataclass(frozen=True)
class Level:
    """A difficulty: operand count, digits per operand, operators."""

    operands: int
    min_digits: int
    max_digits: int
    ops: str
    non_negative: bool = True  # resample problems with a negative intermediate


LEVELS: dict[int, Level] = {
    1: Level(2, 1, 2, "+-"),
    2: Level(3, 1, 2, "+-"),
    3: Level(3, 1, 2, "+-*"),
    4: Level(4, 2, 3, "+-*", non_negative=False),
}
# The embedded tiny model learns level 1 to ~40% in ~1,000 CPU steps; level 2
# stays under 10% at that budget (measured 2026-11-22).
DEFAULT_LEVEL = 1


def get_level(level: int) -> Level:
    if level not in LEVELS:
        raise ValueError(
            f"unknown arithmetic level {level!r}; valid: {', '.join(map(str, LEVELS))}"
        )
    return LEVELS[level]


def _number(rng: random.Random, lv: Level) -> int:
    digits = rng.randint(lv.min_digits, lv.max_digits)
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(lo, 10**digits - 1)


def solve(nums: list[int], ops: list[str]) -> tuple[list[str], int]:
    """Worked steps and the value: ``*`` first, then ``+``/``-`` left to right."""
    steps: list[str] = []
    nums, ops = list(nums), list(ops)
    while "*" in ops:
        i = ops.index("*")
        v = nums[i] * nums[i + 1]
        steps.append(f"{nums[i]} * {nums[i + 1]} = {v}.")
        nums[i : i + 2] = [v]
        del ops[i]
    acc = nums[0]
    for op, n in zip(ops, nums[1:], strict=True):
        v = acc + n if op == "+" else acc - n
        steps.append(f"{acc} {op} {n} = {v}.")
        acc = v
    return steps, acc


def make_problem(rng: random.Random, lv: Level) -> dict[str, str]:
    """One problem: ``{problem, solution, answer}``."""
    while True:
        nums = [_number(rng, lv) for _ in range(lv.operands)]
        ops = [rng.choice(lv.ops) for _ in range(lv.operands - 1)]
        steps, value = solve(nums, ops)
        if lv.non_negative and any(s.split("= ")[1].startswith("-") for s in steps):
            continue
        expr = " ".join(f"{n} {o}" for n, o in zip(nums, ops, strict=False)) + f" {nums[-1]}"
        return {
            "problem": f"What is {expr}?",
            "solution": " ".join(steps) + f" \\boxed{{{value}}}",
            "answer": str(value),
        }


def problems(
    seed: int,
    level: int = DEFAULT_LEVEL,
    exclude: frozenset[str] = frozenset(),
    *,
    distinct: bool = True,
) -> Iterator[dict[str, str]]:
    """A seeded stream of problems not in ``exclude``.

    ``distinct=True``: no problem twice (finite for small levels: level 1 has
    ~15,000). ``distinct=False``: endless, repeats allowed (training epochs).
    """
    lv = get_level(level)
    rng = random.Random(f"arca-arithmetic-{seed}-{level}")
    seen = set(exclude)
    misses = 0
    while True:
        p = make_problem(rng, lv)
        if not distinct:
            if p["problem"] not in exclude:
                yield p
            continue
        if p["problem"] in seen:
            misses += 1
            if misses > 10_000:  # the level's problem space is used up
                raise ValueError(f"arithmetic level {level} has no more distinct problems")
            continue
        misses = 0
        seen.add(p["problem"])
        yield p


def heldout_problems(n: int, level: int = DEFAULT_LEVEL, seed: int = 0) -> list[dict[str, str]]:
    """The held-out set: the first ``n`` problems of a stream reserved for evaluation."""
    stream = problems(seed=-1 - seed, level=level)
    return [next(stream) for _ in range(n)]


def load_arithmetic(
    *,
    level: int = DEFAULT_LEVEL,
    train_size: int = 5000,
    heldout_size: int = 200,
    seed: int = 0,
    few_shot: int = 0,
) -> Task:
    """The arithmetic task: ``train_size`` training problems, ``heldout_size`` held out.

    More training problems than ``train_size`` come from :func:`problems` with
    ``exclude`` set to the held-out problems. ``few_shot`` worked examples (the
    same for every prompt, taken from neither set) are prepended to each prompt,
    which small pretrained models need to answer in ``\\boxed{}`` at all.
    """
    if few_shot < 0:
        raise ValueError(f"few_shot must be >= 0, got {few_shot}")
    held = heldout_problems(heldout_size, level, seed)
    exclude = frozenset(p["problem"] for p in held)
    stream = problems(seed=seed, level=level, exclude=exclude)
    shots = [next(stream) for _ in range(few_shot)]
    prefix = "".join(f"{make_prompt(s['problem'])} {s['solution']}\n\n" for s in shots)
    train = [next(stream) for _ in range(train_size)]
    return Task(
        name="arithmetic",
        train=rows_to_dataset(train, prefix),
        heldout=rows_to_dataset(held, prefix),
        source=f"synthetic level {level} (seed {seed})"
        + (f", {few_shot}-shot" if few_shot else ""),
    )
