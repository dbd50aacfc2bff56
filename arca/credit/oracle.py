"""``oracle``: the ground-truth ceiling. Weight on the first wrong token.

Not a method one can deploy: it reads where each wrong completion first went
wrong (``error_index``, from a task's error locator, :mod:`arca.tasks.locate`,
or the Monte-Carlo one), which training does not have. It measures how much a
token-credit scheme could gain if it knew.

A row with a negative advantage and a located first error ``e`` puts
``share`` of its weight on token ``e`` and spreads the rest

* ``rest="uniform"``: evenly over the row's other real tokens;
* ``rest="after"``: evenly over the real tokens after ``e`` (what followed the
  error); a row whose error is its last token falls back to ``"uniform"``.

Every other row (a non-negative advantage, no located error) is uniform, as
GRPO. A row of one token gets all its weight there. The weights are a
redistribution: each row sums to 1, so the trainer keeps the advantage mass
(``A_i T_i w_it``). Kind ``"weights"``; inputs ``error_index`` ``(B,)``
(position in the padded layout, ``-1`` for none) and ``advantages`` ``(B,)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arca.credit.correctness import _check_index
from arca.credit.schemes import CEILING_TAG, register_scheme

#: The ``rest`` modes of :func:`oracle_weights`.
ORACLE_REST = ("uniform", "after")


def oracle_weights(
    mask: Tensor,
    error_index: Tensor,
    advantages: Tensor,
    *,
    share: float = 0.2,
    rest: str = "after",
) -> Tensor:
    """The oracle's weights ``(B, T)`` (rows summing to 1, zero on padding).

    Args:
        mask: ``(B, T)`` bool, 1 = real token (padding on either side).
        error_index: ``(B,)`` integer, the first wrong token's position in the
            padded layout, ``-1`` where none is located.
        advantages: ``(B,)`` the completions' advantages; only rows below 0
            are redistributed (the ones whose tokens get pushed down).
        share: the weight on the first wrong token, in ``[0, 1]``.
        rest: ``"uniform"`` or ``"after"`` (see the module docstring).
    """
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ValueError(f"oracle: share must be a number in [0, 1], got {share!r}")
    if rest not in ORACLE_REST:
        raise ValueError(f"oracle: rest must be one of {', '.join(ORACLE_REST)}, got {rest!r}")
    idx, has = _check_index(error_index, mask)
    dt = torch.float64 if advantages.dtype == torch.float64 else torch.float32
    B, T = mask.shape
    pos = torch.arange(T, device=mask.device).expand(B, T)
    real = mask.to(dt)
    n = real.sum(dim=1, keepdim=True)
    uniform = real / n.clamp_min(1)
    target = has & (advantages.to(mask.device) < 0)
    at = (pos == idx[:, None]) & mask
    others = mask & ~at
    if rest == "after":
        after = mask & (pos > idx[:, None])
        others = torch.where(after.any(dim=1, keepdim=True), after, others)
    k = others.sum(dim=1, keepdim=True).to(dt)
    # A row of one real token: nothing else to spread over, all on the error.
    spread = torch.where(k > 0, (1 - share) * others.to(dt) / k.clamp_min(1), 0.0)
    on_error = torch.where(k > 0, share, 1.0) * at.to(dt)
    return torch.where(target[:, None], on_error + spread, uniform)


@register_scheme(
    "oracle",
    requires=("error_index", "advantages"),
    options={"share": 0.2, "rest": "after"},
    kind="weights",
    description=f"{CEILING_TAG}: `share` of a wrong completion's weight on its first wrong "
    "token (the task's locator), the rest uniform or after it; other rows uniform",
)
def _oracle(
    *, mask: Tensor, error_index: Tensor, advantages: Tensor, share: float, rest: str
) -> Tensor:
    return oracle_weights(mask, error_index, advantages, share=share, rest=rest)


__all__ = ["ORACLE_REST", "oracle_weights"]
