"""Token salience schemes (paper section 3.3 and 3.5) and their registry.

A scheme maps per-token quantities the policy already computes to a raw,
non-negative salience ``alpha_t`` of shape ``(B, T)``. Normalisation into
weights is separate (:func:`arca.credit.normalize`), so every scheme shares
one floor and one set of diagnostics.

Built-in schemes and the inputs they need (all ``(B, T)`` unless noted):

============  =======================  ==========================================
name          inputs                   alpha_t
============  =======================  ==========================================
uniform       --                       1
surprisal     logps                    -log pi(y_t)                   (eq. 10)
entropy       entropies                max(0, H_t - H_next)           (eq. 12-13)
divergence    logps, ref_logps         |log pi(y_t) - log pi_ref(y_t)| (eq. 14)
arca          h_adapted, h_base (BTd)  ||h_adapted_t - h_base_t||_2    (eq. 15)
arca_local    h_shift (BTd)            ||h_shift_t||_2: the adapter's direct write
                                       into the LM-head input (Prop. 3's
                                       sum_l B_l A_l x_l, without e_t)
high_entropy  entropies                1 if H_t is in the top ``quantile``
                                       fraction of the pool's entropies (the
                                       batch's real tokens unless ``pool``
                                       gives them), else 0 (option
                                       ``quantile``, default 0.2)
============  =======================  ==========================================

``high_entropy`` is the "minority of high-entropy forking tokens" baseline
(Wang et al. 2025, "Beyond the 80/20 rule"), as TRL's ``top_entropy_quantile``
computes it: one threshold, the ``1 - quantile`` quantile (linear
interpolation, as ``torch.quantile``) of a pool of entropies, and a token gets
credit when its entropy is at least that; a row's weights depend on the other
rows. The pool is the real tokens of the batch given, or the option ``pool``
(a 1-D tensor of entropies). The trainer applies TRL's rule on every path and
any number of processes: the pool is the real tokens of the rows TRL trains in
one forward (a micro-batch), gathered from every process, as TRL's
``get_high_entropy_mask`` gathers them (:meth:`arca.trainer.CreditGRPOTrainer._weights`).
A row with no token above the threshold gets uniform weights (eq. 8's floor),
where TRL's mask would drop its update.

``arca_local`` is an option, not a replacement: exact ARCA stays the paper's
definition. ``h_shift`` comes from hooks on the LoRA layers inside a forward
the trainer runs anyway (:func:`arca.scoring.capture_adapter_shift`), so it
costs no adapter-disabled pass.

Add a scheme with :func:`register_scheme`; it then works everywhere a scheme
name is accepted (``token_scores``, ``token_weights``, the trainer config).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from arca.credit._checks import (
    INT_INPUTS,
    ROW_INPUTS,
    as_bool_mask,
    check_finite,
    check_ids_like_mask,
    check_like_mask,
    check_row,
    float_dtype,
)

ScoreFn = Callable[..., Tensor]

#: Inputs whose last dimension is the hidden size, ``(B, T, d)``.
HIDDEN_INPUTS = frozenset({"h_adapted", "h_base", "h_shift"})

#: What a scheme's function returns (:attr:`Scheme.kind`):
#:
#: * ``"salience"``: raw non-negative scores ``(B, T)``, which
#:   :func:`arca.credit.normalize` turns into weights (the paper's schemes);
#: * ``"weights"``: final weights ``(B, T)``, each non-empty row summing to 1
#:   (no floor is added): a redistribution that keeps the advantage mass
#:   (``oracle``, ``oar_g``);
#: * ``"advantages"``: per-token advantages ``(B, T)`` made from the ``(B,)``
#:   advantages, which may change a row's advantage mass and a token's sign
#:   (``ktae``, ``lambda_grpo``): handed to the trainer as they are.
KINDS = ("salience", "weights", "advantages")


@dataclass(frozen=True)
class Scheme:
    """A registered scheme.

    ``fn`` is called as ``fn(mask=<bool (B,T)>, **{name: tensor for name in requires},
    **options)`` and returns a ``(B, T)`` tensor whose meaning is its ``kind``
    (:data:`KINDS`): raw salience scores, final weights, or per-token advantages.
    Values at padding are ignored (set to 0 afterwards), so ``fn`` need not mask.
    ``requires`` names the inputs the scheme reads; a trainer uses it to decide
    which forward passes to run. ``options`` holds the scheme's settings and
    their defaults (e.g. ``high_entropy``'s ``quantile``).
    """

    name: str
    fn: ScoreFn
    requires: tuple[str, ...]
    description: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    kind: str = "salience"

    def resolve_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The defaults updated by ``given``; an unknown name is an error."""
        defaults = dict(self.options)
        unknown = sorted(set(given or {}) - set(defaults))
        if unknown:
            valid = ", ".join(defaults) or "none"
            raise ValueError(
                f"scheme {self.name!r} has no option {unknown[0]!r} (its options: {valid})"
            )
        return {**defaults, **(given or {})}


_REGISTRY: dict[str, Scheme] = {}


def register_scheme(
    name: str,
    fn: ScoreFn | None = None,
    *,
    requires: tuple[str, ...] | list[str] = (),
    description: str = "",
    options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    kind: str = "salience",
) -> ScoreFn | Callable[[ScoreFn], ScoreFn]:
    """Register a scheme under ``name``; usable as a decorator.

    Example::

        @register_scheme("neg_logp_sq", requires=("logps",))
        def neg_logp_sq(*, mask, logps):
            return logps.square()

    Inputs named in ``requires`` other than the built-in ones (``logps``,
    ``ref_logps``, ``entropies``, ``h_adapted``, ``h_base``, ``h_shift``) are passed through
    the ``**extra`` keywords of :func:`token_scores`; they must be ``(B, T)``
    float tensors, except the row inputs ``(B,)`` (``advantages`` float,
    ``correct`` bool, ``group``, ``error_index``, ``answer_start`` integer) and
    ``completion_ids`` (integer ``(B, T)``). ``options`` names the scheme's
    settings with their defaults; callers change them with
    ``token_scores(..., options={...})``. ``kind`` says what ``fn`` returns
    (:data:`KINDS`; default ``"salience"``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("scheme name must be a non-empty string")
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")

    def _register(f: ScoreFn) -> ScoreFn:
        if name in _REGISTRY and not overwrite:
            raise ValueError(
                f"scheme {name!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY[name] = Scheme(
            name,
            f,
            tuple(requires),
            description or (f.__doc__ or ""),
            tuple((options or {}).items()),
            kind,
        )
        return f

    return _register(fn) if fn is not None else _register


def unregister_scheme(name: str) -> None:
    """Remove a scheme (mainly for tests and notebooks)."""
    _REGISTRY.pop(name, None)


def get_scheme(name: str) -> Scheme:
    """Look up a scheme; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown token-weighting scheme {name!r}; valid schemes: {', '.join(available_schemes())}"
        ) from None


