"""Hand-checkable examples for tests/reference_schemes.py (see docs/credit-schemes.md)."""

import math
from fractions import Fraction

import pytest

from tests.reference_schemes import (
    abs_share_weights,
    fisher_exact_two_sided,
    grad_times_input_saliency,
    grpo_advantages,
    information_gain,
    ktae_token_advantages,
    ktae_token_values,
    lambda_grpo_token_advantages,
    oar_bilevel_weights,
    oar_token_advantages,
    pg_coefficients,
    process_mean_advantages,
    process_set_sizes,
    quantile_linear,
    sign_flip_share,
    signed_error_lift,
    signed_prefix_blame,
)

# ---------------------------------------------------------------- baseline


def test_grpo_advantages_two_of_four():
    # rewards 1,1,0,0: mean 1/2, unbiased var = 4 * (1/4) / 3 = 1/3, std = 0.57735
    adv = grpo_advantages([1, 1, 0, 0], 4, eps=0.0)
    assert adv == pytest.approx([0.5 / math.sqrt(1 / 3)] * 2 + [-0.5 / math.sqrt(1 / 3)] * 2)
    assert grpo_advantages([1, 1, 1, 1], 4, eps=1e-6) == [0.0] * 4


# ---------------------------------------------------------------- KTAE statistics


def test_fisher_hand_table_with_symmetric_tie():
    # [[3, 1], [1, 3]]: n = 8, 4 correct, 4 contain the token. P(k) = C(4,k) C(4,4-k) / C(8,4)
    # = [1, 16, 36, 16, 1] / 70 for k = 0..4. Observed k = 3 (16/70); the tables at most as
    # probable are k = 0, 1, 3, 4 (k = 1 ties with k = 3): p = 34/70 = 0.485714...
    assert fisher_exact_two_sided(3, 1, 1, 3) == pytest.approx(34 / 70, rel=1e-12)
    assert fisher_exact_two_sided(3, 1, 1, 3, rel_tol=0.0) == pytest.approx(34 / 70, rel=1e-12)


def test_fisher_hand_tables_small_groups():
    # [[1, 0], [0, 3]]: token only in the one correct rollout of 4. P(0) = 3/4, P(1) = 1/4.
    assert fisher_exact_two_sided(1, 0, 0, 3) == pytest.approx(0.25, rel=1e-12)
    # [[2, 0], [0, 2]]: P(k) = [1, 4, 1] / 6; observed k = 2: p = 2/6.
    assert fisher_exact_two_sided(2, 0, 0, 2) == pytest.approx(1 / 3, rel=1e-12)
    # A token in every rollout: only one table has these margins, p = 1.
    assert fisher_exact_two_sided(2, 2, 0, 0) == pytest.approx(1.0)
    assert fisher_exact_two_sided(0, 0, 0, 0) == 1.0


def _fisher_exact_fraction(a, b, c, d):
    n, row1, col1 = a + b + c + d, a + b, a + c
    total = math.comb(n, row1)

    def p(k):
        return Fraction(math.comb(col1, k) * math.comb(n - col1, row1 - k), total)

    ks = range(max(0, row1 + col1 - n), min(row1, col1) + 1)
    return sum((p(k) for k in ks if p(k) <= p(a)), Fraction(0))


def test_fisher_log_space_matches_exact_rational_enumeration():
    # Every 2x2 table with n <= 8 (ties decided exactly with fractions).
    for n in range(1, 9):
        for a in range(n + 1):
            for b in range(n + 1 - a):
                for c in range(n + 1 - a - b):
                    d = n - a - b - c
                    exact = float(_fisher_exact_fraction(a, b, c, d))
                    assert fisher_exact_two_sided(a, b, c, d) == pytest.approx(exact, abs=1e-12)


