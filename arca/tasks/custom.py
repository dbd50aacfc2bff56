"""A researcher's own task: their data, prompt template, chat template and reward.

The config route (``arca train``) and the library route share these pieces:

- :func:`load_custom` reads rows from a local file/folder or a Hub id (as MATH
  and GSM8K are read), renames columns (``columns``), and builds each row's
  ``prompt`` from a template over its columns, or takes it from
  ``prompt_column`` as is (text, or a conversation: TRL's conversational
  format, a list of ``{"role", "content"}`` messages).
- :func:`as_chat` turns a text prompt into a conversation, so TRL applies the
  tokenizer's chat template (``use_chat_template``).
- :func:`load_callable` imports reward functions and error locators named as
  TRL's ``grpo.py`` script names them: one of TRL's reward names
  (``accuracy_reward``, ``reasoning_accuracy_reward``, ``think_format_reward``),
  a dotted import path (``my_lib.rewards.correct``, imported with the current
  folder on ``sys.path``, as TRL does), or, beyond TRL, ``module:function``
  and ``path/to/file.py:function``.

Reward functions keep TRL's signature, so a TRL user's reward works unchanged:
``f(prompts, completions, completion_ids, **kwargs) -> list[float | None]``,
where ``kwargs`` holds every other dataset column (one value per completion)
and ``trainer_state``; ``completions`` are strings, or for conversational
prompts ``[{"role": "assistant", "content": text}]``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import math
import numbers
import os
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arca.tasks.base import Located, Task, TaskDataError, split_heldout

#: TRL's reward names (``trl/scripts/grpo.py``'s registry, less the one that
#: needs construction arguments), resolved in ``trl.rewards``.
TRL_REWARDS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward")

Message = dict[str, str]


def load_callable(spec: str, field: str) -> Callable[..., Any]:
    """The function named by ``spec`` (see the module docstring), or a
    ``ValueError`` naming ``field`` and what to fix."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{field}: expected a function name such as my_module.my_reward")
    if spec in TRL_REWARDS:
        import trl.rewards

        return getattr(trl.rewards, spec)
    if ":" in spec:
        where, name = spec.rsplit(":", 1)
    elif "." in spec:
        where, name = spec.rsplit(".", 1)
    else:
        raise ValueError(
            f"{field}: {spec!r} is neither one of TRL's rewards ({', '.join(TRL_REWARDS)}) nor "
            "an import path (my_module.my_reward, my_module:my_reward or file.py:my_reward)"
        )
    if where.endswith(".py"):
        path = Path(os.path.expanduser(where))
        if not path.is_file():
            raise ValueError(f"{field}: {spec}: no such file: {path}")
        mod_name = f"arca_user_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(mod_name)
        if module is None:
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            assert mspec is not None and mspec.loader is not None
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module
            try:
                mspec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise ValueError(f"{field}: {spec}: importing {path} failed: {e!r}") from e
    else:
        # TRL's grpo.py imports with the current folder on the path; so does arca.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(
                f"{field}: {spec}: cannot import {where} ({e}); install it, run from the folder "
                "that holds it, or name a file: path/to/file.py:function"
            ) from e
    func = getattr(module, name, None)
    if not callable(func):
        raise ValueError(f"{field}: {spec}: {where} has no function {name!r}")
    return func


