"""The run folder: one module owns what an ``arca train`` run leaves behind.

``RUN/`` holds:

- ``config.yaml``: every setting the run trained with (:func:`config_record`),
  the absolute paths and SHA-256 of the files it read (``files_sha256``) and
  the identity of the model it started from by content (``model_identity``,
  :func:`arca.models.identity`), so a report never mistakes two builds of one
  name for one model;
- ``metrics.jsonl``: one JSON line per logged optimizer step (from 1);
- ``samples.jsonl``: completions with per-token weights (:func:`sample_step`
  reads their step whatever the file's age);
- ``curve.jsonl``: held-out greedy accuracy during training, per problem
  (``eval_every``), the run's learning curve;
- ``checkpoint-N/`` (each appears whole) and the final weights, ``adapter/``
  (LoRA) or ``model/`` (full fine-tuning): :func:`final_weights`;
- ``eval/`` (the whole held-out set), ``eval-firstN/`` (a part of it),
  ``eval-base/`` (the untrained base model with the run's settings):
  :func:`eval_dir`, :func:`evaluated`, :data:`BASE_EVAL_FIELDS`;
- ``.arca.lock``: held by the process writing into the folder (:func:`lock`).

What may change when a run is resumed (:data:`RESUMABLE`, :func:`check_resume`)
lives here too: a record must never describe steps that did not happen.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from arca.io import atomic_dir, folder_lock
from arca.tasks.arithmetic import DEFAULT_LEVEL

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
CURVE = "curve.jsonl"


@contextmanager
def lock(run: str | Path, what: str) -> Iterator[None]:
    """Hold the run folder while ``what`` writes into it: a second arca process
    on the folder stops with a line naming this one (:func:`arca.io.folder_lock`)."""
    with folder_lock(run, what):
        yield


def read_config(run: str | Path) -> dict[str, Any]:
    """A run's ``config.yaml`` as a mapping; one line naming the file if it is
    missing or unreadable."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{Path(run)}: not an arca run (no {CONFIG})")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def final_weights(run_dir: str | Path) -> tuple[str, Path] | None:
    """``("adapter", RUN/adapter)`` or ``("model", RUN/model)`` for a run whose
    training finished (full fine-tuning saves the whole model), else ``None``."""
    run = Path(run_dir)
    if (run / "adapter" / "adapter_config.json").is_file() and has_weights(run / "adapter"):
        return "adapter", run / "adapter"
    if (run / "model" / "config.json").is_file() and has_weights(run / "model"):
        return "model", run / "model"
    return None


def has_weights(folder: str | Path) -> bool:
    """Does ``folder`` hold weight files (safetensors or torch, sharded or
    not)? ZeRO-3 without ``stage3_gather_16bit_weights_on_model_save`` writes
    a config and no weights."""
    return any(
        f.suffix in (".safetensors", ".bin") and f.stat().st_size > 0
        for f in Path(folder).glob("*")
        if f.is_file() and f.name != "training_args.bin"
    )


def config_record(run: Any, cfg: Any, model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for obj in (run, model, cfg):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, enum.Enum):  # before str: TRL's enums subclass str
                out[f.name] = v.value
            elif isinstance(v, str | int | float | bool | type(None)) or (
                isinstance(v, list) and all(isinstance(x, str | int | float) for x in v)
            ):
                out[f.name] = v
            elif isinstance(v, dict) and all(isinstance(x, str) for x in [*v, *v.values()]):
                out[f.name] = dict(v)
    return out


#: Settings a resumed run may change: how far it trains, and where, how often
#: and how much it records. Any other change would make ``config.yaml`` describe
#: steps it did not take, so ``--resume`` refuses it.
RESUMABLE = frozenset(
    {
        "resume",
        "output_dir",
        "max_steps",
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "logging_dir",
        "report_to",
        "run_name",
        "sample_every",
        "sample_count",
        "eval_every",
        "dataloader_num_workers",
        "disable_tqdm",
        "log_level",
        "local_rank",
    }
)


