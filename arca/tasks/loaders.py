"""Every task by name, and the task a run config describes.

- :func:`load_task` ("arithmetic", "math", "gsm8k") and the MATH and GSM8K
  loaders (local files or the Hugging Face Hub, :mod:`arca.tasks.files`);
- :func:`task_from_config`: the task of an ``arca train`` config, ``task:
  custom`` included (:mod:`arca.tasks.custom`), with its reward functions
  checked and wrapped (:mod:`arca.tasks.rewards`) and its error locator: the
  task's own, a custom one, or none (``error_locator: mc`` asks the trainer for
  Monte-Carlo ground truth, :mod:`arca.tasks.mc`);
- :func:`check_task_config`: everything about a config's task that can be
  checked before any data or model loads.

A malformed row (missing or empty column, no boxed answer, no ``####``) raises
:class:`TaskDataError` naming the file and row; with ``skip_malformed=True`` it
is skipped and counted in ``Task.skipped`` instead. Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from arca.tasks.arithmetic import DEFAULT_LEVEL, load_arithmetic, locate_error
from arca.tasks.base import ErrorLocator, Task, TaskDataError, rows_to_dataset, split_heldout
from arca.tasks.boxed import extract_boxed
from arca.tasks.custom import (
    checked_locator,
    load_custom,
    parse_columns,
    read_template,
    template_fields,
)
from arca.tasks.files import Row, Where, check_files, parse_rows
from arca.tasks.formats import as_chat, is_conversation
from arca.tasks.mc import MC
from arca.tasks.rewards import (
    check_reward_columns,
    check_reward_format,
    check_reward_func,
    checked_reward,
    load_callable,
)

#: Hendrycks MATH (all subjects, one config) as used by TRL/open-r1 recipes.
MATH_HUB_ID = "DigitalLearningGmbH/MATH-lighteval"
GSM8K_HUB_ID = "openai/gsm8k"


def _text(row: Any, col: str, where: Where) -> str:
    if not isinstance(row, dict):
        raise TaskDataError(f"{where}: expected an object with fields, got {type(row).__name__}")
    if col not in row:
        raise TaskDataError(
            f"{where}: missing column '{col}' (has: {', '.join(sorted(row)) or 'none'})"
        )
    v = row[col]
    if not isinstance(v, str) or not v.strip():
        raise TaskDataError(f"{where}: column '{col}' is empty or not text")
    return v


def math_row(row: Any, where: Where) -> Row:
    """A MATH row: the reference is the last ``\\boxed{}`` of ``solution``."""
    problem = _text(row, "problem", where)
    if "solution" not in row and "answer" in row:  # answer-only variants (e.g. MATH-500 style)
        return {"problem": problem, "answer": _text(row, "answer", where).strip()}
    solution = _text(row, "solution", where)
    answer = extract_boxed(solution)
    if not answer:
        raise TaskDataError(f"{where}: the solution has no \\boxed{{...}} answer")
    return {"problem": problem, "answer": answer}


def gsm8k_row(row: Any, where: Where) -> Row:
    """A GSM8K row: the reference follows ``####`` in ``answer`` (commas dropped)."""
    question = _text(row, "question", where)
    answer = _text(row, "answer", where)
    if "####" not in answer:
        raise TaskDataError(f"{where}: the answer has no '#### <number>' line")
    ref = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not ref:
        raise TaskDataError(f"{where}: nothing after '####'")
    return {"problem": question, "answer": ref}


def _load(
    name: str,
    source: str,
    parse: Callable[[Any, Where], Row],
    *,
    heldout_size: int,
    seed: int,
    skip_malformed: bool,
    hub_config: str | None,
    split: str,
    template: str | None = None,
) -> Task:
    rows, skipped = parse_rows(
        source, parse, skip_malformed=skip_malformed, hub_config=hub_config, split=split
    )
    train, held = split_heldout(rows, heldout_size, seed)
    return Task(
        name=name,
        train=rows_to_dataset(train, template=template),
        heldout=rows_to_dataset(held, template=template),
        skipped=len(skipped),
        skipped_examples=skipped[:5],
        source=source,
    )


