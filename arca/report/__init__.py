"""``arca report RUN_DIR...``: tables, plots and a token page for a set of runs.

Writes ``report.md`` and ``tables.csv`` (Table 1 configurations, Table 2
held-out accuracy, Table 3 concentration, each method against uniform, and the
shadow diagnostics), ``reward.png``, ``concentration.png``, ``residual.png``,
``regimes.png`` and ``tokens.html``. Reading only: the run folders are never
modified.
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

from arca.credit.diagnostics import SPARSE_RATIO_BELOW, UNIFORM_GINI_BELOW
from arca.io import atomic_write_text
from arca.report import plots, tables, tokens
from arca.report.runs import Method, Run, find_run_dirs, group_methods, load_run

__all__ = ["Method", "Run", "build_report", "find_run_dirs", "load_run", "summary_text"]


def build_report(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    failed: Sequence[tuple[str, str]] = (),
    title: str = "arca report",
) -> dict[str, Any]:
    """Build the report for the runs in ``paths`` into ``out``.

    ``failed`` lists ``(run label, log path)`` of runs that did not finish, so
    the report says what is missing. Returns ``{"methods", "tables", "files"}``.
    """
    from arca import __version__

    runs = [load_run(d) for d in find_run_dirs(paths)]
    methods = group_methods(runs)
    k = next((int(r.eval.get("k", 4)) for r in runs if r.eval), 4)
    schemes = tables.shadow_schemes(methods)
    tbl = {
        "table1_config": tables.config_table(methods),
        "table2_accuracy": tables.accuracy_table(methods, k),
        "versus_uniform": tables.versus_uniform_table(methods, k),
        "table3_concentration": tables.concentration_table(methods),
        "shadow": tables.shadow_table(methods, schemes),
    }
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    files = [
        plots.plot_reward(methods, dest / "reward.png"),
        plots.plot_concentration(methods, dest / "concentration.png"),
        plots.plot_residual(methods, dest / "residual.png"),
        plots.plot_regimes(methods, dest / "regimes.png"),
    ]
    label, samples = tokens.pick_samples(methods)
    files.append(atomic_write_text(dest / "tokens.html", tokens.render(label, samples)))
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, ["table", "row", "column", "value", "ci_low", "ci_high", "seeds"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(tables.csv_rows(tbl))
    files.append(atomic_write_text(dest / "tables.csv", buf.getvalue()))
    md = _markdown(title, runs, methods, tbl, k, failed, __version__)
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
) -> str:
    seeds = sorted({s for m in methods for s in m.seeds})
    multi = any(len(m.runs) > 1 for m in methods)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"# {title}",
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
    missing = [r.path for r in runs if not r.eval]
    if missing:
        lines += ["Not evaluated (no eval/results.json): " + ", ".join(map(str, missing)), ""]
    if failed:
        lines += ["**Failed runs** (not in the tables):", ""]
        lines += [f"- {name}: see `{log}`" for name, log in failed]
        lines.append("")
    lines += [
        "## Table 1: configurations",
        "",
        tables.markdown(tbl["table1_config"]),
        f"## Table 2: held-out accuracy (greedy accuracy, pass@{k}, train reward averaged over steps)",
        "",
        tables.markdown(tbl["table2_accuracy"]),
    ]
    if tbl["versus_uniform"]:
        lines += [
            "### Against uniform on the same held-out problems",
            "",
            "Difference in percentage points (pp) with a 95% paired-bootstrap interval: each of "
            "10,000 replicates resamples the problems (shared by both methods) and each "
            "method's seeds; p is the two-sided bootstrap p-value.",
            "",
            tables.markdown(tbl["versus_uniform"]),
        ]
    lines += [
        "## Table 3: token-weight concentration (trained scheme, averaged over training)",
        "",
        f"Regimes: uniform broadcast if Gini < {UNIFORM_GINI_BELOW}, spuriously sparse if "
        f"EffN/T < {SPARSE_RATIO_BELOW}, else middle regime (arca's thresholds; the paper "
        "gives none).",
        "",
        tables.markdown(tbl["table3_concentration"]),
        "## Shadow diagnostics: every scheme on each run's batches",
        "",
        "Each column is what that scheme's weights would have been on the completions the "
        "run actually sampled, averaged over training.",
        "",
        tables.markdown(tbl["shadow"]),
        "## Plots",
        "",
        "![train reward](reward.png)",
        "",
        "![concentration](concentration.png)",
        "",
        "![adapter residual](residual.png)",
        "",
        "![regimes](regimes.png)",
        "",
        "## Token weights",
        "",
        "[tokens.html](tokens.html): sampled completions, one column per scheme, each token "
        "coloured by its weight.",
        "",
    ]
    return "\n".join(lines)


def summary_text(tbl: dict[str, tables.Table], k: int = 4) -> str:
    """A compact terminal table: accuracy and concentration per method."""
    acc = {r["method"]: r for r in tbl["table2_accuracy"]}
    rows = []
    for r in tbl["table3_concentration"]:
        a = acc.get(r["method"], {})
        rows.append(
            (
                r["method"],
                _short(a.get("greedy acc"), True),
                _short(a.get(f"pass@{k}"), True),
                _short(a.get("train reward")),
                _short(r["Gini"]),
                _short(r["EffN/T"]),
                r["regime"],
            )
        )
    head = ("method", "greedy", f"pass@{k}", "reward", "Gini", "EffN/T", "regime")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, 6) else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*x).rstrip() for x in [head, *rows])


def _short(c: Any, percent: bool = False) -> str:  # one decimal, no interval
    if c is None or math.isnan(c.value):
        return "n/a"
    return f"{100 * c.value:.1f}%" if percent else f"{c.value:.3f}"


# ------------------------------------------------------------------- CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="tables, plots and a token-weight page for a set of runs",
        description="Report on arca runs: report.md, tables.csv, PNG plots, tokens.html. "
        "Each RUN_DIR is a run folder or a folder holding run folders (e.g. a sweep).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="output folder (default: <common parent of the runs>/report)")
    p.add_argument("--title", default="arca report")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import os

    dirs = find_run_dirs(args.runs)
    out = Path(args.out) if args.out else Path(os.path.commonpath([d.resolve() for d in dirs]))
    if not args.out:
        out = (out.parent if (out / "config.yaml").exists() else out) / "report"
    res = build_report(dirs, out, title=args.title)
    print(summary_text(res["tables"]))
    print(f"\nreport: {out / 'report.md'} ({len(res['files'])} files)")
    return 0
