"""`arca train` on two processes (torchrun, gloo on CPU): clean exit, the whole
global batch in the metrics and samples, kill and resume, a finished run left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_cli import arca_train, config, metrics

from arca.credit import gini
from arca.models import tiny_qwen3
from arca.models.tiny import build_tokenizer

# Greedy decoding: a prompt's completions do not depend on which process draws
# them, so one process with the whole batch sees the same completions as two.
GREEDY = {"generation_kwargs": {"do_sample": False}, "sample_every": 1, "sample_count": 16}


@pytest.fixture(scope="module")
def decisive_model(tmp_path_factory) -> Path:
    """A tiny random Qwen3 with large weights: its next-token distributions are
    peaked (mean top probability 0.32), so greedy completions do not hinge on
    rounding and the schemes' weights are far from uniform."""
    d = tmp_path_factory.mktemp("decisive")
    tok = build_tokenizer()
    tiny_qwen3(vocab_size=len(tok), hidden_size=32, initializer_range=0.5, seed=0).save_pretrained(
        d
    )
    tok.save_pretrained(d)
    return d


def torchrun(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.Popen(
        [*cmd, "-m", "arca.cli", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kw,
    )


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant: torchrun starts its workers in
    sessions of their own, so killing its process group would orphan them."""

    def children(p: int) -> list[int]:
        kids = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return kids

    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children(p)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, decisive_model):
    """A two-process run (per-device batch 4: the global batch of 8 holds two
    groups of 4, one per process), killed after its first checkpoint and
    resumed; and its first step on one process with batch 8."""
    tmp = tmp_path_factory.mktemp("ddp")
    over = {**GREEDY, "max_steps": 5, "save_steps": 1, "per_device_train_batch_size": 4}
    cfg = config(tmp, decisive_model, **over)
    run = tmp / "run"
    proc = torchrun("--config", str(cfg), "--output_dir", str(run))
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (run / "checkpoint-1").is_dir():
            break
        time.sleep(0.02)
    killed = proc.poll() is None
    kill_tree(proc.pid)
    log = proc.communicate()[0]
    assert killed and (run / "checkpoint-1").is_dir(), log[-4000:]
    assert not (run / "adapter").exists() and not (run / "checkpoint-5").exists()
    resumed = finish(torchrun("--config", str(cfg), "--output_dir", str(run), "--resume", "true"))
    assert "already finished" not in resumed

    (tmp / "single").mkdir()  # its own cfg.yaml: the two-process one is resumed later
    single = config(tmp / "single", decisive_model, **{**over, "per_device_train_batch_size": 8})
    one = arca_train("--config", str(single), "--output_dir", str(tmp / "one"), "--max_steps", "1")
    assert one.returncode == 0, one.stderr[-3000:]
    return {"run": run, "cfg": cfg, "one": tmp / "one"}


def test_two_processes_exit_cleanly_and_resume_a_killed_run(two_ranks):
    run = two_ranks["run"]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [
        f"checkpoint-{i}" for i in range(1, 6)
    ]
    # Both ranks wrote their RNG state into each checkpoint, which appeared whole.
    assert {p.name for p in (run / "checkpoint-5").glob("rng_state*")} == {
        "rng_state_0.pth",
        "rng_state_1.pth",
    }
    assert not list(run.glob(".*staging*")), "a staging folder was left behind"


def test_resuming_a_finished_run_trains_nothing(two_ranks):
    run, cfg = two_ranks["run"], two_ranks["cfg"]
    before = (run / "metrics.jsonl").read_text()
    out = finish(torchrun("--config", str(cfg), "--output_dir", str(run), "--resume", "true"))
    assert "already finished" in out
    assert (run / "metrics.jsonl").read_text() == before
    assert not (run / "checkpoint-6").exists()


def samples(run: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    return [r for r in recs if r["step"] == min(r["step"] for r in recs)]


def test_credit_metrics_and_samples_cover_both_processes(two_ranks):
    two_rows, one_rows = samples(two_ranks["run"]), samples(two_ranks["one"])
    assert {r["rank"] for r in two_rows} == {0, 1} and len(two_rows) == len(one_rows) == 8

    # The same completions either way, and different prompts on the two ranks
    # (else rank 0's metrics could pass for the whole batch's).
    def key(r):
        return r["prompt"], "".join(r["tokens"])

    assert sorted(map(key, two_rows)) == sorted(map(key, one_rows))
    assert {r["prompt"] for r in two_rows if r["rank"] == 0}.isdisjoint(
        r["prompt"] for r in two_rows if r["rank"] == 1
    )
    two, one = metrics(two_ranks["run"])[0], metrics(two_ranks["one"])[0]
    keys = [k for k in one if k.startswith("credit/") and one[k] is not None]
    assert {"credit/surprisal/gini", "credit/arca/effective_n", "credit/blamed_fraction"} <= set(
        keys
    )
    # One process pads the batch of 8 to its longest prompt, each of two to its
    # 4's: positions shift and the logits round differently (0.04% in
    # surprisal's Gini, 0.4% in entropy reduction's EffN/T, which differences
    # entropies), far less than between the ranks' halves (0.278 against 0.205).
    for k in keys:
        assert two[k] == pytest.approx(one[k], rel=1e-2, abs=1e-6), k
    # Exactly: the logged Gini is the mean over both ranks' rows of the weights
    # they recorded.
    per_row = [
        float(gini(torch.tensor([r["weights"]["surprisal"]]), torch.ones(1, len(r["tokens"])))[0])
        for r in two_rows
    ]
    assert two["credit/surprisal/gini"] == pytest.approx(sum(per_row) / len(per_row), abs=1e-5)
    halves = {
        rank: [g for g, r in zip(per_row, two_rows, strict=True) if r["rank"] == rank]
        for rank in (0, 1)
    }
    assert abs(sum(halves[0]) / 4 - sum(halves[1]) / 4) > 0.01  # the halves do differ
    # high_entropy's threshold is the top quantile of the whole micro-batch, both
    # processes' rows gathered (TRL's rule), not of each process's half: the
    # same weights, row by row, as one process with all eight rows.
    one_by_key = {key(r): r["weights"]["high_entropy"] for r in one_rows}
    for r in two_rows:
        assert r["weights"]["high_entropy"] == pytest.approx(one_by_key[key(r)], abs=1e-4)


def test_high_entropy_takes_one_threshold_over_both_processes_rows():
    """A micro-batch split over two processes gets the weights one process
    holding all its rows gives, and TRL's own mask: one threshold, not one per
    process (tests/high_entropy_worker.py)."""
    worker = Path(__file__).with_name("high_entropy_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*cmd, str(worker)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "OK 0" in res.stdout and "OK 1" in res.stdout


def test_group_schemes_see_a_group_split_over_two_processes():
    """ktae and lambda_grpo on a generation batch whose middle group straddles
    the two processes: each process's rows get what one process with every row
    gives, and the references' values (tests/group_worker.py)."""
    worker = Path(__file__).with_name("group_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(worker.parent), env.get("PYTHONPATH")]))
    res = subprocess.run([*cmd, str(worker)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "OK 0" in res.stdout and "OK 1" in res.stdout


def test_captures_under_fsdp_with_lora_modules_wrapped_on_their_own():
    """FSDP1 on CPU (gloo), peft's auto-wrap policy: each LoRA module is an FSDP
    unit, resharded after its forward, so a hook that read its weights would see
    a shard. The worker compares every capture with the unwrapped model's."""
    worker = Path(__file__).with_name("fsdp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*cmd, str(worker)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "OK 0" in res.stdout and "OK 1" in res.stdout
