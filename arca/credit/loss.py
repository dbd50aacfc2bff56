"""The token-weighted policy-gradient loss (paper eq. 6) for custom loops."""

from __future__ import annotations

import torch
from torch import Tensor

from arca.credit._checks import as_bool_mask, check_finite, check_like_mask


def weighted_pg_loss(logps: Tensor, advantages: Tensor, weights: Tensor, mask: Tensor) -> Tensor:
    """``-mean_i A_i sum_t w_it log pi(y_it)``: REINFORCE with redistributed credit.

    Its gradient is eq. 6 averaged over the batch. ``advantages`` and ``weights``
    are treated as constants (detached), as the paper prescribes, so no
    gradient flows through the weighting.

    Args:
        logps: ``(B, T)`` log-probs of the sampled tokens, with grad.
        advantages: ``(B,)`` scalar advantage per completion.
        weights: ``(B, T)`` token weights (rows summing to 1 over real tokens).
        mask: ``(B, T)`` 1 = real token; padding never contributes, even if
            ``logps`` holds -inf or NaN there.

    Returns:
        A scalar tensor. The mean is over all ``B`` rows (an empty row adds 0).
    """
    bmask = as_bool_mask(mask)
    check_like_mask(logps, bmask, "logps")
    check_like_mask(weights, bmask, "weights")
    if not isinstance(advantages, Tensor) or advantages.shape != bmask.shape[:1]:
        got = (
            tuple(advantages.shape) if isinstance(advantages, Tensor) else type(advantages).__name__
        )
        raise ValueError(f"`advantages` must have shape (B,) = {tuple(bmask.shape[:1])}, got {got}")
    check_finite(logps.detach(), bmask, "logps")
    lp = torch.where(bmask, logps, torch.zeros((), dtype=logps.dtype, device=logps.device))
    w = torch.where(bmask, weights.detach(), 0.0).to(lp.dtype)
    per_seq = (w * lp).sum(dim=1)
    return -(advantages.detach().to(lp.dtype) * per_seq).mean()


__all__ = ["weighted_pg_loss"]
