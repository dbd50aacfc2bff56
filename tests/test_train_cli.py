"""`arca train`: YAML configs with overrides, the run directory, kill and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

TIMING = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def config(tmp: Path, model: Path, **over) -> Path:
    cfg = {
        "model_name_or_path": str(model),
        "task": "arithmetic",
        "train_size": 64,
        "heldout_size": 8,
        "use_peft": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "token_weighting": "arca",
        "shadow_diagnostics": True,
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_steps": 6,
        "learning_rate": 1e-2,
        "max_completion_length": 10,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "report_to": "none",
        "use_cpu": True,
        "seed": 11,
        "sample_every": 2,
        "sample_count": 2,
        "output_dir": str(tmp / "run"),
    }
    cfg.update(over)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def arca_train(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "arca.cli", "train", *args],
        capture_output=True,
        text=True,
        env=env,
        **kw,
    )


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_run_directory_and_cli_overrides(tmp_path, random_model):
    cfg = config(tmp_path, random_model)
    res = arca_train(
        "--config", str(cfg), "--max_steps", "3", "--output_dir", str(tmp_path / "over")
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "over"
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]  # --max_steps overrode the file's 6
    need = {
        "loss",
        "reward",
        "reward_std",
        "reward_var",
        "learning_rate",
        "completions/mean_length",
        "credit/gini",
        "credit/effective_ratio",
        "credit/residual_mean",
        "credit/residual_max",
        "credit/effective_n",
        "credit/length",
        "credit/drift_kl",
        "credit/dropout",
        # arithmetic has an error locator (a random model is always wrong, so
        # the blame metrics have no negatively-advantaged row and are absent)
        "credit/blamed_fraction",
        "credit/correct_fraction",
    }
    need |= {
        f"credit/{s}/{m}"
        for s in ("uniform", "surprisal", "entropy", "divergence", "arca", "high_entropy")
        for m in ("gini", "effective_ratio", "effective_n")
    }
    for r in rows:
        assert need <= r.keys(), need - r.keys()
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert (
        resolved["max_steps"] == 3
        and resolved["token_weighting"] == "arca"
        and resolved["lora_r"] == 4
    )
    # The model it started from, by content; the LoRA targets that trained.
    from arca.models import LORA_TARGETS, identity

    assert resolved["model_identity"] == identity(str(random_model))
    assert resolved["model_identity"].startswith("sha256:")
    assert resolved["lora_target_modules"] == LORA_TARGETS
    assert (run / "adapter" / "adapter_config.json").exists()
    assert (run / "checkpoint-2" / "optimizer.pt").exists() and (
        run / "checkpoint-2" / "rng_state.pth"
    ).exists()
    assert not (run / ".checkpoint-staging").exists()
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert (
        samples
        and {"arca", "uniform", "surprisal", "entropy", "divergence"}
        <= samples[0]["weights"].keys()
    )
    for s in samples:
        assert len(s["tokens"]) == len(s["weights"]["arca"])
        assert sum(s["weights"]["arca"]) == pytest.approx(1.0, abs=1e-4)
    # The same output_dir again without --resume: refused, nothing overwritten.
    again = arca_train("--config", str(cfg), "--max_steps", "3", "--output_dir", str(run))
    assert again.returncode == 2 and "already holds a run; pass --resume" in again.stderr


def test_resume_refuses_changed_settings_before_anything_loads(tmp_path, random_model):
    # A constant schedule: the learning rate does not depend on max_steps, so
    # the run may be made longer (see the test below for one that does).
    cfg = config(
        tmp_path, random_model, max_steps=2, shadow_diagnostics=False, lr_scheduler_type="constant"
    )
    run = tmp_path / "run"
    assert arca_train("--config", str(cfg), "--output_dir", str(run)).returncode == 0
    saved = (run / "config.yaml").read_text()
    # The saved config is a valid --config: what `arca eval` suggests for a killed run.
    again = arca_train("--config", str(run / "config.yaml"), "--resume", "true")
    assert again.returncode == 0 and "run already finished" in again.stdout, again.stderr[-2000:]
    res = arca_train(
        "--config", str(cfg), "--output_dir", str(run), "--resume", "true",
        "--token_weighting", "surprisal", "--learning_rate", "0.05", "--lora_r", "8",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()[-1]
    for change in (
        "token_weighting: 'arca' -> 'surprisal'",
        "learning_rate: 0.01 -> 0.05",
        "lora_r: 4 -> 8",
    ):
        assert change in err, err
    assert "Traceback" not in res.stderr and "Loading weights" not in res.stderr
    assert (run / "config.yaml").read_text() == saved  # the record still says what ran
    # How far it trains and how often it records may change.
    more = arca_train(
        "--config", str(cfg), "--output_dir", str(run), "--resume", "true",
        "--max_steps", "3", "--save_steps", "1",
    )  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 3


def test_a_second_process_on_a_training_run_is_refused(tmp_path, random_model):
    cfg = config(tmp_path, random_model, shadow_diagnostics=False, max_steps=500)
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "arca.cli", "train", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (run / "metrics.jsonl").exists():
            time.sleep(0.02)
        second = arca_train("--config", str(cfg), "--resume", "true")
        evaluation = subprocess.run(
            [sys.executable, "-m", "arca.cli", "eval", "--run", str(run)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert first.poll() is None  # still training: the refusals were not "finished"
    finally:
        first.kill()
        first.wait()
    for res in (second, evaluation):
        assert res.returncode == 2, res.stderr[-2000:]
        assert f"in use by another arca process (arca train, pid {first.pid}" in res.stderr
    steps = [r["step"] for r in metrics(run)]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no step twice


def test_full_fine_tuning_run_saves_the_model_and_evaluates(tmp_path, random_model):
    from arca.evaluate import evaluate_run
    from arca.run_folder import final_weights

    cfg = config(tmp_path, random_model, use_peft=False, max_steps=2, save_steps=2)
    res = arca_train("--config", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    assert final_weights(run) == ("model", run / "model")
    assert not (run / "adapter").exists()
    rows = metrics(run)
    # A random model earns no reward, so nothing moves: the residual against the
    # frozen initial model stays exactly 0 (tests/test_trainer.py trains one that moves).
    assert all(r["credit/residual_max"] == 0.0 for r in rows)
    assert "credit/divergence/gini" in rows[-1] and "credit/drift_kl" in rows[-1]
    assert yaml.safe_load((run / "config.yaml").read_text())["use_peft"] is False
    from arca.cli import main
    from arca.run_folder import evaluated

    full = evaluate_run(run, k=2, show_progress=False)
    assert full["problems"] == 8 and full["model"] == str(run / "model")
    assert evaluated(run)
    before = (run / "eval" / "results.json").read_bytes()
    assert main(["eval", "--run", str(run), "--limit", "2", "--k", "2"]) == 0
    # A partial evaluation goes beside the full one, never over it.
    assert (run / "eval" / "results.json").read_bytes() == before
    part = json.loads((run / "eval-first2" / "results.json").read_text())
    assert part["problems"] == 2 and part["heldout_size"] == 8
    # One left in eval/ by an older arca does not count as the run's evaluation.
    (run / "eval" / "results.json").write_text(json.dumps(part))
    assert not evaluated(run)
    assert main(["eval", "--run", str(run), "--limit", "0"]) == 2
    local = arca_train("--config", str(cfg), "--token_weighting", "arca_local")
    assert local.returncode == 2 and "arca_local reads the LoRA layers" in local.stderr


def test_killed_run_resumes_to_the_same_metrics(tmp_path, random_model):
    cfg = config(tmp_path, random_model)
    full = arca_train("--config", str(cfg), "--output_dir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]

    run = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "arca.cli", "train", "--config", str(cfg), "--output_dir", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(
            (run / "metrics.jsonl").read_text().splitlines()
        ) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoint-2").exists() and not (run / "adapter").exists()

    res = arca_train("--config", str(cfg), "--output_dir", str(run), "--resume", "true")
    assert res.returncode == 0, res.stderr[-3000:]
    got, want = metrics(run), metrics(tmp_path / "full")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert comparable(got) == comparable(want)
    # Samples (every 2 steps, at step 1 and the last): none lost, none drawn twice.
    drawn = [
        [json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines()]
        for d in (run, tmp_path / "full")
    ]
    assert [r["step"] for r in drawn[0]] == [1, 1, 2, 2, 4, 4, 6, 6]
    assert drawn[0] == drawn[1]


@pytest.mark.parametrize(
    "over, message",
    [
        ({"token_weighting": "nope"}, "token_weighting: unknown scheme 'nope'"),
        ({"lora_r": 0}, "lora_r: the LoRA rank must be >= 1"),
        ({"weight_eps": -1.0}, "weight_eps: must be >= 0"),
        ({"num_generations": 1}, "num_generations: a group needs at least 2"),
        ({"per_device_train_batch_size": 6}, "num_generations"),
        ({"use_peft": False, "token_weighting": "arca_local"}, "arca_local reads the LoRA layers"),
        ({"high_entropy_quantile": 1.5}, "high_entropy_quantile: must be in (0, 1]"),
        ({"bogus_field": 1}, "bogus_field"),
        ({"max_steps": -5}, "max_steps: must be >= 1 (or -1"),
        ({"max_steps": 0}, "max_steps: must be >= 1"),
        ({"lora_r": 6.5}, "lora_r: must be a whole number, got 6.5"),
        ({"learning_rate": None}, "learning_rate: must be a number, got null"),
        ({"learning_rate": -1e-3}, "learning_rate: must be > 0"),
        ({"error_locator": "mc", "mc_k": 0}, "mc_k (--mc-k): must be a whole number >= 1"),
        ({"error_locator": "mc", "mc_every": 0}, "mc_every and mc_completions: must be >= 1"),
        ({"error_locator": "mc", "mc_model": "other"}, "mc_model: must be base or policy"),
        ({"error_locator": "mc", "mc_cut": "word"}, "mc_cut (--mc-cut): must be step or token"),
        # Accepted silently before (issue 25.5), or failing only after the model
        # loaded, in transformers' words, or naming another field.
        ({"beta": -0.1}, "beta: must be >= 0"),
        ({"top_p": 0.0}, "top_p: must be in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "top_p: must be in (0, 1], got 1.5"),
        ({"temperature": 0}, "temperature: must be > 0"),
        ({"max_completion_length": 0}, "max_completion_length: must be >= 1"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps: must be >= 1, got 0"),
        ({"train_size": 0}, "train_size: must be >= 1"),
        ({"max_step": 3}, "max_step: not a field of arca train (did you mean max_steps?)"),
        (
            {"advantage_estimator": "rloo", "scale_rewards": "group"},
            "scale_rewards: advantage_estimator 'rloo' uses unscaled rewards, got 'group'",
        ),
    ],
)
def test_invalid_configs_fail_before_any_model_is_loaded(tmp_path, over, message, capsys):
    from arca.cli import main

    # The model path does not exist: reaching the model load would be a different error.
    cfg = config(tmp_path, tmp_path / "no-such-model", **over)
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "dataclass" not in err  # not HfArgumentParser's advice to edit it
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_st", "3"], "--max_st: not an option of arca train (did you mean max_steps?)"),
        (["--no_such_flag", "1"], "--no_such_flag: not an option of arca train"),
        (["stray.yaml"], "stray.yaml: unexpected argument"),
    ],
)
def test_unknown_and_abbreviated_flags_are_named(tmp_path, flags, message, capsys):
    """argparse took `--max_st` for max_steps (a sweep then stored the
    abbreviation as its override); unknown flags got HfArgumentParser's advice
    to edit the dataclass."""
    from arca.cli import main

    cfg = config(tmp_path, tmp_path / "no-such-model")
    assert main(["train", "--config", str(cfg), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and "dataclass" not in err and "HfArgumentParser" not in err, err


def test_hyphenated_flags_and_config_env_still_work(tmp_path, monkeypatch):
    from arca.train import parse

    monkeypatch.delenv("ARCA_TEST_ENV", raising=False)
    cfg = config(tmp_path, tmp_path / "m", env={"ARCA_TEST_ENV": "yes"})
    _, args, _ = parse(["--config", str(cfg), "--max-steps", "5", "--learning_rate=0.5"])
    assert args.max_steps == 5 and args.learning_rate == 0.5
    assert os.environ["ARCA_TEST_ENV"] == "yes"  # TRL's config files may set env


def test_config_folder_is_named_as_a_folder(tmp_path, capsys):
    from arca.cli import main

    assert main(["train", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--config: {tmp_path} is a folder" in err and "arca sweep --configs" in err


def test_local_configs_folder_takes_precedence_over_the_shipped_preset(tmp_path, monkeypatch):
    """README: a configs/<preset>/ folder in the working directory takes
    precedence; it did for `arca sweep --preset` only."""
    from arca.train import parse

    mine = tmp_path / "configs" / "tiny"
    mine.mkdir(parents=True)
    cfg = yaml.safe_load((Path(__file__).parent.parent / "configs/tiny/arca_r64.yaml").read_text())
    (mine / "arca_r64.yaml").write_text(yaml.safe_dump({**cfg, "lora_r": 5}))
    monkeypatch.chdir(tmp_path)
    for name in ("tiny/arca_r64", "tiny/arca_r64.yaml"):
        _, _, model = parse(["--config", name])
        assert model.lora_r == 5, name
    _, _, model = parse(["--config", "tiny/arca_r16"])  # not overridden here: the shipped one
    assert model.lora_r == 16


def test_a_saved_config_reads_back(tmp_path):
    """config.yaml records generation_batch_size and steps_per_generation both,
    which TRL refuses as a pair; `arca eval` suggests feeding it back."""
    from arca.train import parse

    cfg = config(tmp_path, tmp_path / "m", generation_batch_size=16, steps_per_generation=2)
    _, args, _ = parse(["--config", str(cfg)])
    assert args.generation_batch_size == 16 and args.steps_per_generation == 2
    cfg = config(tmp_path, tmp_path / "m", generation_batch_size=16, steps_per_generation=1)
    with pytest.raises(ValueError, match=r"^generation_batch_size: 16 given, but steps_per_gen"):
        parse(["--config", str(cfg)])
    # A command-line value replaces the file's, as for any field.
    _, args, _ = parse(["--config", str(cfg), "--generation_batch_size", "8"])
    assert args.generation_batch_size == 8


def test_rloo_without_scale_rewards_keeps_working(tmp_path):
    from arca.train import parse

    cfg = config(tmp_path, tmp_path / "m", advantage_estimator="rloo")
    _, args, _ = parse(["--config", str(cfg)])  # TRL's default "group" is replaced, said
    assert args.scale_rewards == "none"
    _, args, _ = parse(["--config", str(cfg), "--scale_rewards", "none"])
    assert args.scale_rewards == "none"


def test_resume_refuses_a_longer_run_whose_schedule_fits_max_steps(tmp_path):
    """A 2-step run resumed to 3 steps continued its 2-step schedule (lr 0 at
    step 3 with linear decay and no warm-up) while config.yaml said max_steps 3."""
    from arca.run_folder import check_resume

    saved = tmp_path / "config.yaml"
    base = {"max_steps": 2, "lr_scheduler_type": "linear", "warmup_steps": 0, "learning_rate": 0.1}
    saved.write_text(yaml.safe_dump(base))
    with pytest.raises(ValueError, match=r"max_steps 2 -> 3: lr_scheduler_type 'linear' fits"):
        check_resume(saved, {**base, "max_steps": 3})
    for kind, warmup in (("constant", 0), ("constant_with_warmup", 2)):
        saved.write_text(
            yaml.safe_dump({**base, "lr_scheduler_type": kind, "warmup_steps": warmup})
        )
        check_resume(
            saved, {**base, "lr_scheduler_type": kind, "warmup_steps": warmup, "max_steps": 3}
        )
    saved.write_text(
        yaml.safe_dump({**base, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 0.5})
    )
    with pytest.raises(ValueError, match="warmup_steps 0.5 is a fraction of max_steps"):
        check_resume(
            saved,
            {
                **base,
                "lr_scheduler_type": "constant_with_warmup",
                "warmup_steps": 0.5,
                "max_steps": 3,
            },
        )


CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*/*.yaml"))


def test_shipped_configs_are_the_seven_runs_of_table_1():
    names = {p.parent.name: set() for p in CONFIGS}
    for p in CONFIGS:
        names[p.parent.name].add(p.stem)
    runs = {
        "uniform_r64",
        "surprisal_r64",
        "entropy_r64",
        "divergence_r64",
        "arca_r4",
        "arca_r16",
        "arca_r64",
    }
    # configs/smollm2 holds one extra run (the diagnose docs), not a sweep preset.
    assert names["paper"] == runs and names["tiny"] == runs
    # tiny-full: the paper's schemes with full fine-tuning (ranks do not apply).
    full = {"uniform_full", "surprisal_full", "entropy_full", "divergence_full", "arca_full"}
    assert names["tiny-full"] == full


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_configs_parse_and_match_the_paper(path):
    from arca.train import parse

    # The paper's configs ask for bf16, which needs a GPU: override it here as a CPU user would.
    extra = ["--bf16", "false"] if path.parent.name == "paper" else []
    run, cfg, model = parse(["--config", str(path), *extra])
    if path.parent.name == "tiny-full":
        assert cfg.token_weighting == path.stem.removesuffix("_full") and not model.use_peft
        twin = path.parent.parent / "tiny" / f"{cfg.token_weighting}_r64.yaml"
        tiny, mine = yaml.safe_load(twin.read_text()), yaml.safe_load(path.read_text())
        differ = {k for k in tiny if tiny[k] != mine.get(k)}
        # Only what full fine-tuning changes: no LoRA, a drift-matched learning rate.
        lora = {"use_peft", "lora_r", "lora_alpha", "lora_dropout"}
        assert differ == lora | {"learning_rate", "output_dir"}
        return
    scheme, rank = path.stem.rsplit("_r", 1)
    assert cfg.token_weighting == scheme and model.lora_r == int(rank) and model.use_peft
    assert cfg.num_generations == 4 and cfg.loss_type == "grpo" and cfg.seed == 1337
    assert cfg.temperature == 1.0 and cfg.top_p == 0.95 and cfg.weight_decay == 0.0
    if path.parent.name == "paper":
        assert model.model_name_or_path == "Qwen/Qwen3-1.7B-Base" and run.task == "math"
        assert cfg.max_steps == 100 and cfg.learning_rate == 5e-6 and cfg.warmup_steps == 10
        assert cfg.per_device_train_batch_size == 8 and cfg.gradient_accumulation_steps == 4
        assert cfg.max_completion_length == 512 and run.max_prompt_length == 512
        assert cfg.save_steps == 20 and run.heldout_size == 200


def test_math_task_trains_from_a_local_stand_in(tmp_path, random_model):
    """The paper's path (MATH rows, Qwen3 architecture) with local stand-ins of both."""
    sample = Path(__file__).parent / "data" / "math_sample.jsonl"
    rows = [json.loads(x) for x in sample.read_text().splitlines()]
    # One 3 MB problem: dropped by its length in characters, never tokenized.
    rows.append({**rows[0], "problem": "What is " + "1 + " * 750_000 + "1?"})
    data = tmp_path / "math_with_a_huge_row.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(
        tmp_path,
        random_model,
        task="math",
        data=str(data),
        heldout_size=2,
        max_steps=2,
        token_weighting="divergence",
        shadow_diagnostics=False,
        max_prompt_length=400,
    )
    res = arca_train("--config", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2] and "credit/gini" in rows[0]
    # MATH has no error locator: said, and no correctness metric is invented.
    assert "task math: no error locator" in res.stdout
    assert "max_prompt_length: dropped 1 of" in res.stdout
    assert not any(k.startswith(("credit/prefix_blame", "credit/blamed")) for k in rows[0])


