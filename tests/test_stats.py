"""Bootstrap statistics: exact cases a hand can check, and the pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arca.stats import bootstrap_ci, paired_bootstrap


def test_bootstrap_ci_single_value_has_no_interval():
    m, lo, hi = bootstrap_ci([0.25])
    assert m == 0.25 and math.isnan(lo) and math.isnan(hi)


def test_bootstrap_ci_two_values_spans_them():
    # Resampling {0.2, 0.4} twice: means 0.2 (p=1/4), 0.3 (1/2), 0.4 (1/4), so the
    # 2.5% and 97.5% quantiles are exactly the two values.
    m, lo, hi = bootstrap_ci([0.2, 0.4])
    assert m == pytest.approx(0.3) and lo == pytest.approx(0.2) and hi == pytest.approx(0.4)


def test_bootstrap_ci_ignores_nan_and_is_seeded():
    assert bootstrap_ci([0.1, float("nan"), 0.3, 0.5]) == bootstrap_ci([0.1, 0.3, 0.5])
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    m, lo, hi = bootstrap_ci([0.1, 0.3, 0.5, 0.7])
    assert lo < m < hi and m == pytest.approx(0.4)


def test_paired_bootstrap_identical_methods():
    a = np.array([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=float)
    r = paired_bootstrap(a, a)
    assert r["diff"] == 0 and r["low"] == 0 and r["high"] == 0 and r["p"] == 1.0


def test_paired_bootstrap_certain_difference():
    a, b = np.ones((2, 50)), np.zeros((3, 50))
    r = paired_bootstrap(a, b)
    assert r["diff"] == 1 and r["low"] == 1 and r["high"] == 1 and r["p"] == 0.0
    assert r["seeds"] == (2, 3) and r["problems"] == 50


def test_paired_bootstrap_pairs_problems():
    # Method b is a plus noise shared per problem: paired, the difference is
    # exactly 0.1 on every problem, so the interval is a point. Unpaired, the
    # per-problem spread would make it wide.
    rng = np.random.default_rng(0)
    base = rng.random((1, 200))
    r = paired_bootstrap(base + 0.1, base)
    assert r["diff"] == pytest.approx(0.1)
    assert r["high"] - r["low"] == pytest.approx(0.0, abs=1e-12)


def test_paired_bootstrap_interval_covers_and_shrinks_with_problems():
    rng = np.random.default_rng(1)
    small = paired_bootstrap(
        (rng.random((1, 40)) < 0.6).astype(float), (rng.random((1, 40)) < 0.4).astype(float)
    )
    large = paired_bootstrap(
        (rng.random((1, 4000)) < 0.6).astype(float), (rng.random((1, 4000)) < 0.4).astype(float)
    )
    for r in (small, large):
        assert r["low"] <= r["diff"] <= r["high"]
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 3
    assert large["p"] < 0.001


def test_paired_bootstrap_needs_the_same_problems():
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap(np.zeros((1, 5)), np.zeros((1, 6)))
