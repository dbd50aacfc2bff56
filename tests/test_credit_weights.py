"""Properties of scores and weights for every built-in scheme (paper eq. 7-15)."""

from __future__ import annotations

import math

import pytest
import torch
from batches import DEVICES, Ragged, ragged_floats, ragged_like, unpad
from hypothesis import given
from hypothesis import strategies as st

from arca.credit import (
    available_schemes,
    next_real_index,
    normalize,
    register_scheme,
    token_scores,
    token_weights,
    unregister_scheme,
)

BUILTIN = ["uniform", "surprisal", "entropy", "divergence", "arca", "arca_local", "high_entropy"]


@st.composite
def scheme_batch(draw, min_len: int = 0):
    """Ragged inputs for all built-in schemes, sharing one set of lengths."""
    logps = draw(ragged_floats(-20.0, 0.0, min_len=min_len))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    d = draw(st.integers(1, 6))
    ref = ragged_like(logps, lambda n: -torch.rand(n, generator=g) * 20)
    ent = ragged_like(logps, lambda n: torch.rand(n, generator=g) * 5)
    ha = ragged_like(logps, lambda n: torch.randn(n, d, generator=g))
    # h_base: sometimes identical to h_adapted at some positions (zero residual).
    hb = Ragged(
        [
            h + torch.randn(h.shape, generator=g) * (torch.rand(h.shape[0], 1, generator=g) > 0.3)
            for h in ha.rows
        ],
        logps.T,
    )
    # h_shift: zero at some positions (no adapter write there).
    hs = ragged_like(
        logps, lambda n: torch.randn(n, d, generator=g) * (torch.rand(n, 1, generator=g) > 0.3)
    )
    return {
        "logps": logps,
        "ref_logps": ref,
        "entropies": ent,
        "h_adapted": ha,
        "h_base": hb,
        "h_shift": hs,
    }


def laid_out(batch: dict[str, Ragged], side: str, device: str = "cpu"):
    out, mask = {}, None
    for k, r in batch.items():
        out[k], mask = r.layout(side, device=device)
    return out, mask


def test_builtin_schemes_registered():
    assert available_schemes()[: len(BUILTIN)] == BUILTIN


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", BUILTIN)
@given(batch=scheme_batch(), side=st.sampled_from(["left", "right"]))
def test_weights_are_a_distribution_over_real_tokens(scheme, device, batch, side):
    inputs, mask = laid_out(batch, side, device)
    w = token_weights(scheme, mask=mask, **inputs)
    assert w.shape == mask.shape and w.device.type == device
    assert torch.isfinite(w).all()
    assert (w >= 0).all()
    assert (w[~mask] == 0).all()
    sums = w.sum(dim=1)
    nonempty = mask.any(dim=1)
    torch.testing.assert_close(sums[nonempty], torch.ones_like(sums[nonempty]), atol=1e-5, rtol=0)
    assert (sums[~nonempty] == 0).all()


@pytest.mark.parametrize("scheme", BUILTIN)
@given(batch=scheme_batch())
def test_scores_nonnegative_zero_on_padding(scheme, batch):
    inputs, mask = laid_out(batch, "right")
    a = token_scores(scheme, mask=mask, **inputs)
    assert (a >= 0).all() and (a[~mask] == 0).all() and torch.isfinite(a).all()


