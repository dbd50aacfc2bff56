"""Reward functions with TRL's signature, named as TRL's ``grpo.py`` names them.

:func:`load_callable` imports a function from a name: one of TRL's reward
names (``accuracy_reward``, ``reasoning_accuracy_reward``,
``think_format_reward``), a dotted import path (``my_lib.rewards.correct``,
imported with the current folder on ``sys.path``, as TRL does), or, beyond
TRL, ``module:function`` and ``path/to/file.py:function``. Rewards keep TRL's
signature, ``f(prompts, completions, completion_ids, **kwargs) -> list[float |
None]``, where ``kwargs`` holds every other dataset column (one value per
completion) and ``trainer_state``; ``completions`` are strings, or for
conversational prompts ``[{"role": "assistant", "content": text}]``. Every
call is checked (:func:`checked_reward`); :func:`call_rewards` computes a
completion's reward as TRL does during training.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arca.tasks.formats import is_conversation

#: TRL's reward names (``trl/scripts/grpo.py``'s registry, less the one that
#: needs construction arguments), resolved in ``trl.rewards``.
TRL_REWARDS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward")


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
