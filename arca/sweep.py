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
import dataclasses
import hashlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from arca.io import atomic_write_json
from arca.report.runs import DIAGNOSE_FIXED, METHOD_FIELDS
from arca.tasks.arithmetic import DEFAULT_LEVEL
from arca.train import final_weights, read_config

PRESETS = ("tiny", "paper", "tiny-full")
_POLL_S = 1.0


#: arca's shipped presets (``configs/`` in a checkout is a link to this folder).
PRESET_ROOT = Path(__file__).resolve().parent / "presets"


def preset_dir(name: str) -> Path:
    """``configs/<name>/`` of the working directory (your own copy), else arca's shipped one."""
    if name not in PRESETS:
        raise ValueError(f"--preset: unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    for d in (Path.cwd() / "configs" / name, PRESET_ROOT / name):
        if d.is_dir():
            return d
    raise FileNotFoundError(
        f"--preset {name}: no configs/{name}/ here and none shipped in {PRESET_ROOT}; "
        "reinstall arca or pass --configs DIR"
    )


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One (config, seed) of a sweep."""

    name: str
    config: str
    seed: int
    run_dir: str
    overrides: tuple[str, ...] = ()
    #: This run also evaluates the untrained base model (``eval-base/``) for
    #: every run that shares its model, task and decoding.
    eval_base: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} seed {self.seed}"

    def fingerprint(self) -> dict[str, Any]:
        text = Path(self.config).read_bytes()
        return {
            "name": self.name,
            "config_sha256": hashlib.sha256(text).hexdigest(),
            "seed": self.seed,
            "overrides": list(self.overrides),
        }

    def train_argv(self, *, gpu: bool = False) -> list[str]:
        argv = ["--config", self.config, "--output_dir", self.run_dir]
        argv += ["--seed", str(self.seed), "--run_name", self.name, "--resume", "true"]
        argv += ["--disable_tqdm", "true"]
        if gpu:
            argv += ["--use_cpu", "false"]
        return argv + list(self.overrides)  # last: the user's overrides win

    def setting(self, field: str, default: Any = None) -> Any:
        """A config field as the run will see it: the YAML's value, unless an
        override ``--field value`` replaces it (the last one wins, as in argparse)."""
        import yaml

        value = (yaml.safe_load(Path(self.config).read_text()) or {}).get(field, default)
        ov = list(self.overrides)
        for i, a in enumerate(ov[:-1]):
            if a == f"--{field}":
                value = ov[i + 1]
        return value

    def max_steps(self) -> int:
        return int(self.setting("max_steps", 0))


def plan_sweep(
    configs: str | Path,
    out: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
) -> list[RunSpec]:
    """The runs of a sweep, in config-file order, seed-major within a config.

    ``seeds=None`` uses each config's own ``seed``. ``only`` selects configs
    by name (file stem)."""

    cdir = Path(configs)
    files = sorted(cdir.glob("*.yaml")) + sorted(cdir.glob("*.yml"))
    if not files:
        raise FileNotFoundError(f"--configs: no .yaml files in {cdir}")
    files.sort(key=_paper_order)
    for f in files:
        # The stem names the run's folder under --out: one plain path component.
        if not RUN_NAME.fullmatch(f.stem):
            raise ValueError(
                f"{f}: {f.stem!r} cannot name a run folder; rename the file to letters, "
                "digits, '_', '-' and '.' (not starting with '.')"
            )
    names = [f.stem for f in files]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(
                f"--only: no config named {unknown[0]!r} in {cdir}; valid: {', '.join(names)}"
            )
        files = [f for f in files if f.stem in only]
    specs = []
    root = Path(out).resolve()
    for f in files:
        cfg = read_config(f)
        for s in seeds if seeds else [int(cfg.get("seed", 42))]:
            specs.append(
                RunSpec(
                    f.stem,
                    str(f.resolve()),
                    int(s),
                    str(root / f.stem / f"seed-{s}"),
                    tuple(overrides),
                )
            )
    return _assign_base_evals(specs)


def _assign_base_evals(specs: list[RunSpec]) -> list[RunSpec]:
    """Mark the first run of each distinct evaluation setting (model, task,
    decoding: :data:`arca.evaluate.BASE_EVAL_FIELDS`) to evaluate the base model
    too: once per setting, not once per run, and by a run so that it happens
    wherever runs happen (a GPU slot, a Ray node)."""
    from arca.evaluate import BASE_EVAL_FIELDS

    seen: set[tuple[str, ...]] = set()
    out = []
    for s in specs:
        key = tuple(str(s.setting(f, d)) for f, d in BASE_EVAL_FIELDS.items())
        out.append(dataclasses.replace(s, eval_base=key not in seen))
        seen.add(key)
    return out


#: A config file's stem, which names its run folder: no separators, no leading dot.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _paper_order(path: Path) -> tuple[int, int, str]:
    """Uniform, surprisal, entropy, divergence, then ARCA by rank (Table 1)."""
    import yaml

    from arca.report.runs import SCHEME_ORDER

    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        cfg = {}  # reported with its file name by plan_sweep
    scheme = str(cfg.get("token_weighting", "uniform"))
    rank = cfg.get("lora_r", 0)
    idx = SCHEME_ORDER.index(scheme) if scheme in SCHEME_ORDER else len(SCHEME_ORDER)
    return idx, int(rank) if isinstance(rank, int) else 0, path.stem


def run_state(spec: RunSpec) -> str:
    """``done`` (evaluated), ``evaluate`` (trained), ``resume`` (has
    checkpoints) or ``new``."""
    d = Path(spec.run_dir)
    from arca.evaluate import evaluated

    if evaluated(d) and (not spec.eval_base or evaluated(d, base=True)):
        return "done"
    if final_weights(d) is not None:
        return "evaluate"
    if any(d.glob("checkpoint-*")):
        return "resume"
    return "new"


def check_run_dir(spec: RunSpec) -> None:
    """Refuse to continue a run folder made by another config, seed or
    overrides (a folder with no progress yet is simply reused)."""
    path = Path(spec.run_dir) / "spec.json"
    metrics = Path(spec.run_dir) / "metrics.jsonl"
    has_progress = run_state(spec) != "new" or (metrics.is_file() and metrics.stat().st_size > 0)
    if not path.is_file() or not has_progress:
        return
    old = json.loads(path.read_text()).get("fingerprint", {})
    new = spec.fingerprint()
    diff = [f"{k} {old.get(k)!r} then, {new[k]!r} now" for k in new if old.get(k) != new[k]]
    if diff:
        raise ValueError(
            f"{spec.run_dir}: this run was made with other settings ({'; '.join(diff)}; config "
            f"{spec.config}); choose another --out or delete the folder"
        )


# ------------------------------------------------------------- one run


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
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        _CHILDREN.add(proc)
        try:
            rc = proc.wait()
        finally:
            _CHILDREN.discard(proc)
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
        outcome["error"] = _last_line(log)
    atomic_write_json(d / "status.json", {**status, **outcome, "finished": time.time()})
    return outcome


_CHILDREN: set[subprocess.Popen] = set()


def _die_with_parent() -> None:
    # A sweep killed outright (SIGKILL, OOM) must not leave runs training
    # unsupervised: Linux sends the child SIGTERM when its parent dies.
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _last_line(path: Path) -> str:
    lines = [x for x in _tail(path, 8192).splitlines() if x.strip()]
    return lines[-1].strip()[:300] if lines else ""


def _tail(path: Path, n: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _worker(spec_json: str) -> int:
    """The child process: train unless the trained weights exist, then evaluate."""
    from arca.io import folder_lock

    data = json.loads(Path(spec_json).read_text())
    run = Path(spec_json).parent
    with folder_lock(run, "arca sweep run"):
        return _train_and_evaluate(run, data)


def _train_and_evaluate(run: Path, data: dict[str, Any]) -> int:
    if final_weights(run) is None:
        from arca.train import main as train_main

        print("[arca sweep] train " + " ".join(data["train_argv"]), flush=True)
        train_main(data["train_argv"])
    from arca.evaluate import evaluate_run, evaluated

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


# ------------------------------------------------------------- progress


def _fmt_time(s: float | None) -> str:
    if s is None or s != s or s < 0:
        return "?"
    s = int(round(s))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Progress:
    """Which run, which step, reward, time left: read from the runs' files,
    so it works the same for child processes and Ray tasks."""

    def __init__(self, specs: Sequence[RunSpec], slots: int, echo: Callable[[str], None]) -> None:
        self.index = {s.run_dir: i + 1 for i, s in enumerate(specs)}
        self.total = len(specs)
        self.slots = max(1, slots)
        self.echo = echo
        self.tty = echo is print and sys.stdout.isatty()
        self.started: dict[str, float] = {}
        self.printed: dict[str, tuple[str, int]] = {}
        self.durations: list[float] = []
        self.first_step: dict[str, tuple[float, int]] = {}
        self.pending = len(specs)
        self.steps = {s.run_dir: s.max_steps() for s in specs}

    def start(self, spec: RunSpec, at: float | None = None) -> None:
        self.started[spec.run_dir] = time.time() if at is None else at

    def finish(self, spec: RunSpec, outcome: dict[str, Any]) -> None:
        self.started.pop(spec.run_dir, None)
        self.pending -= 1
        i = self.index[spec.run_dir]
        if self.tty:
            sys.stdout.write("\r\033[K")
        if outcome["state"] == "done":
            self.durations.append(outcome["seconds"])
            res = _read_json(Path(spec.run_dir) / "eval" / "results.json")
            acc = ""
            if res:
                k = res["k"]
                acc = f"greedy {res['greedy_accuracy']:.1%}, pass@{k} {res[f'pass@{k}']:.1%}"
            self.echo(
                f"[{i}/{self.total}] {spec.label}: done in {_fmt_time(outcome['seconds'])}  {acc}"
            )
            base = _read_json(Path(spec.run_dir) / "eval-base" / "results.json")
            if spec.eval_base and base:
                k = base["k"]
                self.echo(
                    f"    base model (untrained): greedy {base['greedy_accuracy']:.1%}, "
                    f"pass@{k} {base[f'pass@{k}']:.1%}"
                )
        elif outcome["state"] == "skipped":
            self.echo(f"[{i}/{self.total}] {spec.label}: already done, skipped")
        else:
            self.echo(
                f"[{i}/{self.total}] {spec.label}: FAILED (exit {outcome['returncode']}): "
                f"{outcome.get('error', '')}\n    log: {outcome['log']}"
            )

    def tick(self, specs: Sequence[RunSpec]) -> None:
        for s in specs:
            if s.run_dir not in self.started:
                continue
            stage, step, line = self._describe(s)
            key = (stage, step)
            last = self.printed.get(s.run_dir)
            every = max(1, self.steps[s.run_dir] // 10)
            due = last is None or last[0] != stage or (stage == "train" and step - last[1] >= every)
            if self.tty:
                sys.stdout.write("\r\033[K" + line[: os.get_terminal_size().columns - 1])
                sys.stdout.flush()
            elif due:
                self.echo(line)
            if due:
                self.printed[s.run_dir] = key

    def _describe(self, s: RunSpec) -> tuple[str, int, str]:
        d = Path(s.run_dir)
        i = self.index[s.run_dir]
        now = time.time()
        elapsed = now - self.started[s.run_dir]
        total = self.steps[s.run_dir]
        head = f"[{i}/{self.total}] {s.label}"
        rec = _last_json_line(d / "metrics.jsonl")
        if final_weights(d) is not None:
            stage, step, what = "eval", total, "evaluating on the held-out set"
            left: float | None = None
        elif rec and "step" in rec:
            stage, step = "train", int(rec["step"])
            what = f"step {step}/{total}  reward {rec.get('reward', float('nan')):.3f}"
            # Rate from the steps seen by this sweep, so model loading and a
            # resumed run's earlier steps do not skew it.
            t_first, s_first = self.first_step.setdefault(s.run_dir, (now, step))
            left = (now - t_first) / (step - s_first) * (total - step) if step > s_first else None
        else:
            stage, step, what, left = "load", 0, "loading model and data", None
        run_total = self.durations and sum(self.durations) / len(self.durations)
        if run_total:
            left = max(left or 0.0, run_total - elapsed)
        rest = (self.pending - len(self.started)) * (run_total or (elapsed + (left or 0)))
        sweep_left = ((left or 0) + rest / self.slots) if (run_total or left) else None
        return (
            stage,
            step,
            f"{head}  {what}  | run {_fmt_time(elapsed)}, ~{_fmt_time(left)} left"
            f"  | sweep ~{_fmt_time(sweep_left)} left",
        )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _last_json_line(path: Path) -> dict[str, Any] | None:
    for line in reversed(_tail(path, 32768).splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


# ------------------------------------------------------------- scheduling


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
        for p in list(_CHILDREN):
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
            time.sleep(_POLL_S)
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
            ready, pending = ray.wait(pending, timeout=_POLL_S)
            for s in todo:  # a run has started when its task wrote status.json
                st = _read_json(Path(s.run_dir) / "status.json") or {}
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


def sweep(
    configs: str | Path,
    out: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    gpus: Sequence[int] | None = None,
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
    _validate(specs)
    slots = [{"CUDA_VISIBLE_DEVICES": str(g)} for g in gpus] if gpus else None
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    from arca.io import folder_lock

    # A second sweep on the same --out would run every run again into the same folders.
    with folder_lock(root, "arca sweep"):
        _build_models(specs, echo)
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
            from arca.report import build_report

            rep = build_report(
                ok,
                root / "report",
                failed=failed,
                title=title or f"arca sweep: {Path(configs).name}",
                base=base,
            )
        return {"outcomes": outcomes, "report": rep, "seconds": time.time() - t0, "out": root}


def base_model_argv(specs: Sequence[RunSpec], samples: int, out: Path) -> list[str] | None:
    """``arca diagnose`` arguments for the sweep's base-model control: the runs'
    initial model on their held-out problems, K, completion length, weight
    floor, ``high_entropy`` quantile and pool (a micro-batch of rows; the
    defaults a run has where a config leaves them out). None when the runs do not share one initial model and
    held-out set (or ``samples`` is 0). What diagnose cannot take is said by
    :func:`base_model_caveats` and marked on the report's row."""
    if samples <= 0 or not specs:
        return None
    fields = (
        "model_name_or_path",
        "task",
        "data",
        "level",
        "few_shot",
        "split_seed",
        "heldout_size",
    )
    settings = {tuple(str(s.setting(f)) for f in fields) for s in specs}
    if len(settings) != 1:
        return None
    s = specs[0]
    argv = ["diagnose", "--model", str(s.setting("model_name_or_path", "tiny"))]
    argv += ["--task", str(s.setting("task", "arithmetic")), "--samples", str(samples)]
    argv += ["--group-size", str(s.setting("num_generations", 8))]
    argv += ["--max-new-tokens", str(s.setting("max_completion_length", 512))]
    level = s.setting("level", DEFAULT_LEVEL)
    argv += ["--level", str(level), "--few-shot", str(s.setting("few_shot", 0))]
    argv += ["--heldout-size", str(s.setting("heldout_size", 200))]
    for field, flag in (("data", "--data"), ("split_seed", "--split-seed")):
        if s.setting(field) is not None:
            argv += [flag, str(s.setting(field))]
    # The weights as the runs compute them (the runs' first where they differ;
    # the report marks the row beside the others).
    argv += ["--eps", str(float(s.setting("weight_eps", METHOD_FIELDS["weight_eps"])))]
    q = s.setting("high_entropy_quantile", METHOD_FIELDS["high_entropy_quantile"])
    argv += ["--high-entropy-quantile", str(float(q))]
    # Diagnose's pass is high_entropy's pool: one micro-batch, as in training.
    rows = s.setting("per_device_train_batch_size", METHOD_FIELDS["per_device_train_batch_size"])
    argv += ["--batch-size", str(int(rows))]
    return argv + ["--seed", str(s.seed), "--out", str(out)]


def base_model_caveats(specs: Sequence[RunSpec]) -> list[str]:
    """The runs' settings ``arca diagnose`` cannot take
    (:data:`arca.report.runs.DIAGNOSE_FIXED`): ``field value (diagnose: its)``
    for each value a run has that diagnose does not use."""
    out = []
    for field, theirs in DIAGNOSE_FIXED.items():
        values = {s.setting(field, METHOD_FIELDS[field]) for s in specs}
        out += [f"{field} {v!r} (diagnose: {theirs!r})" for v in values if v != theirs]
    return out


def run_base_model(
    specs: Sequence[RunSpec], samples: int, root: Path, echo: Callable[[str], None]
) -> Path | None:
    """Diagnose the initial model once (a child process, log in
    ``OUT/base-model/run.log``); returns its folder, or None if skipped or failed.
    ``spec.json`` is written only after a success, so a failed or interrupted
    diagnosis is never mistaken for a finished one."""
    out = root / "base-model"
    argv = base_model_argv(specs, samples, out)
    if argv is None:
        if samples > 0:
            echo(
                "base model: the runs differ in model, task or held-out set; no base-model "
                "row (arca diagnose each)"
            )
        return None
    done = _read_json(out / "spec.json")
    if (out / "diagnose.json").is_file() and done and done.get("argv") == argv:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("spec.json", "diagnose.json"):
        (out / stale).unlink(missing_ok=True)
    echo(f"base model: arca diagnose on {samples} completions it samples -> {out}")
    caveats = base_model_caveats(specs)
    if caveats:
        echo(
            f"base model: diagnose cannot use the runs' {', '.join(caveats)}; the report marks "
            "its row"
        )
    t0 = time.time()
    with (out / "run.log").open("a", encoding="utf-8") as f:
        rc = subprocess.run(
            [sys.executable, "-m", "arca.cli", *argv],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        ).returncode
    if rc != 0:
        echo(
            f"base model: FAILED (exit {rc}): {_last_line(out / 'run.log')}\n    log: {out / 'run.log'}"
        )
        return None
    atomic_write_json(out / "spec.json", {"argv": argv})
    echo(f"base model: done in {_fmt_time(time.time() - t0)}")
    return out


def _build_models(specs: Sequence[RunSpec], echo: Callable[[str], None]) -> None:
    """Build the embedded tiny model once, here, rather than in every run."""
    from arca.models import tiny

    names = {s.setting("model_name_or_path") or "tiny" for s in specs if run_state(s) != "done"}
    for name in sorted(names & set(tiny.SPECS)):
        tiny.ensure_built(tiny.SPECS[name], log=echo)


def _validate(specs: Sequence[RunSpec]) -> None:
    """Parse every run's arguments (TRL's parser, arca's checks) before anything
    starts, so a typo fails in seconds instead of after the first run."""
    import warnings

    from arca.train import parse

    seen = set()
    for s in specs:
        if s.config in seen:
            continue
        seen.add(s.config)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations
                parse(s.train_argv())
        except SystemExit as e:  # argparse's exit on an unknown field
            raise ValueError(f"{s.config}: invalid arguments (see above), exit {e.code}") from None
        except ValueError as e:
            raise ValueError(f"{s.config}: {e}") from None


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


def add_sweep_arguments(p: argparse.ArgumentParser, *, preset: str | None = None) -> None:
    src = p.add_mutually_exclusive_group(required=preset is None)
    src.add_argument(
        "--preset",
        choices=PRESETS,
        default=preset,
        help="configs/<preset>/: tiny and paper are the paper's seven runs, tiny-full its "
        "schemes with full fine-tuning",
    )
    src.add_argument("--configs", help="a folder of arca train YAML configs")
    p.add_argument("--out", help="sweep folder (default: runs/sweep-<preset>)")
    p.add_argument("--seeds", help="comma-separated seeds (default: each config's own seed)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these configs (file stems)")
    p.add_argument("--gpus", help="comma-separated GPU ids: one concurrent run per GPU")
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
    if args.base_samples < 0:
        raise ValueError(f"--base-samples: must be >= 0, got {args.base_samples}")
    return {
        "configs": configs,
        "out": Path(args.out) if args.out else Path("runs") / f"sweep-{name}",
        "seeds": _ints(args.seeds, "--seeds"),
        "only": args.only,
        "overrides": overrides,
        "gpus": gpus,
        "backend": args.backend,
        "ray_address": args.ray_address,
        "cpus_per_run": args.cpus_per_run,
        "report": not args.no_report,
        "base_samples": args.base_samples,
    }


def finish(res: dict[str, Any]) -> int:
    """Print the summary; exit status 1 if any run failed."""
    from arca.report import summary_text

    failed = [o for o in res["outcomes"] if o["state"] == "failed"]
    if res["report"]:
        print()
        print(summary_text(res["report"]["tables"]))
        print(
            f"\nreport: {res['out'] / 'report' / 'report.md'}  (plots *.png, tokens.html, tables.csv)"
        )
    print(
        f"sweep finished in {_fmt_time(res['seconds'])}: {len(res['outcomes']) - len(failed)} runs ok, {len(failed)} failed"
    )
    for o in failed:
        print(f"  FAILED {o['name']} seed {o['seed']}: {o['log']}")
    return 1 if failed else 0


def _main(args: argparse.Namespace) -> int:
    return finish(sweep(**options(args)))


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
