"""Expected failures are one line naming the file (and line), not a traceback.

Each case runs through the CLI: exit code 2, ``arca <verb>: error: ...`` on
stderr naming the offending file or folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import types

import pytest

from arca.cli import main
from arca.models import add_lora, tiny_qwen3
from arca.models.tiny import build_tokenizer


def _fails(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"arca {argv[0]}: error: "), err
    for n in needles:
        assert n in lines[-1], err
    return lines[-1]


def _model(hidden: int, seed: int = 0):
    tok = build_tokenizer()
    m = tiny_qwen3(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        seed=seed,
    )
    return m, tok


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny base model, an adapter on it, and an adapter on a wider model."""
    root = tmp_path_factory.mktemp("bad_inputs")
    base, tok = _model(16)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    base.name_or_path = str(root / "base")  # the adapter's base_model_name_or_path
    add_lora(base, rank=2).save_pretrained(root / "adapter")
    twin, _ = _model(16, seed=1)  # the same shapes, other weights (tiny and tiny-l1 alike)
    twin.save_pretrained(root / "twin")
    tok.save_pretrained(root / "twin")
    wide, _ = _model(32)
    wide.save_pretrained(root / "wide")
    wide.name_or_path = str(root / "wide")  # the adapter's base_model_name_or_path
    add_lora(wide, rank=2).save_pretrained(root / "wide_adapter")
    return root


def _copy(folders, name, tmp_path):
    return shutil.copytree(folders / name, tmp_path / name)


def _eval(model, adapter=None):
    argv = ["eval", "--model", str(model), "--limit", "1", "--heldout-size", "2"]
    return [*argv, "--adapter", str(adapter)] if adapter else argv


# ---------------------------------------------------------------- --data


@pytest.mark.parametrize("data", ["./no/such/folder", "{tmp}/missing.jsonl", "a/b/c"])
def test_data_local_path_that_does_not_exist(data, tmp_path, capsys):
    data = data.format(tmp=tmp_path)
    _fails(
        capsys,
        ["eval", "--task", "math", "--data", data],
        f"--data: no such file or folder: {data}",
    )


def test_data_hub_id_unreachable(monkeypatch, capsys):
    def offline(*a, **k):
        raise ConnectionError(
            "Couldn't reach 'someone/dataset' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _fails(
        capsys, ["eval", "--task", "math", "--data", "someone/dataset"], "someone/dataset"
    )
    assert "neither a local file or folder nor reachable" in line and "HF_HUB_OFFLINE" in line


@pytest.mark.parametrize("content", [b"garbage", b"PAR1" + b"\0" * 40])
def test_data_corrupt_parquet(content, tmp_path, capsys):
    f = tmp_path / "math.parquet"
    f.write_bytes(content)
    _fails(capsys, ["eval", "--task", "math", "--data", str(f)], str(f), "not readable Parquet")


