"""The field's schemes in arca.credit (oracle, ktae, lambda_grpo, oar_g) against the
plain-Python references of tests/reference_schemes.py, on random ragged groups with
padding on either side; the registry's kinds; the signed credit metrics."""

from __future__ import annotations

import math
import random

import pytest
import reference_schemes as ref
import torch
from hypothesis import given
from hypothesis import strategies as st

from arca.credit import (
    FIELD_SCHEMES,
    abs_share_weights,
    available_schemes,
    credit_correctness,
    get_scheme,
    mass_ratio,
    register_scheme,
    scheme_label,
    sign_flip_share,
    signed_credit_correctness,
    token_advantages,
    token_credit,
    token_scores,
    token_weights,
    unregister_scheme,
)
from arca.credit.ktae import fisher_two_sided
from arca.credit.oar import oar_bilevel
from arca.credit.process_sets import process_mean_advantages, process_set_sizes


def test_field_schemes_are_registered_with_their_kinds():
    assert available_schemes()[7:11] == list(FIELD_SCHEMES)
    kinds = {s: get_scheme(s).kind for s in FIELD_SCHEMES}
    assert kinds == {
        "oracle": "weights",
        "ktae": "advantages",
        "lambda_grpo": "advantages",
        "oar_g": "weights",
    }
    assert "ground truth" in get_scheme("oracle").description
    assert scheme_label("oracle") == "oracle (ceiling: uses ground truth)"
    assert scheme_label("ktae") == "ktae"


# ----------------------------------------------------------------- layouts


def lay_out(rows: list[list[int]], side: str, fill: int = 0):
    """Token rows as (ids (B, T) long, mask (B, T) bool), padded on ``side``
    with a token id that also occurs in the rows (0, in :func:`groups`'
    vocabulary: so a leak would count)."""
    T = max(len(r) for r in rows) + 1
    ids = torch.full((len(rows), T), fill, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = True
    return ids, mask


def real(x: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    return [x[i][mask[i]].tolist() for i in range(x.shape[0])]


@st.composite
def groups(draw, vocab: int = 5, max_len: int = 7):
    """Consecutive groups of equal size, ragged completions (>= 1 token) over a
    small vocabulary (so tokens and prefixes are shared), a correctness flag and
    an advantage per row."""
    g = draw(st.integers(2, 6))
    n = draw(st.integers(1, 3))
    rows = [
        draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=max_len))
        for _ in range(g * n)
    ]
    # Duplicated completions and shared openings happen in a group: copy some.
    for i in range(1, len(rows)):
        if draw(st.booleans()) and i % g:
            k = draw(st.integers(0, len(rows[i - 1])))
            rows[i] = rows[i - 1][:k] + rows[i][k:] or rows[i - 1]
    correct = draw(st.lists(st.booleans(), min_size=g * n, max_size=g * n))
    adv = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=g * n, max_size=g * n))
    return g, rows, correct, adv


# -------------------------------------------------------------------- KTAE


def test_fisher_matches_the_reference_on_every_table_up_to_n_10():
    tables = [
        (a, b, c, d)
        for n in range(11)
        for a in range(n + 1)
        for b in range(n + 1 - a)
        for c in range(n + 1 - a - b)
        for d in [n - a - b - c]
    ]
    t = torch.tensor(tables)
    got = fisher_two_sided(*t.unbind(1))
    expect = torch.tensor([ref.fisher_exact_two_sided(*x) for x in tables], dtype=torch.float64)
    torch.testing.assert_close(got, expect, atol=1e-12, rtol=1e-10)