@pytest.mark.parametrize("scheme", BUILTIN)
@given(batch=scheme_batch())
def test_left_and_right_padding_agree(scheme, batch):
    """Same rows, padding on the other side: same weights, shifted."""
    (li, lm), (ri, rm) = laid_out(batch, "left"), laid_out(batch, "right")
    for fn in (token_scores, token_weights):
        left = unpad(fn(scheme, mask=lm, **li), lm)
        right = unpad(fn(scheme, mask=rm, **ri), rm)
        for a, b in zip(left, right, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("scheme", BUILTIN)
@given(batch=scheme_batch())
def test_padding_values_never_leak(scheme, batch):
    """NaN padding (as laid out) and zero padding give identical results."""
    nan_in, mask = laid_out(batch, "right")
    zero_in = {
        k: torch.where(mask.view(*mask.shape, *[1] * (v.dim() - 2)), v, 0.0)
        for k, v in nan_in.items()
    }
    torch.testing.assert_close(
        token_weights(scheme, mask=mask, **nan_in), token_weights(scheme, mask=mask, **zero_in)
    )


@pytest.mark.parametrize("scheme", BUILTIN)
def test_outputs_carry_no_autograd_history(scheme):
    B, T, d = 2, 5, 3
    mask = torch.ones(B, T, dtype=torch.bool)
    inputs = {
        "logps": (-torch.rand(B, T)).requires_grad_(),
        "ref_logps": (-torch.rand(B, T)).requires_grad_(),
        "entropies": torch.rand(B, T).requires_grad_(),
        "h_adapted": torch.randn(B, T, d).requires_grad_(),
        "h_base": torch.randn(B, T, d).requires_grad_(),
        "h_shift": torch.randn(B, T, d).requires_grad_(),
    }
    for fn in (token_scores, token_weights):
        out = fn(scheme, mask=mask, **inputs)
        assert not out.requires_grad and out.grad_fn is None


@given(
    r=ragged_floats(0.0, 1e3, min_len=1),
    c=st.floats(0.0, 1e4),
    eps=st.sampled_from([0.0, 1e-8, 0.1]),
)
def test_equal_scores_give_uniform_weights(r, c, eps):
    _, mask = r.layout("right")
    scores = torch.full(mask.shape, c)
    for mode in ("absolute", "relative"):
        w = normalize(scores, mask, eps, eps_mode=mode)
        n = mask.sum(dim=1, keepdim=True).float()
        expect = torch.where(mask, 1.0 / n.clamp_min(1), 0.0)
        torch.testing.assert_close(w, expect)


@given(r=ragged_floats(0.0, 1e3), eps=st.sampled_from([0.0, 1e-8, 1e-3, 1.0]))
def test_normalize_matches_eq8(r, eps):
    """w_t = (a_t + eps) / sum_k (a_k + eps), checked row by row in float64 Python."""
    scores, mask = r.layout("left")
    w = normalize(scores, mask, eps)
    for row, wr in zip(r.rows, unpad(w, mask), strict=True):
        vals = [float(v) + eps for v in row]
        total = sum(vals)
        if not vals:
            continue
        expect = [v / total for v in vals] if total > 0 else [1 / len(vals)] * len(vals)
        torch.testing.assert_close(
            wr.double(), torch.tensor(expect, dtype=torch.float64), atol=1e-6, rtol=1e-5
        )


@given(r=ragged_floats(0.0, 10.0, min_len=1), scale=st.floats(1e-6, 1e6))
def test_relative_floor_is_scale_invariant(r, scale):
    scores, mask = r.layout("right")
    a = normalize(scores, mask, 1e-2, eps_mode="relative")
    b = normalize(scores * scale, mask, 1e-2, eps_mode="relative")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_absolute_floor_flattens_vanishing_scores_relative_floor_keeps_shape():
    """Paper Prop. 2: with a fixed floor, scores -> 0 give uniform weights."""
    mask = torch.ones(1, 4, dtype=torch.bool)
    shape = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    tiny = shape * 1e-10
    torch.testing.assert_close(
        normalize(tiny, mask, 1e-4), torch.full((1, 4), 0.25), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        normalize(tiny, mask, 1e-4, eps_mode="relative"),
        normalize(shape, mask, 1e-4, eps_mode="relative"),
    )
    torch.testing.assert_close(normalize(shape, mask, 0.0), shape / 10)


def test_all_zero_scores_with_zero_floor_are_uniform_not_nan():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    w = normalize(torch.zeros(2, 4), mask, 0.0)
    torch.testing.assert_close(w, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 0]]))


# ----------------------------------------------------------------- entropy


def test_entropy_reduction_by_hand_both_padding_sides():
    H = [3.0, 1.0, 2.0, 0.5]  # reductions: 2, 0 (increase), 1.5, last -> 0
    expect = [2.0, 0.0, 1.5, 0.0]
    for side in ("left", "right"):
        ent, mask = Ragged([torch.tensor(H), torch.tensor([4.0])], 6).layout(side)
        # Padding entropies are huge: if they leaked, the last real token would score.
        ent = torch.where(mask, ent, 100.0)
        a = token_scores("entropy", mask=mask, entropies=ent)
        assert unpad(a, mask)[0].tolist() == expect
        assert unpad(a, mask)[1].tolist() == [0.0]  # a single token is its own last