def load_math(
    source: str = MATH_HUB_ID,
    *,
    heldout_size: int = 200,
    seed: int = 1337,
    skip_malformed: bool = False,
    hub_config: str | None = None,
    split: str = "train",
    template: str | None = None,
) -> Task:
    """The MATH task (paper 4.1): ``problem``/``solution`` rows, 200 held out by default."""
    return _load(
        "math",
        source,
        math_row,
        heldout_size=heldout_size,
        seed=seed,
        skip_malformed=skip_malformed,
        hub_config=hub_config,
        split=split,
        template=template,
    )


def load_gsm8k(
    source: str = GSM8K_HUB_ID,
    *,
    heldout_size: int = 200,
    seed: int = 1337,
    skip_malformed: bool = False,
    hub_config: str | None = "main",
    split: str = "train",
    template: str | None = None,
) -> Task:
    """GSM8K: ``question``/``answer`` rows, the reference after ``####``."""
    return _load(
        "gsm8k",
        source,
        gsm8k_row,
        heldout_size=heldout_size,
        seed=seed,
        skip_malformed=skip_malformed,
        hub_config=hub_config,
        split=split,
        template=template,
    )


TASKS = ("arithmetic", "math", "gsm8k")
#: ``task: custom``: your own data, prompt and reward (:mod:`arca.tasks.custom`).
CUSTOM = "custom"


