"""Markdown tables of an `arca diagnose` output: one row per model (the base
model first, then each checkpoint).

    python docs/diagnose_table.py runs/diag/diagnose.json [--schemes surprisal,entropy,...]

Concentration cells: mean Gini / mean EffN/T and the regime (U uniform
broadcast, M middle, S sparse; "-" undefined: the base model has no adapter).
Correctness cells (with ground truth): prefix blame / error lift / top-1 hit.
For LoRA checkpoints: beta, max |dlogp|, Prop. 2's ratio and how many
completions satisfy Prop. 1 as stated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MARK = {"uniform broadcast": "U", "middle regime": "M", "sparse": "S"}


def num(v: object, spec: str) -> str:
    """A value of diagnose.json: null (not computed) -> n/a; "inf" stays."""
    if v is None:
        return "n/a"
    return format(float(v), spec)


def _row(label: str, cells: list[str]) -> str:
    return "| " + " | ".join([label, *cells]) + " |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result", help="diagnose.json")
    ap.add_argument("--schemes", default="surprisal,entropy,divergence,arca,high_entropy")
    args = ap.parse_args(argv)
    res = json.loads(Path(args.result).read_text())
    schemes = args.schemes.split(",")
    models = res["models"]

    def short(name: str) -> str:  # a path: its last folder ("checkpoint-10"; "adapter" -> run)
        parts = Path(name).parts
        if len(parts) < 2:
            return name
        return parts[-2] + "/" + parts[-1] if parts[-1] in ("adapter", "model") else parts[-1]

    def label(m: dict) -> str:
        return f"{short(m['label'])} (drift {num(m['drift_kl'], '.4f')})"

    print("| model | " + " | ".join(schemes) + " |")
    print("|---" * (len(schemes) + 1) + "|")
    for m in models:
        cells = []
        for s in schemes:
            d = m["schemes"].get(s, {"undefined": "absent"})
            if d.get("undefined"):
                cells.append("-")
            else:
                g, e = d["gini"]["mean"], d["effective_ratio"]["mean"]
                cells.append(f"{num(g, '.2f')} / {num(e, '.3f')} {MARK.get(d['regime'], '?')}")
        print(_row(label(m), cells))
    if res.get("ground_truth"):
        print()
        print("| model | " + " | ".join(schemes) + " |")
        print("|---" * (len(schemes) + 1) + "|")
        for m in models:
            cells = []
            for s in schemes:
                c = m["schemes"].get(s, {}).get("correctness")
                cells.append(
                    "-"
                    if c is None
                    else f"{num(c['prefix_blame'], '.3f')} / {num(c['error_lift'], '.1f')} / "
                    f"{num(c['top1_hit'], '.2f')}"
                )
            print(_row(label(m), cells))
    lora = [m for m in models if "prop2" in m]
    if lora:
        print()
        print("| checkpoint | beta | max abs dlogp | Prop. 2 ratio | Prop. 1 as stated |")
        print("|---|---|---|---|---|")
        for m in lora:
            p1, p2 = m["prop1"], m["prop2"]
            print(
                _row(
                    short(m["label"]),
                    [
                        num(p2["beta"], ".3g"),
                        num(p2["max_abs_dlogp"], ".3g"),
                        num(p2["ratio"], ".3g"),
                        f"{p1['holds_stated']}/{p1['completions']}",
                    ],
                )
            )


if __name__ == "__main__":
    main()
