"""MATH and GSM8K from local files or the Hugging Face Hub, and ``load_task``.

Local sources: a ``.jsonl`` file, a ``.json`` file (a list of rows, or one row
as in the original MATH release's one-problem-per-file layout), a ``.parquet``
file, or a folder of such files (read recursively, in sorted order). A source
that looks like a path (starts with ``/``, ``.`` or ``~``, ends in a data suffix,
or has more than one ``/``) must exist; anything else that does not exist on
disk is taken as a Hub dataset id and loaded with ``datasets.load_dataset``
(the only path that touches the network). Unreadable files (damaged Parquet,
non-UTF-8 text) and unreachable Hub ids raise ``ValueError`` naming them.

A malformed row (missing or empty column, no boxed answer, no ``####``) raises
:class:`TaskDataError` naming the file and row; with ``skip_malformed=True`` it
is skipped and counted in ``Task.skipped`` instead. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from arca.tasks.arithmetic import DEFAULT_LEVEL, load_arithmetic, locate_error
from arca.tasks.base import ErrorLocator, Task, TaskDataError, rows_to_dataset, split_heldout
from arca.tasks.boxed import extract_boxed
from arca.tasks.mc import MC

#: Hendrycks MATH (all subjects, one config) as used by TRL/open-r1 recipes.
MATH_HUB_ID = "DigitalLearningGmbH/MATH-lighteval"
GSM8K_HUB_ID = "openai/gsm8k"
_SUFFIXES = (".jsonl", ".json", ".parquet")

Row = dict[str, Any]
Where = str  # "file.jsonl: line 7", "openai/gsm8k[train]: row 12"


def _looks_local(source: str) -> bool:
    """A path, not a Hub id (``owner/name``): starts with ``/``, ``.`` or ``~``,
    ends in a data suffix, or has more than one ``/``."""
    return (
        source.endswith(_SUFFIXES)
        or source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
    )


def _utf8(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line += raw[: e.start].count(b"\n")
        raise TaskDataError(
            f"{path}: line {line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
            "re-save the file as UTF-8"
        ) from None


def _read_file(path: Path) -> Iterator[tuple[Where, Any]]:
    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                line = _utf8(raw, path, n)
                if not line.strip():
                    continue
                try:
                    yield f"{path}: line {n}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskDataError(f"{path}: line {n}: not valid JSON ({e.msg})") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(_utf8(path.read_bytes(), path, 1))
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        items = data if isinstance(data, list) else [data]
        for n, row in enumerate(items, 1):
            yield (f"{path}: row {n}" if isinstance(data, list) else str(path)), row
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise TaskDataError(
                f"{path}: not readable Parquet ({e}); the file is damaged or not Parquet: "
                "write it again, or give the data as .jsonl"
            ) from None
        for n, row in enumerate(table.to_pylist(), 1):
            yield f"{path}: row {n}", row
    else:
        raise TaskDataError(f"{path}: unsupported file type (use {', '.join(_SUFFIXES)})")


def data_files(folder: Path) -> list[Path]:
    """The data files of a folder source, in the order their rows are read."""
    return sorted(p for p in folder.rglob("*") if p.suffix in _SUFFIXES and p.is_file())


def read_rows(
    source: str, *, hub_config: str | None = None, split: str = "train"
) -> Iterator[tuple[Where, Any]]:
    """``(where, row)`` pairs from a local file/folder or a Hub dataset."""
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        files = data_files(path)
        if not files:
            raise TaskDataError(f"{path}: folder holds no {', '.join(_SUFFIXES)} files")
        for f in files:
            yield from _read_file(f)
    elif path.is_file():
        yield from _read_file(path)
    elif _looks_local(source):
        raise FileNotFoundError(f"--data: no such file or folder: {source}")
    else:
        from datasets import load_dataset

        try:
            ds = load_dataset(source, hub_config, split=split)
        except OSError as e:  # ConnectionError, DatasetNotFoundError, LocalEntryNotFoundError
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            hint = (
                "HF_HUB_OFFLINE is set, so only datasets already in the cache load"
                if offline
                else "check the id and the network"
            )
            raise ValueError(
                f"--data {source}: neither a local file or folder nor reachable on the Hugging "
                f"Face Hub ({hint}; {type(e).__name__}: {e}); give a {'/'.join(_SUFFIXES)} "
                "file or a folder of them"
            ) from None
        for n, row in enumerate(ds, 1):
            yield f"{source}[{split}]: row {n}", row


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, or of a folder's data files (their
    relative names and contents, in the order :func:`read_rows` reads them)."""
    import hashlib

    h = hashlib.sha256()
    if path.is_dir():
        for f in data_files(path):
            h.update(str(f.relative_to(path)).encode() + b"\0" + sha256_of(f).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def task_files(cfg: Mapping[str, Any]) -> list[Path]:
    """The local files a run config reads: its data (file or folder), and the
    ``.py`` files of its reward functions and error locator."""
    out = []
    data = cfg.get("data")
    if data and Path(os.path.expanduser(data)).exists():
        out.append(Path(os.path.expanduser(data)))
    for spec in [*(cfg.get("reward_funcs") or []), cfg.get("error_locator")]:
        if isinstance(spec, str) and ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
            out.append(Path(os.path.expanduser(spec.rsplit(":", 1)[0])))
    return list(dict.fromkeys(out))


def check_files(cfg: Mapping[str, Any], where: str = "files_sha256") -> dict[str, str]:
    """The SHA-256 of every file :func:`task_files` names, after checking each
    against the hash ``cfg["files_sha256"]`` recorded for the same path (a
    run's ``config.yaml``): a file changed since is refused, naming it and both
    hashes, so that a run is never resumed or evaluated on other data or
    rewards than it trained on. A recorded file that is gone is refused too."""
    recorded = cfg.get("files_sha256") or {}
    if not isinstance(recorded, Mapping):
        raise ValueError(f"{where}: must map file paths to SHA-256 hashes, got {recorded!r}")
    now = {str(p): sha256_of(p) for p in task_files(cfg)}
    for path, then in recorded.items():
        if path in now and now[path] != then:
            raise ValueError(
                f"{where}: {path} has changed since the run recorded it (sha256 {then[:12]}... "
                f"then, {now[path][:12]}... now); restore that file, or train a new run on this one"
            )
        if path not in now and not Path(path).exists() and _still_named(path, cfg):
            raise ValueError(
                f"{where}: {path} (sha256 {then[:12]}...) no longer exists; the run read it, "
                "so restore it there"
            )
    return now


def _still_named(path: str, cfg: Mapping[str, Any]) -> bool:
    specs = [cfg.get("data"), *(cfg.get("reward_funcs") or []), cfg.get("error_locator")]
    return any(isinstance(s, str) and (s == path or s.startswith(f"{path}:")) for s in specs)


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


def parse_rows(
    source: str,
    parse: Callable[[Any, Where], Row],
    *,
    skip_malformed: bool,
    hub_config: str | None,
    split: str,
) -> tuple[list[Row], list[str]]:
    """``source``'s rows through ``parse``, and the reasons of the malformed
    ones skipped (only with ``skip_malformed``; otherwise the first is raised)."""
    rows: list[Row] = []
    skipped: list[str] = []
    for where, raw in read_rows(source, hub_config=hub_config, split=split):
        try:
            rows.append(parse(raw, where))
        except TaskDataError as e:
            if not skip_malformed:
                raise
            skipped.append(str(e))
    if not rows:
        detail = f" ({len(skipped)} malformed rows skipped)" if skipped else ""
        raise TaskDataError(f"{source}: no usable rows{detail}")
    return rows, skipped


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
    from arca.tasks.custom import (
        check_reward_func,
        load_callable,
        parse_columns,
        read_template,
        template_fields,
    )

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
    from arca.tasks.custom import (
        as_chat,
        check_reward_columns,
        check_reward_format,
        checked_locator,
        checked_reward,
        is_conversation,
        load_callable,
        load_custom,
        parse_columns,
        read_template,
    )

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
