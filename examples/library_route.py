"""arca as a library: your data, your reward, your model, in TRL's GRPOTrainer API.

``CreditGRPOTrainer`` is ``trl.GRPOTrainer`` with the token weighting of the
paper; ``CreditGRPOConfig`` is ``trl.GRPOConfig`` plus ``token_weighting`` and
its options. Anything that runs in TRL runs here: a conversational dataset
(TRL applies the model's chat template), reward functions with TRL's
signature, a peft ``LoraConfig``.

    python examples/library_route.py                 # SmolLM2-135M-Instruct, 2 steps
    python examples/library_route.py --steps 10 --token-weighting surprisal
"""

from __future__ import annotations

import argparse
import random
import re
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from arca.models import resolve
from arca.trainer import CreditGRPOConfig, CreditGRPOTrainer


def exact_number(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """TRL's reward signature: one float per completion; ``answer`` is a dataset
    column, passed by name. Conversational completions are message lists."""
    texts = [c[-1]["content"] for c in completions]
    found = [re.search(r"-?\d+", t) for t in texts]
    return [float(m is not None and m.group() == a) for m, a in zip(found, answer, strict=True)]


def dataset(n: int, seed: int = 0) -> Dataset:
    """A conversational prompt-only dataset, TRL's format: ``prompt`` is a list of messages."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        question = f"What is {a} + {b}? Reply with the number only."
        rows.append({"prompt": [{"role": "user", "content": question}], "answer": str(a + b)})
    return Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2, tiny, a folder or a Hub id")
    p.add_argument("--token-weighting", default="arca", help="uniform, surprisal, arca, ...")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--output-dir", default="runs/library_route")
    args = p.parse_args(argv)

    path = resolve(args.model)  # arca's names for local models; a Hub id passes through
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    config = CreditGRPOConfig(
        output_dir=args.output_dir,
        token_weighting=args.token_weighting,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        learning_rate=2e-4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
    )
    trainer = CreditGRPOTrainer(
        model=model,
        reward_funcs=[exact_number],
        args=config,
        train_dataset=dataset(64),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    trainer.train()
    last = trainer.state.log_history[-2]  # the last step's record (the final one is the summary)
    print(
        f"step {last['step']}: reward {last['reward']:.3f}, "
        f"{args.token_weighting} Gini {last['credit/gini']:.3f}, "
        f"effective-token ratio {last['credit/effective_ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
