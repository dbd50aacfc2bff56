"""The report's tables, in the paper's layout (Tables 1-3), as plain rows.

Each table is a list of dicts (column -> cell); :func:`markdown` renders one,
:func:`csv_rows` flattens all of them for ``tables.csv``. Numeric cells are
:class:`Cell` (mean and, with several seeds, a 95% bootstrap interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arca.credit.diagnostics import classify_regime
from arca.report.runs import Method
from arca.stats import bootstrap_ci, paired_bootstrap


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
        m, lo, hi = bootstrap_ci(values)
        return cls(m, lo, hi, len(values), unit)

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
                "LoRA r": m.rank,
                "alpha": c.get("lora_alpha"),
                "lr": c.get("learning_rate"),
                "steps": c.get("max_steps"),
                "prompts x K": f"{bs // k if isinstance(k, int) and k else '?'} x {k}",
                "beta": c.get("beta"),
                "eps": c.get("weight_eps"),
                "model": c.get("model_name_or_path"),
                "task": c.get("task"),
                "seeds": ", ".join(str(s) for s in m.seeds),
            }
        )
    return rows


def accuracy_table(methods: Sequence[Method], k: int = 4) -> Table:
    """Table 2: held-out greedy accuracy, pass@k, train reward averaged over steps."""
    return [
        {
            "method": m.name,
            "greedy acc": Cell.of(m.per_seed("greedy_accuracy", source="eval"), unit="pct"),
            f"pass@{k}": Cell.of(m.per_seed(f"pass@{k}", source="eval"), unit="pct"),
            "train reward": Cell.of(m.per_seed("reward")),
        }
        for m in methods
    ]


def versus_uniform_table(methods: Sequence[Method], k: int = 4) -> Table:
    """Each method against uniform on the same held-out problems (paired
    bootstrap over problems and seeds). Empty if there is no uniform run."""
    base = next((m for m in methods if m.scheme == "uniform"), None)
    if base is None:
        return []
    rows = []
    for m in methods:
        if m is base:
            continue
        row: dict[str, Any] = {"method": m.name, "vs": base.name}
        for key, label in (("greedy", "greedy acc"), (f"pass@{k}", f"pass@{k}")):
            a, b = m.problem_matrix(key), base.problem_matrix(key)
            if a is None or b is None or a.shape[1] != b.shape[1]:
                row[f"d {label}"], row[f"p ({label})"] = Cell(math.nan), "n/a"
                continue
            r = paired_bootstrap(a, b)
            row[f"d {label}"] = Cell(r["diff"], r["low"], r["high"], a.shape[0], unit="pp")
            row[f"p ({label})"] = f"{r['p']:.3f}"
        rows.append(row)
    return rows


def concentration_table(methods: Sequence[Method]) -> Table:
    """Table 3: the trained scheme's Gini and effective-token ratio, averaged
    over training, and the regime they fall in."""
    rows = []
    for m in methods:
        g = Cell.of(m.per_seed("credit/gini"))
        e = Cell.of(m.per_seed("credit/effective_ratio"))
        rows.append(
            {"method": m.name, "Gini": g, "EffN/T": e, "regime": classify_regime(g.value, e.value)}
        )
    return rows


def shadow_table(methods: Sequence[Method], schemes: Sequence[str]) -> Table:
    """Every scheme's Gini / EffN/T on each run's own batches (shadow
    diagnostics), averaged over training: how the schemes would have weighted
    the same completions."""
    rows = []
    for m in methods:
        row: dict[str, Any] = {"run": m.name}
        for s in schemes:
            row[f"{s} Gini"] = Cell.of(m.per_seed(f"credit/{s}/gini"))
            row[f"{s} EffN/T"] = Cell.of(m.per_seed(f"credit/{s}/effective_ratio"))
        rows.append(row)
    return rows


def shadow_schemes(methods: Sequence[Method]) -> list[str]:
    """Schemes with shadow metrics in any run, in the order first seen."""
    seen: dict[str, None] = {}
    for m in methods:
        for r in m.runs:
            for rec in r.metrics[:1]:
                for key in rec:
                    parts = key.split("/")
                    if len(parts) == 3 and parts[0] == "credit" and parts[2] == "gini":
                        seen[parts[1]] = None
    return list(seen)


def markdown(rows: Table) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_md(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _md(v: Any) -> str:
    return "" if v is None else str(v).replace("|", "\\|")


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
