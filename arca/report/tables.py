"""The report's tables, in the paper's layout (Tables 1-3) plus the ground-truth
credit tables, as plain rows.

Each table is a list of dicts (column -> cell); :func:`markdown` renders one,
:func:`csv_rows` flattens all of them for ``tables.csv``. Numeric cells are
:class:`Cell` (mean and, with several seeds, a 95% bootstrap interval).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arca.credit import compares_with_base, scheme_label
from arca.credit.diagnostics import classify_regime
from arca.report.runs import (
    RANK_FIELDS,
    SCHEME_FIELDS,
    SCHEME_ORDER,
    Method,
    Run,
    aligned,
    diagnosis_settings,
    differing_fields,
    identity_differences,
    step1_setup,
)
from arca.run_folder import BASE_EVAL_FIELDS, eval_settings
from arca.stats import bootstrap_ci, mde, paired_bootstrap, seeds_needed

#: Credit-correctness metrics as logged (``credit/<metric>``) and their column names.
CORRECTNESS = {
    "prefix_blame": "prefix blame",
    "error_lift": "error lift",
    "top1_hit": "top-1 hit",
    "top3_hit": "top-3 hit",
    "result_share": "result share",
    "template_share": "template share",
}
#: Shadow tables, one per metric: (metric key, title).
SHADOW_METRICS = [
    ("gini", "Gini"),
    ("effective_ratio", "EffN/T"),
    ("effective_n", "EffN"),
    *CORRECTNESS.items(),
]
UNDEFINED = "undefined (policy = initial model)"
NO_LORA = "undefined (no LoRA layers)"


@dataclass(frozen=True)
class Cell:
    value: float
    low: float = math.nan
    high: float = math.nan
    seeds: int = 1
    #: "num" (0.123), "pct" (12.3%) or "pp" (a difference: +1.2 pp).
    unit: str = "num"

    @classmethod
    def of(cls, values: Sequence[float], *, unit: str = "num") -> Cell:
        """Mean and interval over the seeds that have a value (``seeds`` counts them)."""
        m, lo, hi = bootstrap_ci(values)
        n = sum(1 for v in values if v is not None and not math.isnan(v))
        return cls(m, lo, hi, n, unit)

    def __str__(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        f = {
            "pct": lambda x: f"{100 * x:.1f}%",
            "pp": lambda x: f"{100 * x:+.1f} pp",
            "num": lambda x: f"{x:.3f}",
        }[self.unit]
        if math.isnan(self.low):
            return f(self.value)
        return f"{f(self.value)} [{f(self.low)}, {f(self.high)}]"


Table = list[dict[str, Any]]


def kind(m: Method) -> str:
    return "full" if m.full else f"LoRA r{m.rank}"


def config_table(methods: Sequence[Method]) -> Table:
    """Table 1: what each run was."""
    rows = []
    for m in methods:
        c = m.runs[0].config
        k = c.get("num_generations", "?")
        bs = c.get("per_device_train_batch_size", 0) * c.get("gradient_accumulation_steps", 1)
        rows.append(
            {
                "run": m.name,
                "scheme": m.scheme,
                "estimator": c.get("advantage_estimator", "grpo"),
                "trains": "all weights" if m.full else f"LoRA r {m.rank}",
                "alpha": None if m.full else c.get("lora_alpha"),
                "lr": c.get("learning_rate"),
                "steps": c.get("max_steps"),
                "prompts x K": f"{bs // k if isinstance(k, int) and k else '?'} x {k}",
                "beta": c.get("beta"),
                "eps": c.get("weight_eps"),
                "model": c.get("model_name_or_path"),
                "task": c.get("task")
                + (
                    f" level {c['level']}" if c.get("task") == "arithmetic" and "level" in c else ""
                ),
                "seeds": ", ".join(str(s) for s in m.seeds),
            }
        )
    return rows


def accuracy_table(methods: Sequence[Method], k: int = 4) -> Table:
    """Table 2: held-out greedy accuracy, pass@k, train reward averaged over
    steps, and how many held-out problems each evaluation covered, led by the
    untrained base model's row(s) (:func:`base_accuracy_rows`)."""
    return base_accuracy_rows(methods, k) + [
        {
            "method": m.name,
            "greedy acc": Cell.of(m.per_seed("greedy_accuracy", source="eval"), unit="pct"),
            f"pass@{k}": Cell.of(m.per_seed(f"pass@{k}", source="eval"), unit="pct"),
            "train reward": Cell.of(m.per_seed("reward")),
            "problems": problems_evaluated(m),
        }
        for m in methods
    ]


