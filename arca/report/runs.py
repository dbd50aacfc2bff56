"""Reading run folders (``arca train`` / ``arca sweep`` output) into memory.

A run folder holds ``config.yaml``, ``metrics.jsonl``, optionally
``samples.jsonl``, ``eval/results.json`` and ``eval/completions.jsonl``, and
the untrained base model's evaluation in ``eval-base/results.json``.
Runs with the same name (``run_name``, else ``<scheme>_r<rank>``, or
``<scheme>_full`` for full fine-tuning) and different seeds form one
:class:`Method`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arca.credit.schemes import BUILTIN_SCHEMES
from arca.evaluate import pass_at_k

#: Fraction of the last logged steps that "final" values average over.
FINAL_FRACTION = 0.1

SCHEME_ORDER = BUILTIN_SCHEMES


@dataclass
class Run:
    path: Path
    name: str
    seed: int
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    eval: dict[str, Any] | None = None
    #: per-problem scores on the held-out set: "greedy" (0/1) and "pass@k".
    problem_scores: dict[str, np.ndarray] = field(default_factory=dict)
    #: the untrained base model's evaluation with this run's settings (``eval-base/``).
    base_eval: dict[str, Any] | None = None

    @property
    def scheme(self) -> str:
        return str(self.config.get("token_weighting", "uniform"))

    @property
    def full(self) -> bool:
        """Full fine-tuning (no LoRA adapter)?"""
        return self.config.get("use_peft") is False

    @property
    def rank(self) -> int | None:
        r = self.config.get("lora_r")
        return int(r) if r is not None and not self.full else None

    def at_step_1(self, key: str) -> float:
        """The metric logged for step 1 alone (NaN if absent, or if the first
        record averages several steps, as with ``logging_steps`` > 1): step 1's
        batch was sampled and scored by the initial model, before any update."""
        for m in self.metrics:
            if m.get("step") == 1 and m.get(key) is not None:
                return float(m[key])
        return math.nan

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of a metric, skipping steps that lack it."""
        pts = [
            (int(m["step"]), float(m[key]))
            for m in self.metrics
            if key in m and m[key] is not None and "step" in m
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    def mean(self, key: str, last_fraction: float | None = None) -> float:
        """Mean of a metric over training (or over its last ``last_fraction``
        of logged steps, at least one); NaN if never logged."""
        _, v = self.series(key)
        if last_fraction is not None and v:
            v = v[-max(1, math.ceil(len(v) * last_fraction)) :]
        finite = [x for x in v if not math.isnan(x)]
        return sum(finite) / len(finite) if finite else math.nan


@dataclass
class Method:
    name: str
    runs: list[Run]

    @property
    def scheme(self) -> str:
        return self.runs[0].scheme

    @property
    def rank(self) -> int | None:
        return self.runs[0].rank

    @property
    def full(self) -> bool:
        return self.runs[0].full

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def per_seed(self, key: str, *, source: str = "metrics", **kw: Any) -> list[float]:
        """One value per seed: a training-metric mean, or an ``eval`` field."""
        if source == "eval":
            return [float(r.eval[key]) if r.eval and key in r.eval else math.nan for r in self.runs]
        return [r.mean(key, **kw) for r in self.runs]

    def final(self, key: str) -> list[float]:
        """Per seed: the metric's mean over the last :data:`FINAL_FRACTION` of steps."""
        return [r.mean(key, last_fraction=FINAL_FRACTION) for r in self.runs]

    def final_mean(self, key: str) -> float:
        """:meth:`final` averaged over the seeds that logged the metric (NaN if none)."""
        vals = [v for v in self.final(key) if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan

    def problem_matrix(self, key: str) -> np.ndarray | None:
        """``(seeds, problems)`` per-problem scores, or None if any run lacks them."""
        rows = [r.problem_scores.get(key) for r in self.runs]
        if not rows or any(x is None for x in rows) or len({len(x) for x in rows}) != 1:
            return None
        return np.stack(rows)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    lines = path.read_bytes().splitlines()
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            # A run killed mid-write leaves at most a cut-off last line.
            if n == len(lines):
                continue
            why = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
            raise ValueError(
                f"{path}:{n}: not valid JSON ({why}); fix or delete that line"
            ) from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        why = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else e
        raise ValueError(
            f"{path}: not valid JSON ({why}); delete it and run `arca eval --run` again"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _problem_scores(path: Path, k: int) -> dict[str, np.ndarray]:
    greedy: dict[int, float] = {}
    samples: dict[int, list[float]] = {}
    for rec in _read_jsonl(path):
        try:
            i, reward = int(rec["index"]), float(rec["reward"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: a record lacks a numeric 'index' or 'reward' ({e!r}); "
                "delete the eval/ folder and run `arca eval --run` again"
            ) from None
        if rec.get("mode") == "greedy":
            greedy[i] = reward
        else:
            samples.setdefault(i, []).append(reward)
    n = max([*greedy, *samples], default=-1) + 1
    out: dict[str, np.ndarray] = {}
    if greedy and len(greedy) == n:
        out["greedy"] = np.array([greedy[i] for i in range(n)])
    if samples and len(samples) == n and all(len(s) >= k for s in samples.values()):
        out[f"pass@{k}"] = np.array(
            [pass_at_k(len(samples[i]), int(sum(samples[i])), k) for i in range(n)]
        )
    return out


def load_run(path: str | Path) -> Run:
    import yaml

    p = Path(path)
    cfg_path = p / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{p}: not a run folder (no config.yaml)")
    try:
        config = yaml.safe_load(cfg_path.read_bytes().decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path}: not valid YAML ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path}: expected a mapping of settings, got {type(config).__name__}")
    metrics = _read_jsonl(p / "metrics.jsonl") if (p / "metrics.jsonl").exists() else []
    scheme = config.get("token_weighting", "uniform")
    name = config.get("run_name") or (
        f"{scheme}_full"
        if config.get("use_peft") is False
        else f"{scheme}_r{config.get('lora_r', '?')}"
    )
    run = Run(p, str(name), int(config.get("seed", 0)), config, metrics)
    res = p / "eval" / "results.json"
    if res.is_file():
        run.eval = _read_json(res)
        comp = p / "eval" / "completions.jsonl"
        if comp.is_file():
            run.problem_scores = _problem_scores(comp, int(run.eval.get("k", 4)))
    base = p / "eval-base" / "results.json"
    if base.is_file():
        run.base_eval = _read_json(base)
    return run


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders in ``paths``: each path is a run folder or a folder searched
    (recursively, skipping checkpoints) for run folders."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such folder")
        if (p / "config.yaml").is_file():
            found.append(p)
            continue
        hits = sorted(
            c.parent
            for c in p.rglob("config.yaml")
            if not c.parent.name.startswith(("checkpoint-", "."))
            and (c.parent / "metrics.jsonl").exists()
        )
        if not hits:
            raise FileNotFoundError(f"{p}: no run folders (with config.yaml and metrics.jsonl)")
        found += hits
    return list(dict.fromkeys(found))


def _order(m: Method) -> tuple[int, int, int, str]:
    s = m.scheme
    idx = SCHEME_ORDER.index(s) if s in SCHEME_ORDER else len(SCHEME_ORDER)
    return (int(m.full), idx, m.rank or 0, m.name)


def group_methods(runs: Sequence[Run]) -> list[Method]:
    """Runs grouped by name, in the paper's order (uniform, surprisal, entropy,
    divergence, ARCA by rank, then any other scheme). Two runs with the same
    name and seed are an error: the tables could not tell them apart."""
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(r.name, []).append(r)
    methods = []
    for name, rs in by.items():
        seeds = [r.seed for r in rs]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            where = ", ".join(str(r.path) for r in rs if r.seed in dup)
            raise ValueError(f"runs named {name!r} share seed {dup[0]}: {where}")
        methods.append(Method(name, sorted(rs, key=lambda r: r.seed)))
    return sorted(methods, key=_order)
