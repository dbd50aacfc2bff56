"""``arca report RUN_DIR...``: tables, plots and a token page for a set of runs.

Writes ``report.md`` and ``tables.csv`` (Table 1 configurations, Table 2
held-out accuracy led by the untrained base model's, each method against uniform and seeds of one method against
each other, Table 3 concentration, the trained scheme's credit correctness,
and every scheme's shadow values led by the base model), ``reward.png``,
``concentration.png``, ``residual.png``, ``regimes.png``, ``credit.png``
(correctness against concentration), ``drift.png`` (both against drift from
the initial policy) and ``tokens.html``. Reading only: the run folders are
never modified.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arca import __version__
from arca.credit.diagnostics import SPARSE_RATIO_BELOW, UNIFORM_GINI_BELOW
from arca.io import atomic_write_text
from arca.report import plots, tables, tokens
from arca.report.runs import Method, Run, find_run_dirs, group_methods, load_run

__all__ = ["Method", "Run", "build_report", "find_run_dirs", "load_run", "summary_text"]

PLOT_TITLES = {
    "reward.png": "train reward",
    "curves.png": "learning curves",
    "concentration.png": "concentration",
    "residual.png": "adapter residual",
    "regimes.png": "regimes",
    "credit.png": "credit correctness against concentration",
    "drift.png": "concentration and correctness against drift",
}


def load_base(path: str | Path) -> dict[str, Any]:
    """An ``arca diagnose`` of the initial model: its folder or ``diagnose.json``."""
    import json

    p = Path(path)
    p = p / "diagnose.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"--base: no diagnose.json at {p} (run arca diagnose --out DIR)")
    try:
        res = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e.msg})") from None
    if not isinstance(res, dict) or not res.get("models"):
        raise ValueError(f"{p}: not an arca diagnose result (no 'models')")
    return res


def build_report(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    failed: Sequence[tuple[str, str]] = (),
    title: str = "arca report",
    base: str | Path | None = None,
    baseline: str | None = None,
    any_rank: bool = False,
) -> dict[str, Any]:
    """Build the report for the runs in ``paths`` into ``out``.

    ``failed`` lists ``(run label, log path)`` of runs that did not finish, so
    the report says what is missing. ``base``: an ``arca diagnose`` of the
    initial model (folder or ``diagnose.json``) for the base-model row; without
    it the row comes from the runs' first steps. ``baseline``: the method
    every other one is compared with (default: each with the uniform run that
    differs from it in the scheme alone; ``any_rank``: or in its LoRA rank).
    Returns ``{"methods", "tables", "files"}``.
    """

    runs = [load_run(d) for d in find_run_dirs(paths)]
    methods = group_methods(runs)
    k = next((int(r.eval.get("k", 4)) for r in runs if r.eval), 4)
    schemes = tables.shadow_schemes(methods)
    diagnosis = load_base(base) if base is not None else None
    brow = tables.base_row(diagnosis, schemes) if diagnosis else None
    tbl = {
        "table1_config": tables.config_table(methods),
        "table2_accuracy": tables.accuracy_table(methods, k),
        "versus_uniform": tables.versus_uniform_table(methods, k, baseline, any_rank),
        "seed_spread": tables.seed_spread_table(methods, k),
        "learning_curves": tables.curve_table(methods, baseline, any_rank),
        "table3_concentration": tables.concentration_table(methods),
        "credit_correctness": tables.correctness_table(methods),
        **tables.shadow_tables(methods, schemes, brow),
    }
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    drawn = {
        "reward.png": plots.plot_reward(methods, dest / "reward.png"),
        "curves.png": plots.plot_curves(methods, dest / "curves.png"),
        "concentration.png": plots.plot_concentration(methods, dest / "concentration.png"),
        "residual.png": plots.plot_residual(methods, dest / "residual.png"),
        "regimes.png": plots.plot_regimes(methods, dest / "regimes.png"),
        "credit.png": plots.plot_credit(methods, schemes, dest / "credit.png"),
        "drift.png": plots.plot_drift(methods, schemes, dest / "drift.png"),
    }
    for name, path in drawn.items():
        if path is None:  # nothing to draw: an earlier report's file must not pass for this one's
            (dest / name).unlink(missing_ok=True)
    files = [p for p in drawn.values() if p is not None]
    label, samples = tokens.pick_samples(methods)
    truths = {ground_truth_of(r.config) for r in runs}
    truth = next(iter(truths)) if len(truths) == 1 else "differs between runs; report.md says which"
    files.append(
        atomic_write_text(dest / "tokens.html", tokens.render(label, samples, truth=truth))
    )
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, ["table", "row", "column", "value", "ci_low", "ci_high", "seeds"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(tables.csv_rows(tbl))
    files.append(atomic_write_text(dest / "tables.csv", buf.getvalue()))
    plotted = [name for name, p in drawn.items() if p is not None]
    md = _markdown(title, runs, methods, tbl, k, failed, __version__, diagnosis, plotted)
    files.append(atomic_write_text(dest / "report.md", md))
    return {"methods": methods, "tables": tbl, "files": [f for f in files if f is not None]}


def _markdown(
    title: str,
    runs: Sequence[Run],
    methods: Sequence[Method],
    tbl: dict[str, tables.Table],
    k: int,
    failed: Sequence[tuple[str, str]],
    version: str,
    diagnosis: dict[str, Any] | None,
    plotted: Sequence[str],
) -> str:
    esc = tables._md
    seeds = sorted({s for m in methods for s in m.seeds})
    multi = any(len(m.runs) > 1 for m in methods)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"# {esc(title)}",
        "",
        f"{len(runs)} runs: {len(methods)} methods x seeds {', '.join(map(str, seeds))}. "
        f"Generated {now} by arca {version}.",
        "",
    ]
    if multi:
        lines += [
            "Cells are the mean over seeds with a 95% percentile-bootstrap interval over seeds "
            "in brackets.",
            "",
        ]
    else:
        lines += ["**One seed**: no interval covers seed-to-seed variation.", ""]
    lines += _collision_note(methods)
    missing = [r.path for r in runs if not r.eval]
    if missing:
        lines += ["Not evaluated (no eval/results.json): " + ", ".join(esc(p) for p in missing), ""]
    if failed:
        lines += ["**Failed runs** (not in the tables):", ""]
        lines += [f"- {esc(name)}: see `{esc(log)}`" for name, log in failed]
        lines.append("")
    lines += [
        "## Table 1: configurations",
        "",
        tables.markdown(tbl["table1_config"]),
        f"## Table 2: held-out accuracy (greedy accuracy, pass@{k}, train reward averaged over steps)",
        "",
        tables.markdown(tbl["table2_accuracy"]),
    ]
    if any(_is_base(r) for r in tbl["table2_accuracy"]):
        lines += [
            f"`{tables.BASE_MODEL}`: the model the runs started from, without training, on the "
            "same held-out problems with the same prompts, grading and decoding "
            "(`arca eval --run RUN --base`, into `RUN/eval-base/`; a sweep evaluates it once per "
            "setting). Its number stands only beside runs evaluated exactly so.",
            "",
        ]
    counts = {r["problems"] for r in tbl["table2_accuracy"] if r["problems"] != "-"}
    sets = {tuple(r.problems) for r in runs if r.eval and r.problems is not None}
    if len(counts) > 1 or len(sets) > 1:
        lines += [
            "**The evaluations cover different held-out sets** (another "
            + ("count: see `problems`" if len(counts) > 1 else "task, level, data or split")
            + "): their accuracies are not comparable, and the paired tests below say n/a "
            "for them. Evaluate every run on its whole held-out set (`arca eval --run RUN` "
            "without `--limit`) of the same task and split.",
            "",
        ]
    if tbl["versus_uniform"]:
        against = sorted({tables._md(r["vs"]) for r in tbl["versus_uniform"]} - {"-"})
        lines += [
            f"### Against {', '.join(against) or 'uniform'} on the same held-out problems",
            "",
            "Difference in percentage points (pp) with a 95% paired-bootstrap interval: each of "
            "10,000 replicates resamples the problems (shared by both methods, paired by their "
            "text and answer, never by position) and each method's seeds; p is the two-sided "
            "bootstrap p-value. Each method is compared with the one in `vs`: the uniform run "
            "that differs from it in the scheme alone (same model, task, data, level, LoRA rank "
            "or full fine-tuning, learning rate and every other setting; `--any-rank`: at the "
            "nearest rank when none has its own), unless `--baseline` names another; `differs` "
            "says how the two differ beyond the scheme. Evaluations of other problems are n/a.",
            "",
            tables.markdown(tbl["versus_uniform"]),
        ]
    if tbl["seed_spread"]:
        lines += [
            "### A/A: seeds of the same method against each other",
            "",
            "For each method, the two seeds whose greedy accuracy differs most, compared like two "
            "methods (over the problems only; as the largest of the pairs, its p-value is not "
            "corrected for that choice). A difference from uniform no larger than this is within "
            "seed noise.",
            "",
            tables.markdown(tbl["seed_spread"]),
        ]
    lines += _power_lines(methods, tbl)
    if tbl["learning_curves"]:
        lines += [
            "## Learning curves: held-out greedy accuracy during training",
            "",
            "Each run evaluated a fixed subset of its held-out problems greedily before "
            "training (step 0), every `eval_every` steps and at its last step (`curve.jsonl`). "
            "**AUC**: the area under the curve divided by its span, i.e. greedy accuracy "
            "averaged over training (trapezoids from step 0); **final**: its last point. Each "
            "method is compared with its uniform run on the same problems at the same steps "
            "(paired bootstrap over seeds and problems); **MDE**: the smallest true difference "
            "that comparison detects with 80% power (2.8 standard errors of the bootstrap): "
            "a difference whose interval includes 0 may still be as large as the MDE.",
            "",
            tables.markdown(tbl["learning_curves"]),
        ]
    lines += [
        "## Table 3: token-weight concentration (trained scheme, averaged over training)",
        "",
        f"Regimes: uniform broadcast if Gini < {UNIFORM_GINI_BELOW}, sparse if "
        f"EffN/T < {SPARSE_RATIO_BELOW}, else middle regime (arca's thresholds; the paper "
        "gives none and calls the sparse end 'spuriously sparse': whether sparse credit is "
        "spurious is what the credit-correctness tables measure). EffN = 1 / sum w^2 is the "
        "effective number of tokens, T the mean completion length: EffN/T alone moves with T. "
        "drift (final): mean per-token KL of the sampled tokens from the initial policy over "
        "the last 10% of steps.",
        "",
        tables.markdown(tbl["table3_concentration"]),
    ]
    lines += _dropout_note(methods)
    lines += _zero_adapter_note(tbl["table3_concentration"])
    if tbl["credit_correctness"]:
        lines += [
            "## Credit correctness (trained scheme, averaged over training)",
            "",
            "On wrong completions with a located first error and a negative advantage (their "
            "tokens are pushed down): **prefix blame**, the share of the weight on the tokens "
            "before the first wrong token (tokens that were right; uniform's value on the same "
            "rows beside it, lower is better); **error lift**, T times the weight on the first "
            "wrong token (uniform: 1); **top-k hit**, whether the first wrong token is among the "
            "k highest-weighted (ties broken at random: uniform scores k/T). On correct "
            "completions: **result share**, the weight on the tokens that carry a result (each "
            "step's value, the answer), and **template share**, on pure template tokens "
            "(whitespace, punctuation, `\\boxed{`, end of sequence). **blamed rows**: the "
            "fraction of each batch the error metrics average over.",
            "",
            *ground_truth_lines(runs),
            tables.markdown(tbl["credit_correctness"]),
        ]
    else:
        tasks = sorted({str(r.config.get("task", "?")) for r in runs})
        lines += [
            "## Credit correctness",
            "",
            f"Not measured: the task ({esc(', '.join(tasks))}) has no error locator, so arca "
            "cannot say which token of a wrong completion was the first error. Concentration "
            "alone does not say whether credit is right.",
            "",
        ]
    shadow = [(key, t) for key, t in tables.SHADOW_METRICS if f"shadow_{key}" in tbl]
    if shadow:
        base_text = (
            "The first row is the base model before any training, from an arca diagnose of it "
            f"({esc(diagnosis.get('completions'))} completions, "
            f"{esc(diagnosis.get('sampled_from') or 'source unknown')}); its error metrics average "
            "over every wrong completion with a located error (a diagnosis has no advantages), "
            "the runs' rows over those with a negative advantage."
            if diagnosis
            else "The first row is the initial model: each run's step-1 batch was sampled and "
            "scored before any update (one batch per seed). Runs whose step-1 batches differ "
            "in more than the seed (another model, task, level, data, batch, K, decoding or "
            "scheme setting; not the trained scheme, learning rate or LoRA rank, which do not "
            "act before the first update) get an initial-model row each, labelled with their "
            "methods."
        )
        lines += [
            "## Shadow diagnostics: every scheme on each run's batches",
            "",
            "Each column is what that scheme's weights would have been on the completions the "
            f"run actually sampled, averaged over training. {base_text} Divergence and ARCA "
            "compare with the initial model and have no signal before training.",
            "",
        ]
        for key, t in shadow:
            lines += [f"### {t}", "", tables.markdown(tbl[f"shadow_{key}"])]
    lines += ["## Plots", ""]
    for name in plotted:
        lines += [f"![{PLOT_TITLES[name]}]({name})", ""]
    lines += [
        "## Token weights",
        "",
        "[tokens.html](tokens.html): sampled completions, one column per scheme, each token "
        "coloured by its weight; the first wrong token of a wrong completion is outlined.",
        "",
    ]
    return "\n".join(lines)


def _power_lines(methods: Sequence[Method], tbl: dict[str, tables.Table]) -> list[str]:
    """What "no difference" means here: the A/A spread of one seed's accuracy,
    the smallest difference the seeds run could detect, and the seeds it would
    take to detect smaller ones."""
    noise = tables.seed_noise(methods)
    if noise is None:
        if any(r.get("d greedy acc") for r in tbl["versus_uniform"]):
            return [
                "**Power.** With one seed per method the `MDE` columns cover the problems "
                "only, not seed-to-seed variation: the smallest difference that could be "
                "detected is larger than they say. Run several seeds (`--seeds`).",
                "",
            ]
        return []
    need = ", ".join(f"{e}: {n} seeds" for e, n in noise["seeds_needed"].items())
    return [
        f"**Power (from the A/A spread).** One seed's held-out greedy accuracy varies around "
        f"its method's mean with a standard deviation of {100 * noise['sd']:.1f} pp (pooled "
        f"over the methods with several seeds, {noise['dof']} degrees of freedom). With "
        f"{noise['seeds']} seeds per method, a difference between two methods smaller than "
        f"about {100 * noise['mde']:.1f} pp can be missed (80% power, 95% interval); to "
        f"detect a difference of {need} per method. The `MDE` columns give the same for "
        "each comparison from its own bootstrap.",
        "",
    ]


def ground_truth_of(config: dict[str, Any]) -> str:
    """Which ground truth a run's correctness metrics were measured against,
    from its config: the exact locator, a custom one, or Monte-Carlo values."""
    loc = config.get("error_locator")
    if loc == "mc":
        who = "the current policy" if config.get("mc_model") == "policy" else "the base model"
        return (
            f"Monte-Carlo (k = {config.get('mc_k', 4)}, {config.get('mc_cut', 'step')} cuts, "
            f"{config.get('mc_search', 'binary')} search, estimated by {who}), every "
            f"{config.get('mc_every', 10)} steps on up to {config.get('mc_completions', 8)} "
            "completions per process"
        )
    if loc:
        return f"the task's error_locator {loc}"
    return f"exact: the {config.get('task', 'arithmetic')} task's worked solutions"


def ground_truth_lines(runs: Sequence[Run]) -> list[str]:
    """One line per distinct ground truth among ``runs``, naming the methods."""
    by: dict[str, list[str]] = {}
    for r in runs:
        names = by.setdefault(ground_truth_of(r.config), [])
        if r.name not in names:
            names.append(r.name)
    if len(by) == 1:
        return [f"Ground truth: {tables._md(next(iter(by)))}.", ""]
    return [
        *(f"- Ground truth of {tables._md(', '.join(n))}: {tables._md(g)}." for g, n in by.items()),
        "",
    ]


def _collision_note(methods: Sequence[Method]) -> list[str]:
    """Say which run names stand for several methods, and how they differ."""
    esc = tables._md
    out = []
    for name in dict.fromkeys(m.run_name for m in methods if m.collision):
        group = [m for m in methods if m.run_name == name]
        fields = group[0].collision
        values = "; ".join(
            f"{f} ({', '.join(dict.fromkeys(str(m.identity[f]) for m in group))})" for f in fields
        )
        out += [
            f"**Runs named {esc(name)} differ in {esc(values)}**: they are different methods, "
            f"kept apart as {', '.join(esc(m.name) for m in group)}. Give each setting its own "
            "`run_name`.",
            "",
        ]
    return out


def _zero_adapter_note(table3: tables.Table) -> list[str]:
    """Say why a scheme that compares with the base model is uniform when the
    policy never moved, rather than let it pass for a finding."""
    names = [r["method"] for r in table3 if r["regime"] == tables.ZERO_ADAPTER]
    if not names:
        return []
    return [
        f"{', '.join(tables._md(n) for n in names)}: every logged ARCA residual and drift "
        "from the base model is exactly 0, so the policy never left the base model and these "
        "schemes' weights are uniform by construction. With warm-up the learning rate is 0 at "
        "step 1 (`warmup_steps: 3` leaves the adapter at zero for the first two steps): train "
        "for more steps.",
        "",
    ]


def _dropout_note(methods: Sequence[Method]) -> list[str]:
    """Say which runs' weights were read with dropout (the training forward)."""
    with_dropout = []
    for m in methods:
        ps = [v for v in m.per_seed("credit/dropout") if not math.isnan(v)]
        if ps and max(ps) > 0:
            with_dropout.append((m.name, max(ps)))
    if not with_dropout:
        return []
    names = ", ".join(f"{tables._md(n)} (p = {p:g})" for n, p in with_dropout)
    return [
        f"Weights and drift of {names} were read from the training forward, with that "
        "forward's dropout (LoRA's, in a LoRA run), as TRL reads its own log-probs; "
        "`credit_from_training_forward: false` scores them dropout-free.",
        "",
    ]