#: The accuracy table's row of the untrained base model.
BASE_MODEL = "base model (untrained)"


def base_accuracy_rows(methods: Sequence[Method], k: int = 4) -> Table:
    """The untrained base model's greedy accuracy and pass@k, from the runs'
    ``eval-base/`` folders (``arca eval --run RUN --base``). A base evaluation
    stands beside the runs whose settings it shares (model, task, prompts,
    grading, decoding, held-out problems, k; its sampling seed one of theirs);
    runs without one get a row that says why there is no number, never a number
    measured another way. One row when the runs share one base evaluation."""
    runs = [r for m in methods for r in m.runs]
    targets = [r for r in runs if r.eval] or runs
    bases = list(dict.fromkeys(r.path for r in runs if r.base_eval))
    base_of = {r.path: r.base_eval for r in runs if r.base_eval}
    groups: dict[Path, list[Run]] = {}
    unmatched: list[tuple[Run, str]] = []
    for r in targets:
        why = ""
        for p in bases:
            diff = _base_differences(base_of[p], r, k)
            if not diff:
                groups.setdefault(p, []).append(r)
                break
            why = why or f"{diff} (base in {p}/eval-base)"
        else:
            unmatched.append((r, why))
    for p, rs in list(groups.items()):
        seed = base_of[p].get("seed")
        seeds = sorted({int(r.eval.get("seed", r.seed)) if r.eval else r.seed for r in rs})
        if seed not in seeds:  # pass@k would be a draw no run was measured with
            del groups[p]
            why = f"sampled with seed {seed}, the runs with {', '.join(map(str, seeds))}"
            unmatched += [(r, f"{why} (base in {p}/eval-base)") for r in rs]

    def label(rs: Sequence[Run]) -> str:
        if len(groups) + bool(unmatched) == 1:
            return BASE_MODEL
        names = list(dict.fromkeys(r.label or r.name for r in rs))
        return f"{BASE_MODEL}, beside {', '.join(names)}"

    rows: Table = []
    for p, rs in groups.items():
        b = base_of[p]
        rows.append(
            {
                "method": label(rs),
                "greedy acc": Cell(float(b["greedy_accuracy"]), unit="pct"),
                f"pass@{k}": Cell(float(b[f"pass@{k}"]), unit="pct"),
                "train reward": "-",
                "problems": str(b["problems"]),
            }
        )
    if unmatched:
        first, why = unmatched[0]
        fix = f"run arca eval --run {first.path} --base"
        rows.append(
            {
                "method": label([r for r, _ in unmatched]),
                "greedy acc": f"n/a (evaluated with other settings: {why}; {fix})"
                if why
                else f"n/a (not evaluated: {fix})",
                f"pass@{k}": "n/a",
                "train reward": "-",
                "problems": "-",
            }
        )
    return rows


