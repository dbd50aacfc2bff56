"""Which run, which step, reward, time left: read from the runs' files, so it
works the same for child processes and Ray tasks."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from arca.run_folder import final_weights
from arca.sweep.plan import RunSpec
from arca.sweep.processes import last_json_line, read_json


def fmt_time(s: float | None) -> str:
    if s is None or s != s or s < 0:
        return "?"
    s = int(round(s))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Progress:
    """Which run, which step, reward, time left: read from the runs' files,
    so it works the same for child processes and Ray tasks."""

    def __init__(self, specs: Sequence[RunSpec], slots: int, echo: Callable[[str], None]) -> None:
        self.index = {s.run_dir: i + 1 for i, s in enumerate(specs)}
        self.total = len(specs)
        self.slots = max(1, slots)
        self.echo = echo
        self.tty = echo is print and sys.stdout.isatty()
        self.started: dict[str, float] = {}
        self.printed: dict[str, tuple[str, int]] = {}
        self.durations: list[float] = []
        self.first_step: dict[str, tuple[float, int]] = {}
        self.pending = len(specs)
        self.steps = {s.run_dir: s.max_steps() for s in specs}

    def start(self, spec: RunSpec, at: float | None = None) -> None:
        self.started[spec.run_dir] = time.time() if at is None else at

    def finish(self, spec: RunSpec, outcome: dict[str, Any]) -> None:
        self.started.pop(spec.run_dir, None)
        self.pending -= 1
        i = self.index[spec.run_dir]
        if self.tty:
            sys.stdout.write("\r\033[K")
        if outcome["state"] == "done":
            self.durations.append(outcome["seconds"])
            res = read_json(Path(spec.run_dir) / "eval" / "results.json")
            acc = ""
            if res:
                k = res["k"]
                acc = f"greedy {res['greedy_accuracy']:.1%}, pass@{k} {res[f'pass@{k}']:.1%}"
            self.echo(
                f"[{i}/{self.total}] {spec.label}: done in {fmt_time(outcome['seconds'])}  {acc}"
            )
            base = read_json(Path(spec.run_dir) / "eval-base" / "results.json")
            if spec.eval_base and base:
                k = base["k"]
                self.echo(
                    f"    base model (untrained): greedy {base['greedy_accuracy']:.1%}, "
                    f"pass@{k} {base[f'pass@{k}']:.1%}"
                )
        elif outcome["state"] == "skipped":
            self.echo(f"[{i}/{self.total}] {spec.label}: already done, skipped")
        else:
            self.echo(
                f"[{i}/{self.total}] {spec.label}: FAILED (exit {outcome['returncode']}): "
                f"{outcome.get('error', '')}\n    log: {outcome['log']}"
            )

    def tick(self, specs: Sequence[RunSpec]) -> None:
        for s in specs:
            if s.run_dir not in self.started:
                continue
            stage, step, line = self._describe(s)
            key = (stage, step)
            last = self.printed.get(s.run_dir)
            every = max(1, self.steps[s.run_dir] // 10)
            due = last is None or last[0] != stage or (stage == "train" and step - last[1] >= every)
            if self.tty:
                sys.stdout.write("\r\033[K" + line[: os.get_terminal_size().columns - 1])
                sys.stdout.flush()
            elif due:
                self.echo(line)
            if due:
                self.printed[s.run_dir] = key

    def _describe(self, s: RunSpec) -> tuple[str, int, str]:
        d = Path(s.run_dir)
        i = self.index[s.run_dir]
        now = time.time()
        elapsed = now - self.started[s.run_dir]
        total = self.steps[s.run_dir]
        head = f"[{i}/{self.total}] {s.label}"
        rec = last_json_line(d / "metrics.jsonl")
        if final_weights(d) is not None:
            stage, step, what = "eval", total, "evaluating on the held-out set"
            left: float | None = None
        elif rec and "step" in rec:
            stage, step = "train", int(rec["step"])
            what = f"step {step}/{total}  reward {rec.get('reward', float('nan')):.3f}"
            # Rate from the steps seen by this sweep, so model loading and a
            # resumed run's earlier steps do not skew it.
            t_first, s_first = self.first_step.setdefault(s.run_dir, (now, step))
            left = (now - t_first) / (step - s_first) * (total - step) if step > s_first else None
        else:
            stage, step, what, left = "load", 0, "loading model and data", None
        run_total = self.durations and sum(self.durations) / len(self.durations)
        if run_total:
            left = max(left or 0.0, run_total - elapsed)
        rest = (self.pending - len(self.started)) * (run_total or (elapsed + (left or 0)))
        sweep_left = ((left or 0) + rest / self.slots) if (run_total or left) else None
        return (
            stage,
            step,
            f"{head}  {what}  | run {fmt_time(elapsed)}, ~{fmt_time(left)} left"
            f"  | sweep ~{fmt_time(sweep_left)} left",
        )
