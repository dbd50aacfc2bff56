"""Writes configs/{paper,tiny,tiny-full,tiny-bench}/*.yaml: the paper's Table 1
sweep, its tiny twin, the tiny twin's full fine-tuning control, and the credit
bench.

    python configs/generate.py

paper, tiny: seven runs each: uniform, surprisal, entropy and divergence at
LoRA rank 64, ARCA at ranks 4, 16 and 64 (lora_alpha = 2 * rank; the paper
does not give it).

tiny-full: the paper's five schemes with every weight trained (use_peft:
false); divergence and ARCA compare with a frozen copy of the initial model.
This is the control the paper's claim needs ("not a problem with the
underlying signals in a fully trainable policy"). Its learning rate matches
LoRA r64's drift on the default task (level 3): after 30 uniform steps (seed
1337), the exact mean per-token KL(pi || initial) on 256 completions sampled
from the initial model was 0.0133 for LoRA r64 at lr 3e-4 and 0.0048 / 0.0106 /
0.0134 / 0.0164 for full fine-tuning at 1e-4 / 2e-4 / 2.5e-4 / 3e-4
(2026-11-23): 2.5e-4. (On level 1 the match was 2e-4: 0.0050 against 0.0054.)

tiny-bench: every scheme arca has (uniform, the oracle ceiling, the paper's,
high_entropy, the field's KTAE, OAR-G and lambda-GRPO), LoRA r64, with a
learning curve (held-out greedy accuracy every 10 steps). Its setting was
chosen by measurement (2026-12-04, docs/credit-bench.md): on level 3 uniform
GRPO moved greedy accuracy from 25% to 26.5-29% in 80 steps at lr 3e-4 and
collapsed it at 1e-3 and 3e-3 (2-15%, 0%); the one-step model on level 1
learned steadily at lr 3e-4 (39% to 39.5-44.5% in 80 steps, 3 seeds) and
collapsed at 6e-4. So: tiny-l1, level 1, lr 3e-4, 80 steps, where oracle
and uniform differ by more than seed noise.
"""

from pathlib import Path

import yaml

RUNS = [
    ("uniform", 64),
    ("surprisal", 64),
    ("entropy", 64),
    ("divergence", 64),
    ("arca", 4),
    ("arca", 16),
    ("arca", 64),
]

COMMON = {
    "use_peft": True,
    "lora_dropout": 0.05,
    "advantage_estimator": "grpo",
    "loss_type": "grpo",
    "shadow_diagnostics": True,
    "num_generations": 4,
    "weight_decay": 0.0,
    "lr_scheduler_type": "cosine",
    "temperature": 1.0,
    "top_p": 0.95,
    "beta": 0.0,
    "seed": 1337,
    "logging_steps": 1,
    "save_strategy": "steps",
    "report_to": "none",
}

PAPER = {  # paper 4.1 / Table 1
    "model_name_or_path": "Qwen/Qwen3-1.7B-Base",
    "task": "math",
    "heldout_size": 200,
    "per_device_train_batch_size": 8,  # 2 prompts x K=4 completions
    "gradient_accumulation_steps": 4,
    "max_steps": 100,
    "learning_rate": 5.0e-6,
    "warmup_steps": 10,
    "max_prompt_length": 512,
    "max_completion_length": 512,
    "save_steps": 20,
    "bf16": True,
    "sample_every": 10,
}

TINY = {  # arca's embedded model on two-step arithmetic (level 3), on 2 CPU cores
    "model_name_or_path": "tiny",
    "task": "arithmetic",
    "level": 3,
    "heldout_size": 200,
    "per_device_train_batch_size": 32,  # 8 prompts x K=4
    "gradient_accumulation_steps": 1,
    "max_steps": 30,
    "learning_rate": 3.0e-4,
    "warmup_steps": 3,
    "max_prompt_length": 128,
    "max_completion_length": 48,  # the longest level-3 solution is 46 characters
    "save_steps": 10,
    "use_cpu": True,
    "bf16": False,
    "sample_every": 10,
}

TINY_FULL = {**TINY, "learning_rate": 2.5e-4}  # matched drift (module docstring)
FULL_RUNS = ["uniform", "surprisal", "entropy", "divergence", "arca"]

TINY_BENCH = {
    **TINY,
    "model_name_or_path": "tiny-l1",
    "level": 1,
    "max_completion_length": 32,  # the longest level-1 solution is 26 characters
    "max_steps": 80,
    "save_steps": 40,
    "sample_every": 20,
    "eval_every": 10,
    "eval_problems": 200,
}
BENCH_RUNS = [
    "uniform",
    "oracle",
    "surprisal",
    "entropy",
    "divergence",
    "arca",
    "high_entropy",
    "ktae",
    "oar_g",
    "lambda_grpo",
]
#: The stronger of the oracle ceilings measured (docs/credit-bench.md).
ORACLE = {"oracle_share": 0.2, "oracle_rest": "after"}

HEADER = {
    "paper": "# Paper Table 1: Qwen3-1.7B-Base on MATH, GRPO, K=4, 100 steps, seed 1337 (one H100-class GPU).\n",
    "tiny": "# Tiny twin of the paper's run: arca's embedded model, synthetic arithmetic, CPU.\n",
    "tiny-full": "# The tiny twin with full fine-tuning (every weight trained): the paper's missing control.\n",
    "tiny-bench": "# The credit bench: every scheme on the one-step tiny model, with a learning curve.\n",
}

if __name__ == "__main__":
    root = Path(__file__).parent
    for preset, settings in (("paper", PAPER), ("tiny", TINY)):
        (root / preset).mkdir(exist_ok=True)
        for scheme, rank in RUNS:
            name = f"{scheme}_r{rank}"
            cfg = {
                **settings,
                **COMMON,
                "token_weighting": scheme,
                "lora_r": rank,
                "lora_alpha": 2 * rank,
                "output_dir": f"runs/{preset}/{name}",
            }
            text = (
                HEADER[preset]
                + "# Generated by configs/generate.py; edit that file, not this one.\n"
            )
            (root / preset / f"{name}.yaml").write_text(text + yaml.safe_dump(cfg, sort_keys=False))
    (root / "tiny-full").mkdir(exist_ok=True)
    common = {k: v for k, v in COMMON.items() if not k.startswith("lora") and k != "use_peft"}
    for scheme in FULL_RUNS:
        name = f"{scheme}_full"
        cfg = {
            **TINY_FULL,
            **common,
            "use_peft": False,
            "token_weighting": scheme,
            "output_dir": f"runs/tiny-full/{name}",
        }
        text = (
            HEADER["tiny-full"]
            + "# Generated by configs/generate.py; edit that file, not this one.\n"
        )
        (root / "tiny-full" / f"{name}.yaml").write_text(
            text + yaml.safe_dump(cfg, sort_keys=False)
        )
    (root / "tiny-bench").mkdir(exist_ok=True)
    for scheme in BENCH_RUNS:
        name = f"{scheme}_r64"
        cfg = {
            **TINY_BENCH,
            **COMMON,
            "token_weighting": scheme,
            **(ORACLE if scheme == "oracle" else {}),
            "lora_r": 64,
            "lora_alpha": 128,
            "output_dir": f"runs/tiny-bench/{name}",
        }
        text = (
            HEADER["tiny-bench"]
            + "# Generated by configs/generate.py; edit that file, not this one.\n"
        )
        (root / "tiny-bench" / f"{name}.yaml").write_text(
            text + yaml.safe_dump(cfg, sort_keys=False)
        )
