"""arca diagnose scores the field's schemes: oracle (labelled a ceiling), ktae and
lambda_grpo on groups of completions that share a prompt, oar_g behind --oar-g."""

from __future__ import annotations

import json

import pytest
import reference_schemes as ref
import torch

from arca.cli import main
from arca.diagnose.completions import Completion
from arca.diagnose.core import group_credit, grouped_advantages, prompt_groups
from arca.models.tiny import build_tokenizer


def _items(tok, texts_by_prompt):
    out = []
    for prompt, texts in texts_by_prompt:
        for t in texts:
            ids = tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            out.append(Completion(prompt, tok(prompt)["input_ids"], ids, "here", {}))
    return out


def test_group_credit_equals_the_references_on_groups_that_share_a_prompt():
    tok = build_tokenizer()
    items = _items(
        tok,
        [
            ("What is 2 + 2?", ["4. \\boxed{4}", "5. \\boxed{5}", "4 \\boxed{4}", "3"]),
            ("What is 1 + 2?", ["3 \\boxed{3}", "3 \\boxed{3}", "1 \\boxed{1}", "12"]),
        ],
    )
    # Rows of one prompt apart from each other: still one group.
    items = [items[0], items[4], items[1], items[5], items[2], items[6], items[3], items[7]]
    rewards = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert prompt_groups(items).tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    got = group_credit(items, rewards, tok, correct_reward=1.0)
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # consecutive groups, as the references take them
    rows = [items[i].completion_ids for i in order]
    r = [rewards[i] for i in order]
    adv = ref.grpo_advantages(r, 4, eps=1e-4)
    assert got["advantages"][order].tolist() == pytest.approx(adv, rel=1e-6)
    zero = (tok.eos_token_id, tok.pad_token_id)
    expect = {
        "ktae": ref.ktae_token_advantages(rows, r, 4, advantages=adv, zero_token_ids=zero),
        "lambda_grpo": ref.lambda_grpo_token_advantages(rows, r, 4, advantages=adv),
    }
    for name, want in expect.items():
        for k, i in enumerate(order):
            n = len(items[i].completion_ids)
            assert got[name][i, :n].tolist() == pytest.approx(want[k], rel=1e-5, abs=1e-6)
            assert (got[name][i, n:] == 0).all()
    assert grouped_advantages([1.0], torch.tensor([0])).tolist() == [0.0]  # a group of one


def test_cli_scores_the_field_schemes_and_calls_the_oracle_a_ceiling(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["diagnose", "--model", "tiny", "--task", "arithmetic", "--samples", "8"]
    assert main([*argv, "--max-new-tokens", "24", "--oar-g", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "diagnose.json").read_text())
    schemes = res["models"][0]["schemes"]
    assert list(schemes)[-4:] == ["oracle", "ktae", "lambda_grpo", "oar_g"]
    assert "oracle (ceiling: uses ground truth)" in text
    gt = res["ground_truth"]
    oracle = schemes["oracle"]["correctness"]
    assert oracle["error_rows"] == gt["located"] > 0
    # Half of a located row's weight on its first wrong token: lift T / 2 on average.
    assert oracle["error_lift"] > 1 and oracle["top1_hit"] == pytest.approx(1.0)
    assert (
        "groups: completions sharing a prompt (2 groups)"
        in res["field_schemes"]["ktae, lambda_grpo"]
    )
    for name in ("ktae", "lambda_grpo", "oar_g"):
        assert 0 <= schemes[name]["gini"]["mean"] <= 1
    page = (out / "tokens.html").read_text()
    assert "oracle (ceiling: uses ground truth)" in page and "ktae" in page


def test_cli_on_a_file_groups_rows_by_prompt_and_grades_ktae_signed(tmp_path, capsys):
    """Completions read from a file: the rows sharing a prompt are a group, the
    task's reward gives the advantages, and ktae and lambda_grpo are graded on
    their own advantages (a push up is no blame)."""
    prompt = "Solve the problem step by step. Put the final answer in \\boxed{}.\nProblem: {p}\nSolution:"
    rows = []
    for p, a, texts in (
        ("What is 13 * 4 - 1?", "51", [
            " 13 * 4 = 52. 52 - 1 = 51. \\boxed{51}<eos>",
            " 13 * 4 = 52. 52 - 1 = 51. \\boxed{51}<eos>",
            " 13 * 4 = 42. 42 - 1 = 41. \\boxed{41}<eos>",
            " 13 * 4 = 52. 52 - 1 = 50. \\boxed{50}<eos>",
        ]),
        ("What is 7 + 8 * 2?", "23", [
            " 8 * 2 = 16. 7 + 16 = 23. \\boxed{23}<eos>",
            " 8 * 2 = 18. 7 + 18 = 25. \\boxed{25}<eos>",
            " 8 * 2 = 16. 7 + 16 = 24. \\boxed{24}<eos>",
            " 8 * 2 = 16. 7 + 16 = 23. \\boxed{23}<eos>",
        ]),
    ):  # fmt: skip
        for t in texts:
            rows.append(
                {"prompt": prompt.replace("{p}", p), "problem": p, "answer": a, "completion": t}
            )
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["diagnose", "--model", "tiny", "--task", "arithmetic", "--completions", str(f)]
    assert main([*argv, "--oar-g", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "diagnose.json").read_text())
    assert res["ground_truth"]["correct"] == 4 and res["ground_truth"]["located"] == 4
    schemes = res["models"][0]["schemes"]
    lam, ktae = schemes["lambda_grpo"], schemes["ktae"]
    assert lam["sign_flip_share"] == 0 and 0 < lam["mass_ratio"] < 1  # shared openings
    assert ktae["correctness"]["error_rows"] == 4  # wrong and pushed down: A < 0
    for s in ("ktae", "lambda_grpo"):
        assert 0 <= schemes[s]["correctness"]["prefix_blame"] <= 1
    # lambda-GRPO divides the push on the prefix a wrong row shares with a right one.
    assert lam["correctness"]["prefix_blame"] < schemes["uniform"]["correctness"]["prefix_blame"]
    assert schemes["oar_g"]["gini"]["mean"] > 0  # every completion has a \\boxed answer
    assert "pushed against their completion's advantage" in text


def test_cli_says_why_ktae_is_not_scored_when_the_rows_cannot_be_rewarded(tmp_path, capsys):
    rows = [
        {"prompt": "Problem: What is 1 + 2?\nSolution:", "completion": " 1 + 2 = 3. \\boxed{3}"},
        {"prompt": "Problem: What is 1 + 2?\nSolution:", "completion": " 1 + 2 = 4. \\boxed{4}"},
    ]
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["diagnose", "--model", "tiny", "--task", "arithmetic", "--completions", str(f)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "ktae and lambda_grpo not scored: the completions' rows lack 'answer'" in out
    res = json.loads((tmp_path / "out" / "diagnose.json").read_text())
    assert "ktae" not in res["models"][0]["schemes"] and "oracle" in res["models"][0]["schemes"]
