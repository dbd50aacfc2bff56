"""The run folder's records of what a run started from: a model's identity by
content, which evaluation checks and reports group by."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml
from report_fixtures import make_run

from arca.models import identity


def test_identity_is_the_content_of_the_weights(random_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCA_CACHE", str(tmp_path / "cache"))
    a = tmp_path / "a"
    shutil.copytree(random_model, a)
    first = identity(str(a))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert identity(str(a)) == first  # cached
    b = tmp_path / "b"
    shutil.copytree(random_model, b)
    assert identity(str(b)) == first  # same bytes elsewhere: same model
    weights = next(b.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(1, 1))
    assert identity(str(b)) != first  # another build of the same name is another model
    assert identity("some-org/some-model").startswith("hub:some-org/some-model@")
    with pytest.raises(FileNotFoundError, match="no weight files"):
        identity(str(tmp_path / "cache"))


def test_runs_of_one_name_from_different_builds_are_two_methods(tmp_path):
    from arca.report import build_report

    kw = dict(rewards=[0.1, 0.2], gini=[0.0, 0.0], eff=[1.0, 1.0])
    for seed, ident in ((1, "sha256:aaaa"), (2, "sha256:bbbb")):
        d = make_run(tmp_path, "uniform_r64", seed, scheme="uniform", **kw)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        (d / "config.yaml").write_text(yaml.safe_dump(cfg | {"model_identity": ident}))
    res = build_report([tmp_path], tmp_path / "report")
    names = [m.name for m in res["methods"]]
    assert len(names) == 2 and all("uniform_r64" in n for n in names), names
    md = (tmp_path / "report" / "report.md").read_text()
    assert "differ in model_identity" in md


def test_eval_refuses_a_model_other_than_the_one_the_run_started_from(
    random_model, tmp_path, monkeypatch
):
    from arca.evaluate import check_identity

    monkeypatch.setenv("ARCA_CACHE", str(tmp_path / "cache"))
    cfg = {"model_name_or_path": str(random_model), "model_identity": identity(str(random_model))}
    check_identity(cfg, None)  # the same model: fine
    with pytest.raises(ValueError, match="model_identity: the run started from"):
        check_identity(cfg | {"model_identity": "sha256:0123456789abcdef"}, None)
    check_identity({"model_name_or_path": "x"}, None)  # recorded before identities: not checked
