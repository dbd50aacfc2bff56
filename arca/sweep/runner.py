"""Running a sweep's runs: each in a child process (train, then evaluate),
one at a time, one per GPU, or as Ray tasks."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from arca.evaluate import evaluate_run
from arca.io import atomic_write_json
from arca.models import tiny
from arca.run_folder import evaluated, final_weights, lock
from arca.sweep.plan import RunSpec, check_run_dir, run_state
from arca.sweep.processes import CHILDREN, die_with_parent, last_line, read_json
from arca.sweep.progress import Progress
from arca.train import main as train_main

POLL_S = 1.0


def execute(
    spec: dict[str, Any], env: dict[str, str] | None = None, gpu: bool = False
) -> dict[str, Any]:
    """Train (or resume) and evaluate one run in a child process; its output
    goes to ``run.log``. Returns the outcome. Runs on the sweep's machine or,
    with Ray, inside a Ray task. ``gpu``: the scheduler gave this run a GPU
    (``use_cpu false``); the caller decides, not the inherited environment."""
    s = RunSpec(**{**spec, "overrides": tuple(spec.get("overrides", ()))})
    d = Path(s.run_dir)
    d.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    atomic_write_json(
        d / "spec.json",
        {
            "fingerprint": s.fingerprint(),
            "train_argv": s.train_argv(gpu=gpu),
            "evaluate_base": s.eval_base,
        },
    )
    log = d / "run.log"
    t0 = time.time()
    status = {"state": "running", "started": t0, "host": socket.gethostname()}
    atomic_write_json(d / "status.json", status)
    with log.open("a", encoding="utf-8") as f:
        f.write(
            f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} on {status['host']}: {s.label} =====\n"
        )
        f.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "arca.sweep", str(d / "spec.json")],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=child_env,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        CHILDREN.add(proc)
        try:
            rc = proc.wait()
        finally:
            CHILDREN.discard(proc)
    outcome = {
        "name": s.name,
        "seed": s.seed,
        "run_dir": s.run_dir,
        "state": "done" if rc == 0 else "failed",
        "returncode": rc,
        "log": str(log),
        "seconds": round(time.time() - t0, 1),
    }
    if rc != 0:
        outcome["error"] = last_line(log)
    atomic_write_json(d / "status.json", {**status, **outcome, "finished": time.time()})
    return outcome


def worker(spec_json: str) -> int:
    """The child process: train unless the trained weights exist, then evaluate."""
    data = json.loads(Path(spec_json).read_text())
    run = Path(spec_json).parent
    with lock(run, "arca sweep run"):
        return _train_and_evaluate(run, data)


def _train_and_evaluate(run: Path, data: dict[str, Any]) -> int:
    if final_weights(run) is None:
        print("[arca sweep] train " + " ".join(data["train_argv"]), flush=True)
        train_main(data["train_argv"])
    if not evaluated(run):
        print(f"[arca sweep] evaluate {run}", flush=True)
        res = evaluate_run(run, show_progress=False)
        k = res["k"]
        print(
            f"[arca sweep] greedy accuracy {res['greedy_accuracy']:.3f}  pass@{k} {res[f'pass@{k}']:.3f}",
            flush=True,
        )
    if data.get("evaluate_base") and not evaluated(run, base=True):
        print(f"[arca sweep] evaluate the untrained base model -> {run / 'eval-base'}", flush=True)
        res = evaluate_run(run, show_progress=False, base=True)
        k = res["k"]
        print(
            f"[arca sweep] base model: greedy accuracy {res['greedy_accuracy']:.3f}  "
            f"pass@{k} {res[f'pass@{k}']:.3f}",
            flush=True,
        )
    return 0


def run_sweep(
    specs: Sequence[RunSpec],
    *,
    slots: Sequence[dict[str, str]] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_run: int = 1,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every spec not already done; returns one outcome per spec, in order.

    ``slots``: one environment overlay per concurrent run (``local`` backend),
    e.g. ``[{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]``;
    default one slot with no overlay (sequential).
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"--backend: must be local or ray, got {backend!r}")
    for s in specs:
        check_run_dir(s)
    slots = list(slots) if slots else [{}]
    progress = Progress(specs, len(slots), echo)
    outcomes: dict[str, dict[str, Any]] = {}
    todo = []
    for s in specs:
        if run_state(s) == "done":
            outcomes[s.run_dir] = {
                "name": s.name,
                "seed": s.seed,
                "run_dir": s.run_dir,
                "state": "skipped",
                "log": str(Path(s.run_dir) / "run.log"),
            }
            progress.finish(s, outcomes[s.run_dir])
        else:
            todo.append(s)
    try:
        if backend == "ray":
            _run_ray(todo, ray_address, cpus_per_run, progress, outcomes)
        else:
            _run_local(todo, slots, progress, outcomes)
    finally:
        for p in list(CHILDREN):
            p.terminate()
    return [outcomes[s.run_dir] for s in specs]


def _run_local(
    todo: Sequence[RunSpec],
    slots: Sequence[dict[str, str]],
    progress: Progress,
    outcomes: dict[str, dict[str, Any]],
) -> None:
    free: queue.Queue[dict[str, str]] = queue.Queue()
    for env in slots:
        free.put(env)
    lock = threading.Lock()

    def one(s: RunSpec) -> dict[str, Any]:
        env = free.get()
        try:
            with lock:
                progress.start(s)
            return execute(dataclasses.asdict(s), env, gpu="CUDA_VISIBLE_DEVICES" in env)
        finally:
            free.put(env)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        futures = {pool.submit(one, s): s for s in todo}
        while futures:
            time.sleep(POLL_S)
            for fut in [f for f in futures if f.done()]:
                s = futures.pop(fut)
                try:
                    outcomes[s.run_dir] = fut.result()
                except Exception as e:  # the launcher itself failed; others go on
                    outcomes[s.run_dir] = _launch_failure(s, e)
                with lock:
                    progress.finish(s, outcomes[s.run_dir])
            with lock:
                progress.tick(todo)


def _launch_failure(s: RunSpec, e: BaseException) -> dict[str, Any]:
    return {
        "name": s.name,
        "seed": s.seed,
        "run_dir": s.run_dir,
        "state": "failed",
        "returncode": None,
        "log": str(Path(s.run_dir) / "run.log"),
        "error": f"{type(e).__name__}: {e}",
    }


def _run_ray(
    todo: Sequence[RunSpec],
    address: str | None,
    cpus_per_run: int,
    progress: Progress,
    outcomes: dict[str, dict[str, Any]],
) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray: Ray is not installed; pip install 'arca[ray]'") from None
    if not todo:
        return
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        opts = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cpus_per_run}
        task = ray.remote(max_retries=0, **opts)(execute)
        refs = {task.remote(dataclasses.asdict(s), None, bool(gpus)): s for s in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, timeout=POLL_S)
            for s in todo:  # a run has started when its task wrote status.json
                st = read_json(Path(s.run_dir) / "status.json") or {}
                if (
                    s.run_dir not in progress.started
                    and s.run_dir not in outcomes
                    and st.get("state") == "running"
                ):
                    progress.start(s, float(st.get("started", time.time())))
            progress.tick(todo)
            for r in ready:
                s = refs[r]
                try:
                    outcomes[s.run_dir] = ray.get(r)
                except Exception as e:  # the task itself died (node lost, ...)
                    outcomes[s.run_dir] = _launch_failure(s, e)
                progress.started.setdefault(s.run_dir, time.time())
                progress.finish(s, outcomes[s.run_dir])
    finally:
        ray.shutdown()


def build_models(specs: Sequence[RunSpec], echo: Callable[[str], None]) -> None:
    """Build the embedded tiny model once, here, rather than in every run."""
    names = {s.setting("model_name_or_path") or "tiny" for s in specs if run_state(s) != "done"}
    for name in sorted(names & set(tiny.SPECS)):
        tiny.ensure_built(tiny.SPECS[name], log=echo)