@given(
    data=groups(),
    side=st.sampled_from(["left", "right"]),
    opts=st.sampled_from(
        [
            {},
            {"beta": 2.0},
            {"alpha": 0.0},
            {"beta": 0.0, "top": 0.5},
            {"gamma_tf": False},
            {"zero_token_ids": (0, 3)},
        ]
    ),
)
def test_ktae_equals_the_reference(data, side, opts):
    g, rows, correct, adv = data
    ids, mask = lay_out(rows, side)
    advantages = torch.tensor(adv, dtype=torch.float64)
    group = torch.arange(len(rows)) // g
    got = token_advantages(
        "ktae",
        mask=mask,
        advantages=advantages,
        completion_ids=ids,
        correct=torch.tensor(correct),
        group=group,
        options=opts,
    )
    ref_opts = {("beta_ig" if k == "beta" else k): v for k, v in opts.items()}
    if "gamma_tf" in ref_opts:
        ref_opts["gamma_tf"] = float(ref_opts["gamma_tf"])
    expect = ref.ktae_token_advantages(
        rows, [float(c) for c in correct], g, advantages=adv, **ref_opts
    )
    assert got.dtype == torch.float64 and (got[~mask] == 0).all()
    for a, b in zip(real(got, mask), expect, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9)


@given(data=groups(), seed=st.integers(0, 1000))
def test_ktae_and_lambda_grpo_need_no_consecutive_groups(data, seed):
    """Rows of a group anywhere in the batch, group ids arbitrary: the same values."""
    g, rows, correct, adv = data
    perm = list(range(len(rows)))
    random.Random(seed).shuffle(perm)
    ids, mask = lay_out(rows, "right")
    group = torch.arange(len(rows)) // g
    inputs = {
        "completion_ids": ids,
        "correct": torch.tensor(correct),
        "group": group,
        "advantages": torch.tensor(adv),
    }
    p = torch.tensor(perm)
    shuffled = {k: v[p] for k, v in inputs.items()} | {"group": group[p] * 10 + 3}
    for scheme in ("ktae", "lambda_grpo"):
        a = token_advantages(scheme, mask=mask, **inputs)
        b = token_advantages(scheme, mask=mask[p], **shuffled)
        torch.testing.assert_close(b, a[p])


def test_ktae_flips_a_wrong_rollouts_token_and_changes_the_mass():
    """The research note's G = 4 case: a token 4 times in the one correct
    rollout and once in a wrong one gets k = 0.80 > |A_i| = 0.5."""
    rows = [[5, 5, 5, 5], [5, 1, 2], [1, 2, 3], [2, 3, 1]]
    rewards = [1.0, 0.0, 0.0, 0.0]
    adv = ref.grpo_advantages(rewards, 4, eps=1e-6)
    ids, mask = lay_out(rows, "left")
    a, w = token_credit(
        "ktae",
        mask=mask,
        advantages=torch.tensor(adv),
        completion_ids=ids,
        correct=torch.tensor([True, False, False, False]),
        group=torch.zeros(4, dtype=torch.long),
    )
    A = torch.tensor(adv)
    assert float(sign_flip_share(a, mask, A)[1]) == pytest.approx(1 / 3)
    assert float(mass_ratio(a, mask, A)[0]) != pytest.approx(1.0)
    torch.testing.assert_close(w, abs_share_weights(a, mask))  # what it reports as weights


# ---------------------------------------------------------------- lambda-GRPO


@given(data=groups(), side=st.sampled_from(["left", "right"]))
def test_lambda_grpo_equals_the_reference(data, side):
    g, rows, _, adv = data
    ids, mask = lay_out(rows, side)
    group = torch.arange(len(rows)) // g
    advantages = torch.tensor(adv, dtype=torch.float64)
    got = token_advantages(
        "lambda_grpo", mask=mask, advantages=advantages, completion_ids=ids, group=group
    )
    expect = ref.lambda_grpo_token_advantages(rows, [0.0] * len(rows), g, advantages=adv)
    for a, b in zip(real(got, mask), expect, strict=True):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    sizes = process_set_sizes(mask, ids, group)
    expect_sizes = [
        s for k in range(0, len(rows), g) for s in ref.process_set_sizes(rows[k : k + g])
    ]
    assert [[int(x) for x in r] for r in real(sizes, mask)] == expect_sizes
    net = process_mean_advantages(mask, ids, group, advantages)
    expect_net = [
        r
        for k in range(0, len(rows), g)
        for r in ref.process_mean_advantages(rows[k : k + g], adv[k : k + g])
    ]
    for a, b in zip(real(net, mask), expect_net, strict=True):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)


