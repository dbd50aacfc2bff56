"""Gini and effective-token ratio against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from batches import DEVICES, ragged_floats, unpad
from hypothesis import given
from hypothesis import strategies as st

from arca.credit import concentration_summary, effective_token_ratio, gini, normalize


def gini_reference(w: list[float]) -> float:
    """The paper's O(T^2) definition, in plain Python."""
    T, s = len(w), sum(w)
    return sum(abs(a - b) for a in w for b in w) / (2 * T * s)


@pytest.mark.parametrize("device", DEVICES)
@given(r=ragged_floats(0.0, 100.0, min_len=0), side=st.sampled_from(["left", "right"]))
def test_gini_matches_pairwise_definition_and_bounds(r, side, device):
    x, mask = r.layout(side, device=device)
    w = normalize(x, mask, 1e-8)
    g = gini(w, mask).cpu()
    e = effective_token_ratio(w, mask).cpu()
    for i, row in enumerate(unpad(w, mask)):
        n = row.numel()
        if n == 0:
            assert math.isnan(g[i]) and math.isnan(e[i])
            continue
        vals = row.double().tolist()
        assert g[i].item() == pytest.approx(gini_reference(vals), abs=1e-5)
        assert -1e-6 <= g[i] <= (n - 1) / n + 1e-6
        assert e[i].item() == pytest.approx(1 / (n * sum(v * v for v in vals)), rel=1e-4)
        assert 1 / n - 1e-6 <= e[i] <= 1 + 1e-6


@pytest.mark.parametrize("n", [1, 2, 5, 64])
@pytest.mark.parametrize("side", ["left", "right"])
def test_known_values_uniform_and_one_hot(n, side):
    T = n + 3
    mask = torch.zeros(2, T, dtype=torch.bool)
    sl = slice(0, n) if side == "right" else slice(3, T)
    mask[:, sl] = True
    w = torch.zeros(2, T)
    w[0, sl] = 1 / n  # uniform
    w[1, sl.start + n // 2] = 1.0  # one-hot
    w[~mask] = 7.0  # padding garbage must not count
    g, e = gini(w, mask), effective_token_ratio(w, mask)
    torch.testing.assert_close(g, torch.tensor([0.0, (n - 1) / n]), atol=1e-6, rtol=0)
    torch.testing.assert_close(e, torch.tensor([1.0, 1 / n]), atol=1e-6, rtol=0)


def test_gini_is_scale_free_and_handles_ties():
    mask = torch.ones(1, 4, dtype=torch.bool)
    w = torch.tensor([[0.1, 0.1, 0.4, 0.4]])
    expect = gini_reference(w[0].tolist())
    assert gini(w, mask).item() == pytest.approx(expect, abs=1e-6)
    assert gini(w * 1e4, mask).item() == pytest.approx(expect, abs=1e-6)


def test_summary_ignores_empty_rows():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    w = normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), mask, 0.0)
    s = concentration_summary(w, mask)
    assert s["rows"] == 2
    assert s["gini"] == pytest.approx((0.5 + 0.0) / 2)
    assert s["effective_ratio"] == pytest.approx((0.5 + 1.0) / 2)
    empty = concentration_summary(torch.zeros(2, 3), torch.zeros(2, 3))
    assert empty["rows"] == 0 and math.isnan(empty["gini"])


def test_gini_is_n_log_n_not_quadratic_in_memory():
    """A (4, 20000) batch would need 6.4 GB as a pairwise (B,T,T) tensor; it runs here."""
    w = torch.rand(4, 20000)
    mask = torch.ones_like(w, dtype=torch.bool)
    g = gini(w, mask)
    # Uniform(0,1) samples have Gini 1/3.
    torch.testing.assert_close(g, torch.full((4,), 1 / 3), atol=0.02, rtol=0)


def test_regime_thresholds():
    from arca.credit import classify_regime

    assert classify_regime(0.0, 1.0) == "uniform broadcast"
    assert classify_regime(0.9, 0.06) == "sparse"  # the paper's baselines ("spuriously sparse")
    assert classify_regime(0.4, 0.6) == "middle regime"
    assert classify_regime(0.4, 0.6, sparse_ratio_below=0.7) == "sparse"
    assert classify_regime(float("nan"), 0.5) == "n/a"
    assert classify_regime(float("inf"), 0.5) == "n/a"  # non-finite is a bug, not a regime
