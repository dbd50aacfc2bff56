"""Tasks: prompts with reference answers, a reward, and where a wrong
completion first went wrong.

From the bottom up (each module imports only those above it in this list):

- :mod:`~arca.tasks.boxed`, :mod:`~arca.tasks.grading`: the final ``\\boxed{}``
  answer, graded by math-verify, bounded in time and thread-safe;
- :mod:`~arca.tasks.formats`: text and conversational prompts (TRL's formats);
- :mod:`~arca.tasks.rewards`: reward functions with TRL's signature, named as
  TRL names them, every call checked;
- :mod:`~arca.tasks.base`: :class:`Task`, :class:`Located` (a first error);
- :mod:`~arca.tasks.files`: data files and Hub datasets, read row by row, hashed;
- :mod:`~arca.tasks.arithmetic`: the synthetic task and its exact error locator;
- :mod:`~arca.tasks.custom`: your own data, template and reward;
- :mod:`~arca.tasks.locate`: a character-level location mapped onto tokens;
- :mod:`~arca.tasks.mc`: Monte-Carlo ground truth for any task with a reward;
- :mod:`~arca.tasks.loaders`: every task by name, and a config's task.
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