def check_reward_func(func: Callable[..., Any], spec: str) -> None:
    """Refuse a reward function TRL could not call: TRL passes ``prompts``,
    ``completions``, ``completion_ids``, ``trainer_state``, ``log_extra``,
    ``log_metric`` and every dataset column as keywords."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise ValueError(
            f"reward_funcs: {spec} must accept **kwargs: TRL calls it as f(prompts=..., "
            "completions=..., completion_ids=..., trainer_state=..., <every dataset column>=...)"
        )


#: The keywords TRL passes every reward function besides the dataset's columns
#: (which it passes all but ``prompt``, ``completion`` and ``completion_ids``).
TRL_REWARD_KEYWORDS = (
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
)


def check_reward_columns(func: Callable[..., Any], spec: str, columns: Sequence[str]) -> None:
    """Refuse a reward function with a required argument that neither TRL's
    keywords nor a dataset column (after ``columns`` renaming) would fill:
    TRL would fail at the first step, inside its own code."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return
    passed = [c for c in columns if c not in ("prompt", "completion", "completion_ids")]
    for p in params:
        if p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY or p.name not in (*TRL_REWARD_KEYWORDS, *passed):
            raise ValueError(
                f"reward_funcs: {spec} needs the argument {p.name!r}, which TRL fills from a "
                f"data column of that name, but the data has none (columns: "
                f"{', '.join(sorted(passed)) or 'none'}); rename one with columns "
                f"(your_column: {p.name}), or give {p.name} a default"
            )


def check_reward_format(spec: str, conversational: bool) -> None:
    """TRL's own rewards read conversational completions
    (``completion[0]["content"]``); refuse them on text prompts, where TRL
    hands them strings and they fail at the first step."""
    if spec in TRL_REWARDS and not conversational:
        raise ValueError(
            f"reward_funcs: TRL's {spec} expects conversational completions "
            "([{role, content}] messages), but the prompts are plain text; set "
            "use_chat_template: true (a chat model) or give conversational prompts, or use a "
            "reward written for text completions"
        )


class UserCodeError(Exception):
    """A user's own function (a reward, an error locator) raised. The message
    names the function and the prompt; ``__cause__`` is the function's own
    exception, whose traceback ``arca`` prints above that line."""


