"""``arca sweep``: run a set of training configs, evaluate each, report.

A sweep is a folder of ``arca train`` YAML configs (a preset: ``configs/tiny``
or ``configs/paper``, the paper's seven runs, or ``configs/tiny-full``, its
schemes with full fine-tuning; or any folder of your own) times a list of
seeds. Each (config, seed) is a *run* in ``OUT/<name>/seed-<seed>/``;
it is trained, then evaluated on its held-out set (``arca eval --run``), in a
child process whose output goes to the run's ``run.log``. Then
``OUT/report/`` is written (``arca report``).

Before the runs, the base-model control: ``arca diagnose`` of the initial model
on completions it samples for held-out problems (``--base-samples``, default
256; 0 skips it), into ``OUT/base-model/``, which the report's base-model row
reads. The untrained base model is also evaluated on the held-out set, like the
runs (``arca eval --run RUN --base``), once per distinct model, task and
decoding: by the first run of each, into its ``eval-base/``, for the report's
accuracy table.

Idempotent and resumable: a run with ``eval/results.json`` (and, if it is the
one that evaluates the base model, ``eval-base/results.json``) is skipped; one
with a final adapter is only evaluated; one with checkpoints resumes from the last
(``arca train --resume``); a failed run is reported with its log path while the
others go on, and is retried by the next invocation. A run folder remembers
which config file contents, seed and overrides made it (``spec.json``), and a
sweep refuses to continue a run with different ones.

Scheduling (``--backend``): ``local`` runs one run at a time, or one per GPU
concurrently with ``--gpus 0,1,...``; ``ray`` submits each run as a Ray task
needing one GPU (or ``--cpus-per-run`` CPUs on a cluster without GPUs) to the
cluster at ``--ray-address`` (``auto``: the running one; omitted: a local
instance). With Ray, ``--out`` must be on a filesystem every node sees.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from arca.config import PRESETS, preset_dir
from arca.io import atomic_write_json
from arca.report import build_report, summary_text
from arca.run_folder import lock
from arca.sweep.base_model import base_model_argv, base_model_caveats, run_base_model
from arca.sweep.plan import RunSpec, check_run_dir, plan_sweep, run_state, validate
from arca.sweep.progress import fmt_time
from arca.sweep.runner import POLL_S, build_models, execute, run_sweep

__all__ = [
    "PRESETS",
    "POLL_S",
    "RunSpec",
    "base_model_argv",
    "base_model_caveats",
    "check_run_dir",
    "execute",
    "plan_sweep",
    "run_state",
    "run_sweep",
    "sweep",
]


# ------------------------------------------------------------- one run


# ------------------------------------------------------------- progress


# ------------------------------------------------------------- scheduling


def sweep(
    configs: str | Path,
    out: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    gpus: Sequence[int] | None = None,
    jobs: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_run: int = 1,
    report: bool = True,
    title: str | None = None,
    base_samples: int = 256,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Plan, run, record and report a sweep. Returns ``{"outcomes", "report"}``
    (``report`` is :func:`arca.report.build_report`'s result, or None)."""
    specs = plan_sweep(configs, out, seeds=seeds, only=only, overrides=overrides)
    validate(specs)
    if gpus:
        slots = [{"CUDA_VISIBLE_DEVICES": str(g)} for g in gpus]
    elif jobs > 1:
        # Runs side by side on the CPU, one thread each: small models are bound
        # by Python's per-op overhead, which threads within a run do not share.
        slots = [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} for _ in range(jobs)]
    else:
        slots = None
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    # A second sweep on the same --out would run every run again into the same folders.
    with lock(root, "arca sweep"):
        build_models(specs, echo)
        t0 = time.time()
        echo(
            f"sweep: {len(specs)} runs ({len({s.name for s in specs})} configs from {configs} x "
            f"seeds {', '.join(sorted({str(s.seed) for s in specs}))}) -> {root}"
        )
        base = run_base_model(specs, base_samples, root, echo)
        outcomes = run_sweep(
            specs,
            slots=slots,
            backend=backend,
            ray_address=ray_address,
            cpus_per_run=cpus_per_run,
            echo=echo,
        )
        atomic_write_json(
            root / "sweep.json",
            {
                "configs": str(configs),
                "seeds": sorted({s.seed for s in specs}),
                "overrides": list(overrides),
                "backend": backend,
                "seconds": round(time.time() - t0, 1),
                "runs": outcomes,
            },
        )
        ok = [o["run_dir"] for o in outcomes if o["state"] in ("done", "skipped")]
        failed = [
            (f"{o['name']} seed {o['seed']}", o["log"]) for o in outcomes if o["state"] == "failed"
        ]
        rep = None
        if report and ok:
            rep = build_report(
                ok,
                root / "report",
                failed=failed,
                title=title or f"arca sweep: {Path(configs).name}",
                base=base,
            )
        return {"outcomes": outcomes, "report": rep, "seconds": time.time() - t0, "out": root}


