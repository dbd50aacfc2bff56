"""Data files: rows from a local file or folder or a Hub dataset, each named
by where it came from (file and line), and the content hashes a run records.

Local sources: a ``.jsonl`` file, a ``.json`` file (a list of rows, or one row
as in the original MATH release's one-problem-per-file layout), a ``.parquet``
file, or a folder of such files (read recursively, in sorted order). A source
that looks like a path (starts with ``/``, ``.`` or ``~``, ends in a data suffix,
or has more than one ``/``) must exist; anything else that does not exist on
disk is taken as a Hub dataset id and loaded with ``datasets.load_dataset``
(the only path that touches the network). Unreadable files (damaged Parquet,
non-UTF-8 text) and unreachable Hub ids raise ``ValueError`` naming them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from arca.tasks.base import TaskDataError

_SUFFIXES = (".jsonl", ".json", ".parquet")


Row = dict[str, Any]


Where = str  # "file.jsonl: line 7", "openai/gsm8k[train]: row 12"


def looks_local(source: str) -> bool:
    """A path, not a Hub id (``owner/name``): starts with ``/``, ``.`` or ``~``,
    ends in a data suffix, or has more than one ``/``."""
    return (
        source.endswith(_SUFFIXES)
        or source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
    )


def _utf8(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line += raw[: e.start].count(b"\n")
        raise TaskDataError(
            f"{path}: line {line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
            "re-save the file as UTF-8"
        ) from None


def _read_file(path: Path) -> Iterator[tuple[Where, Any]]:
    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                line = _utf8(raw, path, n)
                if not line.strip():
                    continue
                try:
                    yield f"{path}: line {n}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskDataError(f"{path}: line {n}: not valid JSON ({e.msg})") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(_utf8(path.read_bytes(), path, 1))
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        items = data if isinstance(data, list) else [data]
        for n, row in enumerate(items, 1):
            yield (f"{path}: row {n}" if isinstance(data, list) else str(path)), row
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise TaskDataError(
                f"{path}: not readable Parquet ({e}); the file is damaged or not Parquet: "
                "write it again, or give the data as .jsonl"
            ) from None
        for n, row in enumerate(table.to_pylist(), 1):
            yield f"{path}: row {n}", row
    else:
        raise TaskDataError(f"{path}: unsupported file type (use {', '.join(_SUFFIXES)})")


def data_files(folder: Path) -> list[Path]:
    """The data files of a folder source, in the order their rows are read."""
    return sorted(p for p in folder.rglob("*") if p.suffix in _SUFFIXES and p.is_file())


def read_rows(
    source: str, *, hub_config: str | None = None, split: str = "train"
) -> Iterator[tuple[Where, Any]]:
    """``(where, row)`` pairs from a local file/folder or a Hub dataset."""
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        files = data_files(path)
        if not files:
            raise TaskDataError(f"{path}: folder holds no {', '.join(_SUFFIXES)} files")
        for f in files:
            yield from _read_file(f)
    elif path.is_file():
        yield from _read_file(path)
    elif looks_local(source):
        raise FileNotFoundError(f"--data: no such file or folder: {source}")
    else:
        from datasets import load_dataset

        try:
            ds = load_dataset(source, hub_config, split=split)
        except OSError as e:  # ConnectionError, DatasetNotFoundError, LocalEntryNotFoundError
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            hint = (
                "HF_HUB_OFFLINE is set, so only datasets already in the cache load"
                if offline
                else "check the id and the network"
            )
            raise ValueError(
                f"--data {source}: neither a local file or folder nor reachable on the Hugging "
                f"Face Hub ({hint}; {type(e).__name__}: {e}); give a {'/'.join(_SUFFIXES)} "
                "file or a folder of them"
            ) from None
        for n, row in enumerate(ds, 1):
            yield f"{source}[{split}]: row {n}", row


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, or of a folder's data files (their
    relative names and contents, in the order :func:`read_rows` reads them)."""

    h = hashlib.sha256()
    if path.is_dir():
        for f in data_files(path):
            h.update(str(f.relative_to(path)).encode() + b"\0" + sha256_of(f).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def task_files(cfg: Mapping[str, Any]) -> list[Path]:
    """The local files a run config reads: its data (file or folder), and the
    ``.py`` files of its reward functions and error locator."""
    out = []
    data = cfg.get("data")
    if data and Path(os.path.expanduser(data)).exists():
        out.append(Path(os.path.expanduser(data)))
    for spec in [*(cfg.get("reward_funcs") or []), cfg.get("error_locator")]:
        if isinstance(spec, str) and ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
            out.append(Path(os.path.expanduser(spec.rsplit(":", 1)[0])))
    return list(dict.fromkeys(out))


def check_files(cfg: Mapping[str, Any], where: str = "files_sha256") -> dict[str, str]:
    """The SHA-256 of every file :func:`task_files` names, after checking each
    against the hash ``cfg["files_sha256"]`` recorded for the same path (a
    run's ``config.yaml``): a file changed since is refused, naming it and both
    hashes, so that a run is never resumed or evaluated on other data or
    rewards than it trained on. A recorded file that is gone is refused too."""
    recorded = cfg.get("files_sha256") or {}
    if not isinstance(recorded, Mapping):
        raise ValueError(f"{where}: must map file paths to SHA-256 hashes, got {recorded!r}")
    now = {str(p): sha256_of(p) for p in task_files(cfg)}
    for path, then in recorded.items():
        if path in now and now[path] != then:
            raise ValueError(
                f"{where}: {path} has changed since the run recorded it (sha256 {then[:12]}... "
                f"then, {now[path][:12]}... now); restore that file, or train a new run on this one"
            )
        if path not in now and not Path(path).exists() and _still_named(path, cfg):
            raise ValueError(
                f"{where}: {path} (sha256 {then[:12]}...) no longer exists; the run read it, "
                "so restore it there"
            )
    return now


def _still_named(path: str, cfg: Mapping[str, Any]) -> bool:
    specs = [cfg.get("data"), *(cfg.get("reward_funcs") or []), cfg.get("error_locator")]
    return any(isinstance(s, str) and (s == path or s.startswith(f"{path}:")) for s in specs)


def parse_rows(
    source: str,
    parse: Callable[[Any, Where], Row],
    *,
    skip_malformed: bool,
    hub_config: str | None,
    split: str,
) -> tuple[list[Row], list[str]]:
    """``source``'s rows through ``parse``, and the reasons of the malformed
    ones skipped (only with ``skip_malformed``; otherwise the first is raised)."""
    rows: list[Row] = []
    skipped: list[str] = []
    for where, raw in read_rows(source, hub_config=hub_config, split=split):
        try:
            rows.append(parse(raw, where))
        except TaskDataError as e:
            if not skip_malformed:
                raise
            skipped.append(str(e))
    if not rows:
        detail = f" ({len(skipped)} malformed rows skipped)" if skipped else ""
        raise TaskDataError(f"{source}: no usable rows{detail}")
    return rows, skipped


def near_config(path: str, config_dir: Path) -> Path:
    """``path`` as given if it exists from the current folder, else beside
    the config file (so a config's own files are found from any folder)."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute() or p.exists() or not (config_dir / p).exists():
        return p.resolve() if p.exists() else p
    return (config_dir / p).resolve()


def file_spec(spec: str, config_dir: Path = Path(".")) -> str:
    """``spec`` with a relative ``file.py`` made absolute (looked for from the
    current folder, then beside the config), so the run's ``config.yaml`` names
    the file that ran, whichever folder reads it later."""
    if ":" in spec:
        where, name = spec.rsplit(":", 1)
        if where.endswith(".py"):
            return f"{near_config(where, config_dir)}:{name}"
    return spec


def local_source(source: str, config_dir: Path = Path(".")) -> str:
    """A data ``source`` as the file or folder it names, made absolute (looked
    for from the current folder, then beside the config), so that a run
    started elsewhere can never read another folder's file of the same name;
    a Hub id, or a path that does not exist, as given."""
    p = near_config(source, config_dir)
    return str(p) if p.exists() else source
