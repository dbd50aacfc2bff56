"""Atomic writes: whole files with ordinary permissions, nothing left behind."""

from __future__ import annotations

import os
import stat

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