def _base_differences(base: dict[str, Any], run: Run, k: int) -> str:
    """How a base-model evaluation's settings differ from a run's ("" if they
    do not): its recorded settings against the run's config, and its problem
    count, k and samples against the run's evaluation."""
    rec = base.get("settings")
    if not isinstance(rec, dict) or "greedy_accuracy" not in base:
        return "its settings or accuracy are not recorded"
    ours = eval_settings(run.config)
    where = f"{run.label or run.name} seed {run.seed}"
    for f, default in BASE_EVAL_FIELDS.items():
        if rec.get(f, default) != ours[f]:
            return f"{f} {rec.get(f, default)!r} for the base, {ours[f]!r} for {where}"
    if f"pass@{k}" not in base:
        return f"no pass@{k} (k = {base.get('k')})"
    for f in ("problems", "k", "samples_per_problem"):
        if run.eval and f in run.eval and run.eval[f] != base.get(f):
            return f"{f} {base.get(f)} for the base, {run.eval[f]} for {where}"
    return ""


def problems_evaluated(m: Method) -> str:
    """The held-out problem counts of ``m``'s evaluations ("200"; "20, 200" when
    its seeds differ; "-" when none was evaluated)."""
    counts = sorted({int(r.eval["problems"]) for r in m.runs if r.eval and "problems" in r.eval})
    return ", ".join(str(c) for c in counts) or "-"


def _paired(
    a: np.ndarray | None, b: np.ndarray | None, row: dict[str, Any], label: str, why: str = ""
) -> None:
    """Paired bootstrap of ``a`` against ``b`` (seeds x problems, the same
    problems in the same order: :func:`arca.report.runs.aligned`) into ``row``;
    n/a with ``why`` when there is nothing to pair."""
    if a is None or b is None:
        row[f"d {label}"] = Cell(math.nan)
        row[f"p ({label})"] = f"n/a: {why or 'no per-problem scores (eval/completions.jsonl)'}"
        row[f"MDE ({label})"] = Cell(math.nan)
        return
    r = paired_bootstrap(a, b)
    row[f"d {label}"] = Cell(r["diff"], r["low"], r["high"], a.shape[0], unit="pp")
    row[f"p ({label})"] = f"{r['p']:.3f}"
    # The smallest true difference this comparison finds with 80% power.
    row[f"MDE ({label})"] = Cell(r["mde"], unit="pp")


def uniform_of(m: Method, methods: Sequence[Method], any_rank: bool = False) -> Method | None:
    """The uniform run ``m`` is compared with: the one that differs from it in
    the scheme alone (:data:`arca.report.runs.SCHEME_FIELDS`: same model, task,
    data, level, rank, learning rate and every other defining setting). With
    ``any_rank`` its rank may differ too (the same rank first, else the
    nearest, the larger on a tie). None if there is none."""
    skip = SCHEME_FIELDS + (RANK_FIELDS if any_rank else ())
    cands = [
        b
        for b in methods
        if b is not m
        and b.scheme == "uniform"
        and not identity_differences(m.identity, b.identity, skip)
    ]
    return min(
        cands,
        key=lambda b: (abs((b.rank or 0) - (m.rank or 0)), -(b.rank or 0)),
        default=None,
    )