def test_help_shows_config_and_arcas_options_before_trls(capsys):
    from arca.cli import main

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    first = out.index("--config FILE.yaml")
    assert first < out.index("--token_weighting (default: uniform)") < out.index("--learning_rate")
    assert out.index("--task (default: arithmetic)") < out.index("TRL's and transformers' options")


def test_without_a_config_the_defaults_suit_this_machine_and_are_said(tmp_path, random_model):
    res = arca_train(
        "--model_name_or_path", str(random_model), "--max_steps", "2", "--logging_steps", "1",
        "--train_size", "16", "--heldout_size", "4", "--max_completion_length", "8",
        "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--token_weighting", "surprisal",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "not set, so chosen: use_peft: true" in res.stdout and "use_cpu: true" in res.stdout
    assert (tmp_path / "runs" / "train" / "adapter" / "adapter_model.safetensors").is_file()
    console = res.stdout + res.stderr
    assert "FutureWarning" not in console
    # One short line per logged step, not TRL's 40-key dict.
    assert "step 1/2  reward " in console and "Gini " in console
    assert "'credit/surprisal" not in console
    # TRL's model card names the base model (it wrote "[None]" for a local folder).
    card = (tmp_path / "runs" / "train" / "README.md").read_text()
    assert "[None]" not in card and f"fine-tuned version of `{random_model}`" in card


def test_monte_carlo_ground_truth_on_schedule_in_a_run(tmp_path):
    # The tiny model, whose completions are often right: Monte-Carlo values
    # locate some wrong ones at steps 1 and 2 (mc_every 2), none at step 3.
    cfg = config(
        tmp_path,
        "tiny-l1",
        level=1,
        max_completion_length=32,
        max_steps=3,
        save_strategy="no",
        error_locator="mc",
        mc_every=2,
        mc_completions=8,
        mc_k=4,
        token_weighting="surprisal",
    )
    res = arca_train("--config", str(cfg), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert lines[0]["credit/mc_seconds"] > 0 and lines[0]["credit/mc_continuations"] > 0
    assert "credit/mc_seconds" not in lines[2] and "credit/blamed_fraction" not in lines[2]
    assert 0 <= lines[0]["credit/correct_fraction"] <= 1
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["error_locator"] == "mc" and saved["mc_k"] == 4 and saved["mc_model"] == "base"
    assert "MC s" in res.stderr + res.stdout  # the step line shows its time


def test_the_last_step_is_logged_whatever_logging_steps_says(tmp_path, random_model):
    """logging_steps 3 with max_steps 4 never logged step 4: the record ended
    a step before training did."""
    from arca import train

    cfg = config(tmp_path, random_model, max_steps=4, logging_steps=3, save_strategy="no")
    train.main(["--config", str(cfg), "--shadow_diagnostics", "false", "--sample_every", "0"])
    assert [r["step"] for r in metrics(tmp_path / "run")] == [3, 4]


def test_a_diverging_learning_rate_is_named(tmp_path, capsys):
    """--learning_rate 1e10 said `h_shift` has non-finite values, "fix the
    upstream pass": a bug report, for a learning rate that blew the policy up."""
    from arca.cli import main

    argv = ["train", "--config", "tiny/arca_r64", "--output_dir", str(tmp_path / "run")]
    argv += ["--learning_rate", "1e10", "--warmup_steps", "0", "--max_steps", "4"]
    argv += ["--per_device_train_batch_size", "8", "--save_strategy", "no", "--sample_every", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.split("arca train: error: ")[-1]  # after the progress bar
    assert re.search(
        r"training diverged at step (\d+): after \d+ update\(s\) at learning_rate 1e\+10", err
    ), err
    assert "lower learning_rate" in err and "upstream" not in err


def test_the_learning_curve_is_recorded_without_changing_the_run(tmp_path, random_model):
    """eval_every: held-out greedy accuracy at step 0, every N steps and the
    last step, per problem; greedy decoding draws no randomness, so the run's
    metrics are those of the same run without the curve."""
    from arca import train

    plain = config(tmp_path, random_model, max_steps=3, save_strategy="no", sample_every=0)
    train.main(["--config", str(plain), "--output_dir", str(tmp_path / "plain")])
    train.main(
        ["--config", str(plain), "--output_dir", str(tmp_path / "curve")]
        + ["--eval_every", "2", "--eval_problems", "5"]
    )
    curve = [json.loads(x) for x in (tmp_path / "curve" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2, 3]
    for c in curve:
        assert c["problems"] == 5 and len(c["correct"]) == 5 and set(c["correct"]) <= {0, 1}
        assert c["greedy_accuracy"] == sum(c["correct"]) / 5
    a, b = metrics(tmp_path / "plain"), metrics(tmp_path / "curve")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["reward"] for r in a] == [r["reward"] for r in b]
    assert not (tmp_path / "plain" / "curve.jsonl").exists()


def test_a_config_naming_another_model_identity_is_refused(tmp_path, random_model):
    """A saved config.yaml is a valid --config (model_identity included), but not for a
    model that is now another build: the record would name weights that did not train."""
    cfg = config(tmp_path, random_model, model_identity="sha256:0000000000000000")
    res = arca_train("--config", str(cfg))
    assert res.returncode != 0
    line = res.stderr.strip().splitlines()[-1]
    assert "model_identity: the config records sha256:0000000000000000" in line, line
    assert not (tmp_path / "run" / "config.yaml").exists()
