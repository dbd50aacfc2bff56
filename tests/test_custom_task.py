"""Your own task: data, column names, prompt template, chat template and reward
functions from a config (``task: custom``) and from the library, with TRL's
conventions; and the shipped examples in examples/, run end to end."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arca.tasks.custom import load_custom, parse_columns, read_template, template_fields
from arca.tasks.formats import as_chat
from arca.tasks.loaders import check_task_config, load_task, task_from_config
from arca.tasks.rewards import call_rewards, check_reward_func, load_callable

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


# ------------------------------------- a user's own code, checked (issue 25.4)

BAD = """
def returns_none(completions, **kwargs):
    return None

def wrong_length(completions, **kwargs):
    return [1.0]

def text(completions, **kwargs):
    return ["1"] * len(completions)

def infinite(completions, **kwargs):
    return [float("inf")] * len(completions)

def all_none(completions, **kwargs):
    return [None] * len(completions)

def boom(prompts, completions, **kwargs):
    return [1 / (0 if "7" in p else 1) for p in prompts]

def fine(completions, **kwargs):
    return [float(len(c) % 2) for c in completions]

def needs_solution(completions, solution, **kwargs):
    return [0.0] * len(completions)

def locate_none(row, completion):
    return None

def locate_int(row, completion):
    return 3

def locate_boom(row, completion):
    raise KeyError("step")
