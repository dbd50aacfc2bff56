"""The policy-gradient loss with redistributed credit, under TRL's loss normalisers."""

from __future__ import annotations

import torch
from torch import Tensor

from arca.credit._checks import as_bool_mask, check_finite, check_like_mask

#: TRL loss types for which the paper's per-sequence weighting is well defined:
#: the on-policy gradient is linear in each token's advantage, so handing TRL
#: ``A_i * T_i * w_it`` redistributes sequence i's credit over its tokens and
#: keeps the share the normaliser gives the sequence.
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")

#: TRL loss types arca refuses, and why.
REFUSED_LOSS_TYPES = {
    "luspo": "its importance ratio is one number per sequence, so the token weights cancel "
    "and every scheme trains as uniform",
    "vespo": "its sequence weights are a nonlinear function of the advantage, which per-token "
    "advantages would change, not redistribute",
}


def weighted_pg_loss(
    logps: Tensor,
    advantages: Tensor,
    weights: Tensor,
    mask: Tensor,
    *,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items: float | None = None,
) -> Tensor:
    """``-sum_i c_i A_i sum_t w_it log pi(y_it)``: REINFORCE with redistributed credit.

    ``c_i`` is the share TRL's ``loss_type`` gives sequence ``i`` (``T_i`` its
    real tokens): ``1/B`` for ``grpo`` and ``sapo`` (the paper's eq. 6 averaged
    over the batch), ``T_i / sum_j T_j`` for ``bnpo``, ``T_i / (B *
    max_completion_length)`` for ``dr_grpo``, ``T_i / num_items`` for ``dapo``
    and ``cispo`` (TRL's ``num_items_in_batch``: the tokens of the global
    batch). With uniform weights ``w_it = 1/T_i`` each is TRL's own loss.
    ``advantages`` and ``weights`` are treated as constants (detached), as the
    paper prescribes, so no gradient flows through the weighting.

    Args:
        logps: ``(B, T)`` log-probs of the sampled tokens, with grad.
        advantages: ``(B,)`` scalar advantage per completion.
        weights: ``(B, T)`` token weights (rows summing to 1 over real tokens).
        mask: ``(B, T)`` 1 = real token; padding never contributes, even if
            ``logps`` holds -inf or NaN there.
        loss_type: one of :data:`LOSS_TYPES`.
        max_completion_length: ``dr_grpo``'s constant length.
        num_items: ``dapo``/``cispo``'s token count (default: this batch's).

    Returns:
        A scalar tensor (an empty row adds 0).
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
    per_seq = advantages.detach().to(lp.dtype) * (w * lp).sum(dim=1)
    lengths = bmask.sum(dim=1).to(lp.dtype)
    B = bmask.shape[0]
    if loss_type in ("grpo", "sapo"):
        share = torch.full_like(lengths, 1.0 / B)
    elif loss_type == "bnpo":
        share = lengths / lengths.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if not max_completion_length or max_completion_length < 1:
            raise ValueError("loss_type 'dr_grpo' needs max_completion_length >= 1")
        share = lengths / (B * max_completion_length)
    elif loss_type in ("dapo", "cispo"):
        n = float(num_items) if num_items is not None else float(lengths.sum())
        share = lengths / max(n, 1.0)
    else:
        why = REFUSED_LOSS_TYPES.get(loss_type, "it is not a TRL loss type arca knows")
        raise ValueError(f"loss_type: {loss_type!r} is not supported: {why}")
    return -(share * per_seq).sum()


__all__ = ["LOSS_TYPES", "REFUSED_LOSS_TYPES", "weighted_pg_loss"]
