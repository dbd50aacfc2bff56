"""Group advantages against a plain-Python reference; the loss gradient by hand."""

from __future__ import annotations

import math

import pytest
import torch
from batches import DEVICES, ragged_floats
from hypothesis import given
from hypothesis import strategies as st

from arca.credit import group_advantages, normalize, weighted_pg_loss


def reference_advantages(rewards, k, estimator, eps, unbiased=True):
    out = []
    for start in range(0, len(rewards), k):
        g = rewards[start : start + k]
        mean = sum(g) / k
        if all(r == g[0] for r in g):
            out += [0.0] * k
        elif estimator == "rloo":
            out += [r - (sum(g) - r) / (k - 1) for r in g]
        else:
            var = sum((r - mean) ** 2 for r in g) / (k - 1 if unbiased else k)
            out += [(r - mean) / (math.sqrt(var) + eps) for r in g]
    return out


@st.composite
def grouped_rewards(draw):
    k = draw(st.integers(2, 8))
    groups = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["binary", "real"]))
    elem = st.sampled_from([0.0, 1.0]) if kind == "binary" else st.floats(-10, 10, width=32)
    return draw(st.lists(elem, min_size=k * groups, max_size=k * groups)), k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
@given(data=grouped_rewards(), eps=st.sampled_from([0.0, 1e-6, 1e-2]), unbiased=st.booleans())
def test_advantages_match_reference(data, estimator, eps, unbiased, device):
    rewards, k = data
    got = group_advantages(
        torch.tensor(rewards, device=device), k, estimator, eps, unbiased_std=unbiased
    )
    expect = reference_advantages(rewards, k, estimator, eps, unbiased)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(
        got.cpu().double(), torch.tensor(expect, dtype=torch.float64), atol=1e-4, rtol=1e-4
    )


def test_equal_groups_get_zero_advantage_even_when_the_float_mean_is_inexact():
    r = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.0], dtype=torch.float64)
    for est in ("grpo", "rloo"):
        adv = group_advantages(r, 3, est, eps=0.0)
        assert adv[:3].tolist() == [0.0, 0.0, 0.0]
        assert torch.isfinite(adv).all()


def test_rloo_is_reward_minus_leave_one_out_mean():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, "rloo")
    torch.testing.assert_close(adv, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))


def test_dr_grpo_variant_is_mean_centred_only():
    adv = group_advantages(torch.tensor([3.0, 1.0]), 2, scale_by_std=False)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rewards=torch.zeros(6), group_size=1), "group_size must be an int >= 2"),
        (dict(rewards=torch.zeros(6), group_size=4), "not a multiple of group_size=4"),
        (dict(rewards=torch.zeros(2, 2), group_size=2), "1-D tensor"),
        (dict(rewards=torch.zeros(4), group_size=2, estimator="ppo"), "valid: grpo, rloo"),
        (dict(rewards=torch.zeros(4), group_size=2, eps=-1.0), "eps must be >= 0"),
        (
            dict(rewards=torch.tensor([0.0, float("nan")]), group_size=2),
            "non-finite value at index 1",
        ),
    ],
)
def test_advantage_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(**kwargs)


# ------------------------------------------------------------------- loss


@pytest.mark.parametrize("device", DEVICES)
@given(
    r=ragged_floats(-8.0, 0.0, min_len=0),
    side=st.sampled_from(["left", "right"]),
    seed=st.integers(0, 2**16),
)
def test_loss_gradient_equals_hand_derived(r, side, seed, device):
    """d/d logp_it of -mean_i A_i sum_t w_it logp_it is -A_i w_it / B (0 on padding)."""
    lp, mask = r.layout(side, fill=float("-inf"), device=device)
    B = lp.shape[0]
    g = torch.Generator().manual_seed(seed)
    adv = torch.randn(B, generator=g).to(device)
    w = normalize(torch.rand(lp.shape, generator=g).to(device), mask)
    lp = lp.clone().requires_grad_()
    loss = weighted_pg_loss(lp, adv, w, mask)
    loss.backward()
    expect = torch.where(mask, -adv[:, None] * w / B, 0.0)
    torch.testing.assert_close(lp.grad, expect)
    value = (
        -sum(
            float(adv[i]) * float((w[i] * torch.where(mask[i], lp[i].detach(), 0.0)).sum())
            for i in range(B)
        )
        / B
    )
    assert loss.item() == pytest.approx(value, rel=1e-5, abs=1e-5)


def test_loss_gradient_through_a_softmax_policy():
    """Through log_softmax: grad wrt logits is -A_i w_it (onehot(y_t) - p_t) / B."""
    torch.manual_seed(0)
    B, T, V = 3, 5, 7
    logits = torch.randn(B, T, V, requires_grad=True)
    y = torch.randint(V, (B, T))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.5, -0.5, 2.0])
    w_src = torch.rand(B, T, requires_grad=True)  # weights with grad: must be treated as constants
    w = normalize(w_src, mask)
    logps = torch.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
    weighted_pg_loss(logps, adv, w_src * 0 + w, mask).backward()
    p = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(y, V).float()
    expect = -(adv[:, None, None] * w[..., None] * (onehot - p)) / B
    expect = torch.where(mask[..., None], expect, 0.0)
    torch.testing.assert_close(logits.grad, expect)
    assert w_src.grad is None


def test_loss_input_errors():
    mask = torch.ones(2, 3)
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"`advantages` must have shape \(B,\)"):
        weighted_pg_loss(lp, torch.zeros(3), torch.zeros(2, 3), mask)
    with pytest.raises(ValueError, match="`weights` must have shape"):
        weighted_pg_loss(lp, torch.zeros(2), torch.zeros(2, 4), mask)
    with pytest.raises(ValueError, match="`logps` has 1 non-finite"):
        weighted_pg_loss(
            torch.tensor([[0.0, float("nan"), 0.0], [0, 0, 0]]),
            torch.zeros(2),
            torch.zeros(2, 3),
            mask,
        )
