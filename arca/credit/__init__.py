"""arca.credit: token-level credit assignment on padded ``(B, T)`` batches.

Pure torch, no trainer imports: use it from TRL (``arca.trainer``), verl, or a
hand-written loop. Every function takes a completion ``mask`` (1 = real token,
0 = padding on either side), never loops over the batch in Python, and returns
tensors with no autograd history (the weights are constants in the estimator).

Typical use::

    from arca.credit import token_weights, group_advantages, weighted_pg_loss
    adv = group_advantages(rewards, group_size=4)                   # (B,)
    w = token_weights("arca", mask=mask, h_adapted=h, h_base=h0)    # (B, T)
    loss = weighted_pg_loss(logps, adv, w, mask)

Where a task can say which token of a wrong completion was the first error
(``error_index``, from :mod:`arca.tasks.locate`), :func:`credit_correctness`
says whether the credit lands there.
"""

from arca.credit.advantages import ESTIMATORS, Estimator, group_advantages
from arca.credit.correctness import (
    METRICS,
    correctness_summary,
    credit_correctness,
    error_lift,
    prefix_blame,
    topk_hit,
    weight_share,
)
from arca.credit.diagnostics import (
    REGIMES,
    classify_regime,
    concentration_rows,
    concentration_summary,
    effective_token_count,
    effective_token_ratio,
    gini,
    rank_correlation,
)
from arca.credit.loss import weighted_pg_loss
from arca.credit.schemes import (
    BUILTIN_SCHEMES,
    Scheme,
    available_schemes,
    compares_with_base,
    get_scheme,
    hidden_residual_norm,
    next_real_index,
    register_scheme,
    residual_noise_floor,
    token_scores,
    unregister_scheme,
)
from arca.credit.weights import EpsMode, normalize, token_weights

__all__ = [
    "BUILTIN_SCHEMES",
    "ESTIMATORS",
    "METRICS",
    "REGIMES",
    "classify_regime",
    "compares_with_base",
    "EpsMode",
    "Estimator",
    "Scheme",
    "available_schemes",
    "concentration_rows",
    "concentration_summary",
    "correctness_summary",
    "credit_correctness",
    "effective_token_count",
    "effective_token_ratio",
    "error_lift",
    "get_scheme",
    "gini",
    "group_advantages",
    "hidden_residual_norm",
    "residual_noise_floor",
    "next_real_index",
    "normalize",
    "prefix_blame",
    "rank_correlation",
    "register_scheme",
    "token_scores",
    "token_weights",
    "topk_hit",
    "unregister_scheme",
    "weight_share",
    "weighted_pg_loss",
]
