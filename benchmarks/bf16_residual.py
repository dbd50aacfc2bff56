"""Exact ARCA's residual from bf16 hidden states against float32, as the adapter grows.

    python benchmarks/bf16_residual.py --model tiny \\
        --adapter runs/demo/arca_r64/seed-1337/adapter \\
        --completions runs/diag-tiny/step30/completions.jsonl [--json OUT.json]

A trained adapter's ``B`` matrices are scaled by ``s`` from 0 to 1 (the
adapter "growing from zero"). At each scale the residual ``||h_adapted -
h_base||`` is computed twice: with the whole model in float32, and with the
whole model in bfloat16 (hidden states bf16, subtracted in float32 as arca
does). Reported per scale, over real completion tokens:

- ``rel``: median float32 residual relative to ``||h_base||``;
- ``err``: median relative error of the bf16 residual, ``|r16 - r32| / r32``;
- ``spearman``: rank correlation of bf16 and float32 per-token residuals,
  mean over completions (what the weights' ranking sees);
- ``below/err xF``: fraction of tokens flagged by
  :func:`arca.credit.residual_noise_floor` with ``factor=F``, and the median
  error of the tokens not flagged;
- ``arca_local`` (from the LoRA factors in float32, no subtraction): Spearman
  of its bf16-model and float32-model values.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from typing import Any

import _adapter_cli  # benchmarks/, next to this script
import torch
from torch import Tensor, nn

from arca.credit import rank_correlation, residual_noise_floor
from arca.credit.schemes import hidden_residual_norm
from arca.diagnose.completions import Completion
from arca.diagnose.completions import batch as _batch
from arca.scoring import capture_adapter_shift, capture_final_hidden

SCALES = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
FACTORS = (1.0, 2.0, 4.0, 8.0)  # noise-floor multiples of eps(bf16) * ||h_base|| to try


@torch.no_grad()
def residuals(model: nn.Module, ids: Tensor, attn: Tensor, C: int) -> dict[str, Tensor]:
    """``h_base``, residual and arca_local score at the completion positions."""
    with capture_final_hidden(model, C) as on, capture_adapter_shift(model, C) as sh:
        model(input_ids=ids, attention_mask=attn, logits_to_keep=1)
    with model.disable_adapter(), capture_final_hidden(model, C) as off:
        model(input_ids=ids, attention_mask=attn, logits_to_keep=1)
    return {
        "h_base": off[-1],
        "r": hidden_residual_norm(on[-1], off[-1]),
        "local": sh[-1].norm(dim=-1),
    }


def scale_b(model: nn.Module, original: dict[str, Tensor], s: float) -> None:
    for n, p in model.named_parameters():
        if n in original:
            p.copy_(original[n] * s)


@torch.no_grad()
def sweep(
    m32: nn.Module, tok: Any, items: Sequence[Completion], scales: Sequence[float]
) -> list[dict[str, float]]:
    m16 = copy.deepcopy(m32).to(torch.bfloat16)
    orig32 = {n: p.clone() for n, p in m32.named_parameters() if "lora_B" in n}
    orig16 = {n: p.clone() for n, p in m16.named_parameters() if "lora_B" in n}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, attn, mask = _batch(items, pad)
    C, m = mask.shape[1], mask.bool()
    rows = []
    for s in scales:
        scale_b(m32, orig32, s)
        scale_b(m16, orig16, s)
        a, b = residuals(m32, ids, attn, C), residuals(m16, ids, attn, C)
        r32, r16 = a["r"][m], b["r"][m]
        rel = r32 / a["h_base"].float().norm(dim=-1)[m]
        err = (r16 - r32).abs() / r32.clamp_min(1e-30)
        row = {
            "scale": s,
            "rel": float(rel.median()),
            "err": float(err.median()) if s > 0 else float("nan"),
            "spearman": float(rank_correlation(b["r"], a["r"], mask).nanmean()),
            "local_spearman": float(rank_correlation(b["local"], a["local"], mask).nanmean()),
        }
        line = f"{s:8.3f}{row['rel']:11.2e}{row['err']:9.3f}{row['spearman']:10.3f}"
        for f in FACTORS:
            below = (residual_noise_floor(b["h_base"], f) > b["r"])[m]
            kept = err[~below]
            row[f"below_{f:g}"] = float(below.float().mean())
            row[f"err_kept_{f:g}"] = float(kept.median()) if s > 0 and kept.numel() else math.nan
            line += f"{row[f'below_{f:g}']:7.2f}/{row[f'err_kept_{f:g}']:<6.2f}"
        rows.append(row)
        print(line + f"{row['local_spearman']:9.3f}", flush=True)
    return rows


def main() -> None:
    args = _adapter_cli.parser(__doc__, limit=32).parse_args()
    model, tok, items = _adapter_cli.load(args)
    print(f"{args.model} + {args.adapter}: {len(items)} completions")
    print(
        f"{'scale':>8}{'rel':>11}{'err':>9}{'spearman':>10}"
        + "".join(f"  below/err x{f:<3g}" for f in FACTORS)
        + f"{'local_sp':>9}"
    )
    rows = sweep(model, tok, items, SCALES)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
