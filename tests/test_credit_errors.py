"""Bad input fails with an error that names the problem; the core imports no trainer."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from arca.credit import gini, normalize, token_scores, token_weights

MASK = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])


@pytest.mark.parametrize(
    "scheme, inputs, match",
    [
        (
            "nope",
            {},
            r"unknown token-weighting scheme 'nope'; valid schemes: uniform, surprisal, entropy, divergence, arca",
        ),
        ("surprisal", {}, r"scheme 'surprisal' needs `logps`"),
        ("entropy", {"logps": torch.zeros(2, 4)}, r"needs `entropies`"),
        (
            "divergence",
            {"logps": torch.zeros(2, 4)},
            r"needs `ref_logps` \(it requires: logps, ref_logps\)",
        ),
        ("arca", {"h_adapted": torch.zeros(2, 4, 3)}, r"needs `h_base`"),
        (
            "surprisal",
            {"logps": torch.zeros(2, 5)},
            r"`logps` must have shape \(B, T\) matching mask \(2, 4\), got \(2, 5\)",
        ),
        (
            "arca",
            {"h_adapted": torch.zeros(2, 4), "h_base": torch.zeros(2, 4)},
            r"`h_adapted` must have shape \(B, T, d\)",
        ),
        (
            "surprisal",
            {"logps": torch.zeros(2, 4, dtype=torch.long)},
            r"`logps` must be a floating-point",
        ),
    ],
)
def test_scheme_input_errors_name_the_input(scheme, inputs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        token_scores(scheme, mask=MASK, **inputs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_at_real_positions_is_an_error_with_location(bad):
    lp = torch.zeros(2, 4)
    lp[1, 2] = bad
    with pytest.raises(
        ValueError, match=r"`logps` has 1 non-finite value\(s\) .* row 1, position 2"
    ):
        token_weights("surprisal", mask=MASK, logps=lp)
    h = torch.zeros(2, 4, 3)
    h[0, 1, 2] = bad
    with pytest.raises(ValueError, match=r"`h_base` has 1 non-finite .* row 0, position 1"):
        token_scores("arca", mask=MASK, h_adapted=torch.zeros(2, 4, 3), h_base=h)


def test_non_finite_at_padding_is_fine():
    lp = torch.full((2, 4), -1.0)
    lp[0, 3] = float("nan")
    lp[1, 0] = float("-inf")
    assert torch.isfinite(token_weights("surprisal", mask=MASK, logps=lp)).all()


def test_mask_must_be_binary_and_2d():
    with pytest.raises(ValueError, match="only 0 and 1"):
        token_scores("uniform", mask=torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(B, T\)"):
        token_scores("uniform", mask=torch.ones(4))


def test_normalize_errors():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        normalize(torch.ones(2, 4), MASK, eps=-1e-8)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        normalize(torch.ones(2, 4), MASK, eps=float("nan"))
    with pytest.raises(ValueError, match="eps_mode"):
        normalize(torch.ones(2, 4), MASK, eps_mode="percent")
    with pytest.raises(ValueError, match="scores must be >= 0"):
        normalize(-torch.ones(2, 4), MASK)
    with pytest.raises(ValueError, match="`scores` has 1 non-finite"):
        normalize(torch.tensor([[1.0, float("nan"), 1, 1], [1, 1, 1, 1]]), MASK)
    with pytest.raises(ValueError, match="`weights` must have shape"):
        gini(torch.ones(3, 4), MASK)


def test_importing_the_core_imports_no_trainer():
    code = (
        "import sys, arca.credit, arca.credit.schemes;"
        "bad = [m for m in ('trl', 'transformers', 'peft', 'accelerate', 'datasets') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_huge_finite_hidden_states_are_not_mistaken_for_inf():
    """The fast finiteness test sums rows in float32; a sum that overflows is not an error."""
    from arca.credit._checks import check_finite

    h = torch.full((1, 2, 8), 3e38)  # each row sums to 2.4e39: inf in float32
    mask = torch.ones(1, 2, dtype=torch.bool)
    check_finite(h, mask, "h_base")  # no error
    h[0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="`h_base` has 1 non-finite .* row 0, position 1"):
        check_finite(h, mask, "h_base")