def versus_uniform_table(
    methods: Sequence[Method], k: int = 4, baseline: str | None = None, any_rank: bool = False
) -> Table:
    """Each method against uniform on the same held-out problems (paired
    bootstrap over problems and seeds, problems paired by their text). Empty
    if there is no uniform run. Each method is compared with
    :func:`uniform_of` it (``any_rank``: across LoRA ranks); a method with no
    such run gets a row that says why. ``baseline`` names the method every
    other one is compared with instead. ``differs`` says how the two differ
    beyond the scheme."""
    names = [m.name for m in methods]
    if baseline is not None and baseline not in names:
        raise ValueError(f"--baseline: no method named {baseline!r}; valid: {', '.join(names)}")
    uniforms = [m for m in methods if m.scheme == "uniform"]
    if baseline is None and not uniforms:
        return []
    rows = []
    for m in methods:
        if baseline is not None:
            base = next(b for b in methods if b.name == baseline)
        elif m.scheme == "uniform":
            continue
        else:
            base = uniform_of(m, methods, any_rank)
        if base is m:
            continue
        if base is None:
            near = min(uniforms, key=lambda b: len(differing_fields(m.identity, b.identity)))
            why = (
                f"n/a: no uniform run with the same settings (the nearest, {near.name}: "
                f"{identity_differences(m.identity, near.identity, SCHEME_FIELDS)}; "
                f"{'' if any_rank else '--any-rank compares across LoRA ranks, '}"
                "--baseline METHOD with any method)"
            )
            row = {"method": m.name, "vs": "-", "seeds": f"{len(m.runs)}"}
            for label in ("greedy acc", f"pass@{k}"):
                row |= {f"d {label}": Cell(math.nan), f"p ({label})": why}
                row[f"MDE ({label})"] = Cell(math.nan)
            rows.append(row | {"differs": "-", "note": ""})
            continue
        n, nb = len(m.runs), len(base.runs)
        row: dict[str, Any] = {"method": m.name, "vs": base.name, "seeds": f"{n} vs {nb}"}
        for key, label in (("greedy", "greedy acc"), (f"pass@{k}", f"pass@{k}")):
            a, b, why = aligned(m, base, key)
            _paired(a, b, row, label, why)
        row["differs"] = identity_differences(m.identity, base.identity, SCHEME_FIELDS)
        row["note"] = (
            "one seed: the interval covers the problems, not seed-to-seed variation"
            if min(n, nb) == 1
            else ""
        )
        rows.append(row)
    return rows


def curve_table(
    methods: Sequence[Method], baseline: str | None = None, any_rank: bool = False
) -> Table:
    """Learning curves (``eval_every``): each method's final held-out greedy
    accuracy and the area under its curve (greedy accuracy averaged over
    training, trapezoids from step 0), means over seeds with intervals, and
    each against its uniform run (:func:`uniform_of`, or ``baseline``) by the
    paired bootstrap over seeds and problems, with the minimum detectable
    effect. Empty when no run recorded a curve."""
    with_curve = [m for m in methods if any(r.curve for r in m.runs)]
    if not with_curve:
        return []
    rows = []
    for m in with_curve:
        row: dict[str, Any] = {
            "method": m.name,
            "seeds": str(sum(1 for r in m.runs if r.curve)),
            "steps": ", ".join(sorted({str(r.curve[-1][0]) for r in m.runs if r.curve})),
            "final acc": Cell.of(
                [r.curve[-1][1] if r.curve else math.nan for r in m.runs], unit="pct"
            ),
            "AUC": Cell.of(
                [
                    float(r.problem_scores["curve_auc"].mean())
                    if "curve_auc" in r.problem_scores
                    else math.nan
                    for r in m.runs
                ],
                unit="pct",
            ),
        }
        if baseline is not None:
            base = next((b for b in methods if b.name == baseline), None)
        else:
            base = None if m.scheme == "uniform" else uniform_of(m, methods, any_rank)
        row["vs"] = base.name if base is not None and base is not m else "-"
        for key, label in (("curve_auc", "AUC"), ("curve_final", "final")):
            if base is None or base is m:
                row |= {f"d {label}": "-", f"p ({label})": "-", f"MDE ({label})": "-"}
                continue
            a, b, why = aligned(m, base, key)
            _paired(a, b, row, label, why)
        rows.append(row)
    return rows


def seed_noise(methods: Sequence[Method]) -> dict[str, Any] | None:
    """The A/A spread: the standard deviation of one seed's held-out greedy
    accuracy around its method's mean, pooled over every method with several
    evaluated seeds, and what it implies: the minimum detectable effect of a
    comparison of two methods at the seeds run (:func:`arca.stats.mde` of
    ``sd sqrt(2 / S)``) and the seeds it takes to detect 2, 5 and 10 pp. None
    with fewer than two seeds anywhere."""
    sq, dof, counts = 0.0, 0, []
    for m in methods:
        acc = [float(r.eval["greedy_accuracy"]) for r in m.runs if r.eval]
        if len(acc) >= 2:
            mean = sum(acc) / len(acc)
            sq += sum((x - mean) ** 2 for x in acc)
            dof += len(acc) - 1
            counts.append(len(acc))
    if dof == 0:
        return None
    sd = math.sqrt(sq / dof)
    seeds = min(counts)
    return {
        "sd": sd,
        "dof": dof,
        "seeds": seeds,
        "mde": mde(sd * math.sqrt(2 / seeds)),
        "seeds_needed": {f"{e} pp": seeds_needed(sd, e / 100) for e in (2, 5, 10)},
    }


