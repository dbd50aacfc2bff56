"""Task loaders: local files and folders, a Hub stand-in, malformed input, arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arca.tasks import PROMPT_TEMPLATE, TaskDataError, make_prompt
from arca.tasks.arithmetic import LEVELS, heldout_problems, load_arithmetic, problems, solve
from arca.tasks.loaders import MATH_HUB_ID, load_gsm8k, load_math, load_task

DATA = Path(__file__).parent / "data"
MATH_ANSWERS = {
    "12",
    r"\frac{7}{12}",
    r"(-\infty, 3]",
    r"\{0, 1\}",
    r"120^\circ",
    "70",
    "1024",
    r"\text{Monday}",
    "5",
    "4",
}


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_math_from_jsonl_extracts_last_boxed_and_splits_deterministically():
    task = load_math(str(DATA / "math_sample.jsonl"), heldout_size=3, seed=7)
    assert len(task.train) == 7 and len(task.heldout) == 3
    answers = set(task.train["answer"]) | set(task.heldout["answer"])
    assert answers == MATH_ANSWERS  # nested braces, \fbox, "\boxed 5" all handled
    assert not set(task.train["problem"]) & set(task.heldout["problem"])
    again = load_math(str(DATA / "math_sample.jsonl"), heldout_size=3, seed=7)
    assert again.heldout["problem"] == task.heldout["problem"]
    other = load_math(str(DATA / "math_sample.jsonl"), heldout_size=3, seed=8)
    assert other.heldout["problem"] != task.heldout["problem"]
    p = task.train[0]
    assert p["prompt"] == make_prompt(p["problem"]) and "\\boxed{}" in p["prompt"]


def test_math_from_parquet_and_from_a_folder_of_one_problem_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (DATA / "math_sample.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "math.parquet")
    task = load_math(str(tmp_path / "math.parquet"), heldout_size=2)
    assert set(task.train["answer"]) | set(task.heldout["answer"]) == MATH_ANSWERS
    # The original MATH release: train/<subject>/<n>.json, one problem per file.
    for i, r in enumerate(rows):
        d = tmp_path / "MATH" / "train" / r["type"].replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.json").write_text(json.dumps(r))
    task = load_math(str(tmp_path / "MATH"), heldout_size=2)
    assert len(task.train) + len(task.heldout) == len(rows)


def test_gsm8k_reference_after_hashes_without_commas():
    task = load_gsm8k(str(DATA / "gsm8k_sample.jsonl"), heldout_size=1)
    answers = set(task.train["answer"]) | set(task.heldout["answer"])
    assert answers == {"72", "10", "2400", "624", "5"}


def test_hub_path_calls_datasets_with_the_id_and_parses_its_schema(monkeypatch):
    """The Hub path with a local stand-in of MATH-lighteval's schema."""
    import datasets

    rows = [json.loads(line) for line in (DATA / "math_sample.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task("math", heldout_size=4)
    assert calls == [(MATH_HUB_ID, None, "train")]
    assert len(task.heldout) == 4 and task.source == MATH_HUB_ID


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            [{"problem": "p", "solution": r"\boxed{1}"}, {"problem": "q"}],
            r"bad.jsonl: line 2: missing column 'solution'",
        ),
        (
            [{"problem": "p", "solution": "no box at all"}],
            r"bad.jsonl: line 1: the solution has no \\boxed",
        ),
        ([{"problem": "", "solution": r"\boxed{1}"}], r"line 1: column 'problem' is empty"),
        (['{"problem": "p", "solution": '], r"bad.jsonl: line 1: not valid JSON"),
        ([["not", "an", "object"]], r"line 1: expected an object"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, lines, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(TaskDataError, match=message):
        load_math(str(path), heldout_size=0)


def test_skip_malformed_counts_what_it_skips(tmp_path):
    good = [{"problem": f"p{i}", "solution": rf"\boxed{{{i}}}"} for i in range(4)]
    path = _write_jsonl(
        tmp_path / "mixed.jsonl",
        [good[0], {"problem": "x"}, good[1], {"problem": "y", "solution": "none"}, *good[2:]],
    )
    task = load_math(str(path), heldout_size=1, skip_malformed=True)
    assert len(task.train) + len(task.heldout) == 4
    assert task.skipped == 2
    assert "line 2" in task.skipped_examples[0] and "line 4" in task.skipped_examples[1]


def test_empty_and_missing_inputs(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TaskDataError, match="empty.jsonl: no usable rows"):
        load_math(str(empty), heldout_size=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_math(str(tmp_path / "nope.jsonl"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(TaskDataError, match="holds no"):
        load_math(str(tmp_path / "dir"))
    with pytest.raises(ValueError, match="leaves no training rows"):
        load_math(str(DATA / "math_sample.jsonl"), heldout_size=10)
    with pytest.raises(ValueError, match="valid: arithmetic, math, gsm8k"):
        load_task("mmlu")


def test_prompt_template_is_the_one_place():
    assert make_prompt("  What is 1 + 1? ") == PROMPT_TEMPLATE.format(problem="What is 1 + 1?")


# ---------------------------------------------------------------- arithmetic


def test_arithmetic_solutions_are_correct_and_boxed():
    from arca.tasks import extract_boxed

    for level in LEVELS:
        stream = problems(seed=3, level=level)
        for _ in range(200):
            p = next(stream)
            expr = p["problem"].removeprefix("What is ").removesuffix("?")
            assert int(p["answer"]) == eval(expr)  # Python precedence == the task's
            assert extract_boxed(p["solution"]) == p["answer"]


def test_solve_multiplication_first_then_left_to_right():
    steps, value = solve([2, 3, 4, 5], ["+", "*", "-"])
    assert value == 9 and steps == ["3 * 4 = 12.", "2 + 12 = 14.", "14 - 5 = 9."]


def test_arithmetic_is_seeded_unlimited_and_heldout_is_disjoint():
    a = load_arithmetic(train_size=300, heldout_size=50, seed=1)
    b = load_arithmetic(train_size=300, heldout_size=50, seed=1)
    assert a.train["problem"] == b.train["problem"] and a.heldout["problem"] == b.heldout["problem"]
    assert not set(a.train["problem"]) & set(a.heldout["problem"])
    assert len(set(a.train["problem"])) == 300
    held = {p["problem"] for p in heldout_problems(50, seed=1)}
    stream = problems(seed=99, exclude=frozenset(held))
    assert not held & {next(stream)["problem"] for _ in range(2000)}


def test_arithmetic_levels_control_difficulty():
    for level, lv in LEVELS.items():
        p = next(problems(seed=0, level=level))
        numbers = [
            t
            for t in p["problem"].removeprefix("What is ").removesuffix("?").split()
            if t.isdigit()
        ]
        assert len(numbers) == lv.operands
    with pytest.raises(ValueError, match="unknown arithmetic level 9"):
        next(problems(seed=0, level=9))


def test_task_rewards_and_trl_reward_function():
    task = load_arithmetic(train_size=10, heldout_size=4)
    row = task.heldout[0]
    assert task.reward(f"... \\boxed{{{row['answer']}}}", row["answer"]) == 1.0
    assert task.reward("no idea", row["answer"]) == 0.0
    fn = task.trl_reward()
    out = fn(
        prompts=["x", "y"],
        completions=[
            f"\\boxed{{{row['answer']}}}",
            [{"role": "assistant", "content": "\\boxed{-1}"}],
        ],
        answer=[row["answer"], "2"],
    )
    assert out == [1.0, 0.0]


def test_few_shot_prefix_is_shared_and_disjoint():
    task = load_arithmetic(train_size=50, heldout_size=10, few_shot=2)
    plain = load_arithmetic(train_size=50, heldout_size=10)
    prefix = task.heldout[0]["prompt"][: -len(plain.heldout[0]["prompt"])]
    assert prefix.count("Solution: ") == 2 and prefix.endswith("}\n\n")
    assert all(
        p.startswith(prefix) for p in list(task.train["prompt"]) + list(task.heldout["prompt"])
    )
    assert list(task.heldout["problem"]) == list(plain.heldout["problem"])  # same held-out set
    shots = {line for line in prefix.splitlines() if line.startswith("Problem: ")}
    used = {f"Problem: {p}" for p in list(task.train["problem"]) + list(task.heldout["problem"])}
    assert len(shots) == 2 and not shots & used
    with pytest.raises(ValueError, match="few_shot: only the arithmetic task"):
        load_task("math", "tests/data/math_sample.jsonl", heldout_size=1, few_shot=1)