def available_schemes() -> list[str]:
    """Names of all registered schemes: the paper's built-ins, the field's
    (:data:`FIELD_SCHEMES`), then any other in registration order."""
    known = [n for n in (*BUILTIN_SCHEMES, *FIELD_SCHEMES) if n in _REGISTRY]
    return known + [n for n in _REGISTRY if n not in known]


def token_scores(
    scheme: str,
    *,
    mask: Tensor,
    logps: Tensor | None = None,
    ref_logps: Tensor | None = None,
    entropies: Tensor | None = None,
    h_adapted: Tensor | None = None,
    h_base: Tensor | None = None,
    h_shift: Tensor | None = None,
    check_finite_inputs: bool = True,
    options: Mapping[str, Any] | None = None,
    **extra: Tensor,
) -> Tensor:
    """Raw salience ``alpha`` of ``scheme`` for a padded batch.

    Args:
        scheme: a registered scheme name (see :func:`available_schemes`).
        mask: ``(B, T)`` 1 for real completion tokens, 0 for padding (either side).
        logps: ``(B, T)`` log pi_theta(y_t | y_<t, x) of the sampled tokens.
        ref_logps: ``(B, T)`` the same under the reference (adapter-disabled) model.
        entropies: ``(B, T)`` predictive entropy H_t of the distribution that
            sampled token t.
        h_adapted, h_base: ``(B, T, d)`` the hidden state that feeds the LM head
            at the position emitting token t, adapter on / off.
        h_shift: ``(B, T, d)`` the adapter's first-order direct shift of that
            hidden state (``arca_local``).
        check_finite_inputs: raise on NaN/Inf at real positions (one device sync
            per input; turn off only in a loop you have already validated).
        options: the scheme's settings (e.g. ``{"quantile": 0.1}`` for
            ``high_entropy``); unknown names are an error, omitted ones default.
        **extra: further ``(B, T)`` inputs named by user-registered schemes.

    Returns:
        ``(B, T)`` float tensor (float32, or float64 if an input is), ``>= 0``,
        exactly 0 on padding, with no autograd history.

    Raises:
        ValueError: unknown scheme (lists the valid ones), a missing input (names
            it), a shape mismatch, NaN/Inf at a real position, or a scheme that
            returned negative or non-finite scores.
    """
    spec = get_scheme(scheme)
    if spec.kind != "salience":
        what = "final weights" if spec.kind == "weights" else "per-token advantages"
        use = "token_weights" if spec.kind == "weights" else "token_advantages"
        raise ValueError(
            f"scheme {scheme!r} is of kind {spec.kind!r}: it gives {what}, not salience "
            f"scores; use arca.credit.{use}"
        )
    given = {
        "logps": logps,
        "ref_logps": ref_logps,
        "entropies": entropies,
        "h_adapted": h_adapted,
        "h_base": h_base,
        "h_shift": h_shift,
        **extra,
    }
    bmask, inputs, raw = run_scheme(
        spec, mask, given, options=options, check_finite_inputs=check_finite_inputs
    )
    dtype = float_dtype(*(x for x in inputs.values() if x.is_floating_point()))
    with torch.no_grad():
        raw = raw.to(dtype)
        real = raw[bmask]
        if real.numel() and not bool(torch.isfinite(real).all()):
            raise ValueError(f"scheme {scheme!r} produced non-finite scores at real positions")
        if real.numel() and bool((real < 0).any()):
            raise ValueError(
                f"scheme {scheme!r} produced negative scores (min {float(real.min()):.3g}); "
                "salience must be >= 0"
            )
        return torch.where(bmask, raw, torch.zeros((), dtype=dtype, device=raw.device))


