"""Step time of arca's trainer generating with vLLM (colocate) or with transformers.

    python benchmarks/vllm_step_time.py --preset tiny/arca_r64 --backend vllm [--steps 6]
        [--batch 32] [--json OUT.json]

Runs in the vLLM environment (``make install-vllm``; ``--backend hf`` runs in
either). Builds :class:`arca.trainer.CreditGRPOTrainer` from a preset's fields as
``arca train`` does (task, prompts, reward, LoRA, scheme, lengths, sampling),
with ``save_strategy: no``, and times each optimizer step: the whole step, the
generation in it (TRL's ``_generate_single_turn``: vLLM's ``generate`` or
``model.generate``) and, with vLLM, the weight sync. The first step is a warm-up
and is left out of the medians. The model is :func:`arca.models.vllm_heads.vllm_ready`'s
folder for both backends (the tiny model widened to head size 32, the same
function), so the two compare the same policy. vLLM's CPU build computes in
bf16 (TRL passes no dtype and vLLM downcasts a float32 checkpoint); the
training side stays float32, as the presets set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def build(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arca.config import config_path, read_config
    from arca.models import LORA_TARGETS
    from arca.models.vllm_heads import vllm_ready
    from arca.tasks.loaders import task_from_config
    from arca.trainer import CreditGRPOConfig, CreditGRPOTrainer

    cfg = read_config(config_path(args.preset))
    path = vllm_ready(cfg["model_name_or_path"])
    task = task_from_config(cfg)
    fields = {f.name for f in dataclasses.fields(CreditGRPOConfig)}
    kw = {k: v for k, v in cfg.items() if k in fields}
    kw |= dict(
        output_dir=args.out,
        max_steps=args.steps,
        save_strategy="no",
        report_to=[],
        use_vllm=args.backend == "vllm",
        vllm_mode="colocate",
        disable_tqdm=True,
    )
    if args.batch:
        kw["per_device_train_batch_size"] = args.batch
    lora = LoraConfig(
        r=cfg["lora_r"],
        lora_alpha=cfg["lora_alpha"],
        lora_dropout=cfg.get("lora_dropout", 0.05),
        target_modules=LORA_TARGETS,
    )
    t = time.perf_counter()
    trainer = CreditGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        reward_funcs=task.trl_rewards(),
        args=CreditGRPOConfig(**kw),
        train_dataset=task.train,
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=lora,
        error_locator=task.locate_error,
    )
    info = {"model": path, "init_s": time.perf_counter() - t, "config": kw}
    return trainer, info


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="tiny/arca_r64", help="a preset, as arca train --config")
    ap.add_argument("--backend", choices=["hf", "vllm"], required=True)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is warm-up)")
    ap.add_argument("--batch", type=int, help="per_device_train_batch_size (default: the preset's)")
    ap.add_argument("--out", default="/tmp/arca-vllm-step-time")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the first step is warm-up)")

    from transformers import TrainerCallback

    trainer, info = build(args)
    gen_s: list[float] = []
    sync_s: list[float] = []
    step_s: list[float] = []
    real_gen = trainer._generate_single_turn

    def timed_gen(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real_gen(*a, **kw)
        finally:
            gen_s.append(time.perf_counter() - t)

    trainer._generate_single_turn = timed_gen
    if args.backend == "vllm":
        real_sync = trainer.vllm_generation.sync_weights

        def timed_sync() -> None:
            t = time.perf_counter()
            real_sync()
            sync_s.append(time.perf_counter() - t)

        trainer.vllm_generation.sync_weights = timed_sync

    class Clock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            step_s.append(time.perf_counter() - self.t)

    trainer.add_callback(Clock())
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "loss" in h]
    # TRL's generation (and the sync, which runs inside it) counted in the step it belongs to.
    gen_only = [g - s for g, s in zip(gen_s, sync_s, strict=False)] if sync_s else gen_s

    def med(xs: list[float]) -> float:
        return statistics.median(xs[1:])

    row = {
        "preset": args.preset,
        "backend": args.backend,
        "steps": args.steps,
        "batch": info["config"]["per_device_train_batch_size"],
        "max_completion_length": info["config"]["max_completion_length"],
        "init_s": info["init_s"],
        "step_s": med(step_s),
        "generate_s": med(gen_only),
        "sync_s": med(sync_s) if sync_s else 0.0,
        "rest_s": med(step_s) - med(gen_s),
        "mean_completion_tokens": statistics.mean(lengths[1:]),
        "per_step": {"step": step_s, "generate": gen_s, "sync": sync_s},
        "date": time.strftime("%Y-%m-%d"),
    }
    print(
        f"{args.preset} {args.backend}: init {row['init_s']:.1f} s; per step (median of "
        f"{args.steps - 1}): {row['step_s']:.2f} s, generation {row['generate_s']:.2f} s, "
        f"sync {row['sync_s']:.3f} s, the rest {row['rest_s']:.2f} s; "
        f"{row['mean_completion_tokens']:.1f} tokens per completion"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)


if __name__ == "__main__":
    main()
