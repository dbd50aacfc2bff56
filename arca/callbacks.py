"""What a training run records in its folder while it trains: transformers
``TrainerCallback`` s and the sample writer the trainer calls
(:mod:`arca.run_folder` names the files).

- :class:`MetricsFile`: ``metrics.jsonl``, one line per logged step, the last
  step always among them, cut back to the checkpoint on resume;
- :class:`CompactProgress`: one short console line per logged step;
- :class:`SampleWriter`: ``samples.jsonl``, completions with their per-token
  weights at step 1, every N steps and the last step;
- :class:`LearningCurve`: ``curve.jsonl``, greedy accuracy on a fixed subset of
  the held-out problems before training and every N steps, per problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import ProgressCallback, TrainerCallback

from arca.generation import generate
from arca.io import atomic_write_text, filter_jsonl
from arca.run_folder import sample_step
from arca.scoring import eval_mode


class MetricsFile(TrainerCallback):
    """Appends one JSON line per logged optimizer step to ``path``, flushed and
    fsynced, so a crash loses at most the step in flight. On resume, lines past
    the checkpoint's step are dropped first (they will be produced again)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        # The last step is logged whatever logging_steps says, so the record
        # ends where training ended (transformers logs every logging_steps only).
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            control.should_log = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        if state.global_step > 0 and self.path.exists():
            filter_jsonl(self.path, lambda rec: rec.get("step", 0) <= state.global_step)
        else:
            atomic_write_text(self.path, "")

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if (
            not state.is_world_process_zero
            or not logs
            or "loss" not in logs
            or "train_runtime" in logs
        ):
            return
        rec = {
            "step": state.global_step,
            **{k: v for k, v in logs.items() if isinstance(v, int | float)},
        }
        if "reward_std" in rec:
            rec["reward_var"] = rec["reward_std"] ** 2
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


class CompactProgress(ProgressCallback):
    """transformers' progress bar with one short line per logged step (step,
    reward, loss, the trained scheme's Gini and EffN, time left) instead of
    the whole log dict; ``metrics.jsonl`` keeps every value."""

    FIELDS = (
        ("reward", "reward", ".3f"),
        ("loss", "loss", ".4f"),
        ("credit/gini", "Gini", ".3f"),
        ("credit/effective_n", "EffN", ".1f"),
        ("credit/mc_seconds", "MC s", ".1f"),
    )

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        bar = self.training_bar
        if not state.is_world_process_zero or bar is None or not logs:
            return
        if "train_runtime" in logs:
            line = f"trained {state.global_step} steps in {logs['train_runtime']:.0f} s"
        else:
            parts = [f"step {state.global_step}/{state.max_steps}"]
            parts += [
                f"{label} {logs[key]:{fmt}}"
                for key, label, fmt in self.FIELDS
                if isinstance(logs.get(key), int | float)
            ]
            rate, left = bar.format_dict.get("rate"), bar.total - bar.n if bar.total else 0
            if rate and left > 0:
                parts.append(f"{int(left / rate) // 60}:{int(left / rate) % 60:02d} left")
            line = "  ".join(parts)
        bar.write(line)


