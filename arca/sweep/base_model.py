"""The base-model control: arca diagnose of the initial model, once per sweep,
with the runs' settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from arca.io import atomic_write_json
from arca.report.runs import DIAGNOSE_FIXED, METHOD_FIELDS
from arca.sweep.plan import RunSpec
from arca.sweep.processes import die_with_parent, last_line, read_json
from arca.sweep.progress import fmt_time
from arca.tasks.arithmetic import DEFAULT_LEVEL


def base_model_argv(specs: Sequence[RunSpec], samples: int, out: Path) -> list[str] | None:
    """``arca diagnose`` arguments for the sweep's base-model control: the runs'
    initial model on their held-out problems, K, completion length, weight
    floor, ``high_entropy`` quantile and pool (a micro-batch of rows; the
    defaults a run has where a config leaves them out). None when the runs do not share one initial model and
    held-out set (or ``samples`` is 0). What diagnose cannot take is said by
    :func:`base_model_caveats` and marked on the report's row."""
    if samples <= 0 or not specs:
        return None
    fields = (
        "model_name_or_path",
        "task",
        "data",
        "level",
        "few_shot",
        "split_seed",
        "heldout_size",
        "error_locator",
        "mc_k",
        "mc_cut",
        "mc_search",
    )
    settings = {tuple(str(s.setting(f)) for f in fields) for s in specs}
    if len(settings) != 1:
        return None
    s = specs[0]
    task = str(s.setting("task", "arithmetic"))
    argv = ["diagnose", "--model", str(s.setting("model_name_or_path", "tiny"))]
    if task == "custom":
        # A custom task is its config's: data, template, rewards, locator.
        argv += ["--config", s.config]
    else:
        argv += ["--task", task]
        level = s.setting("level", DEFAULT_LEVEL)
        argv += ["--level", str(level), "--few-shot", str(s.setting("few_shot", 0))]
        argv += ["--heldout-size", str(s.setting("heldout_size", 200))]
        for field, flag in (("data", "--data"), ("split_seed", "--split-seed")):
            if s.setting(field) is not None:
                argv += [flag, str(s.setting(field))]
    argv += ["--samples", str(samples), "--group-size", str(s.setting("num_generations", 8))]
    argv += ["--max-new-tokens", str(s.setting("max_completion_length", 512))]
    # The runs' ground truth: Monte-Carlo with their settings, their own
    # locator, or none (never a Monte-Carlo estimate the runs did not have).
    locator = s.setting("error_locator")
    if locator == "mc":
        argv += ["--locator", "mc", "--mc-k", str(s.setting("mc_k", 4))]
        argv += ["--mc-cut", str(s.setting("mc_cut", "step"))]
        argv += ["--mc-search", str(s.setting("mc_search", "binary"))]
    elif locator or task == "arithmetic":
        argv += ["--locator", "exact"]
    else:
        argv += ["--locator", "none"]
    # The weights as the runs compute them (the runs' first where they differ;
    # the report marks the row beside the others).
    argv += ["--eps", str(float(s.setting("weight_eps", METHOD_FIELDS["weight_eps"])))]
    q = s.setting("high_entropy_quantile", METHOD_FIELDS["high_entropy_quantile"])
    argv += ["--high-entropy-quantile", str(float(q))]
    # Diagnose's pass is high_entropy's pool: one micro-batch, as in training.
    rows = s.setting("per_device_train_batch_size", METHOD_FIELDS["per_device_train_batch_size"])
    argv += ["--batch-size", str(int(rows))]
    return argv + ["--seed", str(s.seed), "--out", str(out)]


def base_model_caveats(specs: Sequence[RunSpec]) -> list[str]:
    """The runs' settings ``arca diagnose`` cannot take
    (:data:`arca.report.runs.DIAGNOSE_FIXED`): ``field value (diagnose: its)``
    for each value a run has that diagnose does not use."""
    out = []
    for field, theirs in DIAGNOSE_FIXED.items():
        values = {s.setting(field, METHOD_FIELDS[field]) for s in specs}
        out += [f"{field} {v!r} (diagnose: {theirs!r})" for v in values if v != theirs]
    return out


def run_base_model(
    specs: Sequence[RunSpec], samples: int, root: Path, echo: Callable[[str], None]
) -> Path | None:
    """Diagnose the initial model once (a child process, log in
    ``OUT/base-model/run.log``); returns its folder, or None if skipped or failed.
    ``spec.json`` is written only after a success, so a failed or interrupted
    diagnosis is never mistaken for a finished one."""
    out = root / "base-model"
    argv = base_model_argv(specs, samples, out)
    if argv is None:
        if samples > 0:
            echo(
                "base model: the runs differ in model, task or held-out set; no base-model "
                "row (arca diagnose each)"
            )
        return None
    done = read_json(out / "spec.json")
    if (out / "diagnose.json").is_file() and done and done.get("argv") == argv:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("spec.json", "diagnose.json"):
        (out / stale).unlink(missing_ok=True)
    echo(f"base model: arca diagnose on {samples} completions it samples -> {out}")
    caveats = base_model_caveats(specs)
    if caveats:
        echo(
            f"base model: diagnose cannot use the runs' {', '.join(caveats)}; the report marks "
            "its row"
        )
    t0 = time.time()
    with (out / "run.log").open("a", encoding="utf-8") as f:
        rc = subprocess.run(
            [sys.executable, "-m", "arca.cli", *argv],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        ).returncode
    if rc != 0:
        echo(
            f"base model: FAILED (exit {rc}): {last_line(out / 'run.log')}\n    log: {out / 'run.log'}"
        )
        return None
    atomic_write_json(out / "spec.json", {"argv": argv})
    echo(f"base model: done in {fmt_time(time.time() - t0)}")
    return out
