"""A model vLLM's CPU build can serve: attention heads widened to a size its
CPU attention runs.

vLLM's CPU attention runs head sizes :data:`CPU_HEAD_DIMS` only; arca's tiny
model has 16 (``RuntimeError: Unsupported CPU attention configuration:
head_dim=16``). :func:`widen_heads` writes the same Qwen3 function with each
head zero-padded to a supported size (exact up to float rounding, tested), so
the tiny model runs under vLLM on a CPU; :func:`vllm_ready` makes that copy
once in arca's cache. (The other gap of vLLM's CPU build, TRL's weight sync, is
the trainer's: :mod:`arca.trainer`.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from arca.io import atomic_dir
from arca.models import resolve
from arca.models.tiny import cache_root

#: Head sizes of vLLM 0.31's CPU attention (``CPUAttentionBackend.get_supported_head_sizes``;
#: a test compares with the installed vLLM).
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def head_size(config: Any) -> int:
    """The attention head size of a transformers model config."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _head_slots(head_dim: int, new: int) -> Tensor:
    """Where each of a head's ``head_dim`` dimensions goes in a head of ``new``.

    RoPE (rotate-half) pairs dimension ``i`` with ``i + d/2`` at frequency
    ``theta^(-2i/d)``. Sending ``i -> k*i`` and ``i + d/2 -> k*i + new/2``
    (``k = new/d``) keeps both the pairs and their frequencies."""
    k, half = new // head_dim, head_dim // 2
    i = torch.arange(half)
    return torch.cat([k * i, k * i + new // 2])


def _widen_rows(w: Tensor, heads: int, slots: Tensor, new: int) -> Tensor:
    """Output rows ``(heads*d, ...)`` -> ``(heads*new, ...)``, zeros in the new slots."""
    d = slots.numel()
    out = w.new_zeros((heads, new) + tuple(w.shape[1:]))
    out[:, slots] = w.reshape((heads, d) + tuple(w.shape[1:]))
    return out.reshape((heads * new,) + tuple(w.shape[1:]))


def widen_heads(src: str | Path, dst: str | Path, head_dim: int = 32) -> Path:
    """Write ``src`` (a Qwen3 checkpoint with default RoPE) to ``dst`` with every
    attention head zero-padded to ``head_dim``: the same function, up to rounding.

    Queries and keys go through RoPE at the same frequencies (:func:`_head_slots`);
    values and the output projection are padded in the same slots. The per-head
    RMSNorm now averages over ``head_dim`` dimensions of which ``d`` are non-zero,
    which multiplies q and k by ``sqrt(head_dim/d)``, and the softmax scale becomes
    ``1/sqrt(head_dim)``; the query norm's weight is divided by ``sqrt(head_dim/d)``
    so that the scores are unchanged. The tokenizer files are copied."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, dst = Path(src), Path(dst)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    cfg = model.config
    d = head_size(cfg)
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if cfg.model_type != "qwen3" or rope != "default":
        raise ValueError(
            f"{src}: widen_heads handles Qwen3 with default RoPE, not {cfg.model_type} "
            f"with {rope!r} RoPE"
        )
    if head_dim <= d or head_dim % d:
        raise ValueError(f"head_dim {head_dim} must be a multiple of the model's {d}, larger")
    slots, factor = _head_slots(d, head_dim), math.sqrt(head_dim / d)
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name in list(state):
        w = state[name]
        if name.endswith("self_attn.q_proj.weight"):
            state[name] = _widen_rows(w, H, slots, head_dim)
        elif name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
            state[name] = _widen_rows(w, KV, slots, head_dim)
        elif name.endswith("self_attn.o_proj.weight"):
            state[name] = _widen_rows(w.T, H, slots, head_dim).T.contiguous()
        elif name.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight")):
            scale = factor if "q_norm" in name else 1.0
            state[name] = w.new_zeros(head_dim).index_copy_(0, slots, w / scale)
    cfg_dict = json.loads(cfg.to_json_string())
    cfg_dict["head_dim"] = head_dim
    wide_cfg = type(cfg).from_dict(cfg_dict)
    wide = type(model)(wide_cfg)
    missing, unexpected = wide.load_state_dict(state, strict=False)
    # The tied LM head is the embedding; nothing else may be left out.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"widen_heads: missing {missing}, unexpected {unexpected}")
    wide.generation_config = model.generation_config
    with atomic_dir(dst) as tmp:
        wide.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    return dst


def vllm_ready(name_or_path: str) -> str:
    """A folder vLLM's CPU build can serve for ``name_or_path`` (resolved by
    :func:`arca.models.resolve`): the model itself when its head size is one of
    :data:`CPU_HEAD_DIMS`, else its widened copy, made once in arca's cache."""
    from transformers import AutoConfig

    path = Path(resolve(name_or_path))
    d = head_size(AutoConfig.from_pretrained(path))
    if d in CPU_HEAD_DIMS:
        return str(path)
    new = next((h for h in CPU_HEAD_DIMS if h > d and h % d == 0), None)
    if new is None:
        raise ValueError(f"{path}: head size {d} divides none of vLLM's CPU sizes {CPU_HEAD_DIMS}")
    out = cache_root() / f"{path.name}-hd{new}"
    if not (out / "config.json").exists():
        widen_heads(path, out, new)
    return str(out)
