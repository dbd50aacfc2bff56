"""Which oracle is the stronger ceiling: the rest of the weight uniform, or after the error?

    python benchmarks/oracle_rest.py --out runs/oracle-rest [--seeds 1 2 3 4] [--jobs 2]

Trains the tiny preset (configs/tiny/uniform_r64.yaml: the embedded model,
arithmetic level 3, 30 steps, LoRA r 64) with ``token_weighting`` uniform,
``oracle`` with ``oracle_rest: uniform`` and ``oracle`` with ``oracle_rest:
after`` (``oracle_share`` 0.5, the default), one run per seed, evaluates each
with ``arca eval --run`` (greedy accuracy and pass@4 on the 200 held-out
problems) and writes ``OUT/report`` with ``arca report`` (paired against
uniform, per problem). Runs already finished and evaluated are kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PRESET = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "uniform_r64.yaml"
METHODS = {
    "uniform_r64": ["--token_weighting", "uniform"],
    "oracle_uniform_r64": ["--token_weighting", "oracle", "--oracle_rest", "uniform"],
    "oracle_after_r64": ["--token_weighting", "oracle", "--oracle_rest", "after"],
}


def one(out: Path, name: str, seed: int) -> str:
    run = out / name / f"seed-{seed}"
    if (run / "eval" / "results.json").is_file():
        return f"{name} seed {seed}: kept"
    arca = [sys.executable, "-m", "arca.cli"]
    train = [
        *arca, "train", "--config", str(PRESET), *METHODS[name], "--seed", str(seed),
        "--run_name", name, "--output_dir", str(run), "--save_strategy", "no",
    ]  # fmt: skip
    for cmd in (train, [*arca, "eval", "--run", str(run)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return f"{name} seed {seed}: done"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="runs/oracle-rest")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    jobs = [(name, seed) for seed in args.seeds for name in METHODS]
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(lambda j: one(out, *j), jobs):
            print(line, flush=True)
    subprocess.run(
        [sys.executable, "-m", "arca.cli", "report", str(out), "--out", str(out / "report")],
        check=True,
    )


if __name__ == "__main__":
    main()
