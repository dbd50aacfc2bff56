"""Your own task: data, column names, prompt template, chat template and reward
functions from a config (``task: custom``) and from the library, with TRL's
conventions; and the shipped examples in examples/, run end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arca.tasks.custom import (
    as_chat,
    call_rewards,
    check_reward_func,
    load_callable,
    load_custom,
    parse_columns,
    read_template,
    template_fields,
)
from arca.tasks.loaders import check_task_config, load_task, task_from_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(n: int = 12) -> list[dict]:
    return [{"question": f"What is {i} + 1?", "final": str(i + 1), "id": i} for i in range(n)]


REWARDS = """
import json, os

def exact(completions, solution, **kwargs):
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(s in t) for t, s in zip(texts, solution)]

def record(prompts, completions, completion_ids, **kwargs):
    with open(os.environ["ARCA_TEST_RECORD"], "a") as f:
        f.write(json.dumps({"keys": sorted(kwargs), "n": len(completions),
                            "ids": [len(i) for i in completion_ids],
                            "state": kwargs["trainer_state"] is not None}) + "\\n")
    return [None] * len(completions)

def positional_only(completions):
    return [0.0] * len(completions)

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def reward_file(tmp_path: Path) -> Path:
    f = tmp_path / "my_rewards.py"
    f.write_text(REWARDS)
    return f


# ------------------------------------------------------------ importing


def test_load_callable_every_spelling(reward_file: Path, tmp_path: Path, monkeypatch) -> None:
    import trl.rewards

    assert load_callable("accuracy_reward", "reward_funcs") is trl.rewards.accuracy_reward
    by_file = load_callable(f"{reward_file}:exact", "reward_funcs")
    assert by_file(["x 2"], solution=["2"]) == [1.0]
    monkeypatch.chdir(tmp_path)  # TRL's grpo.py imports with the current folder on the path
    dotted = load_callable("my_rewards.exact", "reward_funcs")
    colon = load_callable("my_rewards:exact", "reward_funcs")
    assert dotted(["3"], solution=["4"]) == colon(["3"], solution=["4"]) == [0.0]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nope", "neither one of TRL's rewards"),
        ("no_such_module_xyz.f", "cannot import no_such_module_xyz"),
        ("missing.py:f", "no such file"),
        ("{file}:nothing", "has no function 'nothing'"),
        ("{file}:NOT_A_FUNCTION", "has no function 'NOT_A_FUNCTION'"),
    ],
)
def test_load_callable_errors_name_the_field(spec: str, says: str, reward_file: Path) -> None:
    with pytest.raises(ValueError, match="^reward_funcs: ") as e:
        load_callable(spec.format(file=reward_file), "reward_funcs")
    assert says in str(e.value)


def test_a_reward_trl_could_not_call_is_refused(reward_file: Path) -> None:
    spec = f"{reward_file}:positional_only"
    with pytest.raises(ValueError, match=r"must accept \*\*kwargs"):
        check_reward_func(load_callable(spec, "reward_funcs"), spec)


# ------------------------------------------------------- data and prompts


def test_columns_templates_and_chat_prompts() -> None:
    assert parse_columns({"final": "solution"}) == {"final": "solution"}
    assert parse_columns("final:solution, question:q") == {"final": "solution", "question": "q"}
    for bad in ("final", "a:b:c", "a:,b:c"):
        with pytest.raises(ValueError, match="^columns: "):
            parse_columns(bad)
    with pytest.raises(ValueError, match="same name"):
        parse_columns({"a": "x", "b": "x"})
    assert template_fields("Q: {question} ({id})\nA:") == ["question", "id"]
    for bad in ("Q: {}", "Q: {0}", "Q: {question"):
        with pytest.raises(ValueError, match="^prompt_template: "):
            template_fields(bad)
    assert as_chat("hi", "be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_load_custom_renames_templates_and_keeps_every_column(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    task = load_custom(
        str(data),
        template="Q: {question}\nA:",
        columns={"final": "solution"},
        heldout_size=4,
    )
    assert len(task.train) == 8 and len(task.heldout) == 4
    assert set(task.train.column_names) == {"question", "solution", "id", "prompt"}
    row = task.heldout[0]
    assert row["prompt"] == f"Q: {row['question']}\nA:"


