"""Generation from a Hugging Face causal LM, and the unbiased pass@k.

``generate`` samples (or decodes greedily) in left-padded batches, rendering
conversational prompts with the tokenizer's chat template as TRL does;
:func:`pass_at_k` is Chen et al. (2021)'s estimator ``1 - C(n-c, k) / C(n, k)``.
Used by evaluation and by the tiny model's build (its held-out probe).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from arca.tasks.base import make_prompt
from arca.tasks.formats import prompt_text
from arca.tasks.grading import math_rewards


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct.

    ``1 - C(n-c, k) / C(n, k)``: the probability that ``k`` of the ``n`` samples,
    drawn without replacement, include a correct one. Needs ``n >= k >= 1``.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if k < 1 or n < k:
        raise ValueError(f"pass@k needs n >= k >= 1, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n], got c={c}, n={n}")
    if n - c < k:
        return 1.0
    # Product form: exact, and no huge binomials.
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def prompts_of(rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Each row's prompt: text, or a conversation (rendered by :func:`generate`)."""
    return [r["prompt"] if "prompt" in r else make_prompt(r["problem"]) for r in rows]


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    num_samples: int = 1,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 0.95,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Completions of each prompt: ``num_samples`` per prompt (1 when greedy).

    Prompts are text, or conversations rendered with the tokenizer's chat
    template as TRL renders them; they are left-padded into batches of
    ``batch_size`` prompts; ``progress`` is called with the number of prompts
    finished after each batch.
    """
    if greedy and num_samples != 1:
        raise ValueError("greedy decoding gives one completion per prompt; use num_samples=1")
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    device = next(model.parameters()).device
    out: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [prompt_text(p, tokenizer) for p in prompts[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            kwargs: dict[str, Any] = (
                {"do_sample": False}
                if greedy
                else {
                    "do_sample": True,
                    "temperature": temperature,
                    "top_p": top_p,
                    "num_return_sequences": num_samples,
                }
            )
            seqs = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **kwargs,
            )
            texts = tokenizer.batch_decode(
                seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
            out += [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(chunk))]
            if progress is not None:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def greedy_accuracy(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    max_new_tokens: int = 512,
    batch_size: int = 16,
) -> float:
    """Fraction of ``rows`` (``problem``/``prompt`` and ``answer``) solved greedily."""
    comps = generate(
        model, tokenizer, prompts_of(rows), max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    rewards = math_rewards([c[0] for c in comps], [r["answer"] for r in rows])
    return sum(rewards) / max(1, len(rows))
