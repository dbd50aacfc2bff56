"""Config files and presets: where ``--config`` and ``--preset`` find their YAML.

arca's presets ship inside the package (``arca/presets/<preset>/*.yaml``;
``configs/`` in a checkout links there), so an installed arca trains from
``--config tiny/arca_r64`` and sweeps ``--preset tiny`` from any folder; a
``configs/`` folder in the current directory takes precedence, so a copy of a
preset can be edited. The files follow TRL's script convention: one YAML
mapping of field names to values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The sweep presets: folders of configs (``arca sweep --preset NAME``).
PRESETS = ("tiny", "paper", "tiny-full", "tiny-bench")

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


def config_path(name: str) -> Path:
    """``name`` as a file, else a preset (``tiny/arca_r64``, with or without
    ``.yaml``): your own ``configs/<preset>/`` in the current folder first, as
    ``arca sweep --preset`` reads it, then arca's shipped one, so an installed
    arca needs no checkout."""
    if Path(name).is_file():
        return Path(name)
    if Path(name).is_dir():
        raise IsADirectoryError(
            f"--config: {name} is a folder; give one YAML file from it, or run every config "
            f"in it with arca sweep --configs {name}"
        )
    for root in (Path.cwd() / "configs", PRESET_ROOT):
        for candidate in (root / name, root / f"{name}.yaml"):
            if candidate.is_file() and candidate.suffix == ".yaml":
                return candidate
    shipped = sorted(str(f.relative_to(PRESET_ROOT))[:-5] for f in PRESET_ROOT.glob("*/*.yaml"))
    raise FileNotFoundError(
        f"--config: no such file: {name} (a YAML file, or a shipped preset: {', '.join(shipped)})"
    )


def read_config(path: Path) -> dict[str, Any]:
    """A config file: UTF-8 YAML mapping fields to values (empty: ``{}``), else
    one line naming the file (and line)."""
    import yaml

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: line {line}: not UTF-8 text; re-save the file as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}: {where}not valid YAML ({problem})") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: must map field names to values, got a {type(data).__name__}")
    return data or {}
