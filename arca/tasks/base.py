"""What a task is: prompts with reference answers, and a 0/1 reward."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arca.tasks.grading import math_reward, math_rewards
from arca.tasks.rewards import call_rewards

#: The one prompt template (paper 4.1: solve step by step, answer in \boxed{}).
PROMPT_TEMPLATE = (
    "Solve the problem step by step. Put the final answer in \\boxed{{}}.\n"
    "Problem: {problem}\n"
    "Solution:"
)


def make_prompt(problem: str, template: str | None = None) -> str:
    """The prompt for one problem: arca's template (paper 4.1), or ``template``
    (a format string over ``{problem}``); every built-in task and the evaluator use this."""
    return (template or PROMPT_TEMPLATE).format(problem=problem.strip())


class TaskDataError(ValueError):
    """A task's input data is malformed; the message names the file and row."""


@dataclass(frozen=True)
class Located:
    """Where a completion went wrong, in characters of the completion text.

    ``first_error``: offset of the first wrong character; ``None`` for a
    correct solution; ``len(completion)`` when the completion stopped before
    the solution was complete (the blame then falls on the end-of-sequence
    token, if the completion has one). ``char_classes``: optional, one letter
    per character of the completion: ``r`` a character of a result (a step's
    value, the final answer), ``o`` an operand or operator copied from the
    problem, ``t`` template (whitespace, punctuation, ``\\boxed{``, words).
    ``step``: optional, which step of the worked solution holds the first
    error (1-based; one past the last step means the final answer), for
    reporting where completions go wrong. ``unlocated``: a wrong completion
    whose first error could not be placed, and why (e.g. a Monte-Carlo
    estimate whose value is 0 from the prompt on, :mod:`arca.tasks.mc`);
    ``first_error`` is then ``None``, and the completion counts as wrong but
    not located.
    """

    first_error: int | None
    char_classes: str | None = None
    step: int | None = None
    unlocated: str | None = None

    def __post_init__(self) -> None:
        if self.first_error is not None and self.first_error < 0:
            raise ValueError(f"first_error must be >= 0 or None, got {self.first_error}")
        if self.unlocated is not None and self.first_error is not None:
            raise ValueError("a Located with a first_error is located: unlocated must be None")
        if self.char_classes is not None and set(self.char_classes) - set("rot"):
            raise ValueError("char_classes may only hold 'r', 'o' and 't'")


#: A task's error locator: ``(dataset row, completion text) -> Located``. The
#: row is the training/held-out row (``prompt``, ``answer`` and the task's own
#: columns), as TRL passes it to reward functions.
ErrorLocator = Callable[[Mapping[str, Any], str], Located]


@dataclass
class Task:
    """Train and held-out rows (``prompt``, ``answer``, ``problem`` columns) and a reward.

    ``train`` and ``heldout`` are ``datasets.Dataset`` objects, the format TRL's
    trainers take: the ``answer`` column reaches reward functions as a keyword.
    ``skipped`` counts input rows dropped as malformed (only with
    ``skip_malformed=True``); ``skipped_examples`` holds the first few reasons.
    ``locate_error`` finds where a completion went wrong (the ground truth of
    token credit, :mod:`arca.tasks.locate`); ``None`` for tasks without a
    verifiable worked solution (MATH, GSM8K), where arca reports no
    credit-correctness metrics rather than guessing.
    """

    name: str
    train: Any
    heldout: Any
    reward_fn: Callable[[str, str], float] = math_reward
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    source: str = ""
    locate_error: ErrorLocator | None = None
    #: Reward functions with TRL's signature; ``None``: ``reward_fn`` on ``answer``.
    reward_funcs: list[Callable[..., Any]] | None = None
    reward_weights: list[float] | None = None
    #: Where the task's steps end, ``text -> character offsets`` (the
    #: Monte-Carlo locator's cut points, :mod:`arca.tasks.mc`); ``None``: the
    #: default rule, :func:`arca.tasks.mc.step_boundaries`.
    step_rule: Callable[[str], list[int]] | None = None

    def reward(self, completion: str, answer: str) -> float:
        """1.0 if ``completion``'s final boxed answer matches ``answer``, else 0.0."""
        return self.reward_fn(completion, answer)

    def rewards(self, completions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Batch form of :meth:`reward` (graded concurrently for math answers)."""
        if self.reward_fn is math_reward:
            return math_rewards(completions, answers)
        return [self.reward_fn(c, a) for c, a in zip(completions, answers, strict=True)]

    def trl_reward(self) -> Callable[..., list[float]]:
        """This task's reward in TRL's reward-function convention."""

        def reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
            texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
            return self.rewards(texts, answer)

        reward.__name__ = f"{self.name}_reward"
        return reward

    def trl_rewards(self) -> list[Callable[..., Any]]:
        """The reward functions to hand TRL: the task's own, or the user's."""
        return list(self.reward_funcs) if self.reward_funcs else [self.trl_reward()]

    def score(self, completions: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[float]:
        """Each completion's reward as training computed it; ``rows[i]`` is
        completion ``i``'s dataset row (``prompt``, ``answer``, its columns)."""
        if not self.reward_funcs:
            return self.rewards(completions, [str(r["answer"]) for r in rows])
        return call_rewards(self.reward_funcs, self.reward_weights, completions, rows)


def rows_to_dataset(
    rows: list[dict[str, str]], prefix: str = "", template: str | None = None
) -> Any:
    """``[{problem, answer, ...}]`` -> a ``datasets.Dataset`` with a ``prompt``
    column (``prefix``, e.g. worked examples, then the templated problem)."""
    from datasets import Dataset

    for r in rows:
        r["prompt"] = prefix + make_prompt(r["problem"], template)
    cols = ["prompt", "answer", "problem"]
    return Dataset.from_dict({c: [r[c] for r in rows] for c in cols})


def split_heldout(rows: list[dict[str, str]], heldout_size: int, seed: int) -> tuple[list, list]:
    """Shuffle with ``seed`` and hold out the first ``heldout_size`` rows."""
    import random

    if heldout_size < 0:
        raise ValueError(f"heldout_size must be >= 0, got {heldout_size}")
    if heldout_size >= len(rows):
        raise ValueError(
            f"heldout_size={heldout_size} leaves no training rows (the data has {len(rows)} rows)"
        )
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = [rows[i] for i in order[:heldout_size]]
    train = [rows[i] for i in order[heldout_size:]]
    return train, held