# ------------------------------------------------------------- CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a set of configs x seeds, evaluate each, write the report",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sweep_arguments(p)
    p.set_defaults(func=_main)


def add_sweep_arguments(
    p: argparse.ArgumentParser,
    *,
    preset: str | None = None,
    seeds: str | None = None,
    jobs: int = 1,
) -> None:
    """The options of ``arca sweep``; ``arca demo`` and ``arca bench`` take them
    too, with their own defaults."""
    src = p.add_mutually_exclusive_group(required=preset is None)
    src.add_argument(
        "--preset",
        choices=PRESETS,
        default=preset,
        help="configs/<preset>/: tiny and paper are the paper's seven runs, tiny-full its "
        "schemes with full fine-tuning, tiny-bench the credit bench",
    )
    src.add_argument("--configs", help="a folder of arca train YAML configs")
    p.add_argument("--out", help="sweep folder (default: runs/sweep-<preset>)")
    p.add_argument(
        "--seeds",
        default=seeds,
        help=f"comma-separated seeds (default: {seeds or 'each config' + chr(39) + 's own seed'})",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these configs (file stems)")
    p.add_argument("--gpus", help="comma-separated GPU ids: one concurrent run per GPU")
    p.add_argument(
        "--jobs",
        type=int,
        default=jobs,
        help=f"without GPUs: runs at a time on the CPU, one thread each (default {jobs})",
    )
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument(
        "--ray-address",
        help="Ray cluster address ('auto': the running one; default: start a local one)",
    )
    p.add_argument(
        "--cpus-per-run", type=int, default=1, help="Ray CPUs per run on a cluster without GPUs"
    )
    p.add_argument("--no-report", action="store_true", help="skip writing OUT/report/")
    p.add_argument(
        "--base-samples",
        type=int,
        default=256,
        help="completions of the base-model control (arca diagnose of the initial model; 0 skips it)",
    )
    p.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="after --: arca train overrides for every run, e.g. -- --max_steps 5",
    )


def _ints(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def options(args: argparse.Namespace) -> dict[str, Any]:
    """``sweep()`` keyword arguments from parsed CLI arguments."""
    configs = Path(args.configs) if args.configs else preset_dir(args.preset)
    name = args.preset if not args.configs else Path(args.configs).name
    overrides = list(args.overrides or [])
    if overrides[:1] == ["--"]:
        overrides = overrides[1:]
    gpus = _ints(args.gpus, "--gpus")
    if gpus:
        import torch

        n = torch.cuda.device_count()
        bad = [g for g in gpus if g >= n or g < 0]
        if bad:
            raise ValueError(
                f"--gpus: GPU {bad[0]} does not exist (this machine has {n} CUDA devices)"
            )
    if args.backend == "ray" and gpus:
        raise ValueError("--gpus is for --backend local; Ray assigns GPUs itself")
    if args.jobs < 1:
        raise ValueError(f"--jobs: must be >= 1, got {args.jobs}")
    if args.jobs > 1 and (gpus or args.backend == "ray"):
        raise ValueError(
            "--jobs: runs several on the CPU; with --gpus or Ray they are scheduled there"
        )
    if args.base_samples < 0:
        raise ValueError(f"--base-samples: must be >= 0, got {args.base_samples}")
    return {
        "configs": configs,
        "out": Path(args.out) if args.out else Path("runs") / f"sweep-{name}",
        "seeds": _ints(args.seeds, "--seeds"),
        "only": args.only,
        "overrides": overrides,
        "gpus": gpus,
        "jobs": args.jobs,
        "backend": args.backend,
        "ray_address": args.ray_address,
        "cpus_per_run": args.cpus_per_run,
        "report": not args.no_report,
        "base_samples": args.base_samples,
    }


def finish(res: dict[str, Any]) -> int:
    """Print the summary; exit status 1 if any run failed."""
    failed = [o for o in res["outcomes"] if o["state"] == "failed"]
    if res["report"]:
        print()
        print(summary_text(res["report"]["tables"]))
        print(
            f"\nreport: {res['out'] / 'report' / 'report.md'}  (plots *.png, tokens.html, tables.csv)"
        )
    print(
        f"sweep finished in {fmt_time(res['seconds'])}: {len(res['outcomes']) - len(failed)} runs ok, {len(failed)} failed"
    )
    for o in failed:
        print(f"  FAILED {o['name']} seed {o['seed']}: {o['log']}")
    return 1 if failed else 0


def _main(args: argparse.Namespace) -> int:
    return finish(sweep(**options(args)))