def summary_text(tbl: dict[str, tables.Table], k: int | None = None) -> str:
    """A compact terminal table: accuracy, concentration and (with ground
    truth) credit correctness of the trained scheme, per method. ``k``: the
    pass@k the tables hold (default: read from them)."""
    if k is None:
        keys = [c for r in tbl["table2_accuracy"] for c in r if str(c).startswith("pass@")]
        k = int(keys[0].removeprefix("pass@")) if keys else 4
    acc = {r["method"]: r for r in tbl["table2_accuracy"]}
    corr = {r["method"]: r for r in tbl.get("credit_correctness", [])}
    rows = []
    for r in tbl["table2_accuracy"]:
        # The control every trained method's accuracy is read against (report.md
        # says why when there is no number).
        if _is_base(r) and isinstance(r["greedy acc"], tables.Cell):
            row = [r["method"], _short(r["greedy acc"], True), _short(r.get(f"pass@{k}"), True)]
            rows.append((*row, *["-"] * (6 + 3 * bool(corr))))
    for r in tbl["table3_concentration"]:
        a, c = acc.get(r["method"], {}), corr.get(r["method"])
        row = [
            r["method"],
            _short(a.get("greedy acc"), True),
            _short(a.get(f"pass@{k}"), True),
            _short(a.get("train reward")),
            _short(r["Gini"]),
            _short(r["EffN/T"]),
            _short(r["EffN"], digits=1),
            _short(r["T"], digits=1),
        ]
        if corr:
            row += [
                _short(c and c["prefix blame"]),
                _short(c and c["error lift"], digits=2),
                _short(c and c["top-1 hit"], digits=2),
            ]
        rows.append((*row, r["regime"]))
    head = ("method", "greedy", f"pass@{k}", "reward", "Gini", "EffN/T", "EffN", "T")
    if corr:
        head += ("blame", "lift", "top-1")
    head += ("regime",)
    last = len(head) - 1
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, last) else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*x).rstrip() for x in [head, *rows])


