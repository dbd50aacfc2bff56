"""Reward functions for the custom-task example, in TRL's signature.

TRL calls each one as ``f(prompts=..., completions=..., completion_ids=...,
trainer_state=..., <every dataset column>=...)`` with one entry per completion,
so the same function works in ``trl.GRPOTrainer`` and in arca unchanged.
"""

import re
from typing import Any

_NUMBER = re.compile(r"-?\d+")


def _text(completion: Any) -> str:
    # Conversational prompts give completions as [{"role": "assistant", "content": ...}].
    return completion if isinstance(completion, str) else completion[-1]["content"]


def final_number(completions: list[Any], solution: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion's first number is the reference ``solution``, else 0.0."""
    out = []
    for completion, ref in zip(completions, solution, strict=True):
        found = _NUMBER.search(_text(completion))
        out.append(1.0 if found is not None and found.group() == ref.strip() else 0.0)
    return out


def short(completions: list[Any], **kwargs: Any) -> list[float]:
    """A small bonus for answers of at most 12 words (the prompt asks for a short one)."""
    return [1.0 if len(_text(c).split()) <= 12 else 0.0 for c in completions]