def test_information_gain_hand():
    # Perfect split [[2, 0], [0, 2]]: H(Y) = 1 bit, H(Y|X) = 0.
    assert information_gain(2, 0, 0, 2) == pytest.approx(1.0)
    # [[2, 1], [0, 1]]: H(Y) = 1; contains (2 correct, 1 wrong): H(2/3) = 0.918296 with
    # weight 3/4; lacks (0, 1): 0. IG = 1 - 0.75 * 0.918296 = 0.311278 bits.
    h = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    assert information_gain(2, 1, 0, 1) == pytest.approx(1 - 0.75 * h)
    # No association: [[1, 1], [1, 1]] -> 0.
    assert information_gain(1, 1, 1, 1) == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------- KTAE values and advantages


def test_ktae_separating_group():
    # Correct: [5, 7], [5, 7]; incorrect: [5, 8], [5, 8].
    # Token 5 is in every rollout: Fisher p = 1 -> F = 0; IG = 0; Cohen 0; equal BM25 tf -> 0.
    # Token 7 only in correct rollouts: F = exp(-2/3), IG = 1, direction
    #   asin(1) - asin(0) + tf_c / (0 + 1e-5) - 0 with tf_c = (2/4) * 3 / (2/4 + 2) = 0.6,
    #   so s = (F + IG) * ~60001.6 / 2 and the value tanh(s / 2) = 1 (saturated); token 8: -1.
    comps = [[5, 7], [5, 7], [5, 8], [5, 8]]
    values = ktae_token_values(comps, [True, True, False, False])
    assert values[5] == pytest.approx(0.0, abs=1e-12)
    assert values[7] == pytest.approx(1.0)
    assert values[8] == pytest.approx(-1.0)
    # A_i = +-0.5 / (0.57735 + 1e-6) = +-0.866024; token advantage = A_i + value.
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    adv = ktae_token_advantages(comps, [1, 1, 0, 0], 4)
    assert adv == [pytest.approx([a, a + 1]), pytest.approx([a, a + 1])] + [
        pytest.approx([-a, -a - 1]),
        pytest.approx([-a, -a - 1]),
    ]


def test_ktae_partial_association_hand():
    # Correct: [3, 4], [3, 4]; incorrect: [3, 6], [4, 6]. Token 3: a=2, b=1, c=0, d=1.
    # Fisher: margins row1 = 3, col1 = 2, n = 4 -> P(1) = P(2) = 1/2 -> p = 1 -> F = 0.
    # IG = 1 - 0.75 * H(2/3) = 0.311278.
    # Direction: asin(1) - asin(sqrt(1/2)) = pi/4; BM25 (4 tokens per class, avg 4, K = 2):
    #   tf_c = (2/4) * 3 / 2.5 = 0.6, tf_w = (1/4) * 3 / 2.25 = 1/3;
    #   x = pi/4 + 0.6 / (1/3 + 1e-5) - (1/3) / (0.6 + 1e-5).
    # s = (0 * 1 + 1 * IG) * x / 2; value = tanh(s / 2) = 0.156657.
    h = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    ig = 1 - 0.75 * h
    x = math.pi / 4 + 0.6 / (1 / 3 + 1e-5) - (1 / 3) / (0.6 + 1e-5)
    expected = math.tanh(ig * x / 2 / 2)
    values = ktae_token_values([[3, 4], [3, 4], [3, 6], [4, 6]], [True, True, False, False])
    assert values[3] == pytest.approx(expected)
    assert values[3] == pytest.approx(0.156657, abs=1e-6)
    assert values[4] == pytest.approx(expected)  # the mirror table
    assert values[6] == pytest.approx(-1.0)  # only in incorrect rollouts: saturated