def _is_base(row: dict[str, Any]) -> bool:
    return str(row.get("method", "")).startswith(tables.BASE_MODEL)


def _short(c: Any, percent: bool = False, digits: int = 3) -> str:  # no interval
    if c is None or not isinstance(c, tables.Cell) or math.isnan(c.value):
        return "n/a"
    return f"{100 * c.value:.1f}%" if percent else f"{c.value:.{digits}f}"


# ------------------------------------------------------------------- CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="tables, plots and a token-weight page for a set of runs",
        description="Report on arca runs: report.md, tables.csv, PNG plots, tokens.html. "
        "Each RUN_DIR is a run folder or a folder holding run folders (e.g. a sweep).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--out",
        help="output folder (default: RUN_DIR/report for one RUN_DIR, a run or a sweep; "
        "<common parent of the runs>/report for several)",
    )
    p.add_argument("--title", default="arca report")
    p.add_argument(
        "--baseline",
        help="the method every other one is compared with on held-out accuracy "
        "(default: the uniform run that differs from it in the scheme alone: same model, "
        "task, data, rank, learning rate, ...)",
    )
    p.add_argument(
        "--any-rank",
        action="store_true",
        help="compare each method with the uniform run of its settings at another LoRA rank "
        "when there is none at its own (the nearest rank)",
    )
    p.add_argument(
        "--base",
        help="an arca diagnose of the initial model (folder or diagnose.json) for the "
        "base-model row (default: a sweep's base-model/ folder if there is one, else the "
        "runs' first steps)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import os

    dirs = find_run_dirs(args.runs)
    out = Path(args.out) if args.out else Path(os.path.commonpath([d.resolve() for d in dirs]))
    if not args.out:
        # One folder given (a run, or a sweep of any size): its own report/;
        # several: their common parent's. Two runs' reports never collide.
        out = (Path(args.runs[0]) if len(args.runs) == 1 else out) / "report"
    base = args.base
    if base is None:
        found = [Path(r) / "base-model" / "diagnose.json" for r in args.runs]
        base = next((f for f in found if f.is_file()), None)
    res = build_report(
        dirs, out, title=args.title, base=base, baseline=args.baseline, any_rank=args.any_rank
    )
    print(summary_text(res["tables"]))
    print(f"\nreport: {out / 'report.md'} ({len(res['files'])} files)")
    return 0
