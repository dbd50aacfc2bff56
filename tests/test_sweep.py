"""`arca sweep`: planning, skip / resume / failure handling, concurrent slots,
the Ray backend, and CLI errors. Runs are real (tiny model, a few steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import arca.sweep
from arca.cli import main
from arca.sweep import RunSpec, check_run_dir, plan_sweep, run_state, sweep

ROOT = Path(__file__).resolve().parents[1]
QUICK = {
    "max_steps": 3,
    "heldout_size": 6,
    "per_device_train_batch_size": 8,
    "max_completion_length": 20,
    "save_steps": 1,
    "sample_every": 1,
    "warmup_steps": 0,
}


def write_configs(folder: Path, names=("uniform_r64", "arca_r4"), **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        cfg = yaml.safe_load((ROOT / "configs" / "tiny" / f"{n}.yaml").read_text())
        cfg.update(QUICK)
        cfg.update(extra.get(n, {}))
        (folder / f"{n}.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def quiet(_msg: str) -> None:
    pass


def test_plan_order_layout_and_errors(tmp_path):
    specs = plan_sweep(ROOT / "configs" / "tiny", tmp_path, seeds=[1, 2])
    names = [s.name for s in specs[::2]]
    assert names == [
        "uniform_r64",
        "surprisal_r64",
        "entropy_r64",
        "divergence_r64",
        "arca_r4",
        "arca_r16",
        "arca_r64",
    ]  # Table 1's order
    assert [s.seed for s in specs[:2]] == [1, 2]
    assert specs[1].run_dir == str(tmp_path.resolve() / "uniform_r64" / "seed-2")
    assert [s.seed for s in plan_sweep(ROOT / "configs" / "tiny", tmp_path)] == [1337] * 7
    # The runs share one model, task and decoding: the first run evaluates the base model.
    assert [s.eval_base for s in specs] == [True] + [False] * 13
    other = write_configs(tmp_path / "two", arca_r4={"max_completion_length": 16})
    assert [s.eval_base for s in plan_sweep(other, tmp_path)] == [True, True]
    with pytest.raises(ValueError, match="--only: no config named 'nope'"):
        plan_sweep(ROOT / "configs" / "tiny", tmp_path, only=["nope"])
    with pytest.raises(FileNotFoundError, match="no .yaml files"):
        plan_sweep(tmp_path, tmp_path)
    spec = RunSpec(
        "x", str(ROOT / "configs" / "tiny" / "arca_r4.yaml"), 1, str(tmp_path), ("--max_steps", "7")
    )
    assert spec.max_steps() == 7
    assert spec.train_argv()[-2:] == ["--max_steps", "7"]  # user overrides come last


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("sw")
    configs = write_configs(root / "configs")
    lines: list[str] = []
    # The display samples the runs' files every _POLL_S; a 3-step tiny run can
    # finish its steps within one second, so poll faster to see a step line.
    poll, arca.sweep.runner.POLL_S = arca.sweep.runner.POLL_S, 0.05
    try:
        res = sweep(configs, root / "out", echo=lines.append, base_samples=8)
    finally:
        arca.sweep.runner.POLL_S = poll
    return configs, root / "out", res, lines


def test_sweep_trains_evaluates_and_reports(finished):
    _, out, res, lines = finished
    assert [o["state"] for o in res["outcomes"]] == ["done", "done"]
    for o in res["outcomes"]:
        run = Path(o["run_dir"])
        assert json.loads((run / "eval" / "results.json").read_text())["problems"] == 6
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3]
        assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert (out / "report" / "report.md").exists() and (out / "report" / "tokens.html").exists()
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["name"] == "uniform_r64"
    text = "\n".join(lines)
    assert "[1/2] uniform_r64 seed 1337" in text and "step " in text and "left" in text
    assert "[2/2] arca_r4 seed 1337: done in" in text
    # The base-model control ran once, before the runs, and leads the report's shadow tables.
    base = json.loads((out / "base-model" / "diagnose.json").read_text())
    assert base["completions"] == 8 and base["models"][0]["label"] == "base model"
    assert "base model: done in" in text
    md = (out / "report" / "report.md").read_text()
    assert "| base model (8 completions, sampled from the base model; arca diagnose) |" in md
    # The untrained base model evaluated once, like the runs, by the first run: the
    # accuracy table's first row.
    first, second = (Path(o["run_dir"]) for o in res["outcomes"])
    base_eval = json.loads((first / "eval-base" / "results.json").read_text())
    assert base_eval["weights"] == "base" and base_eval["problems"] == 6
    assert not (second / "eval-base").exists()
    row = res["report"]["tables"]["table2_accuracy"][0]
    assert row["method"] == "base model (untrained)"
    assert row["greedy acc"].value == base_eval["greedy_accuracy"] and row["problems"] == "6"
    assert "    base model (untrained): greedy " in text


def test_finished_runs_are_skipped(finished):
    configs, out, _, _ = finished
    logs = {p: p.read_text() for p in out.glob("*/seed-*/run.log")}
    lines: list[str] = []
    res = sweep(configs, out, echo=lines.append, base_samples=8)
    assert [o["state"] for o in res["outcomes"]] == ["skipped", "skipped"]
    assert not any(x.startswith("base model:") for x in lines)  # done, not diagnosed again
    assert {p: p.read_text() for p in out.glob("*/seed-*/run.log")} == logs  # nothing ran
    assert "already done, skipped" in "\n".join(lines)


def test_half_finished_run_resumes_from_its_checkpoint(finished, tmp_path):
    configs, out, _, _ = finished
    src = out / "arca_r4" / "seed-1337"
    dst_root = tmp_path / "out"
    dst = dst_root / "arca_r4" / "seed-1337"
    shutil.copytree(src, dst)
    (dst / "spec.json").unlink()  # a fresh path; the fingerprint is checked elsewhere
    # The state a kill after step 1 leaves: checkpoint-1, metrics up to step 2.
    for name in ("adapter", "eval", "checkpoint-2", "checkpoint-3"):
        shutil.rmtree(dst / name)
    old = (dst / "metrics.jsonl").read_text().splitlines()
    (dst / "metrics.jsonl").write_text("\n".join(old[:2]) + "\n")
    spec = plan_sweep(configs, dst_root, only=["arca_r4"])[0]
    assert run_state(spec) == "resume"
    res = sweep(configs, dst_root, only=["arca_r4"], echo=quiet, report=False, base_samples=0)
    assert res["outcomes"][0]["state"] == "done"
    new = (dst / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in new] == [1, 2, 3]
    assert new[0] == old[0]  # step 1 kept from before the kill, not retrained
    log = (dst / "run.log").read_text()
    assert log.count("=====") == 4  # two attempts
    assert "Resuming" in log or "resum" in log.lower()


def test_changed_config_is_refused(finished):
    configs, out, _, _ = finished
    spec = plan_sweep(configs, out, only=["arca_r4"], overrides=["--learning_rate", "0.1"])[0]
    with pytest.raises(ValueError, match=r"overrides \[\] then, \['--learning_rate', '0.1'\] now"):
        check_run_dir(spec)


def test_a_run_made_otherwise_names_what_differs(tmp_path):
    """It said "made with a different overrides (CONFIG)", naming no field."""
    configs = write_configs(tmp_path / "configs", names=("uniform_r64",))
    old = plan_sweep(configs, tmp_path / "out", overrides=["--max_steps", "3"])[0]
    run = Path(old.run_dir)
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps({"fingerprint": old.fingerprint()}))
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    new = plan_sweep(configs, tmp_path / "out", overrides=["--max_steps", "4"])[0]
    with pytest.raises(ValueError, match="other settings") as e:
        check_run_dir(new)
    assert "overrides ['--max_steps', '3'] then, ['--max_steps', '4'] now" in str(e.value)


def test_the_readme_calls_only_sweep_presets_presets():
    """It called configs/smollm2/ a preset; `arca sweep --preset smollm2` does not exist.
    The README and the docs it points to."""
    import re

    readme = "".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    named = set(re.findall(r"preset `configs/([\w-]+)/`", readme))
    # A config path (`--preset smollm2/arca_r16` of a benchmark) is not a sweep preset.
    named |= set(re.findall(r"--preset ([\w-]+)(?![\w/-])", readme))
    assert named and named <= set(arca.sweep.PRESETS), named - set(arca.sweep.PRESETS)


def test_failed_run_is_reported_and_others_go_on(tmp_path, capsys):
    configs = write_configs(tmp_path / "configs", extra={}, names=("uniform_r64", "arca_r4"))
    bad = yaml.safe_load((configs / "uniform_r64.yaml").read_text())
    bad["model_name_or_path"] = str(tmp_path / "no-such-model")
    (configs / "uniform_r64.yaml").write_text(yaml.safe_dump(bad))
    code = main(["sweep", "--configs", str(configs), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 1
    assert "base model: the runs differ in model, task or held-out set" in out
    log = tmp_path / "out" / "uniform_r64" / "seed-1337" / "run.log"
    assert f"FAILED uniform_r64 seed 1337: {log}" in out
    assert "no-such-model" in log.read_text()
    assert "1 runs ok, 1 failed" in out
    assert (tmp_path / "out" / "arca_r4" / "seed-1337" / "eval" / "results.json").exists()
    md = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "Failed runs" in md and str(log) in md
    status = json.loads(log.with_name("status.json").read_text())
    assert status["state"] == "failed" and status["returncode"] != 0


def test_concurrent_slots_run_side_by_side(tmp_path):
    from arca.sweep import run_sweep

    configs = write_configs(tmp_path / "configs")
    specs = plan_sweep(configs, tmp_path / "out")
    outcomes = run_sweep(specs, slots=[{"ARCA_SLOT": "a"}, {"ARCA_SLOT": "b"}], echo=quiet)
    assert [o["state"] for o in outcomes] == ["done", "done"]
    st = [json.loads(Path(o["run_dir"], "status.json").read_text()) for o in outcomes]
    # Both ran at once: each started before the other finished.
    assert st[0]["started"] < st[1]["finished"] and st[1]["started"] < st[0]["finished"]


def test_ray_backend_on_a_local_instance(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'arca[ray]'")
    configs = write_configs(tmp_path / "configs", names=("arca_r4",))
    lines: list[str] = []
    res = sweep(
        configs, tmp_path / "out", backend="ray", cpus_per_run=1, echo=lines.append, base_samples=0
    )
    assert [o["state"] for o in res["outcomes"]] == ["done"]
    run = Path(res["outcomes"][0]["run_dir"])
    assert json.loads((run / "eval" / "results.json").read_text())["problems"] == 6
    assert "[1/1] arca_r4 seed 1337: done in" in "\n".join(lines)
    assert (tmp_path / "out" / "report" / "report.md").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["sweep", "--preset", "tiny", "--seeds", "1,x"],
            "--seeds: expected comma-separated integers",
        ),
        (["sweep", "--preset", "tiny", "--gpus", "0"], "--gpus: GPU 0 does not exist"),
        (["sweep", "--preset", "tiny", "--only", "nope"], "--only: no config named 'nope'"),
        (["sweep", "--configs", "/no/such/dir"], "no .yaml files"),
        (
            ["sweep", "--preset", "tiny", "--", "--no_such_field", "1"],
            "uniform_r64.yaml: --no_such_field: not an option of arca train",
        ),
        # Stored as the sweep's override, then refused in its full spelling.
        (
            ["sweep", "--preset", "tiny", "--", "--max_st", "3"],
            "uniform_r64.yaml: --max_st: not an option of arca train (did you mean max_steps?)",
        ),
    ],
)
def test_cli_errors_name_the_option(argv, message, capsys, tmp_path):
    code = main([*argv[:1], "--out", str(tmp_path / "o"), *argv[1:]])
    assert code == 2
    assert message in capsys.readouterr().err


def test_eval_run_needs_a_run_folder(tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path)]) == 2
    assert "not an arca run (no config.yaml)" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("task: arithmetic\n")
    assert main(["eval", "--run", str(tmp_path)]) == 2
    assert "missing field(s) model_name_or_path, heldout_size" in capsys.readouterr().err


def test_heldout_set_does_not_depend_on_the_training_seed():
    from arca.train import parse

    a, cfg_a, _ = parse(["--config", str(ROOT / "configs/tiny/arca_r4.yaml"), "--seed", "1"])
    b, cfg_b, _ = parse(["--config", str(ROOT / "configs/tiny/arca_r4.yaml"), "--seed", "2"])
    assert cfg_a.seed != cfg_b.seed and a.split_seed == b.split_seed is None


@pytest.mark.parametrize("stem", ["..", ".hidden", "a b"])
def test_config_names_that_are_not_one_folder_name_are_refused(stem, tmp_path):
    configs = write_configs(tmp_path / "configs", names=("uniform_r64",))
    (configs / "uniform_r64.yaml").rename(configs / f"{stem}.yaml")
    with pytest.raises(ValueError, match="cannot name a run folder"):
        plan_sweep(configs, tmp_path / "out")


def test_the_base_model_diagnosis_scores_with_the_runs_settings(tmp_path):
    """Every setting diagnose takes comes from the runs; the ones it cannot
    take are said (and the report marks its row: test_report)."""
    from arca.sweep import base_model_argv, base_model_caveats

    same = {"weight_eps": 1e-3, "high_entropy_quantile": 0.1, "per_device_train_batch_size": 16}
    configs = write_configs(tmp_path / "c", uniform_r64=same, arca_r4=same)
    specs = plan_sweep(configs, tmp_path / "out")
    argv = base_model_argv(specs, 16, tmp_path / "base")
    assert argv[argv.index("--eps") + 1] == "0.001"
    assert argv[argv.index("--high-entropy-quantile") + 1] == "0.1"
    assert argv[argv.index("--batch-size") + 1] == "16"  # high_entropy's pool: a micro-batch
    assert base_model_caveats(specs) == []
    configs = write_configs(
        tmp_path / "d", uniform_r64={"weight_eps_mode": "relative", "temperature": 0.7}
    )
    said = base_model_caveats(plan_sweep(configs, tmp_path / "out2"))
    assert said == [
        "weight_eps_mode 'relative' (diagnose: 'absolute')",
        "temperature 0.7 (diagnose: 1.0)",
    ]


def test_the_base_model_diagnosis_has_the_runs_ground_truth(tmp_path):
    """Arithmetic: the exact locator; runs with error_locator: mc: Monte-Carlo
    with their k, cut and search; MATH without one: none (the base row must not
    carry a ground truth the runs did not have); a custom task: its config."""
    from arca.sweep import base_model_argv

    def argv_of(name: str, **cfg: object) -> list[str]:
        configs = write_configs(tmp_path / name, names=("uniform_r64",), uniform_r64=cfg)
        return base_model_argv(plan_sweep(configs, tmp_path / f"out-{name}"), 8, tmp_path / "b")

    a = argv_of("exact")
    assert a[a.index("--locator") + 1] == "exact" and a[a.index("--task") + 1] == "arithmetic"
    m = argv_of("mc", error_locator="mc", mc_k=2, mc_cut="token")
    assert m[m.index("--locator") :][:6] == ["--locator", "mc", "--mc-k", "2", "--mc-cut", "token"]
    n = argv_of("none", task="math", data="x.jsonl")
    assert n[n.index("--locator") + 1] == "none"
    c = argv_of("custom", task="custom", data="x.jsonl")
    assert "--task" not in c and c[c.index("--config") + 1].endswith("uniform_r64.yaml")