def task_locator(name: str) -> ErrorLocator | None:
    """The error locator of a task by name, without loading its data: the
    arithmetic task's, or None (MATH and GSM8K have no worked solutions to
    check a completion against)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return locate_error if name == "arithmetic" else None


def check_task_config(cfg: Mapping[str, Any]) -> None:
    """Everything about a config's task that can be checked without its data
    or a model: the task name, its source, the template, column mapping,
    reward functions (imported, signature checked) and error locator."""
    task = cfg.get("task", "arithmetic")
    if task not in (*TASKS, CUSTOM):
        raise ValueError(f"task: must be {', '.join(TASKS)} or {CUSTOM}, got {task!r}")
    columns = parse_columns(cfg.get("columns"))
    if task != CUSTOM and columns:
        raise ValueError("columns: only task: custom reads your column names")
    if task == CUSTOM and not cfg.get("data"):
        raise ValueError(
            "data: task: custom needs your data (a .jsonl/.json/.parquet file, a folder, or a Hub id)"
        )
    template = read_template(cfg.get("prompt_template"))
    if template is not None:
        used = template_fields(template)
        if task != CUSTOM and set(used) - {"problem"}:
            raise ValueError(
                f"prompt_template: the {task} task's rows have only {{problem}} to fill in, "
                f"not {{{sorted(set(used) - {'problem'})[0]}}}"
            )
        if task != CUSTOM and not used:
            raise ValueError("prompt_template: must contain {problem}")
    if cfg.get("system_prompt") and not cfg.get("use_chat_template"):
        raise ValueError("system_prompt: only used with use_chat_template: true")
    funcs = cfg.get("reward_funcs") or []
    if isinstance(funcs, str):
        raise ValueError("reward_funcs: a list of function names, e.g. [my_module.my_reward]")
    for spec in funcs:
        check_reward_func(load_callable(spec, "reward_funcs"), spec)
    weights = cfg.get("reward_weights")
    if weights is not None and len(weights) != max(1, len(funcs)):
        raise ValueError(
            f"reward_weights: {len(weights)} weights for {max(1, len(funcs))} reward functions"
        )
    if cfg.get("error_locator") and cfg["error_locator"] != MC:
        load_callable(cfg["error_locator"], "error_locator")
    if cfg.get("step_rule"):
        load_callable(cfg["step_rule"], "step_rule")


def task_from_config(cfg: Mapping[str, Any], *, train_size: int | None = None) -> Task:
    """The task a run config describes (``arca train``'s fields: ``task``,
    ``data``, ``prompt_template``, ``columns``, ``use_chat_template``,
    ``reward_funcs``, ...), as training and evaluation both see it.
    ``train_size`` overrides the arithmetic task's (evaluation needs only the
    held-out rows)."""
    check_task_config(cfg)
    check_files(cfg)
    name = cfg.get("task", "arithmetic")
    template = read_template(cfg.get("prompt_template"))
    if name == CUSTOM:
        split_seed = cfg.get("split_seed")
        task = load_custom(
            cfg["data"],
            prompt_column=cfg.get("prompt_column") or "prompt",
            template=template,
            columns=parse_columns(cfg.get("columns")),
            heldout_size=int(cfg.get("heldout_size", 200)),
            seed=1337 if split_seed is None else int(split_seed),
            skip_malformed=bool(cfg.get("skip_malformed")),
        )
    else:
        task = load_task(
            name,
            cfg.get("data"),
            heldout_size=int(cfg.get("heldout_size", 200)),
            skip_malformed=bool(cfg.get("skip_malformed")),
            level=int(cfg.get("level", DEFAULT_LEVEL)),
            train_size=int(train_size if train_size is not None else cfg.get("train_size", 5000)),
            seed=cfg.get("split_seed"),
            few_shot=int(cfg.get("few_shot", 0)),
            template=template,
        )
    funcs = cfg.get("reward_funcs") or []
    if funcs:
        task.reward_funcs = [load_callable(s, "reward_funcs") for s in funcs]
    elif "answer" not in task.heldout.column_names:
        raise ValueError(
            f"reward_funcs: none given, so completions are graded on their \\boxed{{}} answer "
            f"against an 'answer' column, which {task.source} lacks (has: "
            f"{', '.join(task.heldout.column_names)}); give reward_funcs or map a column to answer"
        )
    if cfg.get("reward_weights") is not None:
        task.reward_weights = [float(w) for w in cfg["reward_weights"]]
    if cfg.get("error_locator") and cfg["error_locator"] != MC:
        spec = cfg["error_locator"]
        task.locate_error = checked_locator(load_callable(spec, "error_locator"), spec)
    if cfg.get("step_rule"):
        task.step_rule = load_callable(cfg["step_rule"], "step_rule")
    if cfg.get("use_chat_template"):
        system = cfg.get("system_prompt")
        if any(not isinstance(p, str) for p in task.heldout["prompt"][:1]):
            raise ValueError(
                "use_chat_template: the prompts are already conversations; TRL applies the "
                "chat template to them by itself, so leave use_chat_template false"
            )

        from datasets import Dataset

        # Rebuilt rather than .map()ped: no cache files, no progress bar per split.
        task.train, task.heldout = (
            Dataset.from_list([{**r, "prompt": as_chat(r["prompt"], system)} for r in ds])
            for ds in (task.train, task.heldout)
        )
    if task.reward_funcs:
        # Before any model loads: what TRL would otherwise fail on at the first step.
        chat = is_conversation((task.train[0] if len(task.train) else task.heldout[0])["prompt"])
        for spec, f in zip(funcs, task.reward_funcs, strict=True):
            check_reward_format(spec, chat)
            check_reward_columns(f, spec, task.train.column_names)
        task.reward_funcs = [
            checked_reward(f, s) for f, s in zip(task.reward_funcs, funcs, strict=True)
        ]
    return task


def load_task(
    name: str,
    source: str | None = None,
    *,
    heldout_size: int = 200,
    seed: int | None = None,
    skip_malformed: bool = False,
    level: int = DEFAULT_LEVEL,
    train_size: int = 5000,
    few_shot: int = 0,
    template: str | None = None,
) -> Task:
    """Load a task by name. ``source`` is a local path or Hub id (MATH/GSM8K);
    ``level``/``train_size``/``few_shot`` apply to the synthetic arithmetic task;
    ``template`` replaces arca's prompt template (a format string over ``{problem}``)."""
    if name == "arithmetic":
        if source is not None:
            raise ValueError("the arithmetic task is generated; it takes no source")
        return load_arithmetic(
            level=level,
            train_size=train_size,
            heldout_size=heldout_size,
            seed=seed or 0,
            few_shot=few_shot,
            template=template,
        )
    if few_shot:
        raise ValueError("few_shot: only the arithmetic task has worked examples to prepend")
    if name == "math":
        return load_math(
            source or MATH_HUB_ID,
            heldout_size=heldout_size,
            seed=1337 if seed is None else seed,
            skip_malformed=skip_malformed,
            template=template,
        )
    if name == "gsm8k":
        return load_gsm8k(
            source or GSM8K_HUB_ID,
            heldout_size=heldout_size,
            seed=1337 if seed is None else seed,
            skip_malformed=skip_malformed,
            template=template,
        )
    raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
