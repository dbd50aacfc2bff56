"""Ground-truth credit: the arithmetic locator, its mapping onto tokens, and
the credit-correctness metrics against plain-Python references."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from arca.credit import (
    correctness_summary,
    credit_correctness,
    effective_token_count,
    error_lift,
    prefix_blame,
    token_weights,
    topk_hit,
    weight_share,
)
from arca.tasks.arithmetic import (
    LEVELS,
    char_classes,
    first_error,
    load_arithmetic,
    locate_error,
    problem_from_prompt,
    problems,
)
from arca.tasks.base import Located
from arca.tasks.locate import ground_truth, locate_tokens, token_spans
from tests.batches import Ragged, ragged_floats

P = "What is 47 - 8 + 15?"
GOOD = " 47 - 8 = 39. 39 + 15 = 54. \\boxed{54}"

# ------------------------------------------------------------------ locator


@pytest.mark.parametrize(
    "completion, at",
    [
        # The issue's four cases: a wrong result, a copy error, a wrong
        # operator, a wrong final answer.
        (" 47 - 8 = 38. 38 + 15 = 53. \\boxed{53}", " 47 - 8 = 3"),
        (" 47 - 8 = 39. 38 + 15 = 53. \\boxed{53}", " 47 - 8 = 39. 3"),
        (" 47 + 8 = 55. 55 + 15 = 70. \\boxed{70}", " 47 "),
        (" 47 - 8 = 39. 39 + 15 = 54. \\boxed{55}", " 47 - 8 = 39. 39 + 15 = 54. \\boxed{5"),
    ],
)
def test_first_error_on_the_issue_examples(completion, at):
    assert first_error(P, completion) == len(at)


def test_first_error_tolerates_whitespace_and_says_none_for_a_solution():
    assert first_error(P, GOOD) is None
    assert first_error(P, "47-8=39.39+15=54.\\boxed{54}") is None
    assert first_error(P, "\n 47  - 8 =  39.\t39 + 15 = 54.  \\boxed{ 54 }  \n") is None


def test_first_error_when_stopping_early_or_running_on():
    from arca.tasks import math_reward

    assert first_error(P, " 47 - 8 = 3") == len(" 47 - 8 = 3")  # blame the stop
    assert first_error(P, "") == 0
    # Chatter after the solution is harmless (the grader scores it correct) ...
    chatter = GOOD + "\n\nSolve the problem step by step. I hope this helps."
    assert first_error(P, chatter) is None and math_reward(chatter, "54") == 1.0
    # ... a second answer is not: the grader reads the last box.
    second = GOOD + "\n\nProblem: What is 1 + 1?\nSolution: 1 + 1 = 2. \\boxed{2}"
    assert first_error(P, second) == len(GOOD) + 2 and math_reward(second, "54") == 0.0
    # ... but a copied instruction's empty box is not an answer, for either.
    copied = GOOD + "\n\nSolve the problem step by step. Put the final answer in \\boxed{}."
    assert first_error(P, copied) is None and math_reward(copied, "54") == 1.0


def test_first_error_with_multiplication_first_and_negative_values():
    q = "What is 3 + 4 * 2?"
    assert first_error(q, " 4 * 2 = 8. 3 + 8 = 11. \\boxed{11}") is None
    # Left to right instead of multiplication first: wrong at the first step's 3.
    assert first_error(q, " 3 + 4 = 7. 7 * 2 = 14. \\boxed{14}") == 1
    assert first_error("What is 3 - 50?", " 3 - 50 = -47. \\boxed{-47}") is None
    assert first_error("What is 3 - 50?", " 3 - 50 = 47. \\boxed{47}") == len(" 3 - 50 = ")


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_corrupted_character_is_found_where_it_was_changed(level):
    rng = random.Random(level)
    stream = problems(seed=5, level=level)
    for _ in range(100):
        p = next(stream)
        sol = " " + p["solution"]
        assert first_error(p["problem"], sol) is None
        k = rng.choice([i for i, c in enumerate(sol) if not c.isspace()])
        wrong = rng.choice([c for c in "0123456789+-*=.x" if c != sol[k]])
        assert first_error(p["problem"], sol[:k] + wrong + sol[k + 1 :]) == k
        cut = rng.randrange(len(sol.rstrip()))
        if sol[:cut].strip() != sol.strip():
            assert first_error(p["problem"], sol[:cut]) == cut


def test_locator_reads_the_problem_of_a_few_shot_prompt():
    task = load_arithmetic(train_size=4, heldout_size=4, few_shot=2)
    row = task.heldout[0]
    assert row["prompt"].count("Problem: ") == 3
    assert problem_from_prompt(row["prompt"]) == row["problem"]
    sol = " " + next(p["solution"] for p in [{"solution": s} for s in [_solution(row["problem"])]])
    # The row's problem column and the prompt alone give the same answer.
    assert task.locate_error(row, sol) == Located(None, char_classes(sol))
    assert locate_error({"prompt": row["prompt"]}, sol).first_error is None
    with pytest.raises(ValueError, match="no 'Problem: What is"):
        problem_from_prompt("Solve: 1 + 1")
    with pytest.raises(ValueError, match="not an arithmetic problem"):
        first_error("What is 1 / 2?", "0.5")


def _solution(problem: str) -> str:
    from arca.tasks.arithmetic import parse_problem, worked_solution

    return worked_solution(*parse_problem(problem))[0]


@pytest.mark.parametrize(
    "completion, step",
    [
        (" 47 - 8 = 38. 38 + 15 = 53. \\boxed{53}", 1),
        (" 47 - 8 = 39. 38 + 15 = 53. \\boxed{53}", 2),  # a copy error is in step 2
        (" 47 - 8 = 39. 39 + 15 = 55. \\boxed{55}", 2),
        (" 47 - 8 = 39. 39 + 15 = 54. \\boxed{55}", 3),  # the final answer
        (" 47 - 8 = 39.", 2),  # stopped before step 2
        (GOOD, None),
    ],
)
def test_error_step_says_which_step_went_wrong(completion, step):
    assert locate_error({"problem": P}, completion).step == step


def test_char_classes_mark_results_operands_and_template():
    cls = char_classes(GOOD)
    assert len(cls) == len(GOOD)
    picked = {c: "".join(ch for ch, k in zip(GOOD, cls, strict=True) if k == c) for c in "rot"}
    assert picked["r"] == "395454"  # each step's value, then the answer in \boxed{}
    assert picked["o"] == "47-839+15"  # copied from the problem or the previous step
    assert set(picked["t"]) == set(" =.\\boxed{}")


# ------------------------------------------------------------ token mapping


def _bpe_tokenizer():
    """A byte-level BPE tokenizer trained here on arithmetic text (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [
        " " + p["solution"] for p, _ in zip(problems(seed=1, level=3), range(500), strict=False)
    ]
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def _metaspace_tokenizer():
    """SentencePiece-style pieces: decoding one alone drops its leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    text = [
        " " + p["solution"] for p, _ in zip(problems(seed=1, level=2), range(300), strict=False)
    ]
    tok.train_from_iterator(
        text, trainers.BpeTrainer(vocab_size=200, special_tokens=["<eos>", "<unk>"])
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>"
    )


def _char_tokenizer():
    from arca.models.tiny import build_tokenizer

    return build_tokenizer()


@pytest.mark.parametrize("make", [_char_tokenizer, _bpe_tokenizer, _metaspace_tokenizer])
def test_error_token_holds_the_wrong_character_for_every_tokenizer(make):
    tok = make()
    wrong = " 47 - 8 = 39. 38 + 15 = 53. \\boxed{53}"
    ids = tok(wrong, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    text, spans = token_spans(tok, ids)
    assert text.strip() == wrong.strip()
    assert spans[0][0] == 0 and spans[-1] == (len(text), len(text))  # <eos>: empty, at the end
    assert all(a <= b for a, b in spans) and all(
        spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1)
    )
    truth = locate_tokens(locate_error({"problem": P}, text), text, spans, ids, tok.eos_token_id)
    a, b = spans[truth.error_token]
    assert a <= text.index("38 +") + 1 < b  # the token holding the copied 8
    assert not truth.correct and len(truth.classes) == len(ids)
    assert truth.classes[-1] == "t"  # <eos> is template


def test_stopping_early_blames_eos_and_truncation_is_not_located():
    tok = _char_tokenizer()
    short = tok(" 47 - 8 = 39.", add_special_tokens=False)["input_ids"]
    text, spans = token_spans(tok, short + [tok.eos_token_id])
    t = locate_tokens(locate_error({"problem": P}, text), text, spans, short + [2], 2)
    assert t.error_token == len(short)  # the <eos>
    text, spans = token_spans(tok, short)  # cut by the length limit: no <eos>
    t = locate_tokens(locate_error({"problem": P}, text), text, spans, short, 2)
    assert t.error_token is None and not t.correct


def test_ground_truth_batch_positions_with_left_padding():
    tok = _char_tokenizer()
    texts = [GOOD, " 47 - 8 = 38. 38 + 15 = 53. \\boxed{53}", " 47 - 8 = 3"]
    seqs = [tok(t, add_special_tokens=False)["input_ids"] + [2] for t in texts]
    T = max(map(len, seqs)) + 2
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, s in enumerate(seqs):  # left padding
        ids[i, T - len(s) :] = torch.tensor(s)
        mask[i, T - len(s) :] = 1
    gt = ground_truth(locate_error, [{"problem": P}] * 3, ids, mask, tok)
    pad = [T - len(s) for s in seqs]
    assert gt["error_index"].tolist() == [-1, pad[1] + 11, T - 1]
    assert gt["correct"].tolist() == [True, False, False]
    assert gt["located"].tolist() == [False, True, True]
    assert gt["error_step"].tolist() == [-1, 1, 1]  # both go wrong in the first step
    row0 = [texts[0][j] for j in range(len(texts[0])) if gt["result_mask"][0, pad[0] + j]]
    assert "".join(row0) == "395454"
    assert not (gt["result_mask"] & ~mask.bool()).any()
    assert gt["template_mask"][0, T - 1]  # <eos>


# ------------------------------------------------------------------ metrics


def ref_metrics(w: list[float], e: int, k: int) -> tuple[float, float, float]:
    """Plain Python: prefix blame, error lift, expected top-k hit (random ties)."""
    total = sum(w)
    blame = sum(w[:e]) / total
    lift = len(w) * w[e] / total
    greater = sum(x > w[e] for x in w)
    ties = sum(x == w[e] for x in w) - 1
    hit = min(1.0, max(0.0, (k - greater) / (ties + 1)))
    return blame, lift, hit


@given(
    ragged_floats(0.0, 4.0, min_len=1),
    st.sampled_from(["left", "right"]),
    st.integers(1, 4),
    st.data(),
)
def test_metrics_match_plain_python(r: Ragged, side, k, data):
    # Quantise so ties happen often.
    r = Ragged([x.mul(2).round().div(2) for x in r.rows], r.T)
    w, mask = r.layout(side)
    errs = [data.draw(st.integers(-1, len(x) - 1)) for x in r.rows]
    idx = torch.tensor(
        [
            -1 if e < 0 else (e if side == "right" else r.T - len(x) + e)
            for e, x in zip(errs, r.rows, strict=True)
        ]
    )
    got = [prefix_blame(w, mask, idx), error_lift(w, mask, idx), topk_hit(w, mask, idx, k)]
    for i, (x, e) in enumerate(zip(r.rows, errs, strict=True)):
        vals = x.tolist()
        if e < 0 or sum(vals) == 0:
            assert all(math.isnan(float(g[i])) for g in got)
            continue
        for g, want in zip(got, ref_metrics(vals, e, k), strict=True):
            assert float(g[i]) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_uniform_weights_sit_at_the_reference_values():
    T = 10
    mask = torch.ones(2, T, dtype=torch.bool)
    w = token_weights("uniform", mask=mask)
    idx = torch.tensor([4, 9])
    assert prefix_blame(w, mask, idx).tolist() == pytest.approx([0.4, 0.9])
    assert error_lift(w, mask, idx).tolist() == pytest.approx([1.0, 1.0])
    assert topk_hit(w, mask, idx, 1).tolist() == pytest.approx([0.1, 0.1])  # chance
    assert topk_hit(w, mask, idx, 3).tolist() == pytest.approx([0.3, 0.3])


def test_all_credit_on_the_error_token():
    mask = torch.ones(1, 5, dtype=torch.bool)
    w = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    idx = torch.tensor([2])
    assert float(prefix_blame(w, mask, idx)) == 0.0
    assert float(error_lift(w, mask, idx)) == pytest.approx(5.0)
    assert float(topk_hit(w, mask, idx, 1)) == 1.0
    # All credit on the correct prefix instead: full blame, no lift, no hit.
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0]])
    assert float(prefix_blame(w, mask, idx)) == 1.0
    assert float(error_lift(w, mask, idx)) == 0.0
    assert float(topk_hit(w, mask, idx, 1)) == 0.0
    assert float(topk_hit(w, mask, idx, 3)) == pytest.approx(1 / 3)  # tied with 2 zeros


def test_credit_correctness_selects_rows_and_summarises():
    mask = torch.ones(4, 4, dtype=torch.bool)
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 4)
    idx = torch.tensor([1, 2, -1, 3])
    adv = torch.tensor([-1.0, 0.5, 0.0, -0.2])  # row 1 is pushed up: not blamed
    correct = torch.tensor([False, False, True, False])
    result = torch.tensor([[0, 0, 1, 1]] * 4, dtype=torch.bool)
    per = credit_correctness(w, mask, idx, advantages=adv, correct=correct, result_mask=result)
    assert per["prefix_blame"][0] == pytest.approx(0.1) and math.isnan(per["prefix_blame"][1])
    assert per["prefix_blame"][3] == pytest.approx(0.6)
    assert per["top1_hit"][3] == 1.0 and per["top1_hit"][0] == 0.0 and per["top3_hit"][0] == 1.0
    assert per["result_share"][2] == pytest.approx(0.7) and math.isnan(per["result_share"][0])
    s = correctness_summary(per)
    assert s["error_rows"] == 2 and s["correct_rows"] == 1
    assert s["prefix_blame"] == pytest.approx(0.35) and s["error_lift"] == pytest.approx(1.2)
    none = correctness_summary(credit_correctness(w, mask, torch.full((4,), -1)))
    assert none["error_rows"] == 0 and math.isnan(none["prefix_blame"])


def test_weight_share_and_bad_indices():
    mask = torch.tensor([[0, 1, 1, 1]], dtype=torch.bool)
    w = torch.tensor([[9.0, 1.0, 1.0, 2.0]])  # padding holds junk
    assert float(weight_share(w, mask, torch.tensor([[1, 1, 0, 0]]))) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="row 0 points at position 0, which is not a real"):
        prefix_blame(w, mask, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"`error_index` must have shape \(B,\)"):
        error_lift(w, mask, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_hit(w, mask, torch.tensor([1]), 0)


def test_effective_token_count_is_ratio_times_length():
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.9, 0.1]])
    assert effective_token_count(w, mask).tolist() == pytest.approx([4.0, 1 / 0.82])


def test_high_entropy_weights_the_batch_top_quantile_as_trl():
    mask = torch.ones(2, 5, dtype=torch.bool)
    H = torch.tensor([[0.1, 2.0, 0.3, 0.2, 0.0], [1.5, 0.1, 0.1, 0.1, 0.1]])
    w = token_weights("high_entropy", mask=mask, entropies=H, eps=0.0)
    # TRL: threshold = torch.quantile(real entropies, 1 - 0.2); tokens >= it.
    thr = torch.quantile(H[mask], 0.8)
    sel = H >= thr
    assert sel.sum() == 2
    assert torch.equal(w > 0, sel)
    w10 = token_weights("high_entropy", mask=mask, entropies=H, eps=0.0, options={"quantile": 0.1})
    assert (w10[0] > 0).sum() == 1  # the batch's single top-10% token
    # A row with no token above the threshold: uniform by eq. 8's floor (TRL's
    # mask would drop its update instead).
    assert w10[1].tolist() == pytest.approx([0.2] * 5)
    with pytest.raises(ValueError, match="has no option 'q'"):
        token_weights("high_entropy", mask=mask, entropies=H, options={"q": 0.1})
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\]"):
        token_weights("high_entropy", mask=mask, entropies=H, options={"quantile": 0})


def test_high_entropy_takes_its_threshold_over_a_given_pool():
    """The threshold of a pool larger than the batch (a micro-batch's other
    rows, other processes' tokens), as TRL's torch.quantile over it."""
    from arca.credit import token_scores

    mask = torch.ones(1, 5, dtype=torch.bool)
    H = torch.tensor([[0.1, 2.0, 0.3, 0.2, 0.0]])
    pool = torch.cat([H[mask], torch.zeros(5)])  # calmer tokens elsewhere
    got = token_scores("high_entropy", mask=mask, entropies=H, options={"pool": pool})
    assert torch.equal(got > 0, H >= torch.quantile(pool, 0.8))
    assert (got > 0).sum() == 2  # 2.0 and 0.3 (threshold 0.22) ...
    alone = token_scores("high_entropy", mask=mask, entropies=H)
    assert (alone > 0).sum() == 1  # ... where the row's own threshold (0.64) keeps 2.0 alone
    with pytest.raises(ValueError, match="pool must be a 1-D tensor"):
        token_scores("high_entropy", mask=mask, entropies=H, options={"pool": H})
