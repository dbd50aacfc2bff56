"""Markdown table of several `arca diagnose` outputs (one row per folder).

    python docs/diagnose_table.py LABEL=runs/diag/step10 LABEL2=runs/diag/step20 ...

Cells: mean Gini / mean EffN/T and the regime (U uniform broadcast, M middle,
S spuriously sparse); then beta, max |dlogp|, Prop. 2's ratio and how many
completions satisfy Prop. 1 as stated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCHEMES = ("surprisal", "entropy", "divergence", "arca")
MARK = {"uniform broadcast": "U", "middle regime": "M", "spuriously sparse": "S"}


def main(argv: list[str]) -> None:
    print(
        "| checkpoint | "
        + " | ".join(SCHEMES)
        + " | beta | max abs dlogp | Prop. 2 ratio | Prop. 1 as stated |"
    )
    print("|---" * (len(SCHEMES) + 5) + "|")
    for arg in argv:
        label, _, folder = arg.partition("=")
        r = json.loads((Path(folder) / "diagnose.json").read_text())
        cells = [
            f"{r['schemes'][s]['gini']['mean']:.2f} / {r['schemes'][s]['effective_ratio']['mean']:.2f} "
            f"{MARK.get(r['schemes'][s]['regime'], '?')}"
            for s in SCHEMES
        ]
        p1, p2 = r["prop1"], r["prop2"]
        print(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {p2['beta']:.3g} | {p2['max_abs_dlogp']:.3g} | {p2['ratio']:.3g} | "
            f"{p1['holds_stated']}/{p1['completions']} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