def test_lambda_grpo_shrinks_only_shared_prefixes():
    rows = [[1, 2, 3], [1, 2, 4], [5]]
    ids, mask = lay_out(rows, "right")
    A = torch.tensor([-1.0, 1.0, -1.0])
    a = token_advantages(
        "lambda_grpo", mask=mask, advantages=A, completion_ids=ids, group=torch.zeros(3).long()
    )
    assert real(a, mask) == [[-0.5, -0.5, -1.0], [0.5, 0.5, 1.0], [-1.0]]
    assert mass_ratio(a, mask, A).tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert sign_flip_share(a, mask, A).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("side", ["left", "right"])
def test_lambda_grpo_reads_a_tool_output_as_context(side):
    """Two completions that differ only inside a tool output (not trained) share
    their first token, not the one after the tool output: its context differs.
    The scheme takes the completion's tokens as mask and refuses the loss mask
    (``completion_mask * tool_mask``), whose hole would join the prefixes
    around it; the tool output's credit is zeroed afterwards."""
    rows = [[1, 50, 51, 2], [1, 60, 61, 2]]
    ids, mask = lay_out(rows, side)
    start = mask.shape[1] - 4 if side == "left" else 0
    tool = torch.ones_like(mask)
    tool[:, start + 1 : start + 3] = False  # the middle two tokens of each row
    assert real(ids.masked_fill(~tool, -1), mask) == [[1, -1, -1, 2]] * 2
    group, A = torch.zeros(2, dtype=torch.long), torch.tensor([1.0, -1.0])
    sizes = process_set_sizes(mask, ids, group)
    assert real(sizes, mask) == [[2, 1, 1, 1]] * 2 == ref.process_set_sizes(rows)
    a = token_advantages("lambda_grpo", mask=mask, advantages=A, completion_ids=ids, group=group)
    credit = torch.where(mask & tool, a, 0.0)
    assert real(credit, mask) == [[0.5, 0.0, 0.0, 1.0], [-0.5, 0.0, 0.0, -1.0]]
    net = process_mean_advantages(mask, ids, group, A)
    assert real(net, mask) == [[0.0, 1.0, 1.0, 1.0], [0.0, -1.0, -1.0, -1.0]]
    holed = mask & tool
    for call in (
        lambda: process_set_sizes(holed, ids, group),
        lambda: process_mean_advantages(holed, ids, group, A),
        lambda: token_advantages(
            "lambda_grpo", mask=holed, advantages=A, completion_ids=ids, group=group
        ),
    ):
        with pytest.raises(ValueError, match="mask row 0 has a hole between real tokens"):
            call()


# ------------------------------------------------------------------- OAR-G


@given(
    scores=st.lists(
        st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=9), min_size=1, max_size=4
    ),
    q=st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]),
    beta=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
)
def test_oar_bilevel_equals_the_reference(scores, q, beta):
    T = max(len(r) for r in scores) + 2
    x = torch.zeros(len(scores), T, dtype=torch.float64)
    span = torch.zeros(len(scores), T, dtype=torch.bool)
    for i, r in enumerate(scores):
        x[i, 1 : 1 + len(r)] = torch.tensor(r, dtype=torch.float64)
        span[i, 1 : 1 + len(r)] = True
    got = oar_bilevel(x, span, quantile=q, beta=beta)
    for row, r in zip(real(got, span), scores, strict=True):
        expect = ref.oar_bilevel_weights(r, threshold_quantile=q, beta=beta)
        assert row == pytest.approx(expect, rel=1e-12, abs=1e-12)
    assert (got[~span] == 0).all()