class SampleWriter:
    """At step 1, every ``every`` steps and at the last step, append ``count``
    completions with their per-token weights (the trained scheme's, and every
    shadow scheme's) to ``path``. Wrong completions with a located error and a
    negative advantage come first, then the others with a nonzero advantage:
    those are the ones whose weights matter. With ground truth, each record has
    ``first_error`` (index of the first wrong token among the completion's
    tokens, or null) and ``correct``.

    ``step`` counts from 1, as ``metrics.jsonl`` does, and every record says so
    with ``step_base: 1``; files written before it counted from 0 and have no
    ``step_base`` (:meth:`step_of` reads both)."""

    STEP_BASE = 1

    def __init__(self, path: str | os.PathLike[str], every: int, count: int) -> None:
        self.path, self.every, self.count = Path(path), every, count
        self.last_step = -1

    def due(self, step: int, last: int | None = None, span: int = 1) -> bool:
        """Sample the batch generated at ``step`` (counted from 1), trained on
        at steps ``step`` to ``step + span - 1``? Yes if those steps hold step
        1, a multiple of ``every`` or ``last``: a batch that serves several
        steps is sampled once, labelled with the step it was generated at."""
        if self.every <= 0 or step == self.last_step:
            return False
        end = step + max(span, 1) - 1
        return (
            step == 1
            or end // self.every > (step - 1) // self.every
            or (last is not None and step <= last <= end)
        )

    @staticmethod
    def step_of(rec: dict[str, Any]) -> int:
        """The step a record was drawn at, counted from 1 whatever its file's age."""
        return sample_step(rec)

    def rows(
        self,
        step: int,
        tokenizer: Any,
        out: dict[str, Any],
        weights: dict[str, Tensor],
        adv: Tensor,
        rank: int = 0,
    ) -> list[dict[str, Any]]:
        """This process's ``count`` most telling rows of the batch in ``out``,
        as records (``rank`` and ``index``: the process and its row)."""
        self.last_step = step
        mask = out["completion_mask"].bool()
        err = out.get("arca_error_index")
        blamed = [
            err is not None and int(err[i]) >= 0 and float(adv[i]) < 0 for i in range(len(adv))
        ]
        order = sorted(range(mask.size(0)), key=lambda i: (not blamed[i], float(adv[i]) == 0.0))
        recs = []
        for i in order[: self.count]:
            ids = out["completion_ids"][i][mask[i]].tolist()
            prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
            rec = {
                "step": step,
                "step_base": self.STEP_BASE,
                "rank": rank,
                "index": i,
                "prompt": tokenizer.decode(prompt, skip_special_tokens=True),
                "advantage": float(adv[i]),
                "tokens": [tokenizer.decode([t]) for t in ids],
                "weights": {
                    k: [round(float(x), 6) for x in w[i][mask[i]]] for k, w in weights.items()
                },
            }
            if err is not None:
                e = int(err[i])
                rec["first_error"] = int(mask[i, :e].sum()) if e >= 0 else None
                rec["correct"] = bool(out["arca_correct"][i])
            recs.append(rec)
        return recs

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append the ``count`` most telling of ``records`` (every process's
        :meth:`rows`): blamed wrong completions first, then nonzero advantages."""

        def key(r: dict[str, Any]) -> tuple[bool, bool]:
            blamed = r.get("first_error") is not None and r["advantage"] < 0
            return (not blamed, r["advantage"] == 0.0)

        with self.path.open("a", encoding="utf-8") as f:
            for rec in sorted(records, key=key)[: self.count]:
                f.write(json.dumps(rec) + "\n")
            f.flush()


class LearningCurve(TrainerCallback):
    """Held-out greedy accuracy while training: before the first step (step 0,
    the model training starts from), every ``every`` steps and at the last
    step, on the same ``rows`` (the first problems of the run's held-out set),
    each completion scored by the task's reward (``score``) and counted correct
    at ``correct_reward`` or above, as ``arca eval`` counts. One JSON line per
    evaluation in ``path``: ``step``, ``greedy_accuracy``, ``problems``,
    ``correct`` (0/1 per problem, in the rows' order, so runs can be paired
    problem by problem), ``problems_sha`` (which problems, in which order) and
    ``seconds``.

    Greedy decoding draws nothing from the random state and the model's train
    mode is restored, so a run trains exactly as it would without the curve.
    The main process evaluates while the others wait; on resume, lines past the
    checkpoint's step are dropped first, as for ``metrics.jsonl``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        rows: Sequence[Mapping[str, Any]],
        score: Callable[[Sequence[str], Sequence[Mapping[str, Any]]], list[float]],
        *,
        every: int,
        correct_reward: float = 1.0,
        max_new_tokens: int = 512,
        batch_size: int = 64,
    ) -> None:
        if every < 1:
            raise ValueError(f"eval_every: must be >= 1, got {every}")
        self.path, self.rows, self.score = Path(path), list(rows), score
        self.every, self.correct_reward = every, correct_reward
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.done: set[int] = set()
        # Which problems, in which order: runs are paired on a curve only when it matches.
        self.problems_sha = hashlib.sha256(
            json.dumps([str(r["prompt"]) for r in self.rows]).encode()
        ).hexdigest()[:16]

    def due(self, step: int, last: int) -> bool:
        return step not in self.done and (step == 0 or step % self.every == 0 or step == last)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            if state.global_step > 0 and self.path.exists():
                filter_jsonl(self.path, lambda rec: rec.get("step", -1) <= state.global_step)
                self.done = {
                    int(json.loads(x)["step"]) for x in self.path.read_text().splitlines() if x
                }
            else:
                atomic_write_text(self.path, "")
        if state.global_step == 0:
            self._evaluate(0, state, **kw)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.due(state.global_step, state.max_steps):
            self._evaluate(state.global_step, state, **kw)

    def _evaluate(self, step: int, state: Any, **kw: Any) -> None:
        self.done.add(step)
        if not state.is_world_process_zero:
            return
        model, tok = kw["model"], kw["processing_class"]
        t0 = time.perf_counter()
        with torch.no_grad(), eval_mode(model):
            texts = generate(
                model,
                tok,
                [r["prompt"] for r in self.rows],
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
            )
        rewards = self.score([t[0] for t in texts], self.rows)
        correct = [int(r >= self.correct_reward) for r in rewards]
        rec = {
            "step": step,
            "greedy_accuracy": sum(correct) / len(correct),
            "problems": len(correct),
            "correct": correct,
            "problems_sha": self.problems_sha,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
