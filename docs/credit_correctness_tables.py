"""The controlled table of docs/credit-correctness.md: the base model and
checkpoints of several seeds per kind (LoRA, full fine-tuning), all diagnosed
on the same completions, one row per (scheme, model kind).

    python docs/credit_correctness_tables.py "LoRA r64=runs/cc/diag-lora/diagnose.json" \
        "full fine-tuning=runs/cc/diag-full/diagnose.json"

Each file is an ``arca diagnose`` output whose rows after the base model are
the seeds of one kind; cells are the mean over seeds with the [min, max] range
(the base row is one model). The base row is taken from the first file.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

SCHEMES = ("uniform", "surprisal", "entropy", "high_entropy", "divergence", "arca", "arca_local")
COLUMNS = [
    ("Gini", lambda d: d["gini"]["mean"], ".2f"),
    ("EffN/T", lambda d: d["effective_ratio"]["mean"], ".3f"),
    ("EffN", lambda d: d["effective_n"]["mean"], ".1f"),
    ("prefix blame", lambda d: d["correctness"]["prefix_blame"], ".3f"),
    ("error lift", lambda d: d["correctness"]["error_lift"], ".1f"),
    ("top-1", lambda d: d["correctness"]["top1_hit"], ".2f"),
    ("top-3", lambda d: d["correctness"]["top3_hit"], ".2f"),
    ("result share", lambda d: d["correctness"]["result_share"], ".2f"),
    ("template share", lambda d: d["correctness"]["template_share"], ".2f"),
]


def cell(values: list[float], spec: str) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return format(mean, spec)
    return f"{format(mean, spec)} [{format(min(vals), spec)}, {format(max(vals), spec)}]"


def main(argv: list[str]) -> None:
    kinds = []
    for arg in argv:
        label, _, path = arg.partition("=")
        kinds.append((label, json.loads(Path(path).read_text())))
    first = kinds[0][1]
    print(
        f"{first['completions']} completions (mean T = {first['mean_length']:.1f}), "
        f"{first['ground_truth']['located']} wrong with a located first error, "
        f"{first['ground_truth']['correct']} correct.\n"
    )
    drift = " | ".join(
        f"{label}: {cell([m['drift_kl'] for m in res['models'][1:]], '.4f')}"
        for label, res in kinds
    )
    print(f"Drift (mean per-token KL from the base model, exact): {drift}\n")
    print("| scheme | model | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for s in SCHEMES:
        rows = [("base model", [first["models"][0]])]
        rows += [(label, res["models"][1:]) for label, res in kinds]
        for label, models in rows:
            ds = [m["schemes"].get(s) for m in models]
            if any(d is None for d in ds):
                continue
            if any(d.get("undefined") for d in ds):
                cells = ["undefined (no policy)"] + [""] * (len(COLUMNS) - 1)
            else:
                cells = [cell([get(d) for d in ds], spec) for _, get, spec in COLUMNS]
            print(f"| {s} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
