"""Which aggregate of the LoRA layers' own outputs tracks exact ARCA best?

    python benchmarks/arca_local_fidelity.py --model tiny \\
        --adapter runs/demo/arca_r64/seed-1337/adapter \\
        --completions runs/diag-tiny/step30/completions.jsonl [--json OUT.json]

Paper Prop. 3 writes ARCA's residual as ``dh_t = sum_l B_l A_l x_{l,t} + e_t``.
``arca_local`` reads the adapter's per-position output from hooks inside the
training forward instead of running the adapter-disabled pass. This script
scores each candidate aggregate against exact ARCA (``||h_adapted -
h_base||``, two passes) on real completions of a trained adapter:

- ``last_direct``: the last block's LoRA outputs that write into the residual
  stream (``o_proj`` + ``down_proj``), summed, then the norm;
- ``all_direct``: the same summed over every block;
- ``*_normed``: that sum pushed through the final RMSNorm's Jacobian at the
  adapted residual stream (exact ARCA is read after that norm);
- ``last_sum_norms`` / ``all_sum_norms``: the sum of every LoRA module's
  output norm, in the last block / in all blocks.

Reported per candidate: Spearman correlation of its weights with exact ARCA's
(mean over completions), and the gaps in mean Gini and effective-token ratio.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import _adapter_cli  # benchmarks/, next to this script
import torch
from torch import Tensor, nn

from arca.credit import effective_token_ratio, gini, normalize, rank_correlation, token_weights
from arca.diagnose.completions import Completion
from arca.diagnose.completions import batch as _batch
from arca.scoring import (
    backbone,
    capture_adapter_deltas,
    capture_adapter_shift,
    completion_token_stats,
    final_norm,
    norm_jacobian_vp,
)

DIRECT = ("o_proj", "down_proj")


def _layer(name: str) -> int:
    m = re.search(r"\.layers\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def candidates(
    deltas: dict[str, Tensor], x_final: Tensor, norm: nn.Module, x_in: list[Tensor]
) -> dict[str, Tensor]:
    """Each candidate's raw ``(B, C)`` score from per-layer ``(B, C, out)`` deltas."""
    last = max(_layer(k) for k in deltas)

    def direct(pick: Callable[[str], bool]) -> Tensor:
        return sum(v for k, v in deltas.items() if k.rsplit(".", 1)[-1] in DIRECT and pick(k))

    out = {}
    for scope, pick in (("last", lambda k: _layer(k) == last), ("all", lambda k: True)):
        s = direct(pick)
        out[f"{scope}_direct"] = s.norm(dim=-1)
        out[f"{scope}_direct_normed"] = norm_jacobian_vp(norm, x_final, s).norm(dim=-1)
        out[f"{scope}_sum_norms"] = sum(v.norm(dim=-1) for k, v in deltas.items() if pick(k))
        out[f"{scope}_direct_relative"] = sum(
            v.norm(dim=-1) / x_in[_layer(k)].square().mean(-1).add(1e-6).sqrt()
            for k, v in deltas.items()
            if k.rsplit(".", 1)[-1] in DIRECT and pick(k)
        )
    return out


@torch.no_grad()
def fidelity(
    model: nn.Module, tok: Any, items: Sequence[Completion], batch_size: int = 8
) -> dict[str, dict[str, float]]:
    body = backbone(model)
    norm = final_norm(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    acc: dict[str, dict[str, list[Tensor]]] = {}
    for start in range(0, len(items), batch_size):
        ids, attn, mask = _batch(items[start : start + batch_size], pad)
        C = mask.shape[1]
        xs: list[Tensor] = []
        h = norm.register_forward_hook(
            lambda _m, a, _o, xs=xs, C=C: xs.append(a[0][:, -(C + 1) : -1].float())
        )
        x_in: list[Tensor] = []
        hs = [
            layer.register_forward_pre_hook(
                lambda _m, a, *r, x_in=x_in, C=C: x_in.append(
                    (a[0] if a else r[0]["hidden_states"])[:, -(C + 1) : -1].float()
                ),
                with_kwargs=True,
            )
            for layer in body.layers
        ]
        try:
            with capture_adapter_deltas(model, C) as cap, capture_adapter_shift(model, C) as sh:
                on = completion_token_stats(model, ids, attn, C)
        finally:
            h.remove()
            for x in hs:
                x.remove()
        off = completion_token_stats(model, ids, attn, C, adapter=False)
        deltas = {k: v[-1] for k, v in cap.items()}
        cands = candidates(deltas, xs[-1], norm, x_in[: len(body.layers)])
        # The shipped scheme's input must be exactly the all_direct_normed candidate.
        local = sh[-1].norm(dim=-1)
        torch.testing.assert_close(local, cands["all_direct_normed"], rtol=1e-4, atol=1e-6)
        w_exact = token_weights("arca", mask=mask, h_adapted=on["hidden"], h_base=off["hidden"])
        rows = {"exact": w_exact} | {k: _w(v, mask) for k, v in cands.items()}
        for k, w in rows.items():
            a = acc.setdefault(k, {"spearman": [], "gini": [], "eff": []})
            a["spearman"].append(rank_correlation(w, w_exact, mask))
            a["gini"].append(gini(w, mask))
            a["eff"].append(effective_token_ratio(w, mask))
    res = {}
    for k, a in acc.items():
        sp = torch.cat(a["spearman"])
        res[k] = {
            "spearman_mean": float(sp.nanmean()),
            "spearman_p10": float(sp.nanquantile(0.1)),
            "gini": float(torch.cat(a["gini"]).mean()),
            "effective_ratio": float(torch.cat(a["eff"]).mean()),
        }
    return res


def _w(raw: Tensor, mask: Tensor) -> Tensor:
    return normalize(raw, mask, eps=1e-8)


def main() -> None:
    args = _adapter_cli.parser(__doc__, limit=64).parse_args()
    model, tok, items = _adapter_cli.load(args)
    res = fidelity(model, tok, items)
    ex = res["exact"]
    print(
        f"{len(items)} completions; exact ARCA: Gini {ex['gini']:.3f}, EffN/T {ex['effective_ratio']:.3f}"
    )
    print(
        f"{'candidate':<22}{'Spearman':>9}{'p10':>7}{'Gini':>8}{'dGini':>8}{'EffN/T':>8}{'dEffN':>8}"
    )
    for k, r in res.items():
        print(
            f"{k:<22}{r['spearman_mean']:9.3f}{r['spearman_p10']:7.3f}{r['gini']:8.3f}"
            f"{r['gini'] - ex['gini']:+8.3f}{r['effective_ratio']:8.3f}"
            f"{r['effective_ratio'] - ex['effective_ratio']:+8.3f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "n": len(items), "results": res}, f, indent=2)


if __name__ == "__main__":
    main()
