"""Ragged test batches: the same rows laid out left- or right-padded.

Padding is filled with NaN so that any leak of padding into a result shows up
as a NaN or a failed comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass
class Ragged:
    rows: list[torch.Tensor]  # each (n_i,) or (n_i, d)
    T: int

    def layout(self, side: str, fill: float = float("nan"), device: str = "cpu"):
        """(values (B,T[,d]), mask (B,T) bool) with padding on ``side``."""
        B = len(self.rows)
        tail = self.rows[0].shape[1:] if self.rows else ()
        dtype = self.rows[0].dtype if self.rows else torch.float32
        out = torch.full((B, self.T, *tail), fill, dtype=dtype)
        mask = torch.zeros(B, self.T, dtype=torch.bool)
        for i, r in enumerate(self.rows):
            n = r.shape[0]
            sl = slice(0, n) if side == "right" else slice(self.T - n, self.T)
            out[i, sl] = r
            mask[i, sl] = True
        return out.to(device), mask.to(device)


def unpad(x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Real values of each row, in order."""
    return [x[i][mask[i]].cpu() for i in range(x.shape[0])]


@st.composite
def shapes(draw, max_b: int = 5, max_t: int = 12, min_len: int = 0):
    """(T, lengths): batch of 1..max_b rows, each 0..T real tokens."""
    T = draw(st.integers(1, max_t))
    B = draw(st.integers(1, max_b))
    lengths = draw(st.lists(st.integers(min(min_len, T), T), min_size=B, max_size=B))
    return T, lengths


@st.composite
def ragged_floats(draw, lo: float, hi: float, max_b: int = 5, max_t: int = 12, min_len: int = 0):
    """Ragged rows of floats in [lo, hi], drawn value by value (so hypothesis
    shrinks them and finds ties, zeros and extremes)."""
    T, lengths = draw(shapes(max_b, max_t, min_len))
    elems = st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=32)
    rows = [
        torch.tensor(draw(st.lists(elems, min_size=n, max_size=n)), dtype=torch.float32)
        for n in lengths
    ]
    return Ragged(rows, T)


def ragged_like(r: Ragged, fn) -> Ragged:
    """A second ragged input with the same lengths, values from ``fn(n)``."""
    return Ragged([fn(row.shape[0]) for row in r.rows], r.T)
