"""Does the credit land where a completion went wrong? Ground-truth metrics.

Concentration (Gini, EffN/T) says how peaked a scheme's weights are, not
whether the peak is on the right token. On tasks whose completions can be
checked step by step (:mod:`arca.tasks.locate` gives the first wrong token),
these metrics say where the credit of a wrong completion lands:

- **prefix blame**: the share of the row's weight on tokens *before* its first
  wrong token. A negative advantage pushes down every weighted token; weight on
  the correct prefix pushes down tokens that were right. Uniform weights give
  ``prefix / T``; lower is better.
- **error lift**: ``T * w_error`` (weight on the first wrong token relative to
  uniform's ``1/T``): 1 for uniform, above 1 when the scheme points at the error.
- **top-k hit**: is the first wrong token among the row's ``k`` highest-weighted
  tokens (ProcessBench-style)? Ties are broken at random and the expected hit is
  returned, so uniform weights score ``k / T`` (chance), not 1.
- **weight share** on a token set, e.g. the tokens that carry a result (step
  values, the answer) against the template, for correct completions.

All take padded ``(B, T)`` batches (padding on either side) and return ``(B,)``
per-row values, NaN where a row has no located error (or is empty);
:func:`credit_correctness` computes them all and selects the rows each metric
applies to. Pure torch, vectorised, no autograd history.

**Signed token advantages.** A scheme of kind ``"advantages"`` (``ktae``,
``lambda_grpo``) hands the trainer per-token advantages ``a_it`` that need not
be ``A_i T_i w_it`` with ``w >= 0``: KTAE can push a token of a wrong
completion *up*. Their metrics (:func:`signed_credit_correctness`, design note
in docs/credit-schemes.md section 7.2) read the push itself: concentration on
``|a_it| / sum_k |a_ik|`` (:func:`abs_share_weights`); prefix blame and error
lift count only pushes *down* (``max(0, -a_it)``) over the row's push
magnitude ``sum_t |a_it|``; a top-k hit counts only if the first wrong token
is pushed down. For ``a_it = A_i T_i w_it`` with ``A_i < 0`` every one of them
is exactly today's metric of ``w`` (tested). :func:`sign_flip_share` and
:func:`mass_ratio` say how far a scheme is from a redistribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from arca.credit._checks import as_bool_mask, check_like_mask, float_dtype

#: The per-row metrics of :func:`credit_correctness`, in display order.
METRICS = ("prefix_blame", "error_lift", "top1_hit", "top3_hit", "result_share", "template_share")


def _prepare(weights: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    bmask = as_bool_mask(mask)
    check_like_mask(weights, bmask, "weights")
    w = torch.where(bmask, weights.detach().to(float_dtype(weights)), 0.0)
    return w, bmask, w.sum(dim=1)


def _check_index(error_index: Tensor, bmask: Tensor) -> tuple[Tensor, Tensor]:
    """``(index clamped to [0, T), has_error)``; an index that points at
    padding or past the row is an error naming the row."""
    if not isinstance(error_index, Tensor) or error_index.shape != bmask.shape[:1]:
        got = tuple(error_index.shape) if isinstance(error_index, Tensor) else type(error_index)
        raise ValueError(f"`error_index` must have shape (B,) = ({bmask.shape[0]},), got {got}")
    if error_index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"`error_index` must be an integer tensor, got {error_index.dtype}")
    idx = error_index.to(device=bmask.device, dtype=torch.long)
    has = idx >= 0
    safe = idx.clamp(0, bmask.shape[1] - 1)
    bad = has & ((idx >= bmask.shape[1]) | ~bmask.gather(1, safe[:, None]).squeeze(1))
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"`error_index` row {row} points at position {int(idx[row])}, which is not a real "
            "token of the row (padding or out of range)"
        )
    return safe, has


def prefix_blame(weights: Tensor, mask: Tensor, error_index: Tensor) -> Tensor:
    """Share of each row's weight on real tokens before its first wrong token.

    Args:
        weights: ``(B, T)`` non-negative token weights (need not sum to 1).
        mask: ``(B, T)`` 1 = real token.
        error_index: ``(B,)`` position of the first wrong token in the padded
            layout, ``-1`` for rows without one.

    Returns:
        ``(B,)`` in ``[0, 1]``; NaN where ``error_index < 0`` or the row's
        weights are all zero.
    """
    w, bmask, total = _prepare(weights, mask)
    idx, has = _check_index(error_index, bmask)
    pos = torch.arange(bmask.shape[1], device=w.device)
    before = (pos[None, :] < idx[:, None]) & bmask
    share = torch.where(before, w, 0.0).sum(dim=1) / torch.where(total > 0, total, 1.0)
    return torch.where(has & (total > 0), share, math.nan)


def error_lift(weights: Tensor, mask: Tensor, error_index: Tensor) -> Tensor:
    """``T * w_error / sum_t w_t``: the first wrong token's weight relative to
    uniform's (1 for uniform weights, ``T`` when all the weight is on it).

    Shapes as in :func:`prefix_blame`; ``(B,)``, NaN where there is no error."""
    w, bmask, total = _prepare(weights, mask)
    idx, has = _check_index(error_index, bmask)
    n = bmask.sum(dim=1).to(w.dtype)
    at = w.gather(1, idx[:, None]).squeeze(1)
    lift = n * at / torch.where(total > 0, total, 1.0)
    return torch.where(has & (total > 0), lift, math.nan)


def topk_hit(weights: Tensor, mask: Tensor, error_index: Tensor, k: int) -> Tensor:
    """Is the first wrong token among the row's ``k`` highest-weighted tokens?

    With ``g`` real tokens weighted strictly above the error token and ``e``
    others tied with it, the expected hit under random tie-breaking is
    ``clamp((k - g) / (e + 1), 0, 1)``: exactly 0 or 1 without ties, ``k / T``
    for uniform weights. Shapes as in :func:`prefix_blame`; ``(B,)``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    w, bmask, total = _prepare(weights, mask)
    idx, has = _check_index(error_index, bmask)
    at = w.gather(1, idx[:, None])
    greater = ((w > at) & bmask).sum(dim=1).to(w.dtype)
    ties = ((w == at) & bmask).sum(dim=1).to(w.dtype) - 1
    hit = ((k - greater) / (ties + 1)).clamp(0.0, 1.0)
    return torch.where(has & (total > 0), hit, math.nan)