def test_data_truncated_parquet_in_a_folder(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"problem": ["1+1"], "solution": ["\\boxed{2}"]}), tmp_path / "a.parquet"
    )
    good = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "b.parquet").write_bytes(good[: len(good) // 2])
    _fails(
        capsys,
        ["eval", "--task", "math", "--data", str(tmp_path)],
        "b.parquet",
        "not readable Parquet",
    )


def test_data_non_utf8_jsonl_names_the_line(tmp_path, capsys):
    f = tmp_path / "gsm.jsonl"
    ok = json.dumps({"question": "q", "answer": "#### 1"}).encode()
    f.write_bytes(ok + b"\n" + ok + b"\n" + b'{"question": "caf\xe9", "answer": "#### 2"}\n')
    _fails(capsys, ["eval", "--task", "gsm8k", "--data", str(f)], f"{f}: line 3", "not UTF-8")


def test_data_non_utf8_json_names_the_line(tmp_path, capsys):
    f = tmp_path / "math.json"
    f.write_bytes(b'[\n{"problem": "p", "solution": "\\\\boxed{1}"},\n{"problem": "\xff"}\n]\n')
    _fails(capsys, ["eval", "--task", "math", "--data", str(f)], f"{f}: line 3", "not UTF-8")


# ------------------------------------------------------- models, adapters


def test_model_folder_that_does_not_exist(tmp_path, capsys):
    _fails(capsys, _eval(tmp_path / "no_model"), str(tmp_path / "no_model"), "no such model folder")


def test_adapter_without_weights(folders, tmp_path, capsys):
    a = _copy(folders, "adapter", tmp_path)
    (a / "adapter_model.safetensors").unlink()
    _fails(capsys, _eval(folders / "base", a), str(a), "has no weights")


@pytest.mark.parametrize(
    "config, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"peft_type": "LORA"}), "missing r, target_modules"),
        ("[]", "missing peft_type"),
    ],
)
def test_adapter_with_an_invalid_config(config, message, folders, tmp_path, capsys):
    a = _copy(folders, "adapter", tmp_path)
    (a / "adapter_config.json").write_text(config)
    _fails(capsys, _eval(folders / "base", a), str(a / "adapter_config.json"), message)


def test_truncated_adapter_weights(folders, tmp_path, capsys):
    a = _copy(folders, "adapter", tmp_path)
    w = a / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    _fails(capsys, _eval(folders / "base", a), str(w), "not a readable safetensors file")


@pytest.mark.parametrize("cut", ["truncated", "garbage"])
def test_corrupt_model_weights(cut, folders, tmp_path, capsys):
    m = _copy(folders, "base", tmp_path)
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100] if cut == "truncated" else b"garbage" * 10)
    _fails(capsys, _eval(m), str(w), "not a readable safetensors file")


