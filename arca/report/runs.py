"""Reading run folders (``arca train`` / ``arca sweep`` output) into memory.

A run folder holds ``config.yaml``, ``metrics.jsonl``, optionally
``samples.jsonl``, ``eval/results.json`` and ``eval/completions.jsonl``, and
the untrained base model's evaluation in ``eval-base/results.json``.
Runs with the same name (``run_name``, else ``<scheme>_r<rank>``, or
``<scheme>_full`` for full fine-tuning), the same :func:`method_identity` and
different seeds form one :class:`Method`; runs that share a name but not an
identity are kept apart, each labelled with what differs.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arca.credit.schemes import BUILTIN_SCHEMES, CEILING_TAG, FIELD_SCHEMES, GROUND_TRUTH_SCHEMES
from arca.generation import pass_at_k
from arca.models.qwen import LORA_TARGETS
from arca.run_folder import CURVE
from arca.tasks.arithmetic import DEFAULT_LEVEL

#: Fraction of the last logged steps that "final" values average over.
FINAL_FRACTION = 0.1

SCHEME_ORDER = (*BUILTIN_SCHEMES, *FIELD_SCHEMES)

#: The config fields that define a method: what was trained (model, adapter,
#: task and data, scheme, optimisation, sampling) and how it was evaluated,
#: each with the value a run whose config.yaml lacks it ran with (arca train's
#: defaults: arca's own, then TRL's and transformers'; tested against them).
#: Runs that differ in any of them are different methods, whatever their
#: names. Where a run was written, how often it logged and its seed are not
#: here. A field that changes what is trained or evaluated belongs here.
METHOD_FIELDS: dict[str, Any] = {
    # the model: its name, and its content when the run recorded it
    "model_name_or_path": "tiny",
    "model_identity": None,
    # the content of its data and reward files, when the run recorded them
    "files_sha256": None,
    "model_revision": "main",
    "dtype": "float32",
    "use_peft": True,  # arca train's default (TRL's is full fine-tuning)
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    # What trains when a config leaves it out (arca train records it since).
    "lora_target_modules": LORA_TARGETS,
    "use_dora": False,
    "use_rslora": False,
    "lora_modules_to_save": None,
    "load_in_8bit": False,
    "load_in_4bit": False,
    # the task: its problems, prompts, reward and grading
    "task": "arithmetic",
    "data": None,
    "level": DEFAULT_LEVEL,
    "few_shot": 0,
    "split_seed": None,
    "heldout_size": 200,
    "train_size": 5000,
    "skip_malformed": False,
    "prompt_template": None,
    "prompt_column": "prompt",
    "columns": None,
    "use_chat_template": False,
    "system_prompt": None,
    "reward_funcs": None,
    "reward_weights": None,
    "correct_reward": 1.0,
    "max_prompt_length": None,
    # the credit scheme
    "token_weighting": "uniform",
    "weight_eps": 1e-8,
    "weight_eps_mode": "absolute",
    "high_entropy_quantile": 0.2,
    "oracle_share": 0.2,
    "oracle_rest": "after",
    "ktae_alpha": 1.0,
    "ktae_beta": 1.0,
    "ktae_gamma_tf": True,
    "ktae_top": 1.0,
    "oar_quantile": 0.5,
    "oar_beta": 1.0,
    "oar_noise_std": 1e-3,
    "advantage_estimator": "grpo",
    "credit_from_training_forward": True,
    # optimisation and sampling
    "learning_rate": 1e-6,
    "lr_scheduler_type": "linear",
    "lr_scheduler_kwargs": None,
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_steps": -1,
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "generation_batch_size": None,
    "steps_per_generation": None,
    "num_generations": 8,
    "num_iterations": 1,
    "beta": 0.0,
    "epsilon": 0.2,
    "epsilon_high": None,
    "delta": None,
    "loss_type": "grpo",
    "scale_rewards": "group",
    "multi_objective_aggregation": "sum_then_normalize",
    "importance_sampling_level": "token",
    "mask_truncated_completions": False,
    "top_entropy_quantile": 1.0,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": None,
    "repetition_penalty": 1.0,
    "max_completion_length": 512,
    "generation_kwargs": None,
    "max_grad_norm": 1.0,
    "optim": "adamw_torch_fused",
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "disable_dropout": False,
    "bf16": None,
    "fp16": False,
    "use_vllm": False,
    "vllm_importance_sampling_correction": True,
    "cast_lm_head_to_fp32": False,
    "sync_ref_model": False,
    "shuffle_dataset": True,
}
#: The fields of :data:`METHOD_FIELDS` that say how credit is assigned: a
#: method is compared with the uniform run that differs from it in these alone.
SCHEME_FIELDS = (
    "token_weighting",
    "weight_eps",
    "weight_eps_mode",
    "high_entropy_quantile",
    "oracle_share",
    "oracle_rest",
    "ktae_alpha",
    "ktae_beta",
    "ktae_gamma_tf",
    "ktae_top",
    "oar_quantile",
    "oar_beta",
    "oar_noise_std",
    "credit_from_training_forward",
)
#: The adapter's size, which ``arca report --any-rank`` lets a comparison cross.
RANK_FIELDS = ("lora_r", "lora_alpha")
#: What only optimisation decides (step 1 is sampled and scored before any update).
OPTIMISER_FIELDS = (
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "weight_decay",
    "max_steps",
    "num_train_epochs",
    "max_grad_norm",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
)


#: The settings ``arca diagnose`` scores with that its ``diagnose.json`` does
#: not record and its command line does not take (arca.diagnose.completions:
#: ``sample_completions`` samples at temperature 1.0 and top-p 0.95, the
#: weights use the absolute eps floor). A diagnosis that records one of them
#: overrides this.
DIAGNOSE_FIXED: dict[str, Any] = {"weight_eps_mode": "absolute", "temperature": 1.0, "top_p": 0.95}


def diagnosis_settings(diagnosis: dict[str, Any]) -> dict[str, Any]:
    """What an ``arca diagnose`` result was computed with, as
    :data:`METHOD_FIELDS` names it (unrecorded fields left out)."""
    recorded = {
        "model_name_or_path": diagnosis.get("base"),
        "task": diagnosis.get("task"),
        "weight_eps": diagnosis.get("eps"),
        "high_entropy_quantile": diagnosis.get("high_entropy_quantile"),
    }
    fixed = {f: diagnosis.get(f, v) for f, v in DIAGNOSE_FIXED.items()}
    return {f: v for f, v in (recorded | fixed).items() if v is not None}


#: The adapter's shape: a LoRA adapter starts at zero (B = 0), so at step 1 the
#: policy is the initial model whatever its rank, targets or dropout.
ADAPTER_SHAPE_FIELDS = tuple(
    f for f in METHOD_FIELDS if f.startswith("lora_") or f in ("use_dora", "use_rslora")
)


def step1_setup(config: dict[str, Any]) -> tuple[Any, ...]:
    """What decides a run's step-1 batch and how its schemes score it, seed
    aside: its :func:`method_identity` without the trained scheme, the
    optimiser's settings and the adapter's shape (step 1 is sampled and scored
    by the initial model, before any update). Runs that share it and a seed
    sampled and scored the same batch."""
    free = {"token_weighting", *OPTIMISER_FIELDS, *ADAPTER_SHAPE_FIELDS}
    return tuple(v for f, v in method_identity(config).items() if f not in free)


def _frozen(v: Any) -> Any:
    """A config value as a hashable, comparable one (YAML lists and mappings)."""
    if isinstance(v, list | tuple):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _frozen(x)) for k, x in v.items()))
    return v


def method_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`METHOD_FIELDS` of a run config, defaults filled in: two runs
    are seeds of one method exactly when these agree. Under full fine-tuning
    the LoRA settings train nothing and are left out (None)."""
    ident = {f: _frozen(config.get(f, d)) for f, d in METHOD_FIELDS.items()}
    if config.get("lora_target_modules") is None:  # recorded as null, trained these
        ident["lora_target_modules"] = _frozen(LORA_TARGETS)
    if ident["use_peft"] is False:
        for f in METHOD_FIELDS:
            if f.startswith(("lora_", "use_dora", "use_rslora")):
                ident[f] = None
    return ident


