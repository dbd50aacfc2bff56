"""Markdown tables of docs/ground-truth.md from benchmarks/mc_locator.py's JSON.

python docs/ground_truth_tables.py benchmarks/results/mc_tiny_l1_step.json [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(path: Path) -> str:
    res = json.loads(path.read_text())
    cut = "token" if "token" in path.stem else "step"
    head = (
        f"**{res['model']}, level {res['level']}, {cut} cuts** ({res['samples']} completions, "
        f"{res['correct']} correct; {res['date']}: `{res['command']}`)\n\n"
        "| k | search | located / wrong | same token | same step | earlier | later | "
        "soft: same token | soft: same step | per wrong: asked | generated | bound | "
        "every prefix | seconds |\n|" + "---|" * 14
    )
    rows = []
    for r in res["rows"]:
        h, s = r["hard"], r["soft"]
        rows.append(
            f"| {r['k']} | {r['search']} | {r['located']} / {r['wrong']} | "
            f"{h['same_token']:.2f} | {h['same_step']:.2f} | {h['earlier']:.2f} | "
            f"{h['later']:.2f} | {s['same_token']:.2f} | {s['same_step']:.2f} | "
            f"{r['per_wrong_queried']:.1f} | {r['per_wrong_generated']:.1f} | "
            f"{r['per_wrong_bound']:.1f} | {r['per_wrong_all_prefixes']:.1f} | {r['seconds']:.0f} |"
        )
    return head + "\n" + "\n".join(rows) + "\n"


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(table(Path(p)))