@given(
    rows=st.lists(
        st.tuples(
            st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=8),
            st.integers(-1, 8),
            st.floats(-2, 2, allow_nan=False),
        ),
        min_size=1,
        max_size=4,
    ),
    side=st.sampled_from(["left", "right"]),
)
def test_oar_g_token_advantages_equal_the_reference(rows, side):
    """A_i T_i w_it from the scheme is the official compute_loss's A w_t on the
    reasoning span and A on the answer span; a row without an answer is uniform."""
    T = max(len(s) for s, _, _ in rows) + 1
    B = len(rows)
    sal = torch.full((B, T), float("nan"), dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.bool)
    start = torch.full((B,), -1, dtype=torch.long)
    for i, (s, k, _) in enumerate(rows):
        off = 0 if side == "right" else T - len(s)
        sal[i, off : off + len(s)] = torch.tensor(s, dtype=torch.float64)
        mask[i, off : off + len(s)] = True
        if k >= 0:
            start[i] = off + min(k, len(s) - 1)
    A = torch.tensor([a for _, _, a in rows], dtype=torch.float64)
    got = token_advantages("oar_g", mask=mask, advantages=A, saliency=sal, answer_start=start)
    for i, (s, k, a) in enumerate(rows):
        L = min(k, len(s) - 1) if k >= 0 else 0
        w = ref.oar_bilevel_weights(s[:L], threshold_quantile=0.5, beta=1.0)
        expect = ref.oar_token_advantages(a, w, len(s))
        assert real(got, mask)[i] == pytest.approx(expect, rel=1e-6, abs=1e-9)
        assert sum(real(got, mask)[i]) == pytest.approx(a * len(s), rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------ oracle


@pytest.mark.parametrize("side", ["left", "right"])
def test_oracle_puts_its_share_on_the_first_wrong_token(side):
    rows = [[1] * 5, [1] * 5, [1] * 5, [1] * 4, [1] * 5, [1]]
    _, mask = lay_out(rows, side)
    first = mask.float().argmax(dim=1)  # each row's first real position
    err = [2, 4, 2, 1, -1, 0]  # row 1: the error is the last token (no "after")
    index = torch.tensor([int(first[i]) + e if e >= 0 else -1 for i, e in enumerate(err)])
    A = torch.tensor([-1.0, -1.0, 0.5, -2.0, -1.0, -1.0])
    for rest, expect in (
        (
            "uniform",
            [
                [0.125, 0.125, 0.5, 0.125, 0.125],
                [0.125, 0.125, 0.125, 0.125, 0.5],
                [0.2] * 5,  # non-negative advantage: uniform
                [0.3 / 3, 0.7, 0.3 / 3, 0.3 / 3],
                [0.2] * 5,  # no located error: uniform
                [1.0],  # one token: all of it on the error
            ],
        ),
        (
            "after",
            [
                [0.0, 0.0, 0.5, 0.25, 0.25],
                [0.125, 0.125, 0.125, 0.125, 0.5],  # nothing after: uniform over the others
                [0.2] * 5,
                [0.0, 0.7, 0.15, 0.15],
                [0.2] * 5,
                [1.0],
            ],
        ),
    ):
        share = [0.5, 0.5, 0.5, 0.7, 0.5, 0.5]
        for i in range(len(rows)):  # one share per call, so test rows one by one
            w = token_weights(
                "oracle",
                mask=mask[i : i + 1],
                error_index=index[i : i + 1],
                advantages=A[i : i + 1],
                options={"share": share[i], "rest": rest},
            )
            assert real(w, mask[i : i + 1])[0] == pytest.approx(expect[i]), (rest, i)


def test_oracle_keeps_the_mass_and_refuses_bad_options():
    _, mask = lay_out([[1, 1, 1]], "right")
    a = token_advantages(
        "oracle",
        mask=mask,
        advantages=torch.tensor([-2.0]),
        error_index=torch.tensor([1]),
    )
    # The defaults (share 0.2, rest after): the row's mass -2 x 3 kept, none on the prefix.
    assert real(a, mask)[0] == pytest.approx([0.0, -1.2, -4.8])
    with pytest.raises(ValueError, match=r"oracle: share must be a number in \[0, 1\]"):
        token_weights(
            "oracle", mask=mask, error_index=torch.tensor([1]), advantages=torch.tensor([-1.0]),
            options={"share": 1.5},
        )  # fmt: skip
    with pytest.raises(ValueError, match="oracle: rest must be one of uniform, after"):
        token_weights(
            "oracle", mask=mask, error_index=torch.tensor([1]), advantages=torch.tensor([-1.0]),
            options={"rest": "before"},
        )  # fmt: skip
    with pytest.raises(ValueError, match="`error_index` row 0 points at position 3"):
        token_weights(
            "oracle", mask=mask, error_index=torch.tensor([3]), advantages=torch.tensor([-1.0])
        )


# ------------------------------------------------------------------ registry


def test_each_kind_is_refused_where_it_does_not_fit():
    mask = torch.ones(2, 3, dtype=torch.bool)
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="kind 'advantages'.*use arca.credit.token_advantages"):
        token_weights("lambda_grpo", mask=mask, completion_ids=ids, group=torch.zeros(2).long())
    with pytest.raises(ValueError, match="kind 'weights'.*use arca.credit.token_weights"):
        token_scores("oracle", mask=mask)
    with pytest.raises(ValueError, match="kind: must be one of salience, weights, advantages"):
        register_scheme("bad_kind", lambda *, mask: mask.float(), kind="tokens")


