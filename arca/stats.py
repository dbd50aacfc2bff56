"""Bootstrap statistics for sweeps with several seeds.

Two questions, two resampling schemes (numpy, vectorised, seeded):

- *How precise is a cell?* :func:`bootstrap_ci` resamples the per-seed values of
  one metric with replacement and reports the mean with a percentile interval.
- *Is method X better than uniform on these problems?* :func:`paired_bootstrap`
  compares per-problem scores of two methods on the same held-out problems. Each
  replicate resamples the problems (shared by both methods, hence "paired") and,
  independently for each method, its seeds; so the interval covers both the
  problem sample and seed-to-seed variation. With one seed per method it is the
  classic paired bootstrap over problems.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

N_BOOT = 10_000


def bootstrap_ci(
    values: Sequence[float], *, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values`` (one per seed) with a percentile
    bootstrap interval; ``low``/``high`` are NaN with fewer than two values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(lo), float(hi)


def paired_bootstrap(
    scores: np.ndarray | Sequence[Sequence[float]],
    baseline: np.ndarray | Sequence[Sequence[float]],
    *,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Difference of mean per-problem score, ``scores - baseline``.

    Args:
        scores: ``(S, N)`` per-problem scores of the method, one row per seed.
        baseline: ``(S0, N)`` the baseline's, on the same ``N`` problems in the
            same order.

    Returns ``{"diff", "low", "high", "p", "se", "mde", "problems", "seeds"}``:
    the observed difference of means, its percentile interval, a two-sided
    bootstrap p-value (twice the smaller tail of the replicates around 0,
    capped at 1), the replicates' standard deviation and the minimum
    detectable effect at 80% power (:func:`mde`).
    """
    a = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    b = np.atleast_2d(np.asarray(baseline, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"paired bootstrap needs the same problems: {a.shape[1]} vs {b.shape[1]} per-problem scores"
        )
    n = a.shape[1]
    if n == 0:
        raise ValueError("paired bootstrap needs at least one problem")
    rng = np.random.default_rng(seed)
    diff = float(a.mean() - b.mean())
    reps = np.empty(n_boot)
    # Chunks keep memory at O(chunk * N) for any n_boot.
    chunk = max(1, 2_000_000 // max(1, n * max(a.shape[0], b.shape[0])))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        probs = rng.integers(0, n, size=(m, n))
        sa = rng.integers(0, a.shape[0], size=(m, a.shape[0]))
        sb = rng.integers(0, b.shape[0], size=(m, b.shape[0]))
        # Mean over resampled seeds of each resampled problem's score.
        ma = a[sa[:, :, None], probs[:, None, :]].mean(axis=(1, 2))
        mb = b[sb[:, :, None], probs[:, None, :]].mean(axis=(1, 2))
        reps[start : start + m] = ma - mb
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    p = min(1.0, 2 * min(float((reps <= 0).mean()), float((reps >= 0).mean())))
    return {
        "diff": diff,
        "low": float(lo),
        "high": float(hi),
        "p": p,
        "se": float(reps.std(ddof=1)),
        "mde": mde(float(reps.std(ddof=1))),
        "problems": n,
        "seeds": (a.shape[0], b.shape[0]),
    }


#: Two-sided 95% and 80% power: the normal quantiles of the usual design rule.
Z_ALPHA = 1.959964  # Phi^-1(0.975)
Z_POWER = 0.841621  # Phi^-1(0.80)


def mde(se: float, *, z_alpha: float = Z_ALPHA, z_power: float = Z_POWER) -> float:
    """Minimum detectable effect: the smallest true difference that a
    comparison whose estimate has standard error ``se`` detects (its 95%
    interval excludes 0) with 80% power, ``(z_0.975 + z_0.8) se``, about
    ``2.8 se``. Smaller differences can be missed; "no difference" means "none
    larger than this, probably"."""
    return (z_alpha + z_power) * se


def seeds_needed(
    seed_sd: float, effect: float, *, z_alpha: float = Z_ALPHA, z_power: float = Z_POWER
) -> int | None:
    """Seeds per method to detect ``effect`` between two methods' mean
    accuracies when one seed's accuracy varies with standard deviation
    ``seed_sd`` (the A/A spread): ``2 ((z_a + z_p) sd / effect)^2``, rounded
    up (the problem sample is shared by both methods, so seed noise is what
    remains). None for a zero effect."""
    if effect <= 0:
        return None
    return max(2, math.ceil(2 * ((z_alpha + z_power) * seed_sd / effect) ** 2))
