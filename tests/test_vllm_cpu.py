"""arca.models.vllm_heads without vLLM: the head-widened copy is the same function."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arca.models import tiny_qwen3
from arca.models.tiny import build_tokenizer
from arca.models.vllm_heads import _head_slots, vllm_ready, widen_heads


def _save(path, **kw):
    tok = build_tokenizer()
    tiny_qwen3(vocab_size=len(tok), seed=0, initializer_range=0.2, **kw).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _logits(path, ids):
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("new", [32, 64])
def test_widened_heads_compute_the_same_function(new, tmp_path):
    src = _save(tmp_path / "hd16")  # the tiny model's shape: 4 heads of 16, 2 KV heads
    dst = widen_heads(src, tmp_path / f"hd{new}", new)
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["head_dim"] == new and cfg["hidden_size"] == 64
    tok = AutoTokenizer.from_pretrained(dst)
    # 40 positions, so that RoPE's rotation matters at every frequency.
    ids = torch.tensor([tok("What is 12 * 3 + 4? 12 * 3 = 36, 36 + 4 = 40.")["input_ids"]])
    a, b = _logits(src, ids), _logits(dst, ids)
    assert a.abs().max() > 1.0  # not a flat model, where anything would match
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    # A wrong slot layout (RoPE pairs broken) is not the same function: the check can fail.
    state = AutoModelForCausalLM.from_pretrained(dst).state_dict()
    q = state["model.layers.0.self_attn.q_proj.weight"].view(4, new, 64)
    state["model.layers.0.self_attn.q_proj.weight"] = q.roll(1, dims=1).reshape(-1, 64)
    broken = AutoModelForCausalLM.from_pretrained(dst)
    broken.load_state_dict(state)
    with torch.no_grad():
        assert (broken(input_ids=ids).logits - a).abs().max() > 1e-2


def test_head_slots_keep_rope_pairs_and_frequencies():
    d, new = 16, 32
    s = _head_slots(d, new)
    assert len(set(s.tolist())) == d
    for i in range(d // 2):  # pair (i, i + d/2) -> (j, j + new/2), frequency index i -> j/2
        j = int(s[i])
        assert int(s[i + d // 2]) == j + new // 2
        assert 2 * i / d == 2 * j / new


def test_widen_heads_refuses_what_it_cannot_keep_equal(tmp_path):
    src = _save(tmp_path / "hd16")
    with pytest.raises(ValueError, match="must be a multiple of the model's 16"):
        widen_heads(src, tmp_path / "out", 24)
    with pytest.raises(ValueError, match="must be a multiple of the model's 16"):
        widen_heads(src, tmp_path / "out", 16)


def test_vllm_ready_widens_once_and_leaves_supported_models_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCA_CACHE", str(tmp_path / "cache"))
    narrow = _save(tmp_path / "hd16")
    out = vllm_ready(str(narrow))
    assert out == str(tmp_path / "cache" / "hd16-hd32")
    stamp = (tmp_path / "cache" / "hd16-hd32" / "model.safetensors").stat().st_mtime_ns
    assert vllm_ready(str(narrow)) == out  # made once
    assert (tmp_path / "cache" / "hd16-hd32" / "model.safetensors").stat().st_mtime_ns == stamp
    wide = _save(tmp_path / "hd32", num_heads=2, num_kv_heads=1)
    assert vllm_ready(str(wide)) == str(wide)
