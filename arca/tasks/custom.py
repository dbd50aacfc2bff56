"""A researcher's own task: their data, prompt template, chat template and reward.

The config route (``arca train``, ``task: custom``) and the library route
share these pieces: :func:`load_custom` reads rows from a local file/folder or
a Hub id (:mod:`arca.tasks.files`), renames columns (``columns``), and builds
each row's ``prompt`` from a template over its columns, or takes it from
``prompt_column`` as is (text, or a conversation: TRL's conversational format,
:mod:`arca.tasks.formats`). Reward functions are TRL's (:mod:`arca.tasks.rewards`);
an error locator of your own is checked on every call (:func:`checked_locator`).
"""

from __future__ import annotations

import functools
import json
import os
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from arca.tasks.base import Located, Task, TaskDataError, split_heldout
from arca.tasks.files import parse_rows
from arca.tasks.formats import is_conversation
from arca.tasks.rewards import UserCodeError, _show


def checked_locator(func: Callable[..., Any], spec: str) -> Callable[..., Any]:
    """``func`` (an error locator) whose every call is checked: it returns an
    :class:`arca.tasks.base.Located`, else one line naming it; an exception
    raised inside it becomes :class:`UserCodeError` naming it and the prompt."""

    @functools.wraps(func)
    def locate(row: Mapping[str, Any], completion: str, *args: Any, **kwargs: Any) -> Located:
        try:
            out = func(row, completion, *args, **kwargs)
        except Exception as e:
            raise UserCodeError(
                f"error_locator: {spec} raised {type(e).__name__}: {e} (prompt "
                f"{_show(row.get('prompt', '?'))})"
            ) from e
        if not isinstance(out, Located):
            raise ValueError(
                f"error_locator: {spec} returned {out!r} ({type(out).__name__}), not "
                "arca.tasks.base.Located (Located(first_error=None) for a correct completion, "
                "else the character offset of its first error)"
            )
        return out

    return locate


def read_template(value: str | None) -> str | None:
    """A prompt template: the text itself, or a ``.txt`` file that holds it."""
    if value is None:
        return None
    if value.endswith(".txt") and "\n" not in value:
        path = Path(os.path.expanduser(value))
        if not path.is_file():
            raise ValueError(f"prompt_template: no such file: {value}")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"prompt_template: {value}: not UTF-8 text") from None
    return value


def template_fields(template: str) -> list[str]:
    """The column names a template uses (``{question}``), checked: a bare
    ``{}`` or an unbalanced brace is a one-line error."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"prompt_template: {e} (write a literal brace as {{{{ or }}}})") from None
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or name.isdigit():
            raise ValueError(
                "prompt_template: every placeholder names a column, e.g. {question}; "
                "write a literal brace as {{ or }}"
            )
        names.append(name.split(".")[0].split("[")[0])
    return names


def parse_columns(value: Any) -> dict[str, str]:
    """``columns``: a mapping ``{source column: name arca uses}`` (YAML), or the
    same as text, ``"question:problem,final:answer"`` (command line)."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, str):
        pairs = []
        for part in value.split(","):
            if part.count(":") != 1:
                raise ValueError(
                    f"columns: {part.strip()!r} is not source:target (e.g. question:prompt)"
                )
            src, dst = part.split(":")
            pairs.append((src.strip(), dst.strip()))
    else:
        raise ValueError(f"columns: expected a mapping of column names, got {value!r}")
    out = {}
    for src, dst in pairs:
        if not isinstance(src, str) or not isinstance(dst, str) or not src or not dst:
            raise ValueError(f"columns: {src!r}: {dst!r}: both names must be non-empty text")
        out[src] = dst
    if len(set(out.values())) < len(out):
        raise ValueError(f"columns: two columns renamed to the same name ({value})")
    return out


def format_prompt(row: Mapping[str, Any], template: str, where: str) -> str:
    """``template`` filled from ``row``; a missing column names the row."""
    try:
        return template.format_map(row)
    except KeyError as e:
        raise TaskDataError(
            f"{where}: prompt_template uses column {e.args[0]!r}, which the row lacks "
            f"(has: {', '.join(sorted(row)) or 'none'})"
        ) from None


