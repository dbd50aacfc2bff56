"""Small Qwen3-architecture models built from a config, and LoRA wrapping.

No download happens here: ``tiny_qwen3`` builds a randomly initialised model of
the same architecture as the paper's Qwen3-1.7B-Base, in seconds on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch

#: LoRA on the attention and MLP projections (paper 4.1), Qwen/Llama names.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_qwen3(
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    initializer_range: float = 0.02,
    seed: int = 0,
) -> Any:
    """A randomly initialised ``Qwen3ForCausalLM`` (pad 0, bos 1, eos 2)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must divide by num_heads ({num_heads}), "
            f"and num_heads by num_kv_heads ({num_kv_heads})"
        )
    cfg = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=1024,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg)


def add_lora(model: Any, *, rank: int = 16, alpha: int | None = None, dropout: float = 0.05) -> Any:
    """Wrap ``model`` in a fresh peft LoRA adapter (B = 0: the model is unchanged)."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)
