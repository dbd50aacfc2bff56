"""Concentration diagnostics of token weights (paper section 3.4 and 4.3).

Uniform weights have Gini 0 and effective-token ratio 1; credit on a single
token has Gini ``(T-1)/T`` and ratio ``1/T``. The paper's "middle regime" lies
between the two ends it calls degenerate, uniform broadcast and "spurious"
sparsity. arca names the regimes by what is measured (uniform broadcast,
middle, sparse): whether sparse credit is spurious is a question of where it
lands, which :mod:`arca.credit.correctness` answers on tasks with a ground truth.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from arca.credit._checks import as_bool_mask, check_like_mask, float_dtype


def gini(weights: Tensor, mask: Tensor) -> Tensor:
    """Gini coefficient of each row's real-token weights.

    ``G = sum_i sum_j |w_i - w_j| / (2 T sum_i w_i)`` with ``T`` the row's
    number of real tokens, computed from the sorted weights as
    ``sum_i (2i - T - 1) w_(i) / (T sum_i w_i)`` in O(T log T).

    Args:
        weights: ``(B, T)`` non-negative weights (need not sum to 1: G is scale-free).
        mask: ``(B, T)`` 1 = real token.

    Returns:
        ``(B,)``: in ``[0, (T-1)/T]``; NaN for rows with no real token or all-zero weights.
    """
    bmask = as_bool_mask(mask)
    check_like_mask(weights, bmask, "weights")
    dt = float_dtype(weights)
    w = weights.detach().to(dt)
    B, T = bmask.shape
    n = bmask.sum(dim=1)
    # Padding sorts last (+inf), so the first n sorted entries are the row's real weights.
    srt = torch.where(bmask, w, math.inf).sort(dim=1).values
    rank = torch.arange(1, T + 1, device=w.device, dtype=dt).expand(B, T)
    real = rank <= n.unsqueeze(1)
    srt = torch.where(real, srt, 0.0)
    coef = 2 * rank - n.unsqueeze(1).to(dt) - 1
    num = (coef * srt).sum(dim=1)
    den = n.to(dt) * srt.sum(dim=1)
    # Rounding can leave a uniform row at -1e-9; the definition is >= 0.
    g = (num / torch.where(den > 0, den, 1.0)).clamp_min(0.0)
    return torch.where(den > 0, g, math.nan)


def effective_token_ratio(weights: Tensor, mask: Tensor) -> Tensor:
    """Effective-token ratio ``EffN/T = 1 / (T sum_t w_t^2)`` of each row.

    Computed as ``(sum w)^2 / (T sum w^2)``, which equals the paper's formula
    for weights summing to 1 and is scale-free otherwise.

    Args:
        weights: ``(B, T)`` non-negative weights.
        mask: ``(B, T)`` 1 = real token.

    Returns:
        ``(B,)``: in ``[1/T, 1]``; NaN for rows with no real token or all-zero weights.
    """
    bmask = as_bool_mask(mask)
    check_like_mask(weights, bmask, "weights")
    dt = float_dtype(weights)
    w = torch.where(bmask, weights.detach().to(dt), 0.0)
    n = bmask.sum(dim=1).to(dt)
    s1 = w.sum(dim=1)
    s2 = w.square().sum(dim=1)
    den = n * s2
    return torch.where(den > 0, s1.square() / torch.where(den > 0, den, 1.0), math.nan)


def effective_token_count(weights: Tensor, mask: Tensor) -> Tensor:
    """Effective number of tokens ``EffN = 1 / sum_t w_t^2`` of each row.

    Computed as ``(sum w)^2 / sum w^2`` (scale-free). EffN/T alone hides the
    length: a row with EffN 1.4 has EffN/T 0.056 at T = 25 and 0.003 at T = 500.

    Returns ``(B,)`` in ``[1, T]``; NaN for rows with no real token or all-zero weights.
    """
    bmask = as_bool_mask(mask)
    return effective_token_ratio(weights, bmask) * bmask.sum(dim=1).to(float_dtype(weights))


def concentration_rows(weights: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Per-row Gini, effective-token ratio, effective-token count and length ``T``.

    Args:
        weights: ``(B, T)`` normalised weights.
        mask: ``(B, T)`` 1 = real token.

    Returns:
        ``{"gini", "effective_ratio", "effective_n", "length"}``, each ``(B,)``,
        NaN on empty rows (so that means over rows, or over several batches'
        rows, skip them).
    """
    g = gini(weights, mask)
    e = effective_token_ratio(weights, mask)
    n = as_bool_mask(mask).sum(dim=1).to(e.dtype)
    empty = torch.isnan(g)
    return {
        "gini": g,
        "effective_ratio": e,
        "effective_n": e * n,
        "length": n.masked_fill(empty, math.nan),
    }


