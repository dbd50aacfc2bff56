"""Child processes and the files they leave: ended with their parent, their
last log line and status files read back."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

CHILDREN: set[subprocess.Popen] = set()


def die_with_parent() -> None:
    # A sweep killed outright (SIGKILL, OOM) must not leave runs training
    # unsupervised: Linux sends the child SIGTERM when its parent dies.
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def last_line(path: Path) -> str:
    lines = [x for x in tail(path, 8192).splitlines() if x.strip()]
    return lines[-1].strip()[:300] if lines else ""


def tail(path: Path, n: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def last_json_line(path: Path) -> dict[str, Any] | None:
    for line in reversed(tail(path, 32768).splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None