def seed_spread_table(methods: Sequence[Method], k: int = 4) -> Table:
    """A/A: for every method with several seeds, the two seeds whose greedy
    accuracy differs most, compared on the same problems like any two methods.
    A method-vs-uniform difference smaller than this is within seed noise."""
    rows = []
    for m in methods:
        if len(m.runs) < 2 or not all(r.problem_scores for r in m.runs):
            continue
        scores, _, why = m.scores("greedy")
        if scores is None:
            row = {"method": m.name, "seeds": ", ".join(map(str, m.seeds))}
            _paired(None, None, row, "greedy acc", why)
            _paired(None, None, row, f"pass@{k}", why)
            rows.append(row)
            continue
        i, j = max(
            itertools.combinations(range(len(m.runs)), 2),
            key=lambda p: abs(scores[p[0]].mean() - scores[p[1]].mean()),
        )
        if scores[i].mean() < scores[j].mean():
            i, j = j, i
        row: dict[str, Any] = {
            "method": m.name,
            "seeds": f"{m.runs[i].seed} vs {m.runs[j].seed}",
        }
        _paired(scores[i : i + 1], scores[j : j + 1], row, "greedy acc")
        passk, _, why = m.scores(f"pass@{k}")
        _paired(
            None if passk is None else passk[i : i + 1],
            None if passk is None else passk[j : j + 1],
            row,
            f"pass@{k}",
            why,
        )
        rows.append(row)
    return rows


def concentration_table(methods: Sequence[Method]) -> Table:
    """Table 3: the trained scheme's Gini, effective-token ratio and count and
    the completion length, averaged over training, the regime they fall in,
    and the drift from the initial policy at the end of training."""
    rows = []
    for m in methods:
        g = Cell.of(m.per_seed("credit/gini"))
        e = Cell.of(m.per_seed("credit/effective_ratio"))
        rows.append(
            {
                "method": m.name,
                "trains": kind(m),
                "Gini": g,
                "EffN/T": e,
                "EffN": Cell.of(m.per_seed("credit/effective_n")),
                "T": Cell.of(m.per_seed("credit/length")),
                "drift (final)": Cell.of(m.final("credit/drift_kl")),
                "regime": ZERO_ADAPTER
                if compares_with_base(m.scheme) and never_left_base(m)
                else classify_regime(g.value, e.value).replace(
                    "n/a", "n/a: non-finite Gini or EffN/T logged (a bug upstream, not a regime)"
                ),
            }
        )
    return rows


#: The regime cell of a scheme that compares with the base model in runs whose
#: policy never moved: its weights are uniform by construction, not by finding.
ZERO_ADAPTER = "uniform: policy = base model (e.g. lr 0 in warmup)"


def never_left_base(m: Method) -> bool:
    """Was every logged ARCA residual and drift of every seed exactly 0 (the
    adapter still zero, as after only warm-up steps at lr 0)? False when
    neither was logged."""
    values = [
        v
        for r in m.runs
        for k in ("credit/residual_max", "credit/drift_kl")
        for v in r.series(k)[1]
    ]
    return bool(values) and all(v == 0 for v in values)