def concentration_summary(weights: Tensor, mask: Tensor) -> dict[str, float]:
    """Batch means of :func:`concentration_rows`, ignoring empty rows.

    Returns ``{"gini", "effective_ratio", "effective_n", "length", "rows"}``
    where ``rows`` counts the rows that entered the means (NaN means if there
    were none). ``effective_n`` is the mean of each row's EffN, not
    ``effective_ratio * length``.
    """
    per = concentration_rows(weights, mask)
    ok = ~torch.isnan(per["gini"])
    rows = int(ok.sum())
    out = {k: float(v[ok].mean()) if rows else math.nan for k, v in per.items()}
    return out | {"rows": rows}


def average_ranks(values: Tensor, mask: Tensor) -> Tensor:
    """1-based ranks of each row's real entries, ties sharing their average rank.

    Args:
        values: ``(B, T)``.
        mask: ``(B, T)`` 1 = real entry.

    Returns:
        ``(B, T)`` float ranks in ``[1, n_row]``; 0 at padding.
    """
    bmask = as_bool_mask(mask)
    check_like_mask(values, bmask, "values")
    dt = float_dtype(values)
    B, T = bmask.shape
    v = torch.where(bmask, values.detach().to(dt), math.inf)
    srt, order = v.sort(dim=1, stable=True)
    pos = torch.arange(T, device=v.device).expand(B, T)
    # Runs of equal values (padding is one run of +inf at the end).
    new_run = torch.ones_like(bmask)
    new_run[:, 1:] = srt[:, 1:] != srt[:, :-1]
    run = new_run.long().cumsum(dim=1) - 1
    first = torch.full((B, T), T, device=v.device).scatter_reduce(1, run, pos, "amin")
    last = torch.full((B, T), -1, device=v.device).scatter_reduce(1, run, pos, "amax")
    avg = (first.gather(1, run) + last.gather(1, run)).to(dt) / 2 + 1
    ranks = torch.empty_like(avg).scatter_(1, order, avg)
    return torch.where(bmask, ranks, 0.0)


def rank_correlation(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Spearman rank correlation of ``x`` and ``y`` over each row's real tokens.

    Pearson correlation of the average ranks (ties share a rank), so it is
    invariant to any increasing transform of either input: comparing two
    schemes' weights or raw scores gives the same value.

    Args:
        x, y: ``(B, T)``.
        mask: ``(B, T)`` 1 = real token.

    Returns:
        ``(B,)`` in ``[-1, 1]``; NaN for rows with fewer than 2 real tokens or
        where either input is constant (uniform weights have no ranking).
    """
    bmask = as_bool_mask(mask)
    rx, ry = average_ranks(x, bmask), average_ranks(y, bmask)
    n = bmask.sum(dim=1).to(rx.dtype)
    safe_n = n.clamp_min(1).unsqueeze(1)
    cx = torch.where(bmask, rx - rx.sum(dim=1, keepdim=True) / safe_n, 0.0)
    cy = torch.where(bmask, ry - ry.sum(dim=1, keepdim=True) / safe_n, 0.0)
    den = (cx.square().sum(dim=1) * cy.square().sum(dim=1)).sqrt()
    r = (cx * cy).sum(dim=1) / torch.where(den > 0, den, 1.0)
    return torch.where((den > 0) & (n >= 2), r.clamp(-1.0, 1.0), math.nan)


#: Default regime thresholds (arca's choice; the paper names the regimes but
#: gives no cut-offs). Its Table 3 puts the output-distribution baselines at
#: EffN/T 0.05-0.07 (its "spuriously sparse") and uniform at exactly G = 0.
UNIFORM_GINI_BELOW = 0.05
SPARSE_RATIO_BELOW = 0.15

#: Concentration regimes, named by what they measure. The paper calls the last
#: one "spuriously sparse"; arca says "sparse" and lets the credit-correctness
#: metrics say whether the concentrated credit is on the right tokens.
REGIMES = ("uniform broadcast", "middle regime", "sparse")


def classify_regime(
    gini_value: float,
    effective_ratio: float,
    *,
    uniform_gini_below: float = UNIFORM_GINI_BELOW,
    sparse_ratio_below: float = SPARSE_RATIO_BELOW,
) -> str:
    """Name the concentration regime of a (mean) weight distribution.

    ``"uniform broadcast"`` if ``gini < uniform_gini_below``; else
    ``"sparse"`` if ``effective_ratio < sparse_ratio_below``; else
    ``"middle regime"``. NaN or infinite inputs give ``"n/a"`` (a non-finite
    mean is a bug upstream, not a regime).
    """
    if not (math.isfinite(gini_value) and math.isfinite(effective_ratio)):
        return "n/a"
    if gini_value < uniform_gini_below:
        return REGIMES[0]
    if effective_ratio < sparse_ratio_below:
        return REGIMES[2]
    return REGIMES[1]


__all__ = [
    "REGIMES",
    "average_ranks",
    "rank_correlation",
    "SPARSE_RATIO_BELOW",
    "UNIFORM_GINI_BELOW",
    "classify_regime",
    "concentration_summary",
    "effective_token_count",
    "effective_token_ratio",
    "gini",
]
