"""Training-time shadow values per scheme, pooled over every run of a sweep:
each run's mean over training, then the mean over runs with the [min, max]
over runs. For docs/credit-correctness.md.

    python docs/shadow_summary.py "LoRA (21 runs)=runs/cc/lora" "full (15 runs)=runs/cc/full"
"""

from __future__ import annotations

import math
import sys

from arca.report.runs import find_run_dirs, load_run

SCHEMES = ("surprisal", "entropy", "high_entropy", "divergence", "arca", "arca_local")
METRICS = [
    ("effective_ratio", "EffN/T", ".3f"),
    ("effective_n", "EffN", ".1f"),
    ("prefix_blame", "prefix blame", ".3f"),
    ("error_lift", "error lift", ".1f"),
    ("top1_hit", "top-1", ".2f"),
    ("result_share", "result share", ".2f"),
]


def cell(vals: list[float], spec: str) -> str:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "-"
    return f"{format(sum(vals) / len(vals), spec)} [{format(min(vals), spec)}, {format(max(vals), spec)}]"


def main(argv: list[str]) -> None:
    print("| scheme | runs | " + " | ".join(m[1] for m in METRICS) + " |")
    print("|---" * (len(METRICS) + 2) + "|")
    groups = []
    for arg in argv:
        label, _, path = arg.partition("=")
        groups.append((label, [load_run(d) for d in find_run_dirs([path])]))
    for label, runs in groups:
        blame = [r.mean("credit/uniform/prefix_blame") for r in runs]
        print(f"| uniform | {label} | 1.000 | - | {cell(blame, '.3f')} | 1.0 | - | - |")
    for s in SCHEMES:
        for label, runs in groups:
            cells = [
                cell([r.mean(f"credit/{s}/{k}") for r in runs], spec) for k, _, spec in METRICS
            ]
            if all(c == "-" for c in cells):
                continue
            print(f"| {s} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