def weight_share(weights: Tensor, mask: Tensor, select: Tensor) -> Tensor:
    """Share of each row's weight on the real tokens where ``select`` is true.

    Args:
        weights: ``(B, T)``; mask: ``(B, T)``; select: ``(B, T)`` bool/0-1.

    Returns:
        ``(B,)`` in ``[0, 1]``; NaN for rows with no real token or zero weight."""
    w, bmask, total = _prepare(weights, mask)
    sel = as_bool_mask(select, "select")
    if sel.shape != bmask.shape:
        raise ValueError(f"`select` must have shape {tuple(bmask.shape)}, got {tuple(sel.shape)}")
    share = torch.where(sel & bmask, w, 0.0).sum(dim=1) / torch.where(total > 0, total, 1.0)
    return torch.where(total > 0, share, math.nan)


def credit_correctness(
    weights: Tensor,
    mask: Tensor,
    error_index: Tensor,
    *,
    advantages: Tensor | None = None,
    correct: Tensor | None = None,
    result_mask: Tensor | None = None,
    template_mask: Tensor | None = None,
    ks: Sequence[int] = (1, 3),
) -> dict[str, Tensor]:
    """Every credit-correctness metric, per row, NaN where it does not apply.

    The error metrics (``prefix_blame``, ``error_lift``, ``top{k}_hit``) apply
    to rows with a located error and, if ``advantages`` ``(B,)`` is given, a
    negative advantage (the completions whose tokens get pushed down). The
    shares (``result_share``, ``template_share``) apply to ``correct`` rows
    ``(B,)`` and need ``result_mask`` / ``template_mask`` ``(B, T)``.

    Returns ``{metric: (B,) tensor}`` for the metrics that can be computed.
    """
    bmask = as_bool_mask(mask)
    _, has = _check_index(error_index, bmask)
    rows = has
    if advantages is not None:
        if advantages.shape != has.shape:
            raise ValueError(
                f"`advantages` must have shape ({has.shape[0]},), got {tuple(advantages.shape)}"
            )
        rows = rows & (advantages.to(has.device) < 0)
    idx = torch.where(rows, error_index.to(has.device), -1)
    out = {
        "prefix_blame": prefix_blame(weights, bmask, idx),
        "error_lift": error_lift(weights, bmask, idx),
    }
    for k in ks:
        out[f"top{k}_hit"] = topk_hit(weights, bmask, idx, k)
    if correct is not None:
        ok = correct.to(device=has.device, dtype=torch.bool)
        for name, sel in (("result_share", result_mask), ("template_share", template_mask)):
            if sel is not None:
                share = weight_share(weights, bmask, sel)
                out[name] = torch.where(ok, share, math.nan)
    return out


