from pathlib import Path

import pytest
from hypothesis import settings

# Torch's first call of an op can take ~1 s on a cold 2-core machine: no deadlines.
settings.register_profile("arca", deadline=None, max_examples=60)
settings.load_profile("arca")


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Qwen3 with the char tokenizer, saved like a Hub model."""
    from arca.models import tiny_qwen3
    from arca.models.tiny import build_tokenizer

    d = tmp_path_factory.mktemp("model")
    tok = build_tokenizer()
    tiny_qwen3(vocab_size=len(tok), hidden_size=32, seed=0).save_pretrained(d)
    tok.save_pretrained(d)
    return d
