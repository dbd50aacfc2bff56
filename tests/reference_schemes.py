"""Plain-Python reference implementations of published token-credit schemes.

Readable top to bottom, loops over rows and tokens, no numpy or torch: these
are the oracles that a vectorised integration in ``arca.credit`` is to be
tested against. ``docs/credit-schemes.md`` gives each scheme's definition,
sources and uncertainties; every function below names the source it follows.

Sources (verified where stated, see the doc for what could not be verified):

* **KTAE** (Sun et al., arXiv 2505.16826, NeurIPS 2025). The paper's body was not
  readable in the stored corpus beyond its abstract; the formulas here follow the
  official code, github.com/xiaolizh1/KTAE at ea9fb77 (2025-05-21),
  ``verl/workers/actor/compute_key_tokens.py`` (``fisher_exact_test``,
  ``calculate_ig``, ``compute_tf``, ``compute_Cohen``, ``ComputeKeyTokens``) and
  ``verl/trainer/ppo/core_algos.py``
  (``compute_ktae_outcome_advantage_and_keytokens``).
* **OAR-G** (Li et al., arXiv 2601.07408, ACL 2026). Official code,
  github.com/Valsure/Outcome-Grounded-Advantage-Reshaping at 8dbc478,
  ``OAR-main.py`` (``calculate_token_importance_gradient``,
  ``calculate_oar_hybrid_weights``, ``compute_loss``).
* **lambda-GRPO** (Sullivan and Koller, "GRPO is Secretly a Process Reward Model",
  arXiv 2509.21154). Official code, github.com/coli-saar/grpo-prm at 6bc58b1,
  ``lambda_grpo/utils.py`` (``InfPRMTree``, ``InfPRMNode._loss_scale``) and
  ``lambda_grpo/trainer.py`` (``_sample``, ``_step``). Not to be confused with
  GRPO-lambda (arXiv 2510.00194), whose equations could not be read here and which
  has no reference implementation in this file.

Conventions (all explicit, all float64):

* A *group* is the ``G`` completions of one prompt; a batch is consecutive groups
  (``[p0, p0, p0, p0, p1, ...]``, TRL's layout). A completion is a list of token
  ids with no padding: the caller strips padding. Whether the EOS token is in the
  list is the caller's choice (TRL's and verl's completion masks include it).
* "Correct" for KTAE is ``reward > 0``, as in the official code.
* Logarithms: natural log for the hypergeometric probabilities; base 2 for
  KTAE's information gain (the official ``torch.log2``).
* Fisher's exact test is two-sided, summing the probabilities of every table
  (same margins) at most as probable as the observed one; ties are decided with a
  relative tolerance of ``1e-7`` (SciPy's convention). The official code compares
  float32 probabilities with no tolerance: see ``fisher_exact_two_sided``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# --------------------------------------------------------------------------
# Shared: the group baseline
# --------------------------------------------------------------------------


def grpo_advantages(rewards: Sequence[float], group_size: int, eps: float) -> list[float]:
    """``(R_i - mean_g) / (std_g + eps)`` per group, with the unbiased (n - 1) std.

    The official KTAE code uses ``eps = 1e-6`` (verl's GRPO), the official
    lambda-GRPO code ``eps = 1e-4``; both use ``torch.std`` (unbiased). A group of
    equal rewards gets 0 (its numerator is 0 for every member).
    """
    if group_size < 2 or len(rewards) % group_size:
        raise ValueError("rewards must be whole groups of group_size >= 2")
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        group = [float(r) for r in rewards[start : start + group_size]]
        mean = sum(group) / group_size
        var = sum((r - mean) ** 2 for r in group) / (group_size - 1)
        std = math.sqrt(var)
        for r in group:
            out.append((r - mean) / (std + eps))
    return out


# --------------------------------------------------------------------------
# KTAE: key-token values from the group's correct and incorrect rollouts
# --------------------------------------------------------------------------


def log_comb(n: int, k: int) -> float:
    """``log C(n, k)`` through ``lgamma`` (the official code's ``log_comb``)."""
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_log_pmf(k: int, n: int, row1: int, col1: int) -> float:
    """Log-probability that the top-left cell is ``k`` given the margins.

    ``n`` rollouts, ``col1`` of them correct, ``row1`` of them containing the
    token: ``P(k) = C(col1, k) C(n - col1, row1 - k) / C(n, row1)``.
    """
    return log_comb(col1, k) + log_comb(n - col1, row1 - k) - log_comb(n, row1)


def fisher_exact_two_sided(a: int, b: int, c: int, d: int, rel_tol: float = 1e-7) -> float:
    """Two-sided p-value of Fisher's exact test of the table ``[[a, b], [c, d]]``.

    KTAE's table for a token (official ``ComputeKeyTokens.compute_key_tokens``):
    ``a`` = correct rollouts containing it, ``b`` = incorrect rollouts containing
    it, ``c`` = correct rollouts without it, ``d`` = incorrect rollouts without
    it. Rows: contains / lacks the token; columns: correct / incorrect.

    Every table with the same margins has ``k`` in ``[max(0, row1 + col1 - n),
    min(row1, col1)]``; the p-value is the sum of ``P(k)`` over the ``k`` with
    ``P(k) <= P(a) * (1 + rel_tol)``, computed from log-probabilities. The
    official ``fisher_exact_test`` is the same sum in float32 with
    ``P(k) <= P(a)`` exactly, so a table tied with the observed one by symmetry can
    be left out there by a rounding error; ``rel_tol=0`` reproduces that rule in
    float64. An empty table (``n = 0``) has p-value 1.
    """
    n = a + b + c + d
    if min(a, b, c, d) < 0:
        raise ValueError("table cells must be >= 0")
    if n == 0:
        return 1.0
    row1 = a + b
    col1 = a + c
    k_lo = max(0, row1 + col1 - n)
    k_hi = min(row1, col1)
    log_obs = hypergeom_log_pmf(a, n, row1, col1)
    p_obs = math.exp(log_obs)
    p_value = 0.0
    for k in range(k_lo, k_hi + 1):
        p_k = math.exp(hypergeom_log_pmf(k, n, row1, col1))
        if p_k <= p_obs * (1.0 + rel_tol):
            p_value += p_k
    return min(p_value, 1.0)


def _entropy_bits(counts: Sequence[int]) -> float:
    """Entropy in bits of the distribution ``counts / sum(counts)``; 0 for no counts."""
    total = sum(counts)
    if total == 0:
        return 0.0
    h = 0.0
    for k in counts:
        if k > 0:
            p = k / total
            h -= p * math.log2(p)
    return h


def information_gain(a: int, b: int, c: int, d: int) -> float:
    """``IG = H(Y) - H(Y | X)`` in bits (official ``calculate_ig``).

    ``Y`` is correctness (correct = ``a + c``, incorrect = ``b + d``), ``X`` is
    whether the rollout contains the token (contains = ``a + b``, lacks = ``c + d``).
    An empty table gives 0.
    """
    n = a + b + c + d
    if n == 0:
        return 0.0
    h_y = _entropy_bits([a + c, b + d])
    h_y_given_x = ((a + b) / n) * _entropy_bits([a, b]) + ((c + d) / n) * _entropy_bits([c, d])
    return h_y - h_y_given_x


def ktae_fisher_score(p_value: float) -> float:
    """Official transform of the p-value: ``exp(-2 p)`` if ``p != 1``, else 0.

    The score jumps from ``exp(-2) ~ 0.135`` to 0 at ``p = 1`` (no evidence at
    all). In float64 the sum of probabilities can land a hair under 1 when every
    table counts, so ``p`` within ``1e-9`` of 1 is treated as 1 here. The official
    float32 sum misses this for most such tables (it returns 0.533 to 1.0000029
    where the exact p-value is 1, for G <= 16), so it scores them 0.135 to 0.344:
    see the doc; this reference follows the exact rule.
    """
    if math.isclose(p_value, 1.0, rel_tol=0.0, abs_tol=1e-9):
        return 0.0
    return math.exp(-2.0 * p_value)


def ktae_cohen_h(a: int, b: int, c: int, d: int) -> float:
    """Official ``compute_Cohen``: ``asin(sqrt(p_c)) - asin(sqrt(p_w))``.

    ``p_c = a / (a + c)`` is the share of correct rollouts containing the token,
    ``p_w = b / (b + d)`` the share of incorrect ones. Note: no factor 2, so it is
    half of Cohen's textbook ``h``. (The official code adds ``1e-10`` to the
    denominators; both are >= 1 whenever KTAE computes values, so it is omitted.)
    """
    p_c = a / (a + c)
    p_w = b / (b + d)
    return math.asin(math.sqrt(p_c)) - math.asin(math.sqrt(p_w))


def ktae_bm25_tf(
    count: int, class_tokens: int, avg_tokens: float, k1: float = 2.0, b: float = 0.5
) -> float:
    """Official ``compute_tf``: a BM25-style saturated term frequency of a token in
    one class (all correct rollouts pooled, or all incorrect ones pooled).

    ``f = count / class_tokens`` (occurrences of the token over the class's real
    tokens), ``K = k1 (1 - b + b class_tokens / avg_tokens)`` with ``avg_tokens``
    the mean of the two classes' token totals, and ``tf = f (k1 + 1) / (f + K)``.
    ``k1 = 2.0`` and ``b = 0.5`` are hard-coded in the official code.
    """
    f = count / class_tokens
    big_k = k1 * (1.0 - b + b * class_tokens / avg_tokens)
    return f * (k1 + 1.0) / (f + big_k)


def ktae_token_values(
    completions: Sequence[Sequence[int]],
    correct: Sequence[bool],
    *,
    alpha: float = 1.0,
    beta_ig: float = 1.0,
    gamma_tf: float = 1.0,
    top: float = 1.0,
    tf_eps: float = 1e-5,
    zero_token_ids: Sequence[int] = (),
) -> dict[int, float]:
    """Key-token value of every token id in one group (official ``ComputeKeyTokens``).

    For each token id ``v`` that occurs in the group, with the table
    ``(a, b, c, d)`` of :func:`fisher_exact_two_sided` (presence counted once per
    rollout):

    * association ``F = ktae_fisher_score(p_fisher)`` if ``alpha`` else 0, and
      ``IG = information_gain`` if ``beta_ig`` else 0;
    * direction ``x = ktae_cohen_h``, plus, if ``gamma_tf``,
      ``tf_c / (tf_w + tf_eps) - tf_w / (tf_c + tf_eps)`` with the BM25 term
      frequencies of ``v`` in the correct and incorrect classes;
    * ``s = (alpha F + beta_ig IG) x / (alpha + beta_ig)`` and the value
      ``top * 2 (sigmoid(s) - 1/2) = top * tanh(s / 2)``, in ``(-top, top)``.

    ``alpha``, ``beta_ig``, ``gamma_tf`` act as on/off switches and weights as in
    the official code (it tests them for truth). The official call site hard-codes
    ``alpha = beta_ig = gamma_tf = top = 1`` (its run scripts set
    ``beta_ig=2.0``, which that call site does not read). A group with no correct
    or no incorrect rollout gets no values (every token 0). ``zero_token_ids`` are
    forced to 0: the official code zeroes id 151643, Qwen2.5's ``<|endoftext|>``.

    Returns ``{token_id: value}`` for every id occurring in the group.
    """
    if len(completions) != len(correct):
        raise ValueError("one correctness flag per completion")
    if alpha + beta_ig <= 0:
        raise ValueError("alpha + beta_ig must be > 0 (the official code divides by it)")
    vocab: list[int] = []
    for row in completions:
        for tok in row:
            if tok not in vocab:
                vocab.append(tok)
    values = {tok: 0.0 for tok in vocab}
    n_correct = sum(1 for ok in correct if ok)
    n_wrong = len(correct) - n_correct
    if n_correct == 0 or n_wrong == 0:
        return values

    tokens_correct = sum(len(row) for row, ok in zip(completions, correct, strict=True) if ok)
    tokens_wrong = sum(len(row) for row, ok in zip(completions, correct, strict=True) if not ok)
    avg_tokens = (tokens_correct + tokens_wrong) / 2.0

    for tok in vocab:
        a = sum(1 for row, ok in zip(completions, correct, strict=True) if ok and tok in row)
        b = sum(1 for row, ok in zip(completions, correct, strict=True) if not ok and tok in row)
        c = n_correct - a
        d = n_wrong - b

        f_score = ktae_fisher_score(fisher_exact_two_sided(a, b, c, d)) if alpha else 0.0
        ig = information_gain(a, b, c, d) if beta_ig else 0.0

        x = ktae_cohen_h(a, b, c, d)
        if gamma_tf:
            count_c = sum(
                row.count(tok) for row, ok in zip(completions, correct, strict=True) if ok
            )
            count_w = sum(
                row.count(tok) for row, ok in zip(completions, correct, strict=True) if not ok
            )
            tf_c = ktae_bm25_tf(count_c, tokens_correct, avg_tokens)
            tf_w = ktae_bm25_tf(count_w, tokens_wrong, avg_tokens)
            x += tf_c / (tf_w + tf_eps) - tf_w / (tf_c + tf_eps)

        s = (alpha * f_score + beta_ig * ig) * x / (alpha + beta_ig)
        values[tok] = top * math.tanh(s / 2.0)  # == (sigmoid(s) - 0.5) * 2 * top

    for tok in zero_token_ids:
        if tok in values:
            values[tok] = 0.0
    return values


def ktae_token_advantages(
    completions: Sequence[Sequence[int]],
    rewards: Sequence[float],
    group_size: int,
    *,
    advantages: Sequence[float] | None = None,
    eps: float = 1e-6,
    **value_options: float,
) -> list[list[float]]:
    """KTAE's per-token advantages ``A_i + v(y_it)`` (official
    ``compute_ktae_outcome_advantage_and_keytokens``).

    ``A_i`` is the rollout advantage (``grpo_advantages(rewards, group_size, eps)``
    unless ``advantages`` is given, e.g. arca's or RLOO's); ``v`` is the group's
    :func:`ktae_token_values`, looked up by token id, so every occurrence of a
    token in any rollout of the group gets the same additive value, whatever the
    rollout's own outcome. Correctness is ``reward > 0``. The key-token values are
    *added*: the row's advantage mass changes and a token's sign can differ from
    ``A_i``'s.
    """
    if len(completions) != len(rewards):
        raise ValueError("one reward per completion")
    if advantages is None:
        advantages = grpo_advantages(rewards, group_size, eps)
    out: list[list[float]] = []
    for start in range(0, len(completions), group_size):
        rows = completions[start : start + group_size]
        ok = [r > 0 for r in rewards[start : start + group_size]]
        values = ktae_token_values(rows, ok, **value_options)
        for i, row in enumerate(rows):
            adv = advantages[start + i]
            out.append([adv + values[tok] for tok in row])
    return out


# --------------------------------------------------------------------------
# OAR-G: input-gradient saliency and the bi-level reshaping
# --------------------------------------------------------------------------


def grad_times_input_saliency(
    grads: Sequence[Sequence[float]], embeds: Sequence[Sequence[float]]
) -> list[float]:
    """Official OAR-G token importance: ``|sum_d g_td e_td|`` per token.

    ``grads[t]`` is the gradient of the outcome objective with respect to the
    input embedding of reasoning token ``t`` and ``embeds[t]`` that embedding
    (official ``calculate_token_importance_gradient``: gradient x input, summed
    over the hidden dimension, absolute value). It is *not* a norm of the gradient.
    The objective in the official code is ``KL(p0 || p_noisy)`` of the answer-slot
    distribution, taken at embeddings with Gaussian noise (std ``1e-3``) on the
    reasoning tokens (at zero noise its gradient vanishes): see the doc.
    """
    if len(grads) != len(embeds):
        raise ValueError("one gradient per embedding")
    out: list[float] = []
    for g_t, e_t in zip(grads, embeds, strict=True):
        dot = 0.0
        for g, e in zip(g_t, e_t, strict=True):
            dot += g * e
        out.append(abs(dot))
    return out


def quantile_linear(values: Sequence[float], q: float) -> float:
    """``numpy.quantile(values, q)`` with numpy's default ``"linear"`` method."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be in [0, 1]")
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    if lo + 1 >= len(xs):
        return xs[-1]
    return xs[lo] + (h - lo) * (xs[lo + 1] - xs[lo])


def oar_bilevel_weights(
    scores: Sequence[float],
    *,
    threshold_quantile: float,
    beta: float,
    floor: float = 0.1,
    sum_to_length: bool = True,
    eps: float = 1e-8,
) -> list[float]:
    """Official ``calculate_oar_hybrid_weights``: bi-level reshaping of one
    completion's reasoning-token importances into weights with mean 1.

    1. ``s_t = log1p(score_t)``, min-max normalised to ``n_t`` in ``[0, 1]``
       (all equal: every ``n_t = 0``).
    2. ``tau = quantile(n, threshold_quantile)`` (numpy's linear quantile).
    3. Noise suppression, ``n_t < tau`` (strict):
       ``w_t = max(n_t / (tau + eps), floor)``.
    4. Signal boosting, ``n_t >= tau``: ``w_t = 1 + beta (n_t - tau) / (1 - tau + eps)``.
    5. If ``sum_to_length``: ``w_t <- w_t L / (sum_k w_k + eps)`` (``L`` the number of
       reasoning tokens), so the reasoning span keeps its advantage mass:
       ``sum_t A w_t = L A`` (up to ``eps``).

    ``threshold_quantile`` and ``beta`` have no default: the official code reads
    them from its arguments and the paper's values were not readable here.
    ``floor = 0.1`` and ``eps = 1e-8`` are hard-coded in the official code.
    """
    if not scores:
        return []
    if any(s < 0 for s in scores):
        raise ValueError("importance scores must be >= 0")
    logs = [math.log1p(s) for s in scores]
    lo, hi = min(logs), max(logs)
    spread = hi - lo if hi > lo else 1.0
    norm = [(s - lo) / spread for s in logs]
    tau = quantile_linear(norm, threshold_quantile)
    weights: list[float] = []
    for n_t in norm:
        if n_t < tau:
            weights.append(max(n_t / (tau + eps), floor))
        else:
            weights.append(1.0 + beta * (n_t - tau) / (1.0 - tau + eps))
    if sum_to_length:
        total = sum(weights)
        if total <= 0:
            weights = [1.0] * len(weights)
        else:
            weights = [w * len(weights) / (total + eps) for w in weights]
    return weights


def oar_token_advantages(
    advantage: float, reasoning_weights: Sequence[float], completion_length: int
) -> list[float]:
    """Official ``compute_loss``: per-token advantages ``A w_t`` of one completion.

    The weights cover the reasoning span, which the official code places at the
    completion's first ``len(reasoning_weights)`` positions; every later token
    (the conclusion and answer) keeps weight 1. With sum-to-length weights the
    completion's advantage mass is ``T A`` as in GRPO: mass-preserving.
    """
    if len(reasoning_weights) > completion_length:
        raise ValueError("the reasoning span cannot be longer than the completion")
    out = [advantage * w for w in reasoning_weights]
    out += [advantage] * (completion_length - len(reasoning_weights))
    return out


# --------------------------------------------------------------------------
# lambda-GRPO: GRPO's implicit process reward, de-duplicated
# --------------------------------------------------------------------------


def process_set_sizes(group: Sequence[Sequence[int]]) -> list[list[int]]:
    """``|lambda_it|``: how many completions of the group share row ``i``'s prefix
    through token ``t`` (tokens ``0..t`` equal, the row itself and identical
    duplicates included).

    Official ``InfPRMTree``: the trie of the group's trajectories, each token in
    the node of the completions that share the prefix up to and including it; the
    first token where completions differ opens a new, smaller node. A completion
    that has ended shares no later token (the official code pads with ``None``).
    The official trie also spans the prompt, which every member shares, so the
    completion tokens' sets are the same.
    """
    sizes: list[list[int]] = []
    for row in group:
        row_sizes: list[int] = []
        sharing = list(range(len(group)))  # rows equal to this one through t - 1
        for t, tok in enumerate(row):
            sharing = [j for j in sharing if len(group[j]) > t and group[j][t] == tok]
            row_sizes.append(len(sharing))
        sizes.append(row_sizes)
    return sizes


def lambda_grpo_token_advantages(
    completions: Sequence[Sequence[int]],
    rewards: Sequence[float],
    group_size: int,
    *,
    advantages: Sequence[float] | None = None,
    eps: float = 1e-4,
) -> list[list[float]]:
    """lambda-GRPO's per-token advantages ``A_i / |lambda_it|`` (official
    ``InfPRMNode._loss_scale`` times the advantage in ``_step``).

    ``A_i`` is ``grpo_advantages(rewards, group_size, eps)`` (the official code:
    unbiased std plus ``1e-4``) unless ``advantages`` is given. Because identical
    prefixes are the same tokens in the same context, the group's pushes on a
    shared token add up: GRPO puts ``sum_{j in lambda} A_j`` on it, lambda-GRPO
    the process set's mean ``mean_{j in lambda} A_j`` (its implicit PRM step
    advantage). Tokens after a completion leaves every other keep ``A_i``. Not
    mass-preserving: the row's mass shrinks on shared prefixes; the sign per token
    is ``A_i``'s.
    """
    if advantages is None:
        advantages = grpo_advantages(rewards, group_size, eps)
    out: list[list[float]] = []
    for start in range(0, len(completions), group_size):
        group = completions[start : start + group_size]
        sizes = process_set_sizes(group)
        for i, row_sizes in enumerate(sizes):
            adv = advantages[start + i]
            out.append([adv / size for size in row_sizes])
    return out


def process_mean_advantages(
    group: Sequence[Sequence[int]], advantages: Sequence[float]
) -> list[list[float]]:
    """The implicit PRM view of a group: token ``t`` of row ``i`` gets the mean
    advantage of the completions sharing its prefix through ``t``.

    This is the net push lambda-GRPO puts on that (shared) token, once; a metric
    that asks how a row's own tokens are pushed should read this, not the per-row
    ``A_i / |lambda_it|``, which only counts the row's own share of the push.
    """
    out: list[list[float]] = []
    for row in group:
        row_out: list[float] = []
        sharing = list(range(len(group)))
        for t, tok in enumerate(row):
            sharing = [j for j in sharing if len(group[j]) > t and group[j][t] == tok]
            row_out.append(sum(advantages[j] for j in sharing) / len(sharing))
        out.append(row_out)
    return out


# --------------------------------------------------------------------------
# Loss coefficients and credit metrics for arbitrary (signed) token advantages
# --------------------------------------------------------------------------


def pg_coefficients(
    token_advantages: Sequence[Sequence[float]],
    loss_type: str = "grpo",
    *,
    max_completion_length: int | None = None,
    num_items: float | None = None,
) -> list[list[float]]:
    """Coefficient ``c_it`` of ``log pi(y_it)`` in TRL's on-policy loss
    ``-sum_it c_it log pi(y_it)`` when TRL is handed per-token advantages ``a_it``.

    TRL normalises each sequence's token sum: ``grpo``/``sapo``: ``1 / (B T_i)``;
    ``bnpo``: ``1 / sum_j T_j``; ``dr_grpo``: ``1 / (B max_completion_length)``;
    ``dapo``/``cispo``: ``1 / num_items`` (default: the batch's tokens). With
    ``a_it = A_i T_i w_it`` this is :func:`arca.credit.weighted_pg_loss`'s
    ``share_i A_i w_it``.
    """
    batch = len(token_advantages)
    total_tokens = sum(len(row) for row in token_advantages)
    out: list[list[float]] = []
    for row in token_advantages:
        length = len(row)
        if loss_type in ("grpo", "sapo"):
            scale = 1.0 / (batch * length) if length else 0.0
        elif loss_type == "bnpo":
            scale = 1.0 / max(total_tokens, 1)
        elif loss_type == "dr_grpo":
            if not max_completion_length:
                raise ValueError("dr_grpo needs max_completion_length")
            scale = 1.0 / (batch * max_completion_length)
        elif loss_type in ("dapo", "cispo"):
            scale = 1.0 / max(num_items if num_items is not None else total_tokens, 1)
        else:
            raise ValueError(f"unknown loss_type {loss_type!r}")
        out.append([a * scale for a in row])
    return out


def abs_share_weights(token_advantages: Sequence[float]) -> list[float]:
    """Weights to report for a row with signed token advantages: ``|a_t| / sum_k |a_k|``.

    For a mass-preserving scheme (``a_t = A T w_t``, ``w >= 0``, ``A != 0``) these
    are exactly ``w``; a row with all-zero advantages gets uniform weights.
    """
    total = sum(abs(a) for a in token_advantages)
    n = len(token_advantages)
    if n == 0:
        return []
    if total == 0:
        return [1.0 / n] * n
    return [abs(a) / total for a in token_advantages]


def signed_prefix_blame(token_advantages: Sequence[float], error_index: int) -> float:
    """Share of a row's push magnitude that pushes *down* tokens before its first
    wrong token: ``sum_{t < e} max(0, -a_t) / sum_t |a_t|`` (NaN if no push).

    Equals arca's prefix blame when ``a_t = A T w_t`` with ``A < 0``; a positive
    token advantage on the prefix (credit, e.g. KTAE's) is not counted as blame.
    """
    total = sum(abs(a) for a in token_advantages)
    if total == 0:
        return math.nan
    return sum(max(0.0, -a) for a in token_advantages[:error_index]) / total


def signed_error_lift(token_advantages: Sequence[float], error_index: int) -> float:
    """``T max(0, -a_e) / sum_t |a_t|``: the push down on the first wrong token
    relative to a uniform row's (arca's error lift when ``a_t = A T w_t``, ``A < 0``).
    """
    total = sum(abs(a) for a in token_advantages)
    if total == 0:
        return math.nan
    return len(token_advantages) * max(0.0, -token_advantages[error_index]) / total


def sign_flip_share(token_advantages: Sequence[float], rollout_advantage: float) -> float:
    """Share of a row's tokens whose advantage has the opposite sign to ``A_i``
    (0 for every mass-preserving scheme with ``w >= 0``; NaN if ``A_i = 0``)."""
    if rollout_advantage == 0 or not token_advantages:
        return math.nan
    flips = sum(1 for a in token_advantages if a * rollout_advantage < 0)
    return flips / len(token_advantages)