def check_resume(saved: Path, new: dict[str, Any]) -> None:
    """Refuse to resume the run whose config is ``saved`` with settings ``new``
    that differ outside :data:`RESUMABLE`, naming each field with both values."""

    try:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{saved}: not a readable config ({e}); cannot check what the run was"
        ) from e
    changed = [
        _change(k, old[k], v)
        for k, v in new.items()
        if k in old and k not in RESUMABLE and old[k] != v
    ]
    if changed:
        raise ValueError(
            f"--resume: {saved.parent} was trained with other settings ({'; '.join(changed)}); "
            "resume with the same ones, or train into a new output_dir "
            f"(may change: {', '.join(sorted(RESUMABLE - {'resume', 'local_rank'}))})"
        )

    if "max_steps" in old and old["max_steps"] != new.get("max_steps"):
        fitted = schedule_fitted_to_max_steps(new)
        if fitted:
            raise ValueError(
                f"--resume: max_steps {old['max_steps']} -> {new.get('max_steps')}: {fitted}, and a "
                f"resumed run keeps the schedule its checkpoint holds (fitted to {old['max_steps']} "
                "steps), so config.yaml would describe a run that did not happen; train a new run "
                "with the new max_steps, or, to extend runs, train with lr_scheduler_type constant "
                "(or constant_with_warmup and whole warmup_steps)"
            )


