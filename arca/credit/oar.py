"""``oar_g``: Outcome-grounded Advantage Reshaping, gradient variant (Li et al.,
arXiv 2601.07408, ACL 2026).

Each completion is split into a *reasoning* span (its real tokens before its
last ``\\boxed``) and an *answer* span (from there to the end). A token's
importance is how much its input embedding moves the model's distribution over
the answer: ``I_t = |<dJ/de_t, e_t>|`` with ``J = KL(p0 || p_noisy)`` of the
answer-slot distribution under Gaussian noise on the reasoning embeddings
(:func:`arca.scoring.outcome_saliency` computes it; it costs one forward with
a graph and one backward to the embeddings). This module turns the importances
into weights by the paper's bi-level reshaping, per row over its ``L``
reasoning tokens:

1. ``s_t = log(1 + I_t)``, min-max normalised to ``n_t`` in ``[0, 1]`` (all
   equal: every ``n_t = 0``);
2. ``tau`` = the ``quantile`` of ``n`` (numpy's linear interpolation);
3. noise suppression, ``n_t < tau``: ``w_t = max(n_t / (tau + 1e-8), floor)``;
4. signal boosting, ``n_t >= tau``: ``w_t = 1 + beta (n_t - tau) / (1 - tau + 1e-8)``;
5. ``w_t <- w_t L / (sum_k w_k + 1e-8)`` (the reasoning span keeps its mass).

Answer tokens get weight 1, and the row is divided by its sum, ``L + (T - L)``,
so it sums to 1: a redistribution (kind ``"weights"``; the trainer's
``A_i T_i w_it`` is the paper's ``A_i w_t`` on the reasoning span and ``A_i`` on
the answer). A row without an answer span (``answer_start = -1``, no
``\\boxed``) or without reasoning tokens is uniform.

The reshaping follows the official code (github.com/Valsure/Outcome-Grounded-
Advantage-Reshaping at 8dbc478, ``OAR-main.py``:
``calculate_oar_hybrid_weights``); docs/credit-schemes.md section 2. The
paper's ``quantile`` (its ``args.threshold``) and ``beta`` could not be read;
arca's defaults, 0.5 and 1.0, are arca's choice (the median splits the span
into suppressed and boosted halves; ``beta = 1`` at most doubles the weight
before renormalising). ``floor = 0.1`` and the ``1e-8`` guards are the code's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from arca.credit.schemes import register_scheme

#: The official code's guard, and its floor for suppressed tokens.
OAR_EPS = 1e-8
OAR_FLOOR = 0.1


def reasoning_mask(mask: Tensor, answer_start: Tensor) -> Tensor:
    """``(B, T)`` bool: the real tokens before each row's ``answer_start``
    (a position in the padded layout); none where ``answer_start < 0``."""
    pos = torch.arange(mask.shape[1], device=mask.device)[None, :]
    start = answer_start.to(mask.device)[:, None]
    return mask & (start >= 0) & (pos < start)


def oar_bilevel(
    scores: Tensor, span: Tensor, *, quantile: float, beta: float, floor: float = OAR_FLOOR
) -> Tensor:
    """The bi-level reshaping of each row's ``span`` tokens (steps 1-5 above).

    Args:
        scores: ``(B, T)`` non-negative importances (only ``span`` read).
        span: ``(B, T)`` bool, the tokens reshaped (a row's reasoning span).

    Returns ``(B, T)`` float64 weights summing to the span's length ``L`` per
    row (up to the ``1e-8`` guard), zero outside the span.
    """
    if not (isinstance(quantile, int | float) and 0 <= quantile <= 1):
        raise ValueError(f"oar_g: quantile must be in [0, 1], got {quantile!r}")
    if not (isinstance(beta, int | float) and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"oar_g: beta must be a finite number >= 0, got {beta!r}")
    f64 = torch.float64
    B, T = span.shape
    s = torch.where(span, torch.log1p(scores.to(f64).clamp_min(0)), 0.0)
    lo = torch.where(span, s, math.inf).amin(dim=1, keepdim=True)
    hi = torch.where(span, s, -math.inf).amax(dim=1, keepdim=True)
    spread = torch.where(hi > lo, hi - lo, 1.0)
    n = torch.where(span, (s - lo) / spread, 0.0)
    # numpy's linear quantile over each row's span: sorted values, +inf after them.
    L = span.sum(dim=1, keepdim=True)
    srt = torch.where(span, n, math.inf).sort(dim=1).values
    h = (L - 1).clamp_min(0).to(f64) * quantile
    i_lo = h.floor().long().clamp(0, T - 1)
    i_hi = torch.minimum(i_lo + 1, (L - 1).clamp_min(0))
    x_lo, x_hi = srt.gather(1, i_lo), srt.gather(1, i_hi)
    tau = torch.where(i_hi > i_lo, x_lo + (h - i_lo) * (x_hi - x_lo), x_lo)
    w = torch.where(
        n < tau,
        torch.clamp_min(n / (tau + OAR_EPS), floor),
        1 + beta * (n - tau) / (1 - tau + OAR_EPS),
    )
    w = torch.where(span, w, 0.0)
    total = w.sum(dim=1, keepdim=True)
    scaled = w * L.to(f64) / (total + OAR_EPS)
    return torch.where(total > 0, scaled, span.to(f64))


def oar_weights(
    mask: Tensor,
    saliency: Tensor,
    answer_start: Tensor,
    *,
    quantile: float = 0.5,
    beta: float = 1.0,
) -> Tensor:
    """OAR's row weights ``(B, T)``: the reshaped importances on the reasoning
    span, 1 on the answer span, each row divided by its sum (so it sums to 1).

    Args:
        mask: ``(B, T)`` bool, 1 = real token.
        saliency: ``(B, T)`` the importances ``I_t >= 0`` (read on the
            reasoning span only).
        answer_start: ``(B,)`` integer, the position (padded layout) where the
            answer span starts; ``-1`` for a completion without one (uniform).
    """
    span = reasoning_mask(mask, answer_start)
    w = torch.where(span, oar_bilevel(saliency, span, quantile=quantile, beta=beta), 1.0)
    w = torch.where(mask, w, 0.0)
    total = w.sum(dim=1, keepdim=True)
    return torch.where(total > 0, w / torch.where(total > 0, total, 1.0), 0.0)


@register_scheme(
    "oar_g",
    requires=("saliency", "answer_start"),
    options={"quantile": 0.5, "beta": 1.0},
    kind="weights",
    description="OAR-G (arXiv 2601.07408): gradient x input saliency of the answer "
    "distribution's KL under embedding noise, bi-level reshaped over the reasoning span "
    "(before the last \\boxed), the answer span at weight 1; keeps the advantage mass",
)
def _oar_g(
    *, mask: Tensor, saliency: Tensor, answer_start: Tensor, quantile: float, beta: float
) -> Tensor:
    if bool((torch.where(mask, saliency, 0.0) < 0).any()):
        raise ValueError("oar_g: `saliency` must be >= 0 at real positions (an importance)")
    return oar_weights(mask, saliency, answer_start, quantile=quantile, beta=beta)


__all__ = ["OAR_EPS", "OAR_FLOOR", "oar_bilevel", "oar_weights", "reasoning_mask"]
