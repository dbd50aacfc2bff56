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

Schemes are of three kinds (:data:`arca.credit.schemes.KINDS`): salience (the
paper's: raw scores, then :func:`normalize`), weights (``oracle``, ``oar_g``:
final weights, rows summing to 1) and advantages (``ktae``, ``lambda_grpo``:
per-token advantages that change the advantage mass). :func:`token_advantages`
gives the ``(B, T)`` per-token advantages of any of them; importing this
package registers the field's schemes (:data:`FIELD_SCHEMES`).
"""

# The field's schemes (oracle, ktae, lambda_grpo, oar_g) register themselves when imported.
from arca.credit import ktae, oar, oracle, process_sets  # noqa: F401
from arca.credit.advantages import ESTIMATORS, Estimator, group_advantages
from arca.credit.correctness import (
    METRICS,
    abs_share_weights,
    correctness_summary,
    credit_correctness,
    error_lift,
    mass_ratio,
    prefix_blame,
    sign_flip_share,
    signed_credit_correctness,
    signed_error_lift,
    signed_prefix_blame,
    signed_topk_hit,
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
    CEILING_TAG,
    FIELD_SCHEMES,
    GROUND_TRUTH_SCHEMES,
    KINDS,
    Scheme,
    available_schemes,
    compares_with_base,
    get_scheme,
    hidden_residual_norm,
    next_real_index,
    register_scheme,
    residual_noise_floor,
    scheme_kind,
    scheme_label,
    token_scores,
    unregister_scheme,
)
from arca.credit.weights import EpsMode, normalize, token_advantages, token_credit, token_weights

__all__ = [
    "BUILTIN_SCHEMES",
    "CEILING_TAG",
    "FIELD_SCHEMES",
    "GROUND_TRUTH_SCHEMES",
    "KINDS",
    "abs_share_weights",
    "mass_ratio",
    "scheme_kind",
    "scheme_label",
    "sign_flip_share",
    "signed_credit_correctness",
    "signed_error_lift",
    "signed_prefix_blame",
    "signed_topk_hit",
    "token_advantages",
    "token_credit",
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