def test_next_real_index_skips_padding_and_holes():
    mask = torch.tensor(
        [[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool
    )
    assert next_real_index(mask).tolist() == [[2, 2, 3, 5, 5, 6], [6] * 6, [1, 2, 6, 6, 6, 6]]


# -------------------------------------------------------------------- arca


@pytest.mark.parametrize("device", DEVICES)
def test_arca_is_float32_norm_of_bf16_residual(device):
    """Residual of two nearly equal bf16 states, computed in float32, matches float64."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, 7, 64, generator=g) * 30
    h_base = base.to(torch.bfloat16).to(device)
    h_adapted = (base + 1e-2 * torch.randn(2, 7, 64, generator=g)).to(torch.bfloat16).to(device)
    mask = torch.ones(2, 7, dtype=torch.bool, device=device)
    a = token_scores("arca", mask=mask, h_adapted=h_adapted, h_base=h_base)
    assert a.dtype == torch.float32 and a.device.type == device
    ref = torch.linalg.vector_norm(h_adapted.double() - h_base.double(), dim=-1)
    torch.testing.assert_close(a.double(), ref, rtol=1e-6, atol=0)


def test_arca_zero_residual_gives_uniform_weights():
    """A zero adapter (B = 0) gives alpha = 0 everywhere: uniform by the floor."""
    h = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    w = token_weights("arca", mask=mask, h_adapted=h, h_base=h.clone())
    torch.testing.assert_close(w, mask / mask.sum(1, keepdim=True))


def test_arca_weights_invariant_to_adapter_scale():
    """Paper C.7: scaling the residual scales alpha, leaving weights unchanged (above the floor)."""
    h0 = torch.randn(3, 9, 16)
    delta = torch.randn(3, 9, 16)
    mask = torch.ones(3, 9)
    w1 = token_weights("arca", mask=mask, h_adapted=h0 + delta, h_base=h0, eps=0.0)
    w2 = token_weights("arca", mask=mask, h_adapted=h0 + 1e-3 * delta, h_base=h0, eps=0.0)
    torch.testing.assert_close(w1, w2, atol=1e-4, rtol=1e-3)


def test_arca_local_is_the_norm_of_the_shift_and_uniform_when_zero():
    g = torch.Generator().manual_seed(1)
    shift = torch.randn(2, 6, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    a = token_scores("arca_local", mask=mask, h_shift=shift)
    torch.testing.assert_close(a, shift.norm(dim=-1) * mask)
    w0 = token_weights("arca_local", mask=mask, h_shift=torch.zeros(2, 6, 5))
    torch.testing.assert_close(w0, mask / mask.sum(1, keepdim=True))


def test_residual_noise_floor_is_eps_of_the_dtype_times_the_state_norm():
    from arca.credit import residual_noise_floor

    h = torch.full((1, 2, 4), 3.0)  # ||h|| = 6
    assert residual_noise_floor(h.bfloat16()).tolist() == [[6 * 2**-7, 6 * 2**-7]]
    assert residual_noise_floor(h, factor=2.0).tolist() == [[12 * 2**-23, 12 * 2**-23]]
    # float32 states computed under bf16 autocast carry bf16 noise
    assert residual_noise_floor(h, compute_dtype=torch.bfloat16).tolist() == [[6 * 2**-7] * 2]


# --------------------------------------------------------------- registry


def test_registered_scheme_with_its_own_input():
    @register_scheme("position", requires=("positions",))
    def position(*, mask, positions):
        return positions

    try:
        assert "position" in available_schemes()
        mask = torch.tensor([[1, 1, 1, 0]])
        pos = torch.tensor([[1.0, 2.0, 5.0, float("nan")]])
        w = token_weights("position", mask=mask, positions=pos, eps=0.0)
        torch.testing.assert_close(w, torch.tensor([[0.125, 0.25, 0.625, 0.0]]))
        with pytest.raises(ValueError, match="needs `positions`"):
            token_weights("position", mask=mask)
        with pytest.raises(ValueError, match="already registered"):
            register_scheme("position", position)
        register_scheme(
            "position",
            lambda *, mask, positions: positions * 2,
            requires=("positions",),
            overwrite=True,
        )
    finally:
        unregister_scheme("position")
    assert "position" not in available_schemes()


def test_registered_scheme_output_is_validated():
    register_scheme("negative", lambda *, mask: -torch.ones(mask.shape))
    register_scheme("wrong_shape", lambda *, mask: torch.ones(3))
    try:
        mask = torch.ones(2, 3)
        with pytest.raises(ValueError, match="negative scores"):
            token_scores("negative", mask=mask)
        with pytest.raises(ValueError, match=r"must return a \(B, T\) tensor"):
            token_scores("wrong_shape", mask=mask)
    finally:
        unregister_scheme("negative")
        unregister_scheme("wrong_shape")


def test_float64_inputs_stay_float64():
    mask = torch.ones(1, 3)
    w = token_weights(
        "surprisal",
        mask=mask,
        logps=torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64),
        eps=0.0,
    )
    assert w.dtype == torch.float64
    assert math.isclose(float(w[0, 2]), 0.5, rel_tol=1e-12)
