"""Synthetic multi-step integer arithmetic: an offline task with a real signal.

Problems like ``What is 47 - 8 + 15?`` with a worked solution
``47 - 8 = 39. 39 + 15 = 54. \\boxed{54}``. Multiplication binds first, then
left to right, one step per sentence. Seeded, unlimited, and the held-out set
is disjoint from every training problem.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from arca.tasks.base import Located, Task, make_prompt, rows_to_dataset
from arca.tasks.boxed import extract_boxed


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
# Two worked steps, multiplication first: the level the embedded tiny model
# learns (arca.models.tiny.SPECS says how it was chosen).
DEFAULT_LEVEL = 3


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


def worked_solution(nums: list[int], ops: list[str]) -> tuple[str, int]:
    """The task's worked solution text and value (the format every level uses)."""
    steps, value = solve(nums, ops)
    return " ".join(steps) + f" \\boxed{{{value}}}", value


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
            "solution": worked_solution(nums, ops)[0],
            "answer": str(value),
        }


# ------------------------------------------------------- where it went wrong

_PROBLEM = re.compile(r"What is ([0-9+\-* ]+)\?")
_LAST_PROBLEM = re.compile(r"Problem:[ \t]*(What is [^\n]*\?)[ \t]*(?:\n|$)")


def parse_problem(problem: str) -> tuple[list[int], list[str]]:
    """``"What is 47 - 8 + 15?"`` -> ``([47, 8, 15], ["-", "+"])``; a ValueError
    naming the text if it is not a problem of this task."""
    m = _PROBLEM.fullmatch(problem.strip())
    parts = m.group(1).split() if m else []
    if len(parts) < 3 or len(parts) % 2 == 0:
        raise ValueError(f"not an arithmetic problem of arca's task: {problem!r}")
    nums, ops = parts[0::2], parts[1::2]
    if not all(n.isdigit() for n in nums) or not all(o in "+-*" and len(o) == 1 for o in ops):
        raise ValueError(f"not an arithmetic problem of arca's task: {problem!r}")
    return [int(n) for n in nums], ops


def problem_from_prompt(prompt: str) -> str:
    """The problem a prompt asks for: the last ``Problem: What is ...?`` line, so
    few-shot prompts (worked examples first) give the question, not an example."""
    found = _LAST_PROBLEM.findall(prompt)
    if not found:
        raise ValueError(f"no 'Problem: What is ...?' line in the prompt: {prompt[-80:]!r}")
    return found[-1]


def first_error(problem: str, completion: str) -> int | None:
    """Offset in ``completion`` of its first wrong character, or ``None``.

    The completion is compared with the problem's worked solution in the
    task's format (multiplications first, then left to right, one ``a op b =
    c.`` step per sentence, then ``\\boxed{value}``), ignoring whitespace: the
    first non-space character that differs from the solution is the error. A
    completion that stops before the solution is complete returns
    ``len(completion)`` (the error is stopping). After a complete solution,
    more text is harmless unless it gives another answer (a further
    ``\\boxed``/``\\fbox``, which the grader would read instead): then the
    error is where that text starts. ``None`` means the completion is a correct
    solution, as the reward grades it.

    For ``What is 47 - 8 + 15?`` (``47 - 8 = 39. 39 + 15 = 54. \\boxed{54}``),
    ``" 47 - 8 = 38. 38 + 15 = 53. \\boxed{53}"`` -> 10, the ``8`` of ``38``.
    """
    solution, _ = worked_solution(*parse_problem(problem))
    i = j = 0
    n, m = len(completion), len(solution)
    while True:
        while i < n and completion[i].isspace():
            i += 1
        while j < m and solution[j].isspace():
            j += 1
        if j == m:
            # Trailing chatter is harmless; a second answer replaces the first
            # (the grader reads the last non-empty box: extract_boxed).
            return i if extract_boxed(completion[i:]) is not None else None
        if i == n:
            return n
        if completion[i] != solution[j]:
            return i
        i += 1
        j += 1


# A step's value ("= 39", "= -47") and the final answer's content.
_STEP_VALUE = re.compile(r"=\s*(-?\d+)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def char_classes(completion: str) -> str:
    """One letter per character: ``r`` result (each step's value, the boxed
    answer), ``o`` operand or operator (other digits, ``+ - *``), ``t``
    template (everything else). Read from the completion's own text, so a
    wrong completion's results are classed too."""
    cls = ["o" if c.isdigit() or c in "+-*" else "t" for c in completion]
    for rx in (_STEP_VALUE, _BOXED):
        for m in rx.finditer(completion):
            for k in range(m.start(1), m.end(1)):
                if not completion[k].isspace():
                    cls[k] = "r"
    return "".join(cls)


def error_step(completion: str, offset: int | None) -> int | None:
    """Which step of the worked solution the first error at ``offset`` falls in:
    1-based, ``steps + 1`` for the final answer; ``None`` without an error. Up to
    the error the completion is the solution, so the steps it completed are the
    sentences (``... = c.``) before the offset."""
    if offset is None:
        return None
    return completion[:offset].count(".") + 1


def locate_error(row: Mapping[str, Any], completion: str) -> Located:
    """The task's :data:`arca.tasks.base.ErrorLocator`: the row's ``problem``
    (or the last problem in its ``prompt``) against the completion."""
    problem = row.get("problem") or problem_from_prompt(str(row.get("prompt", "")))
    offset = first_error(str(problem), completion)
    return Located(offset, char_classes(completion), error_step(completion, offset))


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
    template: str | None = None,
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
    prefix = "".join(f"{make_prompt(s['problem'], template)} {s['solution']}\n\n" for s in shots)
    train = [next(stream) for _ in range(train_size)]
    return Task(
        name="arithmetic",
        train=rows_to_dataset(train, prefix, template),
        heldout=rows_to_dataset(held, prefix, template),
        source=f"synthetic level {level} (seed {seed})"
        + (f", {few_shot}-shot" if few_shot else ""),
        locate_error=locate_error,
    )
