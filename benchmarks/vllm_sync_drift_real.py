"""benchmarks/vllm_sync_drift.py again, with TRL's real weight sync into a real vLLM.

    python benchmarks/vllm_sync_drift_real.py [--model tiny|smollm2] [--cycles 1 10 100]
        [--train-steps 30] [--json OUT.json]

Runs in the vLLM environment (``make install-vllm``). vllm_sync_drift.py runs
``merge_adapter()`` / ``unmerge_adapter()`` by hand, as TRL's sync does; here
the cycles are TRL's own ``VLLMGeneration.sync_weights`` of a
:class:`arca.trainer.CreditGRPOTrainer` with ``use_vllm: true`` (colocate),
which merges the adapter, streams the merged weights into the vLLM engine
(through ``reload_weights`` on the CPU, :func:`arca.trainer.patch_colocated_cpu_sync`) and unmerges it.
The base model is in bfloat16 (where the round trip rounds), the rank-64 adapter
has ``lora_B ~ N(0, b_std)`` as in vllm_sync_drift.py, and the same fixed batch is
scored before and after with the same metrics (``dh_base``, ``dr``, ``spearman``,
``max_ulp``, ``changed``, ``rel_fro``; see that script). The model is
:func:`arca.models.vllm_heads.vllm_ready`'s folder (the tiny model widened to head size
32, the same function), so its LoRA shapes, and the random adapter, differ from
vllm_sync_drift.py's.

Two checks that the syncs are real: after the cycles, vLLM's log-probs of a
fixed completion are compared with the merged policy's (transformers, same
bf16 weights) and with the base model's, and ``--train-steps N`` then trains N
GRPO steps (arithmetic, ARCA weighting, lr 3e-4, one real sync per step) and
reports the drift of the base weights and of ARCA's residual after them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from vllm_sync_drift import HEADER, batch, compare, lora_layers, score  # noqa: E402


def trainer_for(args: argparse.Namespace) -> Any:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arca.models import LORA_TARGETS
    from arca.models.vllm_heads import vllm_ready
    from arca.tasks.loaders import task_from_config
    from arca.trainer import CreditGRPOConfig, CreditGRPOTrainer

    path = vllm_ready(args.model)
    task = task_from_config({"task": "arithmetic", "level": 3 if args.model == "tiny" else 1})
    cfg = CreditGRPOConfig(
        output_dir="/tmp/arca-vllm-drift",
        per_device_train_batch_size=16,
        num_generations=4,
        max_steps=max(args.train_steps, 1),
        max_completion_length=48 if args.model == "tiny" else 32,
        learning_rate=3e-4,
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        save_strategy="no",
        loss_type="grpo",
        token_weighting="arca",
        use_vllm=True,
        vllm_mode="colocate",
        disable_tqdm=True,
        logging_steps=1,
    )
    lora = LoraConfig(
        r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=LORA_TARGETS
    )
    tr = CreditGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16),
        reward_funcs=task.trl_rewards(),
        args=cfg,
        train_dataset=task.train,
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=lora,
    )
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for n, p in sorted(tr.model.named_parameters()):
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * args.b_std)
    return tr


@torch.no_grad()
def vllm_vs_policy(tr: Any, ids: torch.Tensor, attn: torch.Tensor, C: int) -> dict[str, float]:
    """Mean |vLLM log-prob - transformers log-prob| of the last ``C`` tokens of
    each row, against the merged policy and against the base model."""
    from vllm import SamplingParams

    rows = [r[m.bool()].tolist() for r, m in zip(ids, attn, strict=True)]
    prompts = [{"prompt_token_ids": r} for r in rows]
    outs = tr.vllm_generation.llm.generate(
        prompts, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
    )
    vl = torch.tensor(
        [[next(iter(d.values())).logprob for d in o.prompt_logprobs[-C:]] for o in outs]
    )
    model = tr.accelerator.unwrap_model(tr.model)
    model.eval()

    def hf() -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=attn).logits[:, -C - 1 : -1].float()
        return torch.log_softmax(logits, -1).gather(2, ids[:, -C:, None])[..., 0]

    on = hf()
    with model.disable_adapter():
        off = hf()
    return {
        "vllm_vs_policy": float((vl - on).abs().mean()),
        "vllm_vs_base": float((vl - off).abs().mean()),
        "policy_vs_base": float((on - off).abs().mean()),
    }


def row_text(name: str, n: int, row: dict[str, float]) -> str:
    return (
        f"{name:>9}{n:>7}{row['dh_base']:>10.2e}{row['dr']:>10.2e}{row['spearman']:>10.6f}"
        f"{row['max_ulp_bf16']:>9.3g}{row['changed']:>9.3f}{row['rel_fro']:>10.2e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="tiny", help="tiny or smollm2")
    ap.add_argument("--cycles", nargs="+", type=int, default=[1, 10, 100])
    ap.add_argument("--train-steps", type=int, default=30, help="0: no training part")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--b-std", type=float, default=0.008)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("-C", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    tr = trainer_for(args)
    model = tr.accelerator.unwrap_model(tr.model)
    model.eval()
    ids, attn = batch(tr.processing_class, args.batch, args.C, seed=args.seed)
    layers = lora_layers(model)
    targets = {n: m.get_base_layer().weight for n, m in layers.items()}
    pristine = {n: w.detach().clone() for n, w in targets.items()}
    before = score(model, ids, attn, args.C)
    print(
        f"{args.model} (vLLM-ready: {tr.model.config._name_or_path}), bf16 base, {len(targets)} merged layers"
    )
    print("TRL's sync_weights into vLLM, fixed adapter")
    print(HEADER)
    rows, done = [], 0
    sync = tr.vllm_generation.sync_weights
    for n in sorted(args.cycles):
        t = time.perf_counter()
        for _ in range(n - done):
            sync()
        cycle_s = (time.perf_counter() - t) / max(n - done, 1)
        done = n
        after = score(model, ids, attn, args.C)
        current = {k: w.detach().clone() for k, w in targets.items()}
        delta = {k: m.get_delta_weight("default").float() for k, m in layers.items()}
        row = {"part": "syncs", "cycles": n, "sync_s": cycle_s}
        row |= compare(before, after, pristine, current, delta)
        rows.append(row)
        print(row_text("bfloat16", n, row), f"  ({cycle_s * 1e3:.0f} ms a sync)", flush=True)
    check = vllm_vs_policy(tr, ids, attn, args.C)
    print(
        "vLLM after the syncs, mean |log-prob gap| over the batch's last C tokens: "
        f"to the merged policy {check['vllm_vs_policy']:.4f}, to the base model "
        f"{check['vllm_vs_base']:.4f} (policy vs base {check['policy_vs_base']:.4f})"
    )

    train = None
    if args.train_steps > 0:
        tr.model.train()
        t = time.perf_counter()
        tr.train()
        train_s = time.perf_counter() - t
        model.eval()
        current = {k: w.detach().clone() for k, w in targets.items()}
        after = score(model, ids, attn, args.C)
        for k, w in targets.items():  # the pristine base under the trained adapter
            w.data.copy_(pristine[k])
        ref = score(model, ids, attn, args.C)
        for k, w in targets.items():
            w.data.copy_(current[k])
        delta = {k: m.get_delta_weight("default").float() for k, m in layers.items()}
        train = {"part": "training", "steps": tr.state.global_step, "train_s": train_s}
        train |= compare(ref, after, pristine, current, delta)
        sync()  # the last step's update is not in vLLM yet: TRL syncs before generating
        check_after = vllm_vs_policy(tr, ids, attn, args.C)
        train |= {f"after_{k}": v for k, v in check_after.items()}
        print(
            f"after {done} syncs and {train['steps']} training steps with vLLM ({train_s:.0f} s):"
        )
        print(HEADER)
        print(row_text("bfloat16", done + train["steps"], train))
    print(f"wall {time.perf_counter() - t0:.1f} s")
    if args.json:
        out = {
            "args": vars(args),
            "date": time.strftime("%Y-%m-%d"),
            "rows": rows,
            "vllm_check": check,
            "training": train,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
