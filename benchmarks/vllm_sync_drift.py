"""How far TRL's vLLM weight sync moves the base model, and ARCA's weights with it.

    python benchmarks/vllm_sync_drift.py [--model tiny|smollm2] [--dtypes bfloat16 float32]
        [--cycles 1 10 100] [--b-std 0.008] [--b-step 0] [--json OUT.json]

TRL syncs a LoRA policy to vLLM every step by ``model.merge_adapter()``, reading
the merged weights, then ``model.unmerge_adapter()``
(``trl/generation/vllm_generation.py``, ``_iter_named_params``). In bfloat16,
``(W + s*B@A) - s*B@A`` rounds twice, so the base weights ``W`` that the
adapter-disabled pass sees drift from the pretrained ones, and with them
``h_base``, one side of ARCA's residual ``r_t = ||h_adapted_t - h_base_t||``.

The script loads the model with its base weights in each ``--dtypes`` entry,
wraps it in a rank-64 LoRA adapter (:func:`arca.models.add_lora`, default
targets; the LoRA factors stay float32 as peft keeps them) with ``lora_B`` drawn
from ``N(0, b_std)`` (the same adapter in every dtype), and scores a fixed batch
of 16 arithmetic prompts with their worked solutions
(:func:`arca.scoring.scheme_inputs`, the last ``C = 32`` positions). It then
runs merge/unmerge cycles and, after each count in ``--cycles``, compares the
scoring pass with the one on the pristine base weights (same adapter):

- ``dh_base``: mean ``||h_base_after - h_base_before||`` over mean ``r_before``
  (the number the issue reports);
- ``dr``: mean ``|r_after - r_before|`` over mean ``r_before``: how much the
  ARCA residual itself, hence its token weights, moves;
- ``spearman``: rank correlation of the ARCA weights before and after
  (:func:`arca.credit.rank_correlation`, mean over rows);
- ``max_ulp``: the largest change of one base weight, in bfloat16 ulps of
  ``max(|W|, |W + s*B@A|)`` (one round trip in bf16 moves a weight by at most
  about one); ``changed``: fraction of base weights (of the LoRA-targeted
  layers) that differ; ``rel_fro``: ``||W_after - W||_F / ||W||_F`` over those
  layers.

For scale, a line after the tables compares the two dtypes before any cycle (same
adapter): ``dr`` and ``spearman`` of the bf16 residual against the float32 one,
the noise that bf16 inference puts on ARCA anyway.

``--b-step S`` adds ``N(0, S)`` to every ``lora_B`` before each cycle (a stand-in
for the optimizer step between syncs, so each cycle rounds a different
``B@A``); the "before" pass then uses the pristine base with the current adapter.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from torch import Tensor, nn

from arca.credit import rank_correlation, token_weights
from arca.credit.schemes import hidden_residual_norm
from arca.models import add_lora, resolve
from arca.scoring import scheme_inputs
from arca.tasks.arithmetic import problems
from arca.tasks.base import make_prompt

BF16_MANTISSA_BITS = 7
HEADER = (
    f"{'dtype':>9}{'cycles':>7}{'dh_base':>10}{'dr':>10}{'spearman':>10}"
    f"{'max_ulp':>9}{'changed':>9}{'rel_fro':>10}"
)


def batch(tok: Any, n: int, C: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` prompts + worked solutions + EOS, left-padded to one length."""
    stream = problems(seed=seed)
    rows = []
    for _ in range(n):
        p = next(stream)
        text = make_prompt(p["problem"]) + " " + p["solution"]
        ids = tok(text)["input_ids"] + [tok.eos_token_id]
        if len(ids) < C + 1:
            raise ValueError(f"a sequence of {len(ids)} tokens is shorter than C + 1 = {C + 1}")
        rows.append(ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    T = max(map(len, rows))
    ids = torch.tensor([[pad] * (T - len(r)) + r for r in rows])
    attn = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    return ids, attn


def load(name: str, dtype: torch.dtype, rank: int, b_std: float, seed: int) -> tuple[Any, Any]:
    """The model with base weights in ``dtype`` and a LoRA adapter with random ``B``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    torch.manual_seed(seed)  # lora_A's init: the same adapter in every dtype
    model = add_lora(base, rank=rank, dropout=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in sorted(model.named_parameters()):
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * b_std)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The LoRA-wrapped layers, whose base weights merge/unmerge writes."""
    return {
        n: m
        for n, m in model.named_modules()
        if hasattr(m, "lora_A") and hasattr(m, "get_base_layer")
    }


def ulp(w: Tensor) -> Tensor:
    """bfloat16's spacing at each value of ``w`` (normal range), as float32."""
    _, e = torch.frexp(w.float().abs().clamp_min(torch.finfo(torch.bfloat16).tiny))
    return torch.ldexp(torch.ones_like(w, dtype=torch.float32), e - 1 - BF16_MANTISSA_BITS)


@torch.no_grad()
def score(model: nn.Module, ids: Tensor, attn: Tensor, C: int) -> dict[str, Tensor]:
    """``h_base``, the ARCA residual and ARCA's weights at the last ``C`` positions."""
    s = scheme_inputs(model, ids, attn, C)
    mask = torch.ones(ids.shape[0], C, dtype=torch.int)
    w = token_weights("arca", mask=mask, h_adapted=s["h_adapted"], h_base=s["h_base"])
    return {
        "h_base": s["h_base"].float(),
        "r": hidden_residual_norm(s["h_adapted"], s["h_base"]),
        "w": w,
        "h_norm": s["h_base"].float().norm(dim=-1),
    }


@torch.no_grad()
def set_weights(targets: dict[str, Tensor], values: dict[str, Tensor]) -> None:
    for n, w in targets.items():
        w.copy_(values[n])


def compare(
    before: dict[str, Tensor],
    after: dict[str, Tensor],
    w0: dict[str, Tensor],
    w1: dict[str, Tensor],
    delta: dict[str, Tensor],
) -> dict[str, float]:
    r0 = before["r"].mean()
    dh = (after["h_base"] - before["h_base"]).norm(dim=-1).mean()
    mask = torch.ones_like(before["r"], dtype=torch.int)
    diffs = {n: w1[n].float() - w0[n].float() for n in w0}
    # A merge/unmerge round trip rounds W + D, then W: bounded by about one ulp
    # of the larger of the two, whatever the storage dtype.
    max_ulp = max(
        float((d.abs() / ulp(torch.maximum(w0[n].abs(), (w0[n] + delta[n]).abs()))).max())
        for n, d in diffs.items()
    )
    changed = sum(int((d != 0).sum()) for d in diffs.values()) / sum(
        d.numel() for d in diffs.values()
    )
    fro = sum(float(d.square().sum()) for d in diffs.values()) ** 0.5
    fro0 = sum(float(w.float().square().sum()) for w in w0.values()) ** 0.5
    return {
        "dh_base": float(dh / r0),
        "dr": float((after["r"] - before["r"]).abs().mean() / r0),
        "spearman": float(rank_correlation(before["w"], after["w"], mask).nanmean()),
        "max_ulp_bf16": max_ulp,
        "changed": changed,
        "rel_fro": fro / fro0,
    }


@torch.no_grad()
def run(
    args: argparse.Namespace, dtype_name: str
) -> tuple[list[dict[str, Any]], dict[str, Tensor]]:
    """The table's rows for one dtype, and the scores before any cycle."""
    dtype = getattr(torch, dtype_name)
    model, tok = load(args.model, dtype, args.rank, args.b_std, args.seed)
    ids, attn = batch(tok, args.batch, args.C)
    layers = lora_layers(model)
    targets = {n: m.get_base_layer().weight for n, m in layers.items()}
    pristine = {n: w.clone() for n, w in targets.items()}
    lora_b = [p for n, p in sorted(model.named_parameters()) if "lora_B" in n]
    g = torch.Generator().manual_seed(args.seed + 2)

    before = initial = score(model, ids, attn, args.C)
    r0, h0 = float(before["r"].mean()), float(before["h_norm"].mean())
    print(
        f"{args.model} {dtype_name}: {len(targets)} merged layers, mean r {r0:.4g}, "
        f"mean ||h_base|| {h0:.4g} (r/||h_base|| {r0 / h0:.3f})",
        flush=True,
    )
    print(HEADER)
    rows, done = [], 0
    for n in sorted(args.cycles):
        t = time.perf_counter()
        for _ in range(n - done):
            if args.b_step > 0:
                for p in lora_b:
                    p.add_(torch.randn(p.shape, generator=g) * args.b_step)
            model.merge_adapter()
            model.unmerge_adapter()
        cycle_s = (time.perf_counter() - t) / max(n - done, 1)
        done = n
        after = score(model, ids, attn, args.C)
        current = {k: w.clone() for k, w in targets.items()}
        if args.b_step > 0:  # the pristine base under the adapter as it is now
            set_weights(targets, pristine)
            before = score(model, ids, attn, args.C)
            set_weights(targets, current)
        row = {"dtype": dtype_name, "cycles": n, "cycle_s": cycle_s}
        delta = {k: m.get_delta_weight("default").float() for k, m in layers.items()}
        row |= compare(before, after, pristine, current, delta)
        rows.append(row)
        print(
            f"{dtype_name:>9}{n:>7}{row['dh_base']:>10.2e}{row['dr']:>10.2e}"
            f"{row['spearman']:>10.6f}{row['max_ulp_bf16']:>9.3g}{row['changed']:>9.3f}"
            f"{row['rel_fro']:>10.2e}",
            flush=True,
        )
    return rows, initial


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="tiny", help="tiny, smollm2, a folder or a Hub id")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--cycles", nargs="+", type=int, default=[1, 10, 100])
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument(
        "--b-std",
        type=float,
        default=0.008,
        help="std of the random lora_B (0.008: mean r/||h_base|| ~0.09 on tiny, near a "
        "trained rank-64 adapter's 0.08 in benchmarks/results/bf16_tiny_r64.json)",
    )
    ap.add_argument("--b-step", type=float, default=0.0, help="std of lora_B's change per cycle")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("-C", type=int, default=32, help="positions scored (the last C)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    rows, initial = [], {}
    for d in args.dtypes:
        r, initial[d] = run(args, d)
        rows += r
    control = None
    if {"bfloat16", "float32"} <= initial.keys():
        a, b = initial["float32"], initial["bfloat16"]
        mask = torch.ones_like(a["r"], dtype=torch.int)
        control = {
            "dr": float((b["r"] - a["r"]).abs().mean() / a["r"].mean()),
            "spearman": float(rank_correlation(a["w"], b["w"], mask).nanmean()),
        }
        print(
            f"bf16 vs float32 before any cycle: dr {control['dr']:.2e}, "
            f"spearman {control['spearman']:.6f}"
        )
    print(f"wall {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "bf16_vs_fp32": control}, f, indent=2)


if __name__ == "__main__":
    main()
