"""Small file helpers: results are written whole or not at all."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file + rename, so a killed process
    never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Strict JSON: NaN (a value that could not be computed, e.g. a metric over
    zero rows) is written as ``null``, an infinite float as the string
    ``"inf"`` / ``"-inf"`` (``float()`` reads it back), so neither is mistaken
    for the other."""
    return atomic_write_text(
        path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    )


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN replaced by ``None`` and infinities by ``"inf"``/``"-inf"``."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def filter_jsonl(path: str | os.PathLike[str], keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite the JSONL file ``path`` (atomically) with only the records that
    ``keep`` accepts; a line cut short by a kill is dropped."""
    path = Path(path)
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(rec):
            kept.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in kept))


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``path``
    in one rename, so readers see the old folder or the complete new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing what is there."""
    if os.path.lexists(dst):
        shutil.rmtree(dst)
    os.replace(src, dst)


_HELD: dict[Path, int] = {}  # lock file -> depth, for this process


@contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold ``folder/.arca.lock`` while ``what`` runs, so that a second arca
    process on the same folder stops with a message naming the holder instead
    of writing into it too. An OS lock (``flock``): it dies with its process,
    so a killed run leaves nothing to clean up. Re-entrant within a process."""
    import fcntl
    import socket
    import sys
    import time

    path = (Path(folder) / ".arca.lock").resolve()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
            raise FileExistsError(
                f"{Path(folder)}: in use by another arca process ({holder or 'unknown'}); "
                "wait for it to finish or stop it"
            ) from None
        info = (
            f"{what}, pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:200]}"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