def test_ktae_value_flips_a_wrong_rollouts_token_under_mean_centred_advantages():
    # Correct: [1, 2]; incorrect: [1, 3], [4, 3], [4, 3]. Token 1: a=1, b=1, c=0, d=2.
    # Fisher p = 1 (P(0) = P(1) = 1/2) -> F = 0; IG = H(1/4) - 0.5 * 1 = 0.311278.
    # Direction: asin(1) - asin(sqrt(1/3)) = 0.955317; BM25: correct class 2 tokens, incorrect 6,
    #   avg 4, K_c = 2 (0.5 + 0.5 * 2/4) = 1.5, K_w = 2 (0.5 + 0.5 * 6/4) = 2.5;
    #   tf_c = (1/2) * 3 / (0.5 + 1.5) = 0.75, tf_w = (1/6) * 3 / (1/6 + 2.5) = 0.1875;
    #   x = 0.955317 + 0.75 / 0.18751 - 0.1875 / 0.75001 = 4.705107; s = IG x / 2 = 0.732298;
    #   value = tanh(s / 2) = 0.350619.
    comps = [[1, 2], [1, 3], [4, 3], [4, 3]]
    values = ktae_token_values(comps, [True, False, False, False])
    assert values[1] == pytest.approx(0.350619, abs=1e-6)
    # Dr.GRPO-style advantages r - mean = 0.75, -0.25: the wrong rollout's token 1 gets
    # -0.25 + 0.350619 > 0, the opposite sign to its rollout's advantage.
    adv = ktae_token_advantages(comps, [1, 0, 0, 0], 4, advantages=[0.75, -0.25, -0.25, -0.25])
    assert adv[1][0] == pytest.approx(0.100619, abs=1e-6)
    assert sign_flip_share(adv[1], -0.25) == 0.5


def test_ktae_value_flips_a_token_under_grpo_advantages_when_counts_differ():
    # Correct: [1, 1, 1, 1, 2]; incorrect: [1, 3, 3, 3, 3], [4, 3, 3, 3, 3] x 2. Token 1 is in the
    # correct rollout (4 times) and in one wrong rollout (once): a=1, b=1, c=0, d=2, so as above
    # F = 0, IG = 0.311278 and Cohen 0.955317. BM25 uses counts: 5 correct tokens, 15 wrong,
    #   avg 10, K_c = 1.5, K_w = 2.5; tf_c = 0.8 * 3 / 2.3 = 1.043478,
    #   tf_w = (1/15) * 3 / (1/15 + 2.5) = 0.077922;
    #   x = 0.955317 + 1.043478 / 0.077932 - 0.077922 / 1.043488 = 14.270176;
    #   s = IG x / 2 = 2.221008; value = tanh(s / 2) = 0.804240.
    # GRPO: rewards 1, 0, 0, 0 -> mean 1/4, std 1/2 -> A = 1.5, -0.5 (eps 1e-6 aside).
    comps = [[1, 1, 1, 1, 2], [1, 3, 3, 3, 3], [4, 3, 3, 3, 3], [4, 3, 3, 3, 3]]
    values = ktae_token_values(comps, [True, False, False, False])
    assert values[1] == pytest.approx(0.804240, abs=1e-6)
    adv = ktae_token_advantages(comps, [1, 0, 0, 0], 4)
    assert adv[1][0] == pytest.approx(-0.5 + 0.804240, abs=1e-5)  # > 0 in a wrong rollout
    assert adv[1][1:] == pytest.approx([-1.5] * 4, abs=1e-5)  # token 3: -0.5 - 1
    assert sign_flip_share(adv[1], -0.5) == pytest.approx(0.2)


def test_ktae_all_correct_or_all_wrong_group_gets_nothing():
    comps = [[1, 2], [1, 3], [4, 3], [4, 3]]
    assert set(ktae_token_values(comps, [True] * 4).values()) == {0.0}
    adv = ktae_token_advantages(comps, [0, 0, 0, 0], 4)
    assert all(a == 0.0 for row in adv for a in row)