def custom_row(
    raw: Any,
    where: str,
    *,
    prompt_column: str,
    template: str | None,
    columns: Mapping[str, str],
) -> dict[str, Any]:
    """One data row, renamed, with its ``prompt`` built and checked."""
    if not isinstance(raw, dict):
        raise TaskDataError(f"{where}: expected an object with fields, got {type(raw).__name__}")
    absent = [c for c in columns if c not in raw]
    if absent:
        raise TaskDataError(
            f"{where}: columns renames {absent[0]!r}, which the row lacks (has: "
            f"{', '.join(sorted(raw)) or 'none'}); fix the name in columns"
        )
    row = {columns.get(k, k): v for k, v in raw.items()}
    if template is not None:
        row["prompt"] = format_prompt(row, template, where)
    else:
        if prompt_column not in row:
            raise TaskDataError(
                f"{where}: missing column '{prompt_column}' (prompt_column; has: "
                f"{', '.join(sorted(row)) or 'none'}); set prompt_column, columns or prompt_template"
            )
        row["prompt"] = row.pop(prompt_column) if prompt_column != "prompt" else row["prompt"]
    prompt = row["prompt"]
    if not (isinstance(prompt, str) and prompt.strip()) and not is_conversation(prompt):
        raise TaskDataError(
            f"{where}: the prompt is empty or neither text nor a list of {{role, content}} messages"
        )
    return row


def load_custom(
    source: str,
    *,
    prompt_column: str = "prompt",
    template: str | None = None,
    columns: Mapping[str, str] | None = None,
    heldout_size: int = 200,
    seed: int = 1337,
    skip_malformed: bool = False,
    hub_config: str | None = None,
    split: str = "train",
) -> Task:
    """Your own task from ``source`` (file, folder or Hub id), every column kept
    so that reward functions receive them, as in TRL."""
    from datasets import Dataset

    def parse(raw: Any, where: str) -> dict[str, Any]:
        return custom_row(
            raw, where, prompt_column=prompt_column, template=template, columns=columns or {}
        )

    rows, skipped = parse_rows(
        source, parse, skip_malformed=skip_malformed, hub_config=hub_config, split=split
    )
    keys = set(rows[0])
    for i, r in enumerate(rows):
        if set(r) != keys:
            raise TaskDataError(
                f"{source}: row {i + 1} has columns {sorted(r)}, the first row {sorted(keys)}; "
                "every row needs the same columns"
            )
    train, held = split_heldout(rows, heldout_size, seed)
    # A held-out problem the policy also trains on measures memory, not skill.
    seen = {json.dumps(r["prompt"], sort_keys=True) for r in train}
    leaked = [r for r in held if json.dumps(r["prompt"], sort_keys=True) in seen]
    if leaked:
        raise TaskDataError(
            f"{source}: {len(leaked)} of the {len(held)} held-out prompts are also training "
            f"prompts (e.g. {_show(leaked[0]['prompt'])}), so the evaluation would score "
            "problems the run trained on; remove the duplicate rows"
        )
    return Task(
        name="custom",
        train=Dataset.from_list(train),
        heldout=Dataset.from_list(held),
        skipped=len(skipped),
        skipped_examples=skipped[:5],
        source=source,
    )


def check_chat_template(
    tokenizer: Any, task: Task, model: str, use_chat_template: bool = True
) -> None:
    """Conversational prompts need a tokenizer with a chat template; say so
    before the model loads rather than fail inside TRL, naming what made the
    prompts conversations: ``use_chat_template``, or the data itself."""
    first = task.heldout[0]["prompt"] if len(task.heldout) else task.train[0]["prompt"]
    if is_conversation(first) and not getattr(tokenizer, "chat_template", None):
        if use_chat_template:
            raise ValueError(
                f"use_chat_template: {model}'s tokenizer has no chat template; use an "
                "instruct/chat model (e.g. smollm2), or give text prompts with "
                "use_chat_template: false"
            )
        raise ValueError(
            f"data: the prompts of {task.source or 'the data'} are conversations ({{role, "
            f"content}} messages), which need a chat template, and {model}'s tokenizer has "
            "none; use an instruct/chat model (e.g. smollm2), or give text prompts"
        )