@pytest.mark.parametrize(
    "inputs, error",
    [
        ({"group": torch.zeros(2)}, "`group` must be an integer tensor"),
        ({"group": torch.zeros(3).long()}, r"`group` must have shape \(B,\) = \(2,\)"),
        ({"completion_ids": torch.zeros(2, 3)}, "`completion_ids` must be an integer tensor"),
        ({"completion_ids": torch.zeros(2, 4).long()}, "`completion_ids` must have shape"),
        ({"correct": torch.tensor([0, 2])}, "`correct` must be bool"),
        (
            {"advantages": torch.tensor([0.0, math.nan])},
            "`advantages` has a non-finite value at row 1",
        ),
    ],
)
def test_row_and_id_inputs_are_checked_by_name(inputs, error):
    mask = torch.ones(2, 3, dtype=torch.bool)
    given_ = {
        "completion_ids": torch.zeros(2, 3, dtype=torch.long),
        "correct": torch.tensor([True, False]),
        "group": torch.zeros(2, dtype=torch.long),
        "advantages": torch.tensor([1.0, -1.0]),
    } | inputs
    adv = given_.pop("advantages")
    with pytest.raises((ValueError, TypeError), match=error):
        token_advantages("ktae", mask=mask, advantages=adv, **given_)


def test_a_weights_scheme_must_return_rows_summing_to_one():
    register_scheme("half", lambda *, mask: mask.float() * 0.1, kind="weights")
    try:
        with pytest.raises(ValueError, match="kind 'weights' but row 0 sums to 0.3"):
            token_weights("half", mask=torch.ones(1, 3))
    finally:
        unregister_scheme("half")


# ---------------------------------------------------------- signed metrics


