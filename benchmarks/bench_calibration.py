"""The measurements that chose the credit bench's setting (docs/credit-bench.md).

    python benchmarks/bench_calibration.py runs/calib          # writes the configs, runs the sweeps
    python benchmarks/bench_calibration.py runs/calib --dry    # only writes them and prints the commands

Two rounds on the tiny preset (LoRA r64, 8 prompts x 4 completions), every run
with a learning curve (held-out greedy accuracy every 10 steps on 200
problems): uniform GRPO at several learning rates, levels and batch sizes
(where does the tiny model learn at all, and where does it collapse?), then, at
the chosen setting, uniform against four shapes of the oracle (share 0.5 or
0.2 of a wrong completion's weight on its first wrong token, the rest uniform
or after it). Curves are in each run's ``curve.jsonl``; ``arca report`` on the
folders tabulates them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from arca.config import PRESET_ROOT

CURVE = {
    "max_steps": 80,
    "eval_every": 10,
    "eval_problems": 200,
    "save_steps": 40,
    "sample_every": 0,
    "shadow_diagnostics": False,
}
L1 = {"model_name_or_path": "tiny-l1", "level": 1, "max_completion_length": 32}

#: Round 1: where uniform GRPO learns (seeds 1, 2; level 1 at 3e-4 with 3).
UNIFORM = {
    "l3_lr3e-4": {},
    "l3_lr1e-3": {"learning_rate": 1e-3},
    "l3_lr3e-3": {"learning_rate": 3e-3},
    "l3_lr5e-4": {"learning_rate": 5e-4},
    "l3_lr3e-4_b64": {"per_device_train_batch_size": 64},
    "l1_lr3e-4": L1,
    "l1_lr6e-4": {**L1, "learning_rate": 6e-4},
}
#: Round 2: the oracle's shapes at the chosen setting (seeds 1, 2, 3).
ORACLES = {
    "oracle_s05_uniform": {"oracle_share": 0.5, "oracle_rest": "uniform"},
    "oracle_s05_after": {"oracle_share": 0.5, "oracle_rest": "after"},
    "oracle_s02_uniform": {"oracle_share": 0.2, "oracle_rest": "uniform"},
    "oracle_s02_after": {"oracle_share": 0.2, "oracle_rest": "after"},
}


def write(folder: Path, runs: dict[str, dict], scheme: str) -> Path:
    base = yaml.safe_load((PRESET_ROOT / "tiny" / "uniform_r64.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for name, over in runs.items():
        cfg = {**base, **CURVE, **over, "token_weighting": scheme, "run_name": name}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", type=Path)
    p.add_argument("--dry", action="store_true")
    args = p.parse_args()
    rounds = [
        (write(args.out / "uniform-configs", UNIFORM, "uniform"), "1,2", args.out / "uniform"),
        (
            write(args.out / "oracle-configs", {**ORACLES, "uniform_l1": {}}, "oracle"),
            "1,2,3",
            args.out / "oracle",
        ),
    ]
    # The oracle round runs at level 1 (the chosen setting); uniform_l1 is its control.
    for f in (args.out / "oracle-configs").glob("*.yaml"):
        cfg = yaml.safe_load(f.read_text()) | L1
        if f.stem == "uniform_l1":
            cfg["token_weighting"] = "uniform"
        f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for configs, seeds, out in rounds:
        cmd = [sys.executable, "-m", "arca.cli", "sweep", "--configs", str(configs)]
        cmd += ["--out", str(out), "--seeds", seeds, "--jobs", "2", "--base-samples", "0"]
        print(" ".join(cmd))
        if not args.dry:
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
