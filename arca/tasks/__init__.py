"""Tasks (prompts + reference answers + a 0/1 reward) and answer grading.

- :func:`load_task` ("arithmetic", "math", "gsm8k") gives a :class:`Task` with
  train / held-out ``datasets.Dataset`` splits.
- :func:`extract_boxed` and :func:`math_reward` grade a completion's final
  ``\\boxed{}`` answer with math-verify, bounded in time and thread-safe.
"""

from arca.tasks.arithmetic import LEVELS, load_arithmetic
from arca.tasks.base import PROMPT_TEMPLATE, Task, TaskDataError, make_prompt
from arca.tasks.boxed import extract_boxed
from arca.tasks.grading import math_reward, math_rewards, verify_answer

__all__ = [
    "LEVELS",
    "PROMPT_TEMPLATE",
    "Task",
    "TaskDataError",
    "extract_boxed",
    "load_arithmetic",
    "make_prompt",
    "math_reward",
    "math_rewards",
    "verify_answer",
]
