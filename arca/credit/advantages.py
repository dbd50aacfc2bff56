"""Prompt-level baselines: GRPO and RLOO advantages (paper eq. 4-5)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from arca.credit._checks import float_dtype

Estimator = Literal["grpo", "rloo"]
ESTIMATORS: tuple[str, ...] = ("grpo", "rloo")


def group_advantages(
    rewards: Tensor,
    group_size: int,
    estimator: Estimator = "grpo",
    eps: float = 1e-6,
    *,
    unbiased_std: bool = True,
    scale_by_std: bool = True,
) -> Tensor:
    """Scalar advantage of each completion from its group's rewards.

    The batch holds consecutive groups of ``group_size`` completions of the same
    prompt (``[p0, p0, p0, p0, p1, ...]``, the layout of TRL and verl).

    * ``"grpo"``: ``(R_i - mean_g) / (std_g + eps)``. ``std`` is the unbiased
      (n-1) estimate as in TRL and verl; ``unbiased_std=False`` uses the
      population std. ``scale_by_std=False`` gives the mean-centred advantage
      of Dr. GRPO.
    * ``"rloo"``: ``R_i - mean_{j != i} R_j`` (leave-one-out baseline).

    A group whose rewards are all equal gets advantage 0 (no NaN).

    Args:
        rewards: ``(B,)`` scalar rewards, ``B`` a multiple of ``group_size``.
        group_size: completions per prompt ``K >= 2``.
        estimator: ``"grpo"`` or ``"rloo"``.
        eps: added to the std (grpo only), ``>= 0``.

    Returns:
        ``(B,)`` detached advantages, float32 (float64 for float64 rewards).
    """
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        shape = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"`rewards` must be a 1-D tensor of shape (B,), got {shape}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(
            f"group_size must be an int >= 2 (a baseline needs other samples of the prompt), "
            f"got {group_size!r}"
        )
    B = rewards.shape[0]
    if B % group_size:
        raise ValueError(
            f"batch of {B} rewards is not a multiple of group_size={group_size}; "
            "each prompt's completions must be consecutive and complete"
        )
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"unknown advantage estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}"
        )
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = rewards.detach()
    r = r.to(float_dtype(r) if r.is_floating_point() else torch.float32)
    if not bool(torch.isfinite(r).all()):
        i = int((~torch.isfinite(r)).nonzero()[0])
        raise ValueError(f"`rewards` has a non-finite value at index {i}")
    g = r.view(-1, group_size)
    mean = g.mean(dim=1, keepdim=True)
    # Tested on the rewards themselves: the float mean of equal values need not
    # equal them bit for bit (3 x 0.1), and eps=0 would then divide noise by noise.
    flat = (g == g[:, :1]).all(dim=1, keepdim=True)
    if estimator == "rloo":
        adv = (g - mean) * (group_size / (group_size - 1))  # == R_i - mean of the others
    elif scale_by_std:
        std = g.std(dim=1, keepdim=True, correction=1 if unbiased_std else 0)
        adv = (g - mean) / torch.where(flat, 1.0, std + eps)
    else:
        adv = g - mean
    adv = torch.where(flat, 0.0, adv)
    return adv.reshape(B)


__all__ = ["Estimator", "ESTIMATORS", "group_advantages"]
