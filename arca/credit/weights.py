"""Within-trajectory normalisation of salience into token weights (paper eq. 8)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from arca.credit._checks import as_bool_mask, check_finite, check_like_mask, check_row, float_dtype
from arca.credit.correctness import abs_share_weights
from arca.credit.schemes import get_scheme, run_scheme, token_scores

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
    """``(B, T)`` weights of ``scheme``, each non-empty row summing to 1.

    A salience scheme: :func:`token_scores` then :func:`normalize` (``eps``,
    ``eps_mode``). A ``"weights"`` scheme (``oracle``, ``oar_g``): its own
    weights, checked (finite, ``>= 0``, rows summing to 1 within 1e-4) and
    renormalised exactly; ``eps`` does not apply. A scheme of kind
    ``"advantages"`` has no weights: :func:`token_advantages` gives its
    per-token advantages (and :func:`arca.credit.abs_share_weights` where
    their magnitude goes).

    ``inputs`` are the scheme's inputs (``logps``, ``ref_logps``,
    ``entropies``, ``h_adapted``, ``h_base``, ``h_shift``, the row inputs, or a
    registered scheme's own); ``options`` its settings (e.g. ``high_entropy``'s
    ``quantile``).
    """
    spec = get_scheme(scheme)
    if spec.kind == "salience":
        scores = token_scores(scheme, mask=mask, options=options, **inputs)  # type: ignore[arg-type]
        return normalize(scores, mask, eps, eps_mode=eps_mode)
    if spec.kind == "advantages":
        raise ValueError(
            f"scheme {scheme!r} is of kind 'advantages': it gives per-token advantages that "
            "change the advantage mass, not weights; use arca.credit.token_advantages (and "
            "abs_share_weights for where their magnitude goes)"
        )
    bmask, given, raw = run_scheme(spec, mask, inputs, options=options)
    # The dtype of the float inputs (float32 unless one is float64), as salience weights.
    dt = float_dtype(*(x for x in given.values() if x.is_floating_point()))
    return _checked_weights(scheme, raw, bmask, dt)


def _checked_weights(scheme: str, raw: Tensor, bmask: Tensor, dt: torch.dtype) -> Tensor:
    """A ``"weights"`` scheme's output made exact, in ``dt``: zero on padding,
    each non-empty row divided by its sum (an empty row all zero)."""
    with torch.no_grad():
        w = torch.where(bmask, raw.detach().to(dt), 0.0)
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"scheme {scheme!r} produced non-finite weights at real positions")
        if bool((w < 0).any()):
            raise ValueError(f"scheme {scheme!r} produced negative weights")
        total = w.sum(dim=1, keepdim=True)
        nonempty = bmask.any(dim=1, keepdim=True)
        off = nonempty & ((total - 1).abs() > 1e-4)
        if bool(off.any()):
            row = int(off.squeeze(1).nonzero()[0])
            raise ValueError(
                f"scheme {scheme!r} is of kind 'weights' but row {row} sums to "
                f"{float(total[row]):.6g}, not 1"
            )
        return torch.where(nonempty, w / torch.where(total > 0, total, 1.0), 0.0)


def token_credit(
    scheme: str,
    *,
    mask: Tensor,
    advantages: Tensor,
    eps: float = 1e-8,
    eps_mode: EpsMode = "absolute",
    options: Mapping[str, Any] | None = None,
    **inputs: Tensor | bool | None,
) -> tuple[Tensor, Tensor]:
    """``(token advantages, weights)`` of ``scheme`` for any kind, both ``(B, T)``.

    * salience and ``"weights"`` schemes: the weights ``w`` of
      :func:`token_weights` and the token advantages ``A_i * T_i * w_it``
      (``T_i`` the row's real tokens): a redistribution that keeps each row's
      advantage mass ``T_i A_i``, which is what the trainer hands TRL;
    * ``"advantages"`` schemes (``ktae``, ``lambda_grpo``): the scheme's own
      token advantages, as they are (never renormalised), and as weights the
      share of each token in the row's push magnitude,
      ``|a_it| / sum_k |a_ik|`` (:func:`arca.credit.abs_share_weights`).

    ``advantages`` is ``(B,)``, the completions' scalar advantages (also given
    to a scheme that requires it). Zero on padding; no autograd history.
    """
    bmask = as_bool_mask(mask)
    check_row(advantages, bmask, "advantages", "float")
    spec = get_scheme(scheme)
    given = {**inputs, "advantages": advantages}
    if spec.kind == "advantages":
        _, _, raw = run_scheme(spec, bmask, given, options=options)
        dt = float_dtype(raw, advantages) if raw.is_floating_point() else torch.float32
        with torch.no_grad():
            a = torch.where(bmask, raw.detach().to(dt), 0.0)
            if not bool(torch.isfinite(a).all()):
                raise ValueError(
                    f"scheme {scheme!r} produced non-finite advantages at real positions"
                )
        return a, abs_share_weights(a, bmask)
    needed = {k: v for k, v in given.items() if k != "advantages" or k in spec.requires}
    w = token_weights(scheme, mask=bmask, eps=eps, eps_mode=eps_mode, options=options, **needed)
    lengths = bmask.sum(dim=1, keepdim=True).to(w.dtype)
    a = advantages.detach().unsqueeze(1).to(w.dtype) * lengths * w
    return a, w


def token_advantages(
    scheme: str,
    *,
    mask: Tensor,
    advantages: Tensor,
    eps: float = 1e-8,
    eps_mode: EpsMode = "absolute",
    options: Mapping[str, Any] | None = None,
    **inputs: Tensor | bool | None,
) -> Tensor:
    """``(B, T)`` per-token advantages of ``scheme`` from the ``(B,)``
    ``advantages``, for any kind: ``A_i * T_i * w_it`` for a salience or
    ``"weights"`` scheme, the scheme's own for an ``"advantages"`` one (see
    :func:`token_credit`, which also returns the weights)."""
    return token_credit(
        scheme,
        mask=mask,
        advantages=advantages,
        eps=eps,
        eps_mode=eps_mode,
        options=options,
        **inputs,
    )[0]


__all__ = ["EpsMode", "normalize", "token_advantages", "token_credit", "token_weights"]