def test_load_custom_errors_name_the_row(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [*rows(3), {"question": "x"}, {"other": 1}])
    with pytest.raises(
        ValueError, match=r"d.jsonl: line 5: prompt_template uses column 'question'"
    ):
        load_custom(str(data), template="{question}", heldout_size=1)
    with pytest.raises(ValueError, match=r"line 1: missing column 'prompt' \(prompt_column"):
        load_custom(str(data), heldout_size=1)
    with pytest.raises(ValueError, match="row 4 has columns"):
        load_custom(str(data), prompt_column="question", heldout_size=1, skip_malformed=True)


def test_conversational_data_is_taken_as_is(tmp_path: Path) -> None:
    conv = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(i)} for i in range(6)]
    task = load_custom(str(write_jsonl(tmp_path / "c.jsonl", conv)), heldout_size=2)
    assert task.heldout[0]["prompt"][0]["role"] == "user"
    cfg = {"task": "custom", "data": str(tmp_path / "c.jsonl"), "heldout_size": 2}
    with pytest.raises(ValueError, match="already conversations"):
        task_from_config({**cfg, "use_chat_template": True})


def test_builtin_task_takes_a_template_everywhere() -> None:
    task = load_task(
        "arithmetic", heldout_size=3, train_size=3, few_shot=1, template="Q {problem} ="
    )
    p = task.heldout[0]["prompt"]
    assert p.startswith("Q ") and p.endswith(f"Q {task.heldout[0]['problem']} =")  # shot too
    assert "Solve the problem" not in p
    with pytest.raises(ValueError, match=r"only \{problem\}"):
        check_task_config({"task": "arithmetic", "prompt_template": "{question}"})


def test_template_file_and_config_checks(tmp_path: Path, reward_file: Path) -> None:
    (tmp_path / "t.txt").write_text("Say {question}\n")
    assert read_template(str(tmp_path / "t.txt")) == "Say {question}\n"
    with pytest.raises(ValueError, match="prompt_template: no such file"):
        read_template(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="^data: task: custom needs"):
        check_task_config({"task": "custom"})
    with pytest.raises(ValueError, match="^columns: only task: custom"):
        check_task_config({"task": "math", "columns": {"a": "b"}})
    with pytest.raises(ValueError, match="^system_prompt: only used with use_chat_template"):
        check_task_config({"task": "arithmetic", "system_prompt": "hi"})
    with pytest.raises(ValueError, match="^reward_weights: 1 weights for 2"):
        check_task_config(
            {
                "task": "arithmetic",
                "reward_funcs": [f"{reward_file}:exact", "accuracy_reward"],
                "reward_weights": [1.0],
            }
        )
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    with pytest.raises(ValueError, match=r"^reward_funcs: none given.*lacks \(has: "):
        task_from_config(
            {"task": "custom", "data": str(data), "prompt_column": "question", "heldout_size": 4}
        )


# ---------------------------------------------------------------- rewards


def test_call_rewards_follows_trl() -> None:
    seen = {}

    def a(prompts, completions, completion_ids, **kw):
        seen.update(kw, prompts=prompts, completions=completions)
        return [1.0, None, 0.5]

    def b(completions, **kw):
        return [2.0, None, float("nan")]

    chat = [{"role": "user", "content": "q"}]
    rs = [
        {"prompt": chat, "solution": "1"},
        {"prompt": chat, "solution": "2"},
        {"prompt": chat, "solution": "3"},
    ]
    out = call_rewards([a, b], [1.0, 0.5], ["x", "y", "z"], rs)
    # Weighted sum over the functions that gave a reward; none gave one: 0.0 (TRL's nansum).
    assert out == [2.0, 0.0, 0.5]
    assert seen["solution"] == ["1", "2", "3"] and seen["trainer_state"] is None
    assert seen["completions"][0] == [{"role": "assistant", "content": "x"}]
    with pytest.raises(ValueError, match="returned 1 rewards for 3"):
        call_rewards([lambda completions, **k: [1.0]], None, ["x", "y", "z"], rs)