def scheme_inputs(
    spec: Scheme, mask: Tensor, given: Mapping[str, Any], *, check_finite_inputs: bool = True
) -> dict[str, Tensor]:
    """The inputs ``spec`` requires, from ``given``, checked and detached.

    ``mask`` is the bool ``(B, T)`` mask. A missing input, a wrong shape or
    dtype, or (with ``check_finite_inputs``) NaN/Inf at a real position is a
    ``ValueError`` naming the input."""
    inputs: dict[str, Tensor] = {}
    for name in spec.requires:
        x = given.get(name)
        if x is None:
            raise ValueError(
                f"scheme {spec.name!r} needs `{name}` (it requires: {', '.join(spec.requires)})"
            )
        if name in ROW_INPUTS:
            check_row(x, mask, name, ROW_INPUTS[name])
        elif name in INT_INPUTS:
            check_ids_like_mask(x, mask, name)
        else:
            check_like_mask(x, mask, name, trailing=1 if name in HIDDEN_INPUTS else 0)
            if check_finite_inputs:
                check_finite(x, mask, name)
        inputs[name] = x.detach()
    return inputs


def run_scheme(
    spec: Scheme,
    mask: Tensor,
    given: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None = None,
    check_finite_inputs: bool = True,
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Call ``spec``'s function on the checked inputs: ``(bool mask, inputs,
    its (B, T) output)``, the output not yet checked for its kind."""
    opts = spec.resolve_options(options)
    bmask = as_bool_mask(mask)
    inputs = scheme_inputs(spec, bmask, given, check_finite_inputs=check_finite_inputs)
    with torch.no_grad():
        out = spec.fn(mask=bmask, **inputs, **opts)
    if not isinstance(out, Tensor) or out.shape != bmask.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"scheme {spec.name!r} must return a (B, T) tensor matching mask "
            f"{tuple(bmask.shape)}, got {got}"
        )
    return bmask, inputs, out


# ---------------------------------------------------------------- built-ins
# Each returns values at padding that token_scores then zeroes; torch.where is
# used instead of multiplication wherever padding may hold -inf/NaN.


@register_scheme("uniform", description="w_t = 1/T: GRPO/RLOO's scalar broadcast (eq. 9)")
def _uniform(*, mask: Tensor) -> Tensor:
    return torch.ones(mask.shape, device=mask.device)


@register_scheme(
    "surprisal", requires=("logps",), description="-log pi(y_t): low-probability tokens (eq. 10)"
)
def _surprisal(*, mask: Tensor, logps: Tensor) -> Tensor:
    # log-probs can round to a hair above 0 for near-certain tokens.
    return (-logps.to(float_dtype(logps))).clamp_min(0.0)


@register_scheme(
    "entropy",
    requires=("entropies",),
    description="max(0, H_t - H_next): commitment points (eq. 12-13)",
)
def _entropy_reduction(*, mask: Tensor, entropies: Tensor) -> Tensor:
    H = torch.where(mask, entropies.to(float_dtype(entropies)), 0.0)
    nxt = next_real_index(mask)
    has_next = nxt < mask.shape[1]
    H_next = torch.gather(H, 1, nxt.clamp(max=mask.shape[1] - 1))
    # The last real token of each row has no successor: eq. 13 sets it to 0.
    return torch.where(has_next, (H - H_next).clamp_min(0.0), 0.0)


@register_scheme(
    "divergence",
    requires=("logps", "ref_logps"),
    description="|log pi(y_t) - log pi_ref(y_t)|: drift from the reference (eq. 14)",
)
def _divergence(*, mask: Tensor, logps: Tensor, ref_logps: Tensor) -> Tensor:
    dt = float_dtype(logps, ref_logps)
    return (logps.to(dt) - ref_logps.to(dt)).abs()


@register_scheme(
    "arca",
    requires=("h_adapted", "h_base"),
    description="||h_adapted_t - h_base_t||_2: where the adapter acts (eq. 15)",
)
def _arca(*, mask: Tensor, h_adapted: Tensor, h_base: Tensor) -> Tensor:
    return hidden_residual_norm(h_adapted, h_base)


@register_scheme(
    "arca_local",
    requires=("h_shift",),
    description="||sum_l J B_l A_l x_l||: the adapter's direct write, no extra pass (Prop. 3)",
)
def _arca_local(*, mask: Tensor, h_shift: Tensor) -> Tensor:
    return torch.linalg.vector_norm(h_shift.to(float_dtype(h_shift)), dim=-1)


@register_scheme(
    "high_entropy",
    requires=("entropies",),
    options={"quantile": 0.2, "pool": None},
    description="1 on the top-quantile entropy tokens of the batch, or of a given pool "
    "(TRL's top_entropy_quantile)",
)
def _high_entropy(
    *, mask: Tensor, entropies: Tensor, quantile: float, pool: Tensor | None
) -> Tensor:
    if not (isinstance(quantile, int | float) and 0 < quantile <= 1):
        raise ValueError(f"high_entropy: quantile must be in (0, 1], got {quantile!r}")
    H = entropies.to(float_dtype(entropies))
    if pool is not None and (not isinstance(pool, Tensor) or pool.dim() != 1):
        raise ValueError("high_entropy: pool must be a 1-D tensor of entropies")
    real = H[mask] if pool is None else pool.to(H.device, H.dtype)
    if real.numel() == 0:
        return torch.zeros_like(H)
    # torch.quantile's linear interpolation (as TRL), via a sort: no 2**24-element limit.
    srt = real.sort().values
    pos = (1 - quantile) * (srt.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, srt.numel() - 1)
    threshold = srt[lo] + (srt[hi] - srt[lo]) * (pos - lo)
    return (H >= threshold).to(H.dtype)


#: The built-in schemes, in the paper's order (then arca's additions).
BUILTIN_SCHEMES = (
    "uniform",
    "surprisal",
    "entropy",
    "divergence",
    "arca",
    "arca_local",
    "high_entropy",
)

#: The field's published schemes and the ground-truth ceiling, registered by
#: their own modules (:mod:`arca.credit.oracle`, :mod:`arca.credit.ktae`,
#: :mod:`arca.credit.process_sets`, :mod:`arca.credit.oar`) when
#: :mod:`arca.credit` is imported; docs/credit-schemes.md defines them.
FIELD_SCHEMES = ("oracle", "ktae", "lambda_grpo", "oar_g")

#: Schemes that read the ground truth of where a completion went wrong: a
#: ceiling to measure against, not a method one can deploy.
GROUND_TRUTH_SCHEMES = frozenset({"oracle"})

#: How the report and ``arca diagnose`` name a ground-truth scheme.
CEILING_TAG = "(ceiling: uses ground truth)"


def scheme_label(name: str) -> str:
    """``name``, tagged :data:`CEILING_TAG` if it reads the ground truth."""
    return f"{name} {CEILING_TAG}" if name in GROUND_TRUTH_SCHEMES else name


def scheme_kind(name: str) -> str:
    """The :attr:`Scheme.kind` of a registered scheme."""
    return get_scheme(name).kind


_BASE_SIDE = frozenset({"ref_logps", "h_base", "h_shift"})


def compares_with_base(scheme: str) -> bool:
    """Does ``scheme`` measure a policy against its base model (reference
    log-probs, base hidden states, or the adapter's own write)? Such a scheme
    has no signal on the base model itself, before any training."""
    return bool(_BASE_SIDE & set(get_scheme(scheme).requires))


def hidden_residual_norm(h_adapted: Tensor, h_base: Tensor) -> Tensor:
    """``||h_adapted - h_base||_2`` over the last dim, ``(B, T, d) -> (B, T)``.

    The difference is taken in float32 (float64 if an input is): in bf16 two
    nearly equal hidden states subtract to rounding noise.
    """
    dt = float_dtype(h_adapted, h_base)
    # copy=True: the in-place subtraction must never write into the caller's tensor.
    diff = h_adapted.to(dt, copy=True).sub_(h_base.to(dt))
    return torch.linalg.vector_norm(diff, dim=-1)


def residual_noise_floor(
    h_base: Tensor, factor: float = 1.0, compute_dtype: torch.dtype | None = None
) -> Tensor:
    """Below this ``(B, T)`` value, ``||h_adapted - h_base||`` is rounding noise.

    ``factor * eps * ||h_base_t||``, with ``eps`` the machine epsilon of the
    coarser of the hidden states' dtype and ``compute_dtype``, the dtype they
    were computed in (under bf16 autocast, float32 states carry bf16 noise):
    ``2**-7`` for bf16, ``2**-23`` for float32. The noise of two separately
    computed states measures 0.2-2 ``eps * ||h||`` (``benchmarks/bf16_residual.py``,
    docs/performance.md). ``(B, T, d) -> (B, T)``.
    """
    eps = torch.finfo(h_base.dtype).eps if h_base.is_floating_point() else 0.0
    if compute_dtype is not None:
        eps = max(eps, torch.finfo(compute_dtype).eps)
    return torch.linalg.vector_norm(h_base.float(), dim=-1) * (factor * eps)


def next_real_index(mask: Tensor) -> Tensor:
    """For each position, the index of the next real token in its row.

    ``(B, T) bool -> (B, T) long``; ``T`` where no real token follows. Works for
    left, right or interior padding: ``H_next`` is always the next *real*
    token's entropy, never a padding value.
    """
    B, T = mask.shape
    pos = torch.arange(T, device=mask.device).expand(B, T)
    real_pos = torch.where(mask, pos, T)
    # Shift left by one so position t sees only s > t, then a reversed running min.
    after = torch.cat([real_pos[:, 1:], real_pos.new_full((B, 1), T)], dim=1)
    return after.flip(1).cummin(dim=1).values.flip(1)