#: Schedules whose learning rate at a step does not depend on the run's length.
LENGTH_FREE_SCHEDULES = frozenset(
    {"constant", "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "greedy"}
)


def schedule_fitted_to_max_steps(cfg: dict[str, Any]) -> str:
    """Why the learning-rate schedule of ``cfg`` depends on ``max_steps`` (a
    decay to the last step, or a warm-up given as a fraction of the run), or
    "" when it does not."""
    kind = str(cfg.get("lr_scheduler_type", "linear"))
    warmup = cfg.get("warmup_steps", 0) or 0
    if kind not in LENGTH_FREE_SCHEDULES:
        return f"lr_scheduler_type {kind!r} fits the learning rate to max_steps"
    if kind != "constant" and 0 < float(warmup) < 1:
        return f"warmup_steps {warmup} is a fraction of max_steps"
    return ""


def began(run: str | Path, last_checkpoint: str | None) -> bool:
    """Did the run in ``run`` complete a step (a metrics line, a sample, a
    checkpoint or final weights)? One that did not recorded nothing worth
    protecting: it may be replaced rather than resumed."""
    out = Path(run)
    return (
        last_checkpoint is not None
        or final_weights(out) is not None
        or any(has_lines(out / f) for f in (METRICS, SAMPLES))
    )


def _change(field: str, old: Any, new: Any) -> str:
    """``field: old -> new`` as ``check_resume`` names it; for the file hashes,
    only the files that differ."""
    if field == "files_sha256" and isinstance(old, dict) and isinstance(new, dict):
        diff = [
            f"{p} {str(old.get(p, 'not read'))[:12]} -> {str(new.get(p, 'not read'))[:12]}"
            for p in sorted({*old, *new})
            if old.get(p) != new.get(p)
        ]
        return f"files_sha256: {', '.join(diff)}"
    return f"{field}: {old!r} -> {new!r}"


def has_lines(path: Path) -> bool:
    """Does ``path`` exist and hold a line that is not blank?"""
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return any(line.strip() for line in f)


#: Files of a checkpoint that hold training state rather than the model.
_TRAINING_STATE = (
    "optimizer",
    "scheduler",
    "scaler",
    "rng_state",
    "trainer_state",
    "training_args",
)


def finished(checkpoint: Path, max_steps: int) -> bool:
    """Has the run reached its last step at ``checkpoint``? ``max_steps`` is the
    resumed config's (a larger one continues the run); ``<= 0``: the checkpoint's own."""
    state_file = checkpoint / "trainer_state.json"
    if not state_file.is_file():
        return False
    state = json.loads(state_file.read_text())
    target = max_steps if max_steps > 0 else int(state.get("max_steps", 0))
    return target > 0 and int(state.get("global_step", 0)) >= target


def final_from_checkpoint(checkpoint: Path, dest: Path) -> None:
    """The final weights of a run killed after its last checkpoint but before
    the final save: the checkpoint's model files (what ``save_model`` wrote there)."""

    with atomic_dir(dest) as tmp:
        tmp.mkdir()
        for f in checkpoint.iterdir():
            if f.is_file() and not f.name.startswith(_TRAINING_STATE):
                shutil.copy2(f, tmp / f.name)
    if not has_weights(dest):
        shutil.rmtree(dest)
        raise FileNotFoundError(
            f"{checkpoint}: no consolidated weights to make {dest.name}/ from (a sharded "
            "DeepSpeed/FSDP checkpoint?); convert it, or resume with a larger max_steps"
        )


#: The config fields (with the defaults :func:`evaluate_run` reads them with)
#: that decide an evaluation's problems, prompts, grading and decoding: a base
#: model's evaluation stands beside a run's only when all of them agree (and the
#: sampling seed is one of the runs'). A field that changes what is evaluated
#: belongs here.
BASE_EVAL_FIELDS: dict[str, Any] = {
    "model_name_or_path": None,
    "task": None,
    "data": None,
    "level": DEFAULT_LEVEL,
    "few_shot": 0,
    "split_seed": None,
    "heldout_size": None,
    "skip_malformed": False,
    "prompt_template": None,
    "prompt_column": "prompt",
    "columns": None,
    "use_chat_template": False,
    "system_prompt": None,
    "reward_funcs": None,
    "reward_weights": None,
    "correct_reward": 1.0,
    "temperature": 1.0,
    "top_p": 0.95,
    "max_completion_length": 512,
    "bf16": False,
    # The contents of the data and reward files (arca train records them).
    "files_sha256": None,
    # What the model is by content: two builds of one name are two models.
    "model_identity": None,
}


def eval_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The :data:`BASE_EVAL_FIELDS` of a run config, defaults filled in."""
    return {f: cfg.get(f, d) for f, d in BASE_EVAL_FIELDS.items()}


def eval_dir(run: Path, problems: int, heldout_size: int, *, base: bool = False) -> Path:
    """Where a run's evaluation of ``problems`` of its ``heldout_size`` held-out
    problems goes: ``eval/`` for all of them, else ``eval-firstN/``; with
    ``base``, the untrained base model's: ``eval-base/`` or ``eval-base-firstN/``."""
    name = "eval-base" if base else "eval"
    return run / name if problems == heldout_size else run / f"{name}-first{problems}"


def evaluated(run_dir: str | Path, *, base: bool = False) -> bool:
    """Does the run hold a complete evaluation (``eval/results.json`` over its
    whole held-out set; with ``base``, the base model's ``eval-base/``)? One cut
    short by ``--limit`` by an older arca, which wrote it there, does not count."""

    run = Path(run_dir)
    res_path = run / ("eval-base" if base else "eval") / "results.json"
    cfg_path = run / "config.yaml"
    if not res_path.is_file():
        return False
    try:
        res = json.loads(res_path.read_text(encoding="utf-8"))
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{res_path}: unreadable ({e}); delete it to evaluate again") from e
    want = res.get("heldout_size", (cfg or {}).get("heldout_size"))
    return want is None or int(res.get("problems", 0)) >= int(want)


def trained_on(run: Path) -> Path | None:
    """The model folder the run's LoRA adapter was trained on, when the adapter
    names one that is here: a name such as ``tiny`` may have come to mean
    another model since the run was trained, and the control is the run's own
    starting point. None otherwise (no adapter yet, a Hub id, another machine)."""

    cfg_path = run / "adapter" / "adapter_config.json"
    try:
        base = json.loads(cfg_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(base) if isinstance(base, str) and base and Path(base).is_dir() else None


def sample_step(rec: dict[str, Any]) -> int:
    """The step a ``samples.jsonl`` record was drawn at, counted from 1 as
    ``metrics.jsonl`` counts steps. Records carry ``step_base: 1``; those
    written before it have none and counted from 0 (their ``step`` was the
    number of steps done, so the step being taken is one more)."""
    return int(rec.get("step", 0)) + 1 - int(rec.get("step_base", 0))
