"""The runs of a sweep: configs x seeds, each with its folder, its state and
the fingerprint that made it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arca.config import read_config
from arca.credit import BUILTIN_SCHEMES
from arca.run_folder import BASE_EVAL_FIELDS, evaluated, final_weights
from arca.train import parse


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
    decoding: :data:`arca.run_folder.BASE_EVAL_FIELDS`) to evaluate the base model
    too: once per setting, not once per run, and by a run so that it happens
    wherever runs happen (a GPU slot, a Ray node)."""
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

    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        cfg = {}  # reported with its file name by plan_sweep
    scheme = str(cfg.get("token_weighting", "uniform"))
    rank = cfg.get("lora_r", 0)
    idx = BUILTIN_SCHEMES.index(scheme) if scheme in BUILTIN_SCHEMES else len(BUILTIN_SCHEMES)
    return idx, int(rank) if isinstance(rank, int) else 0, path.stem


def run_state(spec: RunSpec) -> str:
    """``done`` (evaluated), ``evaluate`` (trained), ``resume`` (has
    checkpoints) or ``new``."""
    d = Path(spec.run_dir)
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


def validate(specs: Sequence[RunSpec]) -> None:
    """Parse every run's arguments (TRL's parser, arca's checks) before anything
    starts, so a typo fails in seconds instead of after the first run."""
    import warnings

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