"""


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    f = tmp_path / "bad.py"
    f.write_text(BAD)
    return f


def custom_cfg(tmp_path: Path, bad: Path, reward: str, **over) -> dict:
    data = write_jsonl(tmp_path / "d.jsonl", rows(12))
    cfg = {
        "task": "custom",
        "data": str(data),
        "prompt_template": "Q {question} =",
        "reward_funcs": [f"{bad}:{reward}"],
        "heldout_size": 4,
    }
    return cfg | over


def test_a_reward_argument_that_no_column_fills_is_refused(tmp_path: Path, bad: Path) -> None:
    """TRL failed at the first step: final_number() missing 'solution'."""
    cfg = custom_cfg(tmp_path, bad, "needs_solution", columns={"final": "answer"})
    with pytest.raises(ValueError, match=r"^reward_funcs: .*needs_solution needs the argument "):
        task_from_config(cfg)
    with pytest.raises(ValueError, match=r"\(columns: answer, id, question\); rename one"):
        task_from_config(cfg)
    task_from_config(cfg | {"columns": {"final": "solution"}})  # renamed so: fine


@pytest.mark.parametrize(
    ("reward", "says"),
    [
        ("returns_none", "returned NoneType, not a list of 2 rewards"),
        ("wrong_length", "returned 1 rewards for 2 completions"),
        ("text", "returned '1' (str) for completion 0; a reward is a number, or None"),
        ("infinite", "returned inf for completion 0; rewards must be finite"),
    ],
)
def test_a_reward_that_returns_the_wrong_thing_is_named(
    reward: str, says: str, tmp_path: Path, bad: Path
) -> None:
    """What TRL calls (task.trl_rewards) and what arca eval scores with
    (task.score) check the return; TRL failed with 'NoneType' object is not
    iterable, or trained on a string."""
    task = task_from_config(custom_cfg(tmp_path, bad, reward))
    rs = task.heldout.to_list()[:2]
    trl_call = task.trl_rewards()[0]
    assert trl_call.__name__ == reward  # TRL logs rewards/<name>/mean
    with pytest.raises(ValueError, match=f"^reward_funcs: {bad}:{reward} {re.escape(says)}"):
        trl_call(
            prompts=[r["prompt"] for r in rs], completions=["1", "2"], completion_ids=[[1], [2]]
        )
    with pytest.raises(ValueError, match=re.escape(says)):
        task.score(["1", "2"], rs)


def test_a_reward_that_raises_keeps_its_traceback_under_one_line(
    tmp_path: Path, bad: Path, random_model: Path, capsys
) -> None:
    """The user's own exception is shown with its traceback, then one line
    naming the reward and the prompt it failed on. The run it stopped had no
    step, so it is not protected: the next run into that folder replaces it."""
    from arca.cli import main
    from arca.tasks.rewards import UserCodeError

    task = task_from_config(custom_cfg(tmp_path, bad, "boom"))
    prompts = ["Q What is 1 + 1? =", "Q What is 7 + 1? ="]
    with pytest.raises(UserCodeError, match=r"boom raised ZeroDivisionError: division by ze") as e:
        task.trl_rewards()[0](prompts=prompts, completions=["a", "b"], completion_ids=[[], []])
    assert "(prompt 'Q What is 7 + 1? =')" in str(e.value)  # the one it failed on
    assert isinstance(e.value.__cause__, ZeroDivisionError)

    cfg = custom_cfg(tmp_path, bad, "boom")
    rows_ = [{"question": f"What is {i} + 7?", "final": str(i + 7)} for i in range(12)]
    write_jsonl(tmp_path / "d.jsonl", rows_)  # every prompt makes boom raise
    argv = ["train", "--model_name_or_path", str(random_model), "--task", "custom"]
    argv += ["--data", cfg["data"], "--prompt_template", cfg["prompt_template"]]
    argv += ["--heldout_size", "4", "--num_generations", "4", "--per_device_train_batch_size", "4"]
    argv += ["--max_steps", "1", "--max_completion_length", "4", "--report_to", "none"]
    argv += ["--save_strategy", "no", "--logging_steps", "1", "--output_dir", str(tmp_path / "run")]
    assert main([*argv, "--reward_funcs", f"{bad}:boom"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and f'File "{bad}", line ' in err and "ZeroDivisionError" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"arca train: error: reward_funcs: {bad}:boom raised ZeroDivisionError")
    assert "(prompt 'Q What is " in last
    # Nothing ran: rerunning (with or without --resume, other settings) replaces it.
    assert main([*argv, "--reward_funcs", f"{bad}:fine"]) == 0
    assert "never completed a step" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["reward_funcs"] == [f"{bad}:fine"]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_rewards_that_are_all_none_stop_the_run(
    tmp_path: Path, bad: Path, random_model: Path, capsys
) -> None:
    """Exit 0 before, every advantage 0 and the reward key gone from metrics.jsonl."""
    from arca.cli import main

    cfg = custom_cfg(tmp_path, bad, "all_none")
    argv = ["train", "--model_name_or_path", str(random_model), "--task", "custom"]
    argv += ["--data", cfg["data"], "--prompt_template", cfg["prompt_template"]]
    argv += ["--reward_funcs", f"{bad}:all_none", "--heldout_size", "4", "--num_generations", "4"]
    argv += ["--per_device_train_batch_size", "4", "--max_steps", "2", "--report_to", "none"]
    argv += ["--max_completion_length", "4", "--output_dir", str(tmp_path / "run")]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "reward_funcs: every reward function (all_none) returned None or NaN for all 4 " in last
    assert "completions of step 1" in last


@pytest.mark.parametrize(("locator", "says"), [("locate_none", "None"), ("locate_int", "3")])
def test_an_error_locator_that_returns_the_wrong_thing_is_named(
    locator: str, says: str, tmp_path: Path, bad: Path
) -> None:
    """The trainer failed with 'NoneType' object has no attribute 'first_error'."""
    task = task_from_config(custom_cfg(tmp_path, bad, "fine", error_locator=f"{bad}:{locator}"))
    row = task.heldout[0]
    with pytest.raises(ValueError, match=rf"^error_locator: {bad}:{locator} returned {says} \("):
        task.locate_error(row, "x")


def test_an_error_locator_that_raises_names_itself_and_the_prompt(
    tmp_path: Path, bad: Path
) -> None:
    from arca.tasks.rewards import UserCodeError

    task = task_from_config(custom_cfg(tmp_path, bad, "fine", error_locator=f"{bad}:locate_boom"))
    row = task.heldout[0]
    with pytest.raises(UserCodeError, match=r"^error_locator: .*locate_boom raised KeyError") as e:
        task.locate_error(row, "x")
    assert repr(row["prompt"]) in str(e.value) and isinstance(e.value.__cause__, KeyError)


def test_trl_accuracy_reward_on_text_prompts_is_refused(tmp_path: Path, bad: Path) -> None:
    """TRL's own rewards read completion[0]['content']: on text prompts TRL
    failed with 'string indices must be integers'."""
    cfg = custom_cfg(tmp_path, bad, "fine", columns={"final": "solution"})
    cfg["reward_funcs"] = ["accuracy_reward"]
    with pytest.raises(ValueError, match=r"^reward_funcs: TRL's accuracy_reward expects conversa"):
        task_from_config(cfg)
    task_from_config(cfg | {"use_chat_template": True})  # conversations: what it reads


def test_columns_must_rename_a_column_the_data_has(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    with pytest.raises(ValueError, match=r"line 1: columns renames 'finale', which the row lacks"):
        load_custom(str(data), prompt_column="question", columns={"finale": "answer"})


def test_heldout_prompts_that_are_also_training_prompts_are_refused(tmp_path: Path) -> None:
    """Data whose rows repeat: the held-out split was the training rows."""
    data = write_jsonl(tmp_path / "d.jsonl", rows(6) * 3)
    with pytest.raises(ValueError, match=r"d.jsonl: 4 of the 4 held-out prompts are also training"):
        load_custom(str(data), prompt_column="question", heldout_size=4)
    load_custom(
        str(write_jsonl(tmp_path / "e.jsonl", rows(6))), prompt_column="question", heldout_size=4
    )


def test_conversational_data_without_a_chat_template_names_the_data(
    tmp_path: Path, random_model: Path, monkeypatch
) -> None:
    """It blamed use_chat_template, which was never set."""
    import transformers

    from arca import train

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the config error")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    conv = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(i)} for i in range(6)]
    data = write_jsonl(tmp_path / "c.jsonl", conv)
    argv = ["--model_name_or_path", str(random_model), "--task", "custom", "--data", str(data)]
    argv += ["--heldout_size", "2", "--output_dir", str(tmp_path / "run")]
    with pytest.raises(ValueError, match=r"^data: the prompts of .*c.jsonl are conversations"):
        train.main(argv)


# --------------------------------- a run remembers what it trained on (issue 25.1)


def test_a_run_records_its_data_and_refuses_other_data(
    tmp_path: Path, bad: Path, random_model: Path, monkeypatch, capsys
) -> None:
    """data: problems.jsonl was recorded as given, so `arca eval --run` or a
    resume from another folder with its own problems.jsonl used that one."""
    from arca.cli import main

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    mine = write_jsonl(home / "problems.jsonl", rows(12))
    write_jsonl(elsewhere / "problems.jsonl", rows(14)[2:])  # other problems, same name
    cfg = {
        "model_name_or_path": str(random_model),
        "task": "custom",
        "data": "problems.jsonl",
        "prompt_template": "Q {question} =",
        "reward_funcs": [f"{bad}:fine"],
        "heldout_size": 4,
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_steps": 1,
        "max_completion_length": 4,
        "report_to": "none",
        "save_strategy": "no",
        "output_dir": str(tmp_path / "run"),
    }
    (home / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    monkeypatch.chdir(home)
    assert main(["train", "--config", "cfg.yaml"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"] == str(mine.resolve())
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()
    assert saved["files_sha256"][str(mine.resolve())] == digest
    assert saved["files_sha256"][str(bad.resolve())] == hashlib.sha256(bad.read_bytes()).hexdigest()

    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--limit", "1", "--k", "1"]) == 0
    res = json.loads((run / "eval-first1" / "results.json").read_text())
    assert res["source"] == str(mine.resolve())  # the file it trained on, not this folder's
    # Resuming from here with the config: its problems.jsonl is this folder's.
    assert main(["train", "--config", str(home / "cfg.yaml"), "--resume", "true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"data: '{mine.resolve()}' -> '{(elsewhere / 'problems.jsonl').resolve()}'" in err
    assert "files_sha256: " in err

    mine.write_text(mine.read_text().replace("What is 3 + 1?", "What is 3 + 2?"))
    for argv in (
        ["eval", "--run", str(run), "--limit", "1", "--k", "1"],
        ["train", "--config", str(run / "config.yaml"), "--resume", "true"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert (
            f"files_sha256: {mine.resolve()} has changed since the run recorded it (sha256 {digest[:12]}... then, "
            in err
        ), err
