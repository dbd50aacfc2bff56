"""Input validation shared by the credit functions.

Every check raises ``ValueError`` with the name of the offending argument, so a
bad batch fails loudly at the boundary instead of producing NaN weights three
steps later.
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_bool_mask(mask: Tensor, name: str = "mask") -> Tensor:
    """Return ``mask`` as a bool ``(B, T)`` tensor; it must hold only 0/1."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() != 2:
        raise ValueError(f"`{name}` must have shape (B, T), got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() or mask.is_complex() or mask.dtype in _INT_DTYPES:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"`{name}` must contain only 0 and 1 (1 = real completion token)")
        return mask != 0
    raise TypeError(f"`{name}` has unsupported dtype {mask.dtype}")


_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def check_like_mask(x: Tensor, mask: Tensor, name: str, *, trailing: int = 0) -> None:
    """``x`` must be ``(B, T)`` (or ``(B, T, *trailing dims)``) matching ``mask``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 + trailing or x.shape[:2] != mask.shape:
        want = "(B, T)" if trailing == 0 else "(B, T, d)"
        raise ValueError(
            f"`{name}` must have shape {want} matching mask {tuple(mask.shape)}, "
            f"got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got {x.dtype}")
    if x.device != mask.device:
        raise ValueError(f"`{name}` is on {x.device} but mask is on {mask.device}")


class NonFiniteError(ValueError):
    """A credit input holds NaN/Inf at a real completion position; ``name``
    says which input. In training, after an update, it means the policy
    diverged (``arca train`` says so)."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


def check_finite(x: Tensor, mask: Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN/Inf at a real (mask=1) position.

    Padding may hold anything (``-inf`` log-probs are common there). ``x`` is
    ``(B, T)`` or ``(B, T, d)``; for the latter a position is bad if any of its
    ``d`` features is.
    """
    if x.dim() == 3:
        # A row sum is non-finite iff the row holds NaN/Inf -- or overflows, so
        # the exact elementwise test runs only when a sum is (rarely) non-finite.
        # One reduction in the input's own dtype instead of a (B, T, d) bool
        # tensor or an upcast copy: ~10x faster on CPU.
        if bool(torch.isfinite(x.sum(dim=-1))[mask].all()):
            return
        bad = (~torch.isfinite(x)).any(dim=-1)
    else:
        bad = ~torch.isfinite(x)
    bad &= mask
    if bool(bad.any()):
        b, t = (int(i) for i in bad.nonzero()[0])
        n = int(bad.sum())
        raise NonFiniteError(
            f"`{name}` has {n} non-finite value(s) at real completion positions "
            f"(first at row {b}, position {t}); mask them out or fix the upstream pass",
            name,
        )


def float_dtype(*xs: Tensor) -> torch.dtype:
    """The dtype credit math runs in: float64 if any input is, else float32.

    Half-precision inputs are promoted so that normalisation and diagnostics do
    not lose the small score differences they exist to measure.
    """
    if any(x.dtype == torch.float64 for x in xs):
        return torch.float64
    return torch.float32


#: Row inputs ``(B,)`` the registry knows, and the dtype family each must have.
ROW_INPUTS = {
    "advantages": "float",
    "correct": "bool",
    "group": "int",
    "error_index": "int",
    "answer_start": "int",
}

#: Integer ``(B, T)`` inputs (token ids).
INT_INPUTS = frozenset({"completion_ids"})


def check_row(x: Tensor, mask: Tensor, name: str, family: str) -> None:
    """``x`` must be a ``(B,)`` tensor matching ``mask``'s rows, of ``family``
    (``"float"``: finite floating point; ``"int"``: integer; ``"bool"``: bool or 0/1)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (B,), got {type(x).__name__}")
    if x.dim() != 1 or x.shape[0] != mask.shape[0]:
        raise ValueError(
            f"`{name}` must have shape (B,) = ({mask.shape[0]},), one value per row, "
            f"got {tuple(x.shape)}"
        )
    if x.device != mask.device:
        raise ValueError(f"`{name}` is on {x.device} but mask is on {mask.device}")
    if family == "float":
        if not x.is_floating_point():
            raise TypeError(f"`{name}` must be a floating-point tensor, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            i = int((~torch.isfinite(x)).nonzero()[0])
            raise ValueError(f"`{name}` has a non-finite value at row {i}")
    elif family == "int":
        if x.dtype not in _INT_DTYPES:
            raise TypeError(f"`{name}` must be an integer tensor, got {x.dtype}")
    elif family == "bool":
        if x.dtype != torch.bool and not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(f"`{name}` must be bool (or 0/1), got values other than 0 and 1")
    else:  # pragma: no cover - a programming error in the registry
        raise AssertionError(family)


def check_ids_like_mask(x: Tensor, mask: Tensor, name: str) -> None:
    """``x`` must be an integer ``(B, T)`` tensor matching ``mask`` (token ids)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != mask.shape:
        raise ValueError(
            f"`{name}` must have shape (B, T) matching mask {tuple(mask.shape)}, "
            f"got {tuple(x.shape)}"
        )
    if x.dtype not in _INT_DTYPES:
        raise TypeError(f"`{name}` must be an integer tensor (token ids), got {x.dtype}")
    if x.device != mask.device:
        raise ValueError(f"`{name}` is on {x.device} but mask is on {mask.device}")