@given(
    seed=st.integers(0, 2**31 - 1),
    side=st.sampled_from(["left", "right"]),
    B=st.integers(1, 6),
    T=st.integers(1, 10),
)
def test_signed_metrics_reduce_to_todays_for_mass_preserving_rows(seed, side, B, T):
    """a = A T w with w >= 0: every signed metric equals today's metric of w,
    on the same rows (located error, A < 0), and nothing flips or changes mass."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    pos = torch.arange(T)[None, :]
    mask = pos < lengths[:, None] if side == "right" else pos >= T - lengths[:, None]
    scores = torch.rand(B, T, generator=g, dtype=torch.float64) ** 3
    A = torch.randn(B, generator=g, dtype=torch.float64)
    w = token_weights("surprisal", mask=mask, logps=-scores, eps=1e-8)
    first = mask.to(torch.long).argmax(dim=1)
    err = first + (torch.rand(B, generator=g) * lengths).long()
    err = torch.where(torch.rand(B, generator=g) < 0.8, err, -1)
    result = torch.rand(B, T, generator=g) < 0.5
    correct = torch.rand(B, generator=g) < 0.5
    a = token_advantages("surprisal", mask=mask, advantages=A, logps=-scores, eps=1e-8)
    kw = {"advantages": A, "correct": correct, "result_mask": result, "template_mask": ~result}
    plain = credit_correctness(w, mask, err, **kw)
    signed = signed_credit_correctness(a, mask, err, **kw)
    assert plain.keys() == signed.keys()
    for k in plain:
        torch.testing.assert_close(signed[k], plain[k], rtol=1e-9, atol=1e-12, equal_nan=True)
    nonzero = A != 0
    torch.testing.assert_close(abs_share_weights(a, mask)[nonzero], w[nonzero])
    assert (sign_flip_share(a, mask, A)[nonzero] == 0).all()
    torch.testing.assert_close(
        mass_ratio(a, mask, A)[nonzero], torch.ones(int(nonzero.sum()), dtype=torch.float64)
    )


@given(
    rows=st.lists(
        st.tuples(
            st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=8),
            st.integers(0, 7),
            st.floats(-2, 2, allow_nan=False),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_signed_metrics_equal_the_reference(rows):
    T = max(len(a) for a, _, _ in rows)
    B = len(rows)
    a = torch.zeros(B, T, dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.bool)
    err = torch.tensor([min(e, len(x) - 1) for x, e, _ in rows])
    for i, (x, _, _) in enumerate(rows):
        a[i, : len(x)] = torch.tensor(x, dtype=torch.float64)
        mask[i, : len(x)] = True
    A = torch.tensor([r for _, _, r in rows], dtype=torch.float64)
    got = signed_credit_correctness(a, mask, err)
    shares = abs_share_weights(a, mask)
    flips = sign_flip_share(a, mask, A)
    for i, (x, _, r) in enumerate(rows):
        e = int(err[i])
        blame, lift = ref.signed_prefix_blame(x, e), ref.signed_error_lift(x, e)
        assert float(got["prefix_blame"][i]) == pytest.approx(blame, abs=1e-12, nan_ok=True)
        assert float(got["error_lift"][i]) == pytest.approx(lift, abs=1e-12, nan_ok=True)
        assert real(shares, mask)[i] == pytest.approx(ref.abs_share_weights(x), abs=1e-12)
        assert float(flips[i]) == pytest.approx(ref.sign_flip_share(x, r), nan_ok=True)


def test_a_push_up_on_the_error_token_is_no_hit_and_no_lift():
    """KTAE can push a wrong completion's error token up: the largest |a| is
    then no top-1 hit, its lift is 0, and credit on the prefix is no blame."""
    mask = torch.ones(2, 4, dtype=torch.bool)
    a = torch.tensor([[0.5, -0.2, 2.0, -0.3], [0.5, -0.2, -2.0, -0.3]])
    err = torch.tensor([2, 2])
    got = signed_credit_correctness(a, mask, err, advantages=torch.tensor([-1.0, -1.0]))
    assert got["top1_hit"].tolist() == [0.0, 1.0]
    assert got["error_lift"].tolist() == pytest.approx([0.0, 4 * 2.0 / 3.0])
    assert got["prefix_blame"].tolist() == pytest.approx([0.2 / 3.0, 0.2 / 3.0])
