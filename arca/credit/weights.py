"""Within-trajectory normalisation of salience into token weights (paper eq. 8)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from arca.credit._checks import as_bool_mask, check_finite, check_like_mask, float_dtype
from arca.credit.schemes import token_scores

EpsMode = Literal["absolute", "relative"]


def normalize(
    scores: Tensor,
    mask: Tensor,
    eps: float = 1e-8,
    *,
    eps_mode: EpsMode = "absolute",
) -> Tensor:
    """Turn raw salience into per-token weights that sum to 1 over each row.

    ``w_t = (alpha_t + e) / sum_k (alpha_k + e)`` over the real tokens of a row
    (paper eq. 8), where the floor ``e`` is

    * ``eps_mode="absolute"`` (the paper's): ``e = eps``. With a fixed floor,
      scores far below ``eps`` give uniform weights by construction (paper
      Prop. 2): right when a vanishing score *should* mean "no signal".
    * ``eps_mode="relative"``: ``e = eps * mean_k alpha_k`` per row. The weights
      are then invariant to the scale of the scores, so a signal that is small
      but structured (e.g. policy divergence in the first steps of LoRA
      training, ~1e-4) keeps its shape instead of being flattened by the floor.
      Use it to compare schemes whose score scales differ by orders of
      magnitude; every weight stays >= eps / ((1 + eps) T).

    A non-empty row whose scores are all zero and whose floor is zero gets
    uniform weights (the limit of any positive floor), so every non-empty row
    sums to 1.

    Args:
        scores: ``(B, T)`` non-negative salience; padding values are ignored.
        mask: ``(B, T)`` 1 = real completion token.
        eps: the floor, ``>= 0``.
        eps_mode: ``"absolute"`` or ``"relative"``.

    Returns:
        ``(B, T)`` detached weights: ``>= 0``, zero on padding, rows summing to 1;
        rows with no real token are all zero.
    """
    bmask = as_bool_mask(mask)
    check_like_mask(scores, bmask, "scores")
    if not eps >= 0:  # also catches NaN
        raise ValueError(f"eps must be >= 0, got {eps}")
    if eps_mode not in ("absolute", "relative"):
        raise ValueError(f"eps_mode must be 'absolute' or 'relative', got {eps_mode!r}")
    check_finite(scores, bmask, "scores")
    dt = float_dtype(scores)
    with torch.no_grad():
        a = torch.where(bmask, scores.detach().to(dt), 0.0)
        if bool((a < 0).any()):
            raise ValueError("scores must be >= 0 at real positions (salience is a magnitude)")
        n = bmask.sum(dim=1, keepdim=True).to(dt)
        if eps_mode == "relative":
            # Dividing by the row max first makes the result exactly scale-free,
            # tiny (even subnormal) scores included.
            top = a.amax(dim=1, keepdim=True)
            a = a / torch.where(top > 0, top, 1.0)
            floor = eps * a.sum(dim=1, keepdim=True) / n.clamp_min(1)
        else:
            floor = torch.full_like(n, eps)
        num = torch.where(bmask, a + floor, 0.0)
        den = num.sum(dim=1, keepdim=True)
        uniform = bmask.to(dt) / n.clamp_min(1)
        return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), uniform)


def token_weights(
    scheme: str,
    *,
    mask: Tensor,
    eps: float = 1e-8,
    eps_mode: EpsMode = "absolute",
    options: Mapping[str, Any] | None = None,
    **inputs: Tensor | bool | None,
) -> Tensor:
    """:func:`token_scores` then :func:`normalize`: ``(B, T)`` weights of ``scheme``.

    ``inputs`` are the scheme's inputs (``logps``, ``ref_logps``,
    ``entropies``, ``h_adapted``, ``h_base``, ``h_shift``, or a registered scheme's own);
    ``options`` its settings (e.g. ``high_entropy``'s ``quantile``).
    """
    scores = token_scores(scheme, mask=mask, options=options, **inputs)
    return normalize(scores, mask, eps, eps_mode=eps_mode)


__all__ = ["EpsMode", "normalize", "token_weights"]