def correctness_summary(per_row: dict[str, Tensor]) -> dict[str, float]:
    """Means of :func:`credit_correctness`'s per-row values over the rows each
    applies to, and ``"error_rows"`` / ``"correct_rows"``: how many there were
    (NaN means where there were none)."""
    out: dict[str, float] = {}
    for name, v in per_row.items():
        ok = ~torch.isnan(v)
        out[name] = float(v[ok].mean()) if bool(ok.any()) else math.nan
    if "prefix_blame" in per_row:
        out["error_rows"] = int((~torch.isnan(per_row["prefix_blame"])).sum())
    for name in ("result_share", "template_share"):
        if name in per_row:
            out["correct_rows"] = int((~torch.isnan(per_row[name])).sum())
            break
    return out


def abs_share_weights(token_advantages: Tensor, mask: Tensor) -> Tensor:
    """Each token's share of its row's push magnitude, ``|a_it| / sum_k |a_ik|``.

    Args:
        token_advantages: ``(B, T)`` per-token advantages, any sign.
        mask: ``(B, T)`` 1 = real token.

    Returns:
        ``(B, T)`` weights, zero on padding, each non-empty row summing to 1; a
        row whose advantages are all zero gets uniform weights (no push goes
        anywhere in particular). For ``a = A T w`` with ``A != 0`` and ``w >= 0``
        this is ``w``.
    """
    bmask = as_bool_mask(mask)
    check_like_mask(token_advantages, bmask, "token_advantages")
    dt = float_dtype(token_advantages)
    with torch.no_grad():
        mag = torch.where(bmask, token_advantages.detach().to(dt).abs(), 0.0)
        total = mag.sum(dim=1, keepdim=True)
        n = bmask.sum(dim=1, keepdim=True).to(dt)
        uniform = bmask.to(dt) / n.clamp_min(1)
        return torch.where(total > 0, mag / torch.where(total > 0, total, 1.0), uniform)