def test_ktae_switches_and_zeroed_ids():
    comps = [[5, 7], [5, 7], [5, 8], [5, 8]]
    ok = [True, True, False, False]
    # IG alone (alpha = 0) still saturates the separating tokens; both off is refused.
    ig_only = ktae_token_values(comps, ok, alpha=0.0)
    assert ig_only == pytest.approx({5: 0.0, 7: 1.0, 8: -1.0})
    with pytest.raises(ValueError):
        ktae_token_values(comps, ok, alpha=0.0, beta_ig=0.0)
    # The official code forces Qwen2.5's <|endoftext|> (151643) to 0; here any listed id.
    assert ktae_token_values(comps, ok, zero_token_ids=[7])[7] == 0.0


# ---------------------------------------------------------------- OAR-G


def test_grad_times_input_saliency_hand():
    # Token 0: |1*3 + 2*(-1)| = 1; token 1: |0*2 + (-1)*2| = 2.
    assert grad_times_input_saliency([[1, 2], [0, -1]], [[3, -1], [2, 2]]) == [1.0, 2.0]


def test_quantile_linear_matches_numpy_convention():
    assert quantile_linear([0, 1 / 3, 2 / 3, 1], 0.5) == pytest.approx(0.5)
    assert quantile_linear([4.0, 1.0, 3.0], 0.25) == pytest.approx(2.0)  # sorted 1,3,4; h = 0.5
    assert quantile_linear([2.0], 0.7) == 2.0


def test_oar_bilevel_weights_hand():
    # Scores e^k - 1 -> log1p -> 0, 1, 2, 3 -> min-max 0, 1/3, 2/3, 1; median tau = 1/2.
    # Below tau: max(0 / 0.5, 0.1) = 0.1 and (1/3) / 0.5 = 2/3.
    # At/above tau (beta = 1): 1 + (2/3 - 1/2) / (1/2) = 4/3 and 1 + 1 = 2.
    # Sum 4.1 -> times 4 / 4.1: 0.097561, 0.650407, 1.300813, 1.951220 (mean 1).
    scores = [math.e**k - 1 for k in range(4)]
    w = oar_bilevel_weights(scores, threshold_quantile=0.5, beta=1.0)
    assert w == pytest.approx([0.1 * 4 / 4.1, (2 / 3) * 4 / 4.1, (4 / 3) * 4 / 4.1, 2 * 4 / 4.1])
    raw = oar_bilevel_weights(scores, threshold_quantile=0.5, beta=1.0, sum_to_length=False)
    assert raw == pytest.approx([0.1, 2 / 3, 4 / 3, 2.0])


def test_oar_bilevel_constant_scores_are_uniform_and_mass_is_kept():
    assert oar_bilevel_weights([0.3] * 5, threshold_quantile=0.8, beta=2.0) == pytest.approx(
        [1.0] * 5
    )
    w = oar_bilevel_weights([0.0, 0.5, 3.0, 0.1, 7.0], threshold_quantile=0.6, beta=0.5)
    assert sum(w) == pytest.approx(5.0, abs=1e-6)
    adv = oar_token_advantages(-0.8, w, completion_length=8)  # 3 answer tokens keep weight 1
    assert adv[5:] == [-0.8, -0.8, -0.8]
    assert sum(adv) == pytest.approx(8 * -0.8, abs=1e-6)  # T_i * A_i: mass-preserving
    assert sign_flip_share(adv, -0.8) == 0.0


# ---------------------------------------------------------------- lambda-GRPO


def test_process_set_sizes_hand():
    group = [[1, 2, 3], [1, 2, 4], [1, 5, 6], [1, 2, 3]]
    # Token 0 is shared by all 4; [1, 2] by rows 0, 1, 3; [1, 2, 3] by rows 0 and 3.
    assert process_set_sizes(group) == [[4, 3, 2], [4, 3, 1], [4, 1, 1], [4, 3, 2]]
    # A completion that has ended shares no later token.
    assert process_set_sizes([[1, 2], [1, 2, 3]]) == [[2, 2], [2, 2, 1]]