def test_adapter_of_another_base_model(folders, tmp_path, capsys):
    _fails(
        capsys,
        _eval(folders / "base", folders / "wide_adapter"),
        str(folders / "wide_adapter"),
        f"adapter was trained for {folders / 'wide'}, not {folders / 'base'}",
    )
    # An adapter that does not name its base: told by the shapes.
    a = _copy(folders, "wide_adapter", tmp_path)
    cfg = json.loads((a / "adapter_config.json").read_text())
    (a / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": None}))
    line = _fails(
        capsys,
        _eval(folders / "base", a),
        str(a),
        f"adapter was trained for another base model, not {folders / 'base'}",
        "shapes differ: ",
    )
    assert "in the adapter" in line and line.count("size mismatch") == 0


def test_adapter_of_a_model_of_the_same_shapes(folders, capsys):
    """An adapter of `tiny` loaded onto `tiny-l1` without a word: same shapes."""
    _fails(
        capsys,
        _eval(folders / "twin", folders / "adapter"),
        str(folders / "adapter"),
        f"adapter was trained for {folders / 'base'}, not {folders / 'twin'}",
        "give the adapter's base model with --model",
    )


def test_diagnose_checks_every_adapter(folders, tmp_path, capsys):
    bad = _copy(folders, "adapter", tmp_path)
    (bad / "adapter_config.json").write_text("{not json")
    argv = ["diagnose", "--model", str(folders / "base"), "--task", "arithmetic"]
    _fails(capsys, [*argv, "--adapter", str(folders / "adapter"), str(bad)], str(bad))
    argv += ["--adapter", str(folders / "adapter"), str(folders / "wide_adapter")]
    _fails(
        capsys, argv, str(folders / "wide_adapter"), f"adapter was trained for {folders / 'wide'}"
    )


def test_adapter_happy_path_still_loads(folders, tmp_path):
    from arca.models.load import load_policy

    model, _ = load_policy(str(folders / "base"), str(folders / "adapter"), device="cpu")
    assert hasattr(model, "disable_adapter")
    # An adapter of a model built in memory names no base (""): told by its shapes only.
    a = _copy(folders, "adapter", tmp_path)
    cfg = json.loads((a / "adapter_config.json").read_text())
    (a / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": ""}))
    model, _ = load_policy(str(folders / "twin"), str(a), device="cpu")
    assert hasattr(model, "disable_adapter")


# ------------------------------------------------------------- arca report


def _run(tmp_path):
    from report_fixtures import make_run

    return make_run(
        tmp_path, "uni", 1, scheme="uniform", rewards=[0.1, 0.2], gini=[0.0, 0.0], eff=[1, 1]
    )


def test_report_invalid_results_json(tmp_path, capsys):
    run = _run(tmp_path)
    res = run / "eval" / "results.json"
    res.parent.mkdir(exist_ok=True)
    res.write_text("{cut off")
    _fails(capsys, ["report", str(run), "--out", str(tmp_path / "r")], str(res), "not valid JSON")


def test_report_invalid_metrics_line(tmp_path, capsys):
    run = _run(tmp_path)
    f = run / "metrics.jsonl"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    _fails(capsys, ["report", str(run), "--out", str(tmp_path / "r")], f"{f}:2: not valid JSON")
    f.write_bytes(lines[0].encode() + b"\n\xff\xfe\n" + lines[1].encode() + b"\n")
    _fails(capsys, ["report", str(run), "--out", str(tmp_path / "r")], f"{f}:2:", "not UTF-8")


# --------------------------------------------------------------- arca train


def _config(tmp_path, text: bytes | str):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_train_yaml_syntax_error_names_the_line(tmp_path, capsys):
    cfg = _config(tmp_path, "task: arithmetic\nlora_r: [4\nmax_steps: 2\n")
    _fails(capsys, ["train", "--config", str(cfg)], "cfg.yaml: line ", "not valid YAML")


def test_train_non_utf8_config_names_the_line(tmp_path, capsys):
    cfg = _config(tmp_path, b"task: arithmetic\nrun_name: caf\xe9\n")
    _fails(capsys, ["train", "--config", str(cfg)], "cfg.yaml: line 2: not UTF-8")


@pytest.mark.parametrize("where", ["is_file", "under_file"])
def test_train_output_dir_that_cannot_be_a_folder(where, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if where == "is_file" else blocker / "run"
    cfg = _config(tmp_path, f"output_dir: {out}\nuse_cpu: true\nmax_steps: 1\n")
    _fails(capsys, ["train", "--config", str(cfg)], f"{blocker} is a file, not a folder")


def test_train_report_to_a_backend_that_is_not_installed(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name.startswith("tensorboard") else real(name, *a, **k),
    )
    cfg = _config(
        tmp_path, f"output_dir: {tmp_path / 'run'}\nuse_cpu: true\nreport_to: tensorboard\n"
    )
    _fails(
        capsys, ["train", "--config", str(cfg)], "report_to: 'tensorboard' needs the tensorboard"
    )


@pytest.mark.parametrize(
    "flag, value", [("--k", "0"), ("--limit", "0"), ("--samples", "0"), ("--batch-size", "0")]
)
def test_eval_counts_below_one_are_refused_before_loading(flag, value, capsys):
    _fails(capsys, ["eval", flag, value], f"{flag}: must be >= 1, got 0")


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--top-p", "0", "--top-p: must be in (0, 1], got 0.0"),
        ("--top-p", "1.5", "--top-p: must be in (0, 1], got 1.5"),
        ("--temperature", "0", "--temperature: must be > 0"),
    ],
)
def test_eval_decoding_out_of_range_is_refused_before_loading(flag, value, says, capsys):
    _fails(capsys, ["eval", flag, value], says)


@pytest.mark.parametrize(
    "flags",
    [
        ["--adapter", "some/adapter"],
        ["--temperature", "0.5"],
        ["--max-new-tokens", "8"],
        ["--seed", "3"],
        ["--base", "--adapter", "some/adapter"],
        ["--model", "tiny"],
        ["--out", "elsewhere"],
    ],
)
def test_eval_run_refuses_flags_it_would_ignore(flags, tmp_path, capsys):
    """They were ignored, and the result written as the run's own evaluation."""
    flag = next(f for f in flags if f != "--base")
    _fails(
        capsys,
        ["eval", "--run", str(tmp_path), *flags],
        f"{flag}: arca eval --run evaluates the run as it was trained",
        "evaluate without --run",
    )


def test_abbreviated_options_are_refused(capsys):
    """argparse read `--temp 0.5` as --temperature."""
    with pytest.raises(SystemExit) as e:
        main(["eval", "--temp", "0.5"])
    assert e.value.code == 2 and "unrecognized arguments: --temp" in capsys.readouterr().err