def _show(prompt: Any) -> str:
    """A prompt, short, for an error line: a conversation's last message."""
    text = prompt[-1].get("content", "") if is_conversation(prompt) else str(prompt)
    text = " ".join(str(text).split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


def checked_reward(func: Callable[..., Any], spec: str) -> Callable[..., Any]:
    """``func`` (a reward with TRL's signature) whose every call is checked:
    a list of one number or None per completion, else one line naming it; an
    exception raised inside it becomes :class:`UserCodeError` naming it and
    the prompt it failed on. Async rewards and reward models go to TRL as they are."""
    if inspect.iscoroutinefunction(func) or hasattr(func, "forward"):
        return func

    @functools.wraps(func)
    def reward(*args: Any, **kwargs: Any) -> list[Any]:
        completions = kwargs.get("completions", [])
        try:
            out = func(*args, **kwargs)
        except Exception as e:
            raise UserCodeError(
                f"reward_funcs: {spec} raised {type(e).__name__}: {e} (prompt "
                f"{_failing_prompt(func, kwargs, len(completions))})"
            ) from e
        return reward_values(out, len(completions), spec)

    return reward


def reward_values(out: Any, n: int, spec: str) -> list[Any]:
    """``out``, a reward function's return for ``n`` completions, as a list,
    after checking it is one number (or None: does not apply) per completion."""
    if hasattr(out, "tolist") and not isinstance(out, list | tuple):  # numpy, torch
        out = out.tolist()
    if not isinstance(out, list | tuple):
        raise ValueError(
            f"reward_funcs: {spec} returned {type(out).__name__}, not a list of {n} rewards "
            "(one number, or None where it does not apply, per completion)"
        )
    if len(out) != n:
        raise ValueError(
            f"reward_funcs: {spec} returned {len(out)} rewards for {n} completions; return one "
            "per completion (None where it does not apply)"
        )
    for i, r in enumerate(out):
        if r is None:
            continue
        if not isinstance(r, numbers.Real):
            raise ValueError(
                f"reward_funcs: {spec} returned {r!r} ({type(r).__name__}) for completion {i}; "
                "a reward is a number, or None where it does not apply"
            )
        if math.isinf(float(r)):
            raise ValueError(
                f"reward_funcs: {spec} returned {r} for completion {i}; rewards must be finite "
                "(None or NaN: does not apply)"
            )
    return list(out)


def _failing_prompt(func: Callable[..., Any], kwargs: dict[str, Any], n: int) -> str:
    """The prompt of the first completion ``func`` raises on alone (TRL calls
    rewards with keywords, one list entry per completion), else the batch's first."""
    prompts = kwargs.get("prompts") or []
    for i in range(n if n > 1 else 0):
        one = {k: [v[i]] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
        try:
            func(**one)
        except Exception:
            return _show(prompts[i]) if i < len(prompts) else "?"
    return f"{_show(prompts[0])}, of a batch of {n}" if prompts else "?"


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


def near_config(path: str, config_dir: Path) -> Path:
    """``path`` as given if it exists from the current folder, else beside
    the config file (so a config's own files are found from any folder)."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute() or p.exists() or not (config_dir / p).exists():
        return p.resolve() if p.exists() else p
    return (config_dir / p).resolve()


def file_spec(spec: str, config_dir: Path = Path(".")) -> str:
    """``spec`` with a relative ``file.py`` made absolute (looked for from the
    current folder, then beside the config), so the run's ``config.yaml`` names
    the file that ran, whichever folder reads it later."""
    if ":" in spec:
        where, name = spec.rsplit(":", 1)
        if where.endswith(".py"):
            return f"{near_config(where, config_dir)}:{name}"
    return spec


def local_source(source: str, config_dir: Path = Path(".")) -> str:
    """A data ``source`` as the file or folder it names, made absolute (looked
    for from the current folder, then beside the config), so that a run
    started elsewhere can never read another folder's file of the same name;
    a Hub id, or a path that does not exist, as given."""
    p = near_config(source, config_dir)
    return str(p) if p.exists() else source


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


def is_conversation(value: Any) -> bool:
    """TRL's conversational format: a list of ``{"role", "content"}`` messages."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def as_chat(prompt: str, system_prompt: str | None = None) -> list[Message]:
    """A text prompt as a one-turn conversation, for the tokenizer's chat template."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*head, {"role": "user", "content": prompt}]


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

    from arca.tasks.loaders import parse_rows

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


def call_rewards(
    funcs: Sequence[Callable[..., Any]],
    weights: Sequence[float] | None,
    completions: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> list[float]:
    """Each completion's reward as TRL computes it during training: every
    function called with TRL's keywords, ``None`` counted as missing, then the
    weighted sum over the functions that gave one (TRL's ``nansum``: 0.0 when
    none did).
    ``rows[i]`` is completion ``i``'s dataset row; ``trainer_state`` is ``None``
    outside training."""
    prompts = [r["prompt"] for r in rows]
    comps: list[Any] = [
        [{"role": "assistant", "content": c}] if is_conversation(p) else c
        for c, p in zip(completions, prompts, strict=True)
    ]
    keys = [
        k for k in (rows[0] if rows else {}) if k not in ("prompt", "completion", "completion_ids")
    ]
    kwargs: dict[str, Any] = {k: [r[k] for r in rows] for k in keys}
    kwargs |= {
        "trainer_state": None,
        "log_extra": lambda *a, **k: None,
        "log_metric": lambda *a, **k: None,
    }
    ids = list(completion_ids) if completion_ids is not None else [[] for _ in completions]
    w = list(weights) if weights is not None else [1.0] * len(funcs)
    totals = [0.0] * len(completions)
    for f, wf in zip(funcs, w, strict=True):
        name = getattr(f, "__name__", repr(f))
        out = reward_values(
            f(prompts=prompts, completions=comps, completion_ids=ids, **kwargs), len(comps), name
        )
        for i, r in enumerate(out):
            if r is None or (isinstance(r, float) and math.isnan(r)):
                continue
            totals[i] += wf * float(r)
    return totals


def prompt_text(prompt: str | list[Message], tokenizer: Any) -> str:
    """The text the model reads for ``prompt``: a conversation through the
    tokenizer's chat template with the generation prompt, as TRL renders it."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


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