def correctness_table(methods: Sequence[Method]) -> Table:
    """The trained scheme's credit correctness, averaged over training: on
    wrong completions with a located error and a negative advantage, the share
    of the weight on the correct prefix (with uniform's on the same rows), the
    lift on the first wrong token and the top-1/3 hit rate; on correct ones, the
    share on the tokens that carry a result. Empty when no run has ground truth."""
    if not any(_has(m, "credit/blamed_fraction") for m in methods):
        return []
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m.name, "trains": kind(m)}
        for key, label in CORRECTNESS.items():
            row[label] = Cell.of(m.per_seed(f"credit/{key}"))
            if key == "prefix_blame":
                row["uniform's blame"] = Cell.of(m.per_seed("credit/uniform/prefix_blame"))
        row["blamed rows"] = Cell.of(m.per_seed("credit/blamed_fraction"))
        rows.append(row)
    return rows


def _has(m: Method, key: str) -> bool:
    return any(key in rec for r in m.runs for rec in r.metrics)


def shadow_tables(
    methods: Sequence[Method], schemes: Sequence[str], base: dict[str, Any] | None = None
) -> dict[str, Table]:
    """Every scheme's values on each run's own batches (shadow diagnostics),
    averaged over training, one table per metric (rows: runs; columns:
    schemes), each led by the base-model row: ``base`` (a diagnosis of the
    initial model, :func:`base_row`) or, without it, the runs' first steps,
    whose batches were sampled and scored before any update."""
    out: dict[str, Table] = {}
    for key, _ in SHADOW_METRICS:
        if not any(_has(m, f"credit/{s}/{key}") for m in methods for s in schemes):
            continue
        if base is not None:
            cells = base["per_key"][key] | {"mean T": Cell(base["mean_length"])}
            leads = [(_marked(base, methods), cells)]
        else:
            leads = _base_from_first_steps(methods, schemes, key)
        # A ground-truth scheme's column says it is a ceiling (scheme_label).
        rows: Table = [
            {
                "run": label,
                "trains": "-",
                **{scheme_label(s): b.get(s, Cell(math.nan)) for s in schemes},
            }
            for label, b in leads
        ]
        for m in methods:
            row: dict[str, Any] = {"run": m.name, "trains": kind(m)}
            for s in schemes:
                row[scheme_label(s)] = (
                    NO_LORA
                    if m.full and s == "arca_local"
                    else Cell.of(m.per_seed(f"credit/{s}/{key}"))
                )
            rows.append(row)
        if key in ("effective_ratio", "effective_n"):  # EffN/T means little without T
            for row, (_, b) in zip(rows, leads, strict=False):
                row["mean T"] = b["mean T"]
            for row, m in zip(rows[len(leads) :], methods, strict=True):
                row["mean T"] = Cell.of(m.per_seed("credit/length"))
        out[f"shadow_{key}"] = rows
    return out


def _marked(base: dict[str, Any], methods: Sequence[Method]) -> str:
    """The diagnosis row's label, saying where it was scored otherwise than
    the runs beside it (another eps, quantile, eps mode, decoding, model or task)."""
    diffs = []
    for f, v in base.get("settings", {}).items():
        theirs = list(dict.fromkeys(str(m.identity[f]) for m in methods if m.identity[f] != v))
        if theirs:
            diffs.append(f"{f} {v} (runs: {', '.join(theirs)})")
    if not diffs:
        return base["label"]
    return f"{base['label'][:-1]}; scored otherwise than the runs: {', '.join(diffs)})"