def _signed(token_advantages: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a zeroed at padding, bool mask, sum_t |a_t|)``."""
    bmask = as_bool_mask(mask)
    check_like_mask(token_advantages, bmask, "token_advantages")
    a = torch.where(bmask, token_advantages.detach().to(float_dtype(token_advantages)), 0.0)
    return a, bmask, a.abs().sum(dim=1)


def signed_prefix_blame(token_advantages: Tensor, mask: Tensor, error_index: Tensor) -> Tensor:
    """``sum_{t < e} max(0, -a_t) / sum_t |a_t|``: the share of a row's push
    magnitude that pushes *down* real tokens before its first wrong token ``e``.

    A positive token advantage on the prefix (credit) is no blame. Equals
    :func:`prefix_blame` of ``w`` when ``a = A T w`` with ``A < 0``. Shapes as in
    :func:`prefix_blame`: ``(B,)``, NaN where there is no error or no push."""
    a, bmask, total = _signed(token_advantages, mask)
    idx, has = _check_index(error_index, bmask)
    pos = torch.arange(bmask.shape[1], device=a.device)
    before = (pos[None, :] < idx[:, None]) & bmask
    down = torch.where(before, (-a).clamp_min(0.0), 0.0).sum(dim=1)
    share = down / torch.where(total > 0, total, 1.0)
    return torch.where(has & (total > 0), share, math.nan)


def signed_error_lift(token_advantages: Tensor, mask: Tensor, error_index: Tensor) -> Tensor:
    """``T max(0, -a_e) / sum_t |a_t|``: the push down on the first wrong token
    against a uniform row's (1 for uniform weights and a negative advantage; 0
    when the scheme pushes the error token up). ``(B,)``, NaN as :func:`signed_prefix_blame`."""
    a, bmask, total = _signed(token_advantages, mask)
    idx, has = _check_index(error_index, bmask)
    n = bmask.sum(dim=1).to(a.dtype)
    at = a.gather(1, idx[:, None]).squeeze(1)
    lift = n * (-at).clamp_min(0.0) / torch.where(total > 0, total, 1.0)
    return torch.where(has & (total > 0), lift, math.nan)


def signed_topk_hit(token_advantages: Tensor, mask: Tensor, error_index: Tensor, k: int) -> Tensor:
    """:func:`topk_hit` of ``|a|`` (ties broken at random, as there), counted
    only where the first wrong token is pushed down (``a_e < 0``; else 0).
    ``(B,)``, NaN as :func:`signed_prefix_blame`."""
    a, bmask, total = _signed(token_advantages, mask)
    idx, has = _check_index(error_index, bmask)
    hit = topk_hit(a.abs(), bmask, torch.where(has, idx, -1), k)
    down = a.gather(1, idx[:, None]).squeeze(1) < 0
    return torch.where(has & (total > 0), torch.where(down, hit, 0.0), math.nan)


def _row_advantages(advantages: Tensor, bmask: Tensor) -> Tensor:
    if not isinstance(advantages, Tensor) or advantages.shape != bmask.shape[:1]:
        got = tuple(advantages.shape) if isinstance(advantages, Tensor) else type(advantages)
        raise ValueError(f"`advantages` must have shape (B,) = ({bmask.shape[0]},), got {got}")
    return advantages.detach().to(bmask.device)


def sign_flip_share(token_advantages: Tensor, mask: Tensor, advantages: Tensor) -> Tensor:
    """Share of each row's real tokens whose advantage has the opposite sign to
    the row's ``A_i`` (0 for a redistribution with ``w >= 0``). ``(B,)``; NaN
    where ``A_i = 0`` or the row is empty."""
    a, bmask, _ = _signed(token_advantages, mask)
    adv = _row_advantages(advantages, bmask).to(a.dtype)
    n = bmask.sum(dim=1).to(a.dtype)
    flips = ((a * adv[:, None] < 0) & bmask).sum(dim=1).to(a.dtype)
    ok = (adv != 0) & (n > 0)
    return torch.where(ok, flips / n.clamp_min(1), math.nan)


def mass_ratio(token_advantages: Tensor, mask: Tensor, advantages: Tensor) -> Tensor:
    """``sum_t a_it / (T_i A_i)``: the row's advantage mass against GRPO's (1
    for a redistribution; below 1 where lambda-GRPO shares a prefix; anything
    for KTAE). ``(B,)``; NaN where ``A_i = 0`` or the row is empty."""
    a, bmask, _ = _signed(token_advantages, mask)
    adv = _row_advantages(advantages, bmask).to(a.dtype)
    n = bmask.sum(dim=1).to(a.dtype)
    den = n * adv
    return torch.where(den != 0, a.sum(dim=1) / torch.where(den != 0, den, 1.0), math.nan)


def signed_credit_correctness(
    token_advantages: Tensor,
    mask: Tensor,
    error_index: Tensor,
    *,
    advantages: Tensor | None = None,
    correct: Tensor | None = None,
    result_mask: Tensor | None = None,
    template_mask: Tensor | None = None,
    ks: Sequence[int] = (1, 3),
) -> dict[str, Tensor]:
    """:func:`credit_correctness` for signed per-token advantages ``(B, T)``:
    the same keys and the same rows (a located error and, if ``advantages``
    ``(B,)`` is given, ``A_i < 0``), with :func:`signed_prefix_blame`,
    :func:`signed_error_lift` and :func:`signed_topk_hit`, and the shares on
    :func:`abs_share_weights`. For ``a = A T w`` (``w >= 0``) every value equals
    :func:`credit_correctness` of ``w``."""
    bmask = as_bool_mask(mask)
    _, has = _check_index(error_index, bmask)
    rows = has
    if advantages is not None:
        rows = rows & (_row_advantages(advantages, bmask) < 0)
    idx = torch.where(rows, error_index.to(has.device), -1)
    out = {
        "prefix_blame": signed_prefix_blame(token_advantages, bmask, idx),
        "error_lift": signed_error_lift(token_advantages, bmask, idx),
    }
    for k in ks:
        out[f"top{k}_hit"] = signed_topk_hit(token_advantages, bmask, idx, k)
    if correct is not None:
        ok = correct.to(device=has.device, dtype=torch.bool)
        w = abs_share_weights(token_advantages, bmask)
        for name, sel in (("result_share", result_mask), ("template_share", template_mask)):
            if sel is not None:
                out[name] = torch.where(ok, weight_share(w, bmask, sel), math.nan)
    return out


__all__ = [
    "METRICS",
    "abs_share_weights",
    "mass_ratio",
    "sign_flip_share",
    "signed_credit_correctness",
    "signed_error_lift",
    "signed_prefix_blame",
    "signed_topk_hit",
    "correctness_summary",
    "credit_correctness",
    "error_lift",
    "prefix_blame",
    "topk_hit",
    "weight_share",
]
