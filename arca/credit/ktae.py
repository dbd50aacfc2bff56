"""``ktae``: Key-token Advantage Estimation (Sun et al., arXiv 2505.16826, NeurIPS 2025).

Within a group (the completions of one prompt), a token id's association with
correctness is measured on the 2x2 table of rollouts that contain it or not,
correct or not, and the resulting signed value ``k_v`` in ``(-top, top)`` is
*added* to the rollout advantage of every occurrence of that id in the group:
``a_it = A_i + k_{y_it}``. No extra forward pass. It changes a row's
advantage mass and can push a token of a wrong completion up.

The definition follows the official code (github.com/xiaolizh1/KTAE at
ea9fb77, ``verl/workers/actor/compute_key_tokens.py`` and
``compute_ktae_outcome_advantage_and_keytokens``); docs/credit-schemes.md
section 1 gives it with its sources and doubts, and
``tests/reference_schemes.py`` the plain-Python reference it is tested against.
Two deliberate differences from the released code: everything is float64,
and Fisher's two-sided sum uses SciPy's relative ``1e-7`` tie tolerance (the
official float32 sum drops tables tied by symmetry through rounding and scores
``F`` between 0.135 and 0.344 where the exact p-value is 1).

Options and their defaults are the official code's effective ones: ``alpha =
beta = 1`` (the run scripts set ``beta_ig = 2``, but the released call site
never reads it and trains with 1), ``gamma_tf = True``, ``top = 1``;
``zero_token_ids`` (default none) are forced to value 0, as the official code
forces Qwen2.5's ``<|endoftext|>`` (its end-of-sequence and pad token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from arca.credit.schemes import register_scheme

#: BM25's saturation constants, hard-coded in the official ``compute_tf``.
BM25_K1 = 2.0
BM25_B = 0.5
#: The official guard in the term-frequency ratio.
TF_EPS = 1e-5
#: SciPy's relative tolerance for tables as probable as the observed one.
FISHER_REL_TOL = 1e-7
_LN2 = math.log(2.0)


def _log_comb(n: Tensor, k: Tensor) -> Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def fisher_two_sided(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """Two-sided p-values of Fisher's exact test, one per table ``[[a, b], [c, d]]``.

    All ``(V,)`` integer-valued tensors. Rows: the rollout contains the token /
    lacks it; columns: correct / incorrect. The p-value sums the hypergeometric
    probabilities of every table with the same margins that is at most as
    probable as the observed one, within a relative ``1e-7`` (SciPy's rule),
    in float64 from ``lgamma``. Returns ``(V,)`` float64, at most 1.
    """
    a, b, c, d = (x.to(torch.float64) for x in (a, b, c, d))
    n = a + b + c + d
    row1, col1 = a + b, a + c
    top = int(n.max()) if n.numel() else 0
    k = torch.arange(top + 1, dtype=torch.float64, device=a.device)[None, :]  # (1, K)
    lo = (row1 + col1 - n).clamp_min(0)[:, None]
    hi = torch.minimum(row1, col1)[:, None]
    ok = (k >= lo) & (k <= hi)
    kk = torch.where(ok, k, lo)  # any admissible value where k is not: masked below
    log_p = (
        _log_comb(col1[:, None], kk)
        + _log_comb((n - col1)[:, None], row1[:, None] - kk)
        - _log_comb(n[:, None], row1[:, None])
    )
    p = torch.where(ok, log_p.exp(), 0.0)
    log_obs = _log_comb(col1, a) + _log_comb(n - col1, row1 - a) - _log_comb(n, row1)
    p_obs = log_obs.exp()[:, None]
    p_value = torch.where(ok & (p <= p_obs * (1 + FISHER_REL_TOL)), p, 0.0).sum(dim=1)
    return torch.where(n > 0, p_value.clamp_max(1.0), 1.0)


def _binary_entropy_bits(p: Tensor) -> Tensor:
    """``H(p)`` in bits, ``0 log 0 = 0``."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / _LN2


def ktae_values(
    ids: Tensor,
    row: Tensor,
    correct: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma_tf: bool = True,
    top: float = 1.0,
    zero_token_ids: Sequence[int] = (),
) -> tuple[Tensor, Tensor]:
    """Key-token values of one group.

    Args:
        ids: ``(N,)`` the group's real tokens, all rows concatenated.
        row: ``(N,)`` the row (``0 .. G-1``) each token belongs to.
        correct: ``(G,)`` bool, each row's correctness.

    Returns:
        ``(vocab, values)``: the distinct ids ``(V,)`` and each one's value
        ``(V,)`` float64. A group without a correct or without a wrong row gets
        all zeros. See the module docstring for the options.
    """
    G = correct.shape[0]
    vocab, inv = torch.unique(ids, return_inverse=True)
    V = vocab.shape[0]
    values = torch.zeros(V, dtype=torch.float64, device=ids.device)
    ok = correct.to(torch.bool)
    n_t, n_f = int(ok.sum()), G - int(ok.sum())
    if V == 0 or n_t == 0 or n_f == 0:
        return vocab, values
    f64 = torch.float64
    counts = torch.zeros(G, V, dtype=f64, device=ids.device)
    counts.index_put_((row, inv), torch.ones_like(inv, dtype=f64), accumulate=True)
    present = (counts > 0).to(f64)
    a = present[ok].sum(dim=0)
    b = present[~ok].sum(dim=0)
    c, d = n_t - a, n_f - b
    # Association: Fisher's score and the information gain (bits), each only
    # when its weight is non-zero (the official code tests the weights for truth).
    if alpha:
        p = fisher_two_sided(a, b, c, d)
        fisher = torch.where((p - 1).abs() <= 1e-9, 0.0, torch.exp(-2 * p))
    else:
        fisher = torch.zeros_like(a)
    if beta:
        h_y = _binary_entropy_bits(torch.tensor(n_t / G, dtype=f64, device=ids.device))
        has, lacks = a + b, c + d
        h_has = _binary_entropy_bits(a / has.clamp_min(1))
        h_lacks = torch.where(lacks > 0, _binary_entropy_bits(c / lacks.clamp_min(1)), 0.0)
        ig = h_y - (has / G) * h_has - (lacks / G) * h_lacks
    else:
        ig = torch.zeros_like(a)
    # Direction: half of Cohen's h (the official compute_Cohen) plus the BM25
    # term-frequency contrast, which counts occurrences rather than presence.
    x = torch.asin(torch.sqrt(a / n_t)) - torch.asin(torch.sqrt(b / n_f))
    if gamma_tf:
        lengths = counts.sum(dim=1)
        tok_t, tok_f = float(lengths[ok].sum()), float(lengths[~ok].sum())
        avg = (tok_t + tok_f) / 2

        def tf(count: Tensor, class_tokens: float) -> Tensor:
            if class_tokens == 0:  # a class of empty completions: no frequency
                return torch.zeros_like(count)
            f = count / class_tokens
            big_k = BM25_K1 * (1 - BM25_B + BM25_B * class_tokens / avg)
            return f * (BM25_K1 + 1) / (f + big_k)

        tf_t = tf(counts[ok].sum(dim=0), tok_t)
        tf_f = tf(counts[~ok].sum(dim=0), tok_f)
        x = x + tf_t / (tf_f + TF_EPS) - tf_f / (tf_t + TF_EPS)
    s = (alpha * fisher + beta * ig) * x / (alpha + beta)
    values = top * torch.tanh(s / 2)  # == (sigmoid(s) - 1/2) * 2 * top
    if zero_token_ids:
        zero = torch.tensor(list(zero_token_ids), dtype=vocab.dtype, device=vocab.device)
        values = torch.where(torch.isin(vocab, zero), 0.0, values)
    return vocab, values


def _check_options(alpha: float, beta: float, top: float) -> None:
    for name, v in (("alpha", alpha), ("beta", beta), ("top", top)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"ktae: {name} must be a finite number >= 0, got {v!r}")
    if alpha + beta <= 0:
        raise ValueError("ktae: alpha + beta must be > 0 (the values divide by it)")


def ktae_token_advantages(
    mask: Tensor,
    completion_ids: Tensor,
    correct: Tensor,
    group: Tensor,
    advantages: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma_tf: bool = True,
    top: float = 1.0,
    zero_token_ids: Sequence[int] = (),
) -> Tensor:
    """KTAE's per-token advantages ``a_it = A_i + k_{y_it}`` ``(B, T)``.

    Args:
        mask: ``(B, T)`` bool, 1 = real token (padding on either side; only
            real tokens are counted).
        completion_ids: ``(B, T)`` integer token ids.
        correct: ``(B,)`` bool, each completion's correctness.
        group: ``(B,)`` integer group of each row (the completions of one
            prompt); rows of a group need not be consecutive.
        advantages: ``(B,)`` the rollout advantages ``A_i``.

    Returns ``(B, T)`` in ``advantages``' float dtype (float32 unless float64),
    zero on padding. The statistics run per group (a loop over groups), in float64.
    """
    _check_options(alpha, beta, top)
    dt = torch.float64 if advantages.dtype == torch.float64 else torch.float32
    out = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
    ok = correct.to(device=mask.device, dtype=torch.bool)
    groups = group.to(mask.device)
    for g in torch.unique(groups):
        rows = (groups == g).nonzero().flatten()
        m = mask[rows]
        r_idx, t_idx = m.nonzero(as_tuple=True)
        ids = completion_ids[rows][r_idx, t_idx]
        vocab, values = ktae_values(
            ids,
            r_idx,
            ok[rows],
            alpha=alpha,
            beta=beta,
            gamma_tf=gamma_tf,
            top=top,
            zero_token_ids=zero_token_ids,
        )
        per_token = values[torch.searchsorted(vocab, ids)]
        out[rows[r_idx], t_idx] = per_token
    a = advantages.to(device=mask.device, dtype=torch.float64)[:, None] + out
    return torch.where(mask, a, 0.0).to(dt)


@register_scheme(
    "ktae",
    requires=("completion_ids", "correct", "group", "advantages"),
    options={"alpha": 1.0, "beta": 1.0, "gamma_tf": True, "top": 1.0, "zero_token_ids": ()},
    kind="advantages",
    description="KTAE (arXiv 2505.16826): A_i plus each token id's key-token value from "
    "Fisher's test, information gain and term frequency over the group's correct and wrong "
    "completions; changes the advantage mass, can flip signs",
)
def _ktae(
    *,
    mask: Tensor,
    completion_ids: Tensor,
    correct: Tensor,
    group: Tensor,
    advantages: Tensor,
    alpha: float,
    beta: float,
    gamma_tf: bool,
    top: float,
    zero_token_ids: Sequence[int],
) -> Tensor:
    return ktae_token_advantages(
        mask,
        completion_ids,
        correct,
        group,
        advantages,
        alpha=alpha,
        beta=beta,
        gamma_tf=gamma_tf,
        top=top,
        zero_token_ids=zero_token_ids,
    )


__all__ = ["fisher_two_sided", "ktae_token_advantages", "ktae_values"]
