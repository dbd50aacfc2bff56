"""Writes arca's level-3 arithmetic as a GSM8K-format file (question, answer
ending in "#### value"): a task arca reads as ``task: gsm8k``, which has no
exact error locator, while its problems are ones the tiny model was built
for. docs/ground-truth.md uses it to show the Monte-Carlo locator where no
exact one exists, and (reading the same completions as arithmetic) to check
it against the exact one.

    python docs/gsm8k_format.py runs/gt/gsm8k-l3.jsonl [--n 1200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from arca.tasks.arithmetic import problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out")
    p.add_argument("--n", type=int, default=1200)
    p.add_argument("--level", type=int, default=3)
    args = p.parse_args()
    rows = []
    for r, _ in zip(problems(seed=11, level=args.level), range(args.n), strict=False):
        steps = r["solution"].rsplit(" \\boxed", 1)[0]
        rows.append({"question": r["problem"], "answer": f"{steps}\n#### {r['answer']}"})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(json.dumps(x) + "\n" for x in rows))
    print(f"wrote {len(rows)} problems to {args.out}")


if __name__ == "__main__":
    main()