def _base_from_first_steps(
    methods: Sequence[Method], schemes: Sequence[str], key: str
) -> list[tuple[str, dict[str, Any]]]:
    """The initial model's rows: per :func:`arca.report.runs.step1_setup`, each scheme's value
    at step 1, one value per distinct step-1 batch (one per seed). One row when
    every run shares one setup, else one per setup, labelled with its methods."""
    setups: dict[tuple[Any, ...], list[Run]] = {}
    for m in methods:
        for r in m.runs:
            setups.setdefault(step1_setup(r.config), []).append(r)
    label = "initial model (step-1 batches)"
    leads = []
    for runs in setups.values():
        out: dict[str, Any] = {}
        for s in (*schemes, "mean T"):
            if s != "mean T" and _needs_policy(s):
                out[s] = UNDEFINED
                continue
            metric = "credit/length" if s == "mean T" else f"credit/{s}/{key}"
            seen: dict[int, float] = {}
            for r in runs:
                v = r.at_step_1(metric)
                if not math.isnan(v):
                    seen.setdefault(r.seed, v)
            out[s] = Cell.of(list(seen.values()))
        beside = ", ".join(dict.fromkeys(r.label or r.name for r in runs))
        leads.append((label if len(setups) == 1 else f"{label}, beside {beside}", out))
    return leads


def base_row(diagnosis: dict[str, Any], schemes: Sequence[str]) -> dict[str, Any]:
    """The base-model row of the shadow tables from an ``arca diagnose`` of the
    initial model (its ``diagnose.json``): per metric key, per scheme a
    :class:`Cell` or :data:`UNDEFINED`."""
    model = diagnosis["models"][0]
    per_key: dict[str, dict[str, Any]] = {}
    for key, _ in SHADOW_METRICS:
        cells: dict[str, Any] = {}
        for s in schemes:
            d = model["schemes"].get(s)
            if d is None or d.get("undefined"):
                cells[s] = UNDEFINED if _needs_policy(s) else Cell(math.nan)
                continue
            v = (
                d[key]["mean"]
                if key in ("gini", "effective_ratio", "effective_n")
                else d.get("correctness", {}).get(key, math.nan)
            )
            cells[s] = Cell(math.nan if v is None else float(v))  # null: not computed
        per_key[key] = cells
    n = diagnosis.get("completions", 0)
    src = diagnosis.get("sampled_from") or "source unknown"
    return {
        "label": f"base model ({n} completions, {src}; arca diagnose)",
        "per_key": per_key,
        "mean_length": float(diagnosis.get("mean_length", math.nan)),
        "settings": diagnosis_settings(diagnosis),
    }


def _needs_policy(scheme: str) -> bool:
    """No signal before training (the scheme compares a policy with the initial model)."""
    try:
        return compares_with_base(scheme)
    except ValueError:  # a scheme registered in the run's process, not in this one
        return False


def shadow_schemes(methods: Sequence[Method]) -> list[str]:
    """Schemes with shadow metrics in any run, in the paper's order."""
    seen: dict[str, None] = {}
    for m in methods:
        for r in m.runs:
            for rec in r.metrics[:1]:
                for key in rec:
                    parts = key.split("/")
                    if len(parts) == 3 and parts[0] == "credit" and parts[2] == "gini":
                        seen[parts[1]] = None
    order = {s: i for i, s in enumerate(SCHEME_ORDER)}
    return sorted(seen, key=lambda s: (order.get(s, len(order)), s))


def markdown(rows: Table) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(_md(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_md(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _md(v: Any) -> str:
    """A markdown table cell: escaped, so run names cannot inject markup."""
    import html

    return "" if v is None else html.escape(str(v), quote=False).replace("|", "\\|")


def csv_rows(tables: dict[str, Table]) -> list[dict[str, Any]]:
    """Long format: one line per (table, row, column) with mean and interval."""
    out = []
    for tname, rows in tables.items():
        for r in rows:
            key = next(iter(r.values()))
            for col, v in list(r.items())[1:]:
                if isinstance(v, Cell):
                    out.append(
                        {
                            "table": tname,
                            "row": key,
                            "column": col,
                            "value": _num(v.value),
                            "ci_low": _num(v.low),
                            "ci_high": _num(v.high),
                            "seeds": v.seeds,
                        }
                    )
                else:
                    out.append(
                        {
                            "table": tname,
                            "row": key,
                            "column": col,
                            "value": "" if v is None else v,
                            "ci_low": "",
                            "ci_high": "",
                            "seeds": "",
                        }
                    )
    return out


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))
