"""Atomic writes: whole files with ordinary permissions, nothing left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from arca.io import atomic_dir, atomic_write_json, atomic_write_text


def test_atomic_write_text_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "a" / "f.txt", "hello")
    finally:
        os.umask(old)
    assert p.read_text() == "hello"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644  # readable, like open(); mkstemp gives 0600
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_failed_write_leaves_the_old_file(tmp_path):
    p = atomic_write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert p.read_text().strip() == '{\n  "a": 1\n}'
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    d = tmp_path / "adapter"
    with atomic_dir(d) as tmp:
        tmp.mkdir()  # the caller fills it, e.g. save_pretrained(tmp)
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(d) as tmp:
            tmp.mkdir()
            (tmp / "y").write_text("2")
            raise RuntimeError("killed")
    assert sorted(x.name for x in d.iterdir()) == ["x"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["adapter"]


def test_json_records_keep_nan_and_infinity_apart(tmp_path):
    import json
    import math

    from arca.io import atomic_write_json

    atomic_write_json(tmp_path / "r.json", {"a": math.nan, "b": [math.inf, -math.inf, 1.5]})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    back = json.loads(text)
    assert back["a"] is None and back["b"][2] == 1.5
    assert [float(x) for x in back["b"][:2]] == [math.inf, -math.inf]


def _hold(folder, what):
    """Another process holding ``folder``'s lock until killed."""
    import subprocess
    import sys
    import time

    code = (
        "import sys, time\nfrom arca.io import folder_lock\n"
        f"with folder_lock({str(folder)!r}, {what!r}):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    time.sleep(0.05)
    return proc


def test_folder_lock_names_the_holder_and_dies_with_it(tmp_path):
    from arca.io import folder_lock

    proc = _hold(tmp_path, "arca train")
    try:
        with pytest.raises(
            FileExistsError,
            match=rf"in use by another arca process \(arca train, pid {proc.pid} on ",
        ):
            with folder_lock(tmp_path, "arca eval"):
                pass
    finally:
        proc.kill()
        proc.wait()
    # SIGKILL left no stale lock; the lock is re-entrant within a process.
    with folder_lock(tmp_path, "arca eval"), folder_lock(tmp_path, "arca train"):
        pass


def test_a_second_sweep_on_the_same_out_is_refused(tmp_path, capsys):
    from arca.cli import main

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "uniform_r64.yaml").write_text(
        (Path(__file__).resolve().parents[1] / "configs" / "tiny" / "uniform_r64.yaml").read_text()
    )
    proc = _hold(tmp_path / "out", "arca sweep")
    try:
        code = main(["sweep", "--configs", str(configs), "--out", str(tmp_path / "out")])
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    assert code == 2 and f"in use by another arca process (arca sweep, pid {proc.pid}" in err
    assert not (tmp_path / "out" / "uniform_r64").exists()  # nothing ran