# ------------------------------------------------------------ arca train


def test_train_passes_columns_to_trl_rewards(
    tmp_path: Path, random_model: Path, reward_file: Path, monkeypatch
) -> None:
    """The reward functions receive every renamed column, TRL's keywords and the
    trainer state, in a real 1-step run; config.yaml records what ran."""
    from arca import train

    data = write_jsonl(tmp_path / "d.jsonl", rows(20))
    (tmp_path / "p.txt").write_text("Q {question} =")
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("ARCA_TEST_RECORD", str(record))
    cfg = {
        "model_name_or_path": str(random_model),
        "task": "custom",
        "data": "d.jsonl",  # beside the config, not in the current folder
        "columns": {"final": "solution"},
        "prompt_template": "p.txt",
        "reward_funcs": ["my_rewards.py:exact", "my_rewards.py:record"],
        "heldout_size": 4,
        "lora_r": 2,
        "lora_alpha": 4,
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_steps": 1,
        "max_completion_length": 6,
        "report_to": "none",
        "save_strategy": "no",
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(ROOT)
    train.main(["--config", str(tmp_path / "cfg.yaml")])
    calls = [json.loads(x) for x in record.read_text().splitlines()]
    assert calls and all(c["n"] == 4 for c in calls) and all(c["state"] for c in calls)
    assert {"id", "question", "solution", "trainer_state", "log_extra"} <= set(calls[0]["keys"])
    assert all(0 < n <= 6 for n in calls[0]["ids"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["prompt_template"] == "Q {question} ="  # the text that ran, not the file name
    assert saved["data"] == str(data.resolve())
    assert saved["reward_funcs"][0] == f"{reward_file.resolve()}:exact"
    assert saved["columns"] == {"final": "solution"}


def test_chat_template_missing_is_said_before_the_model_loads(
    tmp_path: Path, random_model: Path, monkeypatch
) -> None:
    import transformers

    from arca import train

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the config error")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    with pytest.raises(ValueError, match="^use_chat_template: .* has no chat template"):
        train.main(
            [
                "--model_name_or_path",
                str(random_model),
                "--use_chat_template",
                "true",
                "--train_size",
                "8",
                "--heldout_size",
                "2",
                "--output_dir",
                str(tmp_path / "run"),
            ]
        )


# ------------------------------------------------------------- examples


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def test_custom_task_example_trains_and_evaluates_from_another_folder(tmp_path: Path) -> None:
    """examples/custom_task: own data, column mapping, template file, SmolLM2's
    chat template and two TRL-signature rewards; `arca train` then `arca eval`."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "arca.cli", "train", "--config"]
    res = _run(
        [
            *cmd,
            str(EXAMPLES / "custom_task" / "config.yaml"),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--max_completion_length",
            "8",
            "--output_dir",
            str(run),
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    [line] = (run / "metrics.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert {"reward", "rewards/final_number/mean", "rewards/short/mean"} <= set(rec)
    sample = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert "Answer with the number only." in sample["prompt"]  # the template file
    assert "careful assistant" in sample["prompt"]  # the system prompt, via the chat template
    res = _run(
        [sys.executable, "-m", "arca.cli", "eval", "--run", str(run), "--limit", "2", "--k", "1"],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((run / "eval-first2" / "results.json").read_text())
    assert out["problems"] == 2 and out["correct_reward"] == 1.0
    assert not math.isnan(out["greedy_mean_reward"])
    lines = (run / "eval-first2" / "completions.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["problem"][0]["role"] == "system"


def test_library_route_example_runs(tmp_path: Path) -> None:
    res = _run(
        [
            sys.executable,
            str(EXAMPLES / "library_route.py"),
            "--steps",
            "1",
            "--output-dir",
            str(tmp_path / "lib"),
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "step 1: reward" in res.stdout and "arca Gini" in res.stdout