def test_lambda_grpo_advantages_and_the_implicit_prm():
    group = [[1, 2, 3], [1, 2, 4], [1, 5, 6], [1, 2, 3]]
    rewards = [1, 0, 0, 1]
    # A = +-0.5 / (0.57735 + 1e-4).
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    adv = lambda_grpo_token_advantages(group, rewards, 4)
    assert adv[0] == pytest.approx([a / 4, a / 3, a / 2])
    assert adv[1] == pytest.approx([-a / 4, -a / 3, -a])
    assert adv[2] == pytest.approx([-a / 4, -a, -a])
    # The group's summed push on a shared token is the process set's mean advantage:
    # token "2" after "1" (rows 0, 1, 3): a/3 - a/3 + a/3 = mean(a, -a, a) = a/3.
    assert adv[0][1] + adv[1][1] + adv[3][1] == pytest.approx((a - a + a) / 3)
    means = process_mean_advantages(group, [a, -a, -a, a])
    assert means[1] == pytest.approx([0.0, a / 3, -a])
    assert means[0][1] == pytest.approx(adv[0][1] + adv[1][1] + adv[3][1])


def test_lambda_grpo_all_identical_or_all_distinct():
    same = [[7, 8]] * 4
    adv = lambda_grpo_token_advantages(same, [1, 1, 1, 1], 4)
    assert adv == [[0.0, 0.0]] * 4  # equal rewards: A = 0
    distinct = [[1], [2], [3], [4]]
    adv = lambda_grpo_token_advantages(distinct, [1, 0, 0, 0], 4, advantages=[3, -1, -1, -1])
    assert adv == [[3.0], [-1.0], [-1.0], [-1.0]]  # no sharing: plain GRPO


# ---------------------------------------------------------------- metrics and loss coefficients


def test_signed_metrics_reduce_to_arcas_for_mass_preserving_rows():
    w = [0.1, 0.2, 0.6, 0.1]  # arca weights, first wrong token at index 2
    a_i = -0.5
    adv = [a_i * len(w) * wt for wt in w]  # A_i * T_i * w_it
    assert abs_share_weights(adv) == pytest.approx(w)
    assert signed_prefix_blame(adv, 2) == pytest.approx(0.1 + 0.2)  # arca: weight before e
    assert signed_error_lift(adv, 2) == pytest.approx(4 * 0.6)  # arca: T * w_e


def test_signed_prefix_blame_does_not_count_credit_as_blame():
    # A KTAE-like wrong row: +0.2 on the correct prefix token, -1.8 on the first wrong token.
    adv = [0.2, -1.8]
    assert abs_share_weights(adv) == pytest.approx([0.1, 0.9])
    assert signed_prefix_blame(adv, 1) == 0.0
    assert signed_error_lift(adv, 1) == pytest.approx(2 * 1.8 / 2.0)
    assert math.isnan(signed_prefix_blame([0.0, 0.0], 1))


def test_pg_coefficients_match_arcas_weighted_pg_loss():
    torch = pytest.importorskip("torch")
    from arca.credit.loss import weighted_pg_loss

    adv = torch.tensor([1.5, -0.5])
    w = torch.tensor([[0.2, 0.3, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    lengths = [3, 4]
    token_adv = [
        [float(adv[i]) * lengths[i] * float(w[i, t]) for t in range(lengths[i])] for i in range(2)
    ]
    for loss_type, kw in [("grpo", {}), ("bnpo", {}), ("dapo", {}), ("dr_grpo", {"mcl": 6})]:
        logps = torch.zeros(2, 4, requires_grad=True)
        loss = weighted_pg_loss(
            logps, adv, w, mask, loss_type=loss_type, max_completion_length=kw.get("mcl")
        )
        loss.backward()
        coef = pg_coefficients(token_adv, loss_type, max_completion_length=kw.get("mcl"))
        for i in range(2):
            # d loss / d log pi(y_it) = -c_it
            assert [-float(g) for g in logps.grad[i, : lengths[i]]] == pytest.approx(coef[i])
