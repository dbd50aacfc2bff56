"""The paper's degeneration propositions (Appendix C.6-C.7), checked numerically.

For a base model with a LoRA adapter, logits are ``z_t = W_lm h_t`` and the
adapter moves the last hidden state by ``dh_t = h_adapted_t - h_base_t``.
With ``L = ||W_lm||_op`` and ``beta = max_t ||dh_t||``:

- **Prop. 2** ``|log pi_theta(y_t) - log pi_ref(y_t)| <= 2 L beta`` for every
  token. Proof sketch: ``|d log softmax(z)_y| <= |dz_y| + max_j |dz_j|
  <= 2 ||W dh_t||_inf <= 2 L ||dh_t||``. It holds per token with ``||dh_t||``
  in place of ``beta``; :func:`check_prop2` reports the tightest ratio of
  both forms.
- **Prop. 1** as stated, ``||w_surp - w_surp,ref||_1 <= 4 L beta / sum_t
  alpha_t^{surp,ref}``, is **missing a factor of T**. Normalisation is
  2-Lipschitz in l1 relative to the reference sum:
  ``||x/X - y/Y||_1 <= 2 ||x - y||_1 / Y``, and ``||x - y||_1 <= sum_t 2 L
  ||dh_t|| <= 2 L T beta``, so what holds in general is
  ``||dw||_1 <= 4 L sum_t ||dh_t|| / sum_t alpha_t^ref <= 4 L T beta / sum_t
  alpha_t^ref``. Counterexample to the stated constant (:func:`prop1_counterexample`):
  vocabulary 2, ``d = 1``, ``W_lm = [[1], [-1]]`` (``L = sqrt 2``), base hidden
  state 0, ``dh_t = beta`` and tokens alternating 0, 1: every token's
  surprisal moves by about ``beta`` in alternating directions, so
  ``||dw||_1 ~ beta / log 2`` while the stated bound is ``4 sqrt(2) beta /
  (T log 2)``, exceeded for every ``T >= 6``. :func:`check_prop1` checks both.
- **Prop. 3** ``Var_t(alpha^ARCA_t) >= max_l V_l - O(...)`` with ``V_l =
  Var_t(||B_l A_l x_{l,t}||)``: :func:`capture_lora_contributions` records each
  LoRA module's contribution per position with hooks, and :func:`check_prop3`
  compares the variances. The per-module outputs live in each module's own
  space (q/k/v/gate/up outputs never enter the residual stream directly), so
  this is a comparison of magnitudes, not a bound that must hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from arca.credit import normalize
from arca.scoring import capture_adapter_deltas

#: float32 rounding allowance when checking an inequality on log-probs.
LOGP_TOLERANCE = 1e-5


@torch.no_grad()
def operator_norm(weight: Tensor, chunk: int = 8192) -> float:
    """Largest singular value of a ``(V, d)`` matrix, exactly.

    Accumulates the ``min(V, d)``-square Gram matrix in float64 over row
    chunks, then takes its largest eigenvalue: memory ``O(min(V,d)^2 + chunk*d)``,
    never a copy of the whole matrix in float64 and never an SVD of it.
    """
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    w = weight.detach()
    if w.shape[0] < w.shape[1]:
        w = w.T
    d = w.shape[1]
    gram = torch.zeros(d, d, dtype=torch.float64, device=w.device)
    for i in range(0, w.shape[0], chunk):
        c = w[i : i + chunk].to(torch.float64)
        gram += c.T @ c
    return float(torch.linalg.eigvalsh(gram)[-1].clamp_min(0).sqrt())


def lm_head_weight(model: nn.Module) -> Tensor:
    """``W_lm`` of a (peft-wrapped) causal LM: the base model's output embedding."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError("the model has no output embedding (lm_head) to take L from")
    w = head.weight
    # A LoRA-wrapped head keeps the frozen matrix in base_layer.
    return getattr(getattr(head, "base_layer", None), "weight", w)


def check_prop2(
    logps: Tensor, ref_logps: Tensor, residual: Tensor, mask: Tensor, L: float
) -> dict[str, Any]:
    """Prop. 2 on a batch: ``|dlogp_t| <= 2 L beta`` and per token ``<= 2 L ||dh_t||``.

    Args:
        logps, ref_logps: ``(B, T)`` adapted and base log-probs of the tokens.
        residual: ``(B, T)`` ``||dh_t||``.
        mask: ``(B, T)`` 1 = real token.
        L: ``||W_lm||_op``.

    Returns ``beta``, ``bound`` (``2 L beta``), ``max_abs_dlogp``,
    ``ratio`` (max ``|dlogp|`` / bound, <= 1 when it holds), ``token_ratio``
    (max over tokens of ``|dlogp_t| / (2 L ||dh_t||)``), ``violations`` (tokens
    over the per-token bound by more than :data:`LOGP_TOLERANCE`) and the first
    violation's ``(row, position)``.
    """
    m = mask.bool()
    d = (logps.float() - ref_logps.float()).abs()
    r = residual.float()
    beta = float(r[m].max()) if m.any() else 0.0
    bound = 2 * L * beta
    max_d = float(d[m].max()) if m.any() else 0.0
    per_bound = 2 * L * r
    over = m & (d > per_bound + LOGP_TOLERANCE)
    tok = torch.where(m & (per_bound > 0), d / per_bound.clamp_min(1e-30), 0.0)
    first = over.nonzero()[0].tolist() if over.any() else None
    return {
        "beta": beta,
        "bound": bound,
        "max_abs_dlogp": max_d,
        "ratio": max_d / bound if bound > 0 else (0.0 if max_d == 0 else math.inf),
        "token_ratio": float(tok.max()) if m.any() else 0.0,
        "violations": int(over.sum()),
        "first_violation": first,
        "tokens": int(m.sum()),
    }