def differing_fields(a: dict[str, Any], b: dict[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """The fields in which two :func:`method_identity` differ, outside ``skip``."""
    left_out = set(skip)
    return [f for f in METHOD_FIELDS if f not in left_out and a[f] != b[f]]


def identity_differences(a: dict[str, Any], b: dict[str, Any], skip: Iterable[str] = ()) -> str:
    """How two :func:`method_identity` differ ("" if they do not), outside
    ``skip``: ``field a vs b`` for each."""
    return ", ".join(f"{f} {_show(a[f])} vs {_show(b[f])}" for f in differing_fields(a, b, skip))


def _show(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 24 else text[:20] + "..."


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
    #: each evaluated problem (its text and answer), in the order of the scores;
    #: None where ``eval/completions.jsonl`` does not record them.
    problems: list[str] | None = None
    #: the untrained base model's evaluation with this run's settings (``eval-base/``).
    base_eval: dict[str, Any] | None = None
    #: the learning curve (``curve.jsonl``): ``(step, greedy accuracy)`` per evaluation.
    curve: list[tuple[int, float]] = field(default_factory=list)
    #: problem keys of the scores that are not the evaluation's (the curve's).
    keys: dict[str, list[str]] = field(default_factory=dict)
    #: the name of its method in the report (:func:`group_methods`): ``name``,
    #: or ``name [what differs]`` when runs of one name are different methods.
    label: str = ""

    @property
    def identity(self) -> dict[str, Any]:
        """What defines the run's method (:func:`method_identity`)."""
        return method_identity(self.config)

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
    #: the runs' own name (``name`` adds what differs when names collide)
    run_name: str = ""
    #: the identity fields in which other runs of the same name differ
    collision: tuple[str, ...] = ()

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

    @property
    def identity(self) -> dict[str, Any]:
        return self.runs[0].identity

    def problem_matrix(self, key: str) -> np.ndarray | None:
        """``(seeds, problems)`` per-problem scores, or None (:meth:`scores` says why)."""
        return self.scores(key)[0]

    def scores(self, key: str) -> tuple[np.ndarray | None, list[str] | None, str]:
        """``(matrix, problems, "")``: the ``(seeds, problems)`` per-problem
        scores, every seed's row on the same problems in the order of
        ``problems``; or ``(None, None, why)`` when a seed has no per-problem
        scores, does not record its problems, or was evaluated on others."""
        runs = self.runs
        if any(r.problem_scores.get(key) is None for r in runs):
            where = "curve.jsonl" if key.startswith("curve") else "eval/completions.jsonl"
            return None, None, f"no per-problem scores ({where})"
        if key in CURVE_KEYS:
            first_keys = runs[0].keys[key]
            if any(r.keys.get(key) != first_keys for r in runs):
                return None, None, "seeds' learning curves cover different problems or steps"
            return np.stack([r.problem_scores[key] for r in runs]), list(first_keys), ""
        if any(r.problems is None for r in runs):
            return (
                None,
                None,
                (
                    "eval/completions.jsonl does not record each problem's text; "
                    "run arca eval --run RUN again"
                ),
            )
        first = runs[0].problems
        assert first is not None
        rows = []
        for r in runs:
            order = _order_like(first, r.problems or [])
            if order is None:
                return (
                    None,
                    None,
                    (
                        f"seeds evaluated on different problems (seed {runs[0].seed}: "
                        f"{len(first)}, seed {r.seed}: {len(r.problems or [])}, "
                        f"{_shared(first, r.problems or [])} shared)"
                    ),
                )
            rows.append(r.problem_scores[key][order])
        return np.stack(rows), list(first), ""


def _order_like(ref: Sequence[str], keys: Sequence[str]) -> list[int] | None:
    """Indices that put ``keys`` in ``ref``'s order (the k-th copy of a problem
    with the k-th), or None when they are not the same problems."""
    if Counter(ref) != Counter(keys):
        return None
    where: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        where.setdefault(k, []).append(i)
    return [where[k].pop(0) for k in ref]


def _shared(a: Sequence[str], b: Sequence[str]) -> int:
    return sum((Counter(a) & Counter(b)).values())


def aligned(a: Method, b: Method, key: str) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """``a``'s and ``b``'s per-problem scores on the same problems, in the same
    order (paired by each problem's text and answer, never by position), and
    ``""``; or ``(None, None, why)`` when they cannot be paired."""
    ma, pa, why = a.scores(key)
    if ma is None:
        return None, None, why
    mb, pb, why = b.scores(key)
    if mb is None:
        return None, None, why
    assert pa is not None and pb is not None
    order = _order_like(pa, pb)
    if order is None:
        if len(pa) != len(pb):
            return None, None, f"different held-out sets ({len(pa)} vs {len(pb)} problems)"
        return None, None, f"different held-out problems ({_shared(pa, pb)} of {len(pa)} shared)"
    return ma, mb[:, order], ""


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


def _problem_scores(
    path: Path, k: int, correct_reward: float
) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """Per-problem greedy correctness (0/1) and pass@k from an evaluation's
    completions, a completion counting as correct when its reward is at least
    ``correct_reward`` (as ``arca eval`` counts it), and each problem's key
    (its text and answer; None if a record lacks the text)."""
    greedy: dict[int, float] = {}
    samples: dict[int, list[bool]] = {}
    keys: dict[int, str | None] = {}
    for rec in _read_jsonl(path):
        try:
            i, reward = int(rec["index"]), float(rec["reward"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: a record lacks a numeric 'index' or 'reward' ({e!r}); "
                "delete the eval/ folder and run `arca eval --run` again"
            ) from None
        keys.setdefault(i, _problem_key(rec))
        if rec.get("mode") == "greedy":
            greedy[i] = float(reward >= correct_reward)
        else:
            samples.setdefault(i, []).append(reward >= correct_reward)
    n = max([*greedy, *samples], default=-1) + 1
    out: dict[str, np.ndarray] = {}
    if greedy and len(greedy) == n:
        out["greedy"] = np.array([greedy[i] for i in range(n)])
    if samples and len(samples) == n and all(len(s) >= k for s in samples.values()):
        out[f"pass@{k}"] = np.array(
            [pass_at_k(len(samples[i]), sum(samples[i]), k) for i in range(n)]
        )
    ordered = [keys.get(i) for i in range(n)]
    problems = None if any(x is None for x in ordered) else [str(x) for x in ordered]
    return out, problems


def _problem_key(rec: dict[str, Any]) -> str | None:
    """What makes a held-out problem the same problem: its text (a string, or a
    conversation) and its answer."""
    if rec.get("problem") is None:
        return None
    return json.dumps([rec["problem"], rec.get("answer")], sort_keys=True)


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
            ok = float(run.eval.get("correct_reward", config.get("correct_reward", 1.0)))
            run.problem_scores, run.problems = _problem_scores(comp, int(run.eval.get("k", 4)), ok)
    base = p / "eval-base" / "results.json"
    if base.is_file():
        run.base_eval = _read_json(base)
    if (p / CURVE).is_file():
        _load_curve(run, _read_jsonl(p / CURVE), p / CURVE)
    return run


#: Per-problem scores of a learning curve: the area under it (greedy
#: correctness averaged over the training steps, trapezoids from step 0) and
#: its last point.
CURVE_KEYS = ("curve_auc", "curve_final")


def _load_curve(run: Run, recs: list[dict[str, Any]], path: Path) -> None:
    """``run.curve`` and the per-problem curve scores from ``curve.jsonl``
    records (a later record of a step replaces an earlier one)."""
    by_step: dict[int, dict[str, Any]] = {}
    for rec in recs:
        try:
            by_step[int(rec["step"])] = rec
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: a record lacks a numeric 'step'; delete the file") from None
    steps = sorted(by_step)
    run.curve = [(s, float(by_step[s]["greedy_accuracy"])) for s in steps]
    shas = {by_step[s].get("problems_sha") for s in steps}
    sizes = {len(by_step[s].get("correct") or []) for s in steps}
    if len(shas) != 1 or len(sizes) != 1 or 0 in sizes or len(steps) < 2:
        return  # no per-problem curve to pair (older file, or one point)
    correct = np.array([by_step[s]["correct"] for s in steps], dtype=np.float64)
    x = np.array(steps, dtype=np.float64)
    # Trapezoids over the steps, divided by their span: mean accuracy over training.
    area = ((correct[1:] + correct[:-1]) / 2 * np.diff(x)[:, None]).sum(axis=0) / (x[-1] - x[0])
    run.problem_scores["curve_auc"] = area
    run.problem_scores["curve_final"] = correct[-1]
    ident = f"{shas.pop()}@{','.join(map(str, steps))}"
    for key in CURVE_KEYS:
        run.keys[key] = [f"{ident}#{i}" for i in range(correct.shape[1])]


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
    """Runs grouped by name and :func:`method_identity`, in the paper's order
    (uniform, surprisal, entropy, divergence, ARCA by rank, then any other
    scheme). Runs of one name that differ in identity are different methods,
    each labelled ``name [field value, ...]`` with the fields that tell them
    apart (:attr:`Method.collision` names them). Two runs of one method with
    the same seed are an error: the tables could not tell them apart."""
    by: dict[str, dict[tuple[Any, ...], list[Run]]] = {}
    for r in runs:
        key = tuple(r.identity.values())
        by.setdefault(r.name, {}).setdefault(key, []).append(r)
    methods = []
    for name, groups in by.items():
        idents = [rs[0].identity for rs in groups.values()]
        differing = [f for f in METHOD_FIELDS if len({i[f] for i in idents}) > 1]
        for rs in groups.values():
            seeds = [r.seed for r in rs]
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            if dup:
                where = ", ".join(str(r.path) for r in rs if r.seed in dup)
                raise ValueError(f"runs named {name!r} share seed {dup[0]}: {where}")
            label = name
            if differing:
                ident = rs[0].identity
                shown = [f"{f} {_show(ident[f])}" for f in differing[:3]]
                more = f", +{len(differing) - 3} more" if len(differing) > 3 else ""
                label = f"{name} [{', '.join(shown)}{more}]"
            for r in rs:
                r.label = label
            methods.append(Method(label, sorted(rs, key=lambda r: r.seed), name, tuple(differing)))
    labels = [m.name for m in methods]
    for m in methods:  # shortened values could coincide: never two methods of one label
        if labels.count(m.name) > 1:
            m.name = f"{m.name} #{labels[: methods.index(m) + 1].count(m.name)}"
            for r in m.runs:
                r.label = m.name
    for m in methods:  # a ceiling is said to be one wherever its name is shown
        if m.scheme in GROUND_TRUTH_SCHEMES and CEILING_TAG not in m.name:
            m.name = f"{m.name} {CEILING_TAG}"
            for r in m.runs:
                r.label = m.name
    return sorted(methods, key=_order)