def check_prop1(
    logps: Tensor,
    ref_logps: Tensor,
    residual: Tensor,
    mask: Tensor,
    L: float,
    eps: float = 1e-8,
) -> dict[str, Tensor]:
    """Prop. 1 per completion, the paper's constant and the corrected one.

    Returns ``(B,)`` tensors: ``l1`` = ``||w_surp - w_surp,ref||_1``,
    ``stated`` = ``4 L beta_i / sum_t alpha_t^ref`` (``beta_i`` the row's max
    ``||dh_t||``), ``corrected`` = ``4 L sum_t ||dh_t|| / sum_t alpha_t^ref``,
    and boolean ``holds_stated``, ``holds_corrected`` (with
    :data:`LOGP_TOLERANCE` relative slack for rounding).
    """
    m = mask.bool()
    a = torch.where(m, -logps.float(), 0.0)
    a_ref = torch.where(m, -ref_logps.float(), 0.0)
    w, w_ref = normalize(a, m, eps), normalize(a_ref, m, eps)
    l1 = torch.where(m, (w - w_ref).abs(), 0.0).sum(dim=1)
    s_ref = a_ref.sum(dim=1)
    r = torch.where(m, residual.float(), 0.0)
    beta = r.amax(dim=1)
    den = s_ref.clamp_min(1e-30)
    stated = 4 * L * beta / den
    corrected = 4 * L * r.sum(dim=1) / den
    tol = LOGP_TOLERANCE * (1 + l1)
    return {
        "l1": l1,
        "stated": stated,
        "corrected": corrected,
        "holds_stated": l1 <= stated + tol,
        "holds_corrected": l1 <= corrected + tol,
    }


def prop1_counterexample(T: int = 8, beta: float = 0.1) -> dict[str, float]:
    """The two-token, one-dimensional counterexample to Prop. 1's stated
    constant (module docstring), computed exactly. Returns ``l1``, ``stated``
    and ``corrected``; ``l1 > stated`` for ``T >= 6``."""
    W = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    L = operator_norm(W)
    tokens = torch.arange(T) % 2
    z_base = torch.zeros(T, 2, dtype=torch.float64)
    z_adapted = (W @ torch.full((1, T), beta, dtype=torch.float64)).T
    pick = tokens.unsqueeze(1)
    ref = z_base.log_softmax(-1).gather(1, pick).T
    ada = z_adapted.log_softmax(-1).gather(1, pick).T
    res = check_prop1(ada, ref, torch.full((1, T), beta), torch.ones(1, T), L, eps=0.0)
    return {k: float(res[k][0]) for k in ("l1", "stated", "corrected")} | {"L": L, "T": T}


@contextmanager
def capture_lora_contributions(
    model: nn.Module, n_completion: int
) -> Iterator[dict[str, list[Tensor]]]:
    """``||B_l A_l x_{l,t}||`` (times LoRA's scaling) of every active LoRA
    module, at the positions that emit the last ``n_completion`` tokens (the
    positions ARCA's residual is read at): ``{module name: [(b, C) per call]}``.

    The norms of :func:`arca.scoring.capture_adapter_deltas`; passes run inside
    ``disable_adapter()`` skip LoRA and record nothing.
    """
    with capture_adapter_deltas(model, n_completion, reduce=_row_norm) as captured:
        yield captured


def _row_norm(d: Tensor) -> Tensor:
    return d.norm(dim=-1)


def check_prop3(residual: Tensor, contributions: dict[str, Tensor], mask: Tensor) -> dict[str, Any]:
    """Per completion: ``Var_t(alpha^ARCA)`` against ``max_l V_l``.

    Args:
        residual: ``(B, T)`` ``||dh_t||`` (ARCA's raw score).
        contributions: module name -> ``(B, T)`` ``||v_{l,t}||``.
        mask: ``(B, T)`` 1 = real token.

    Returns ``var_arca`` and ``max_v`` ``(B,)``, ``argmax`` (module name per
    row) and ``ratio`` ``(B,)`` = ``var_arca / max_v``.
    """
    m = mask.bool()
    n = m.sum(dim=1).clamp_min(1)

    def var(x: Tensor) -> Tensor:
        x = torch.where(m, x.float(), 0.0)
        mu = x.sum(dim=1, keepdim=True) / n.unsqueeze(1)
        return torch.where(m, (x - mu).square(), 0.0).sum(dim=1) / n

    var_arca = var(residual)
    if not contributions:
        nan = torch.full_like(var_arca, math.nan)
        return {"var_arca": var_arca, "max_v": nan, "argmax": [None] * len(var_arca), "ratio": nan}
    names = list(contributions)
    v = torch.stack([var(contributions[k]) for k in names], dim=1)
    max_v, idx = v.max(dim=1)
    ratio = torch.where(max_v > 0, var_arca / max_v.clamp_min(1e-30), math.nan)
    return {
        "var_arca": var_arca,
        "max_v": max_v,
        "argmax": [names[i] for i in idx.tolist()],
        "ratio": ratio,
    }
