"""The scoring passes feed the schemes the quantities the paper defines."""

from __future__ import annotations

import pytest
import torch

from arca.credit import token_scores, token_weights
from arca.models import add_lora, tiny_qwen3
from arca.scoring import completion_mask, completion_token_stats, scheme_inputs


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    ids = torch.randint(3, 128, (3, 12))
    attn = torch.ones_like(ids)
    attn[1, :2] = 0  # a left-padded prompt
    return ids, attn, 5


def _model(rank: int = 4, dropout: float = 0.0):
    return add_lora(tiny_qwen3(vocab_size=128, hidden_size=32, seed=0), rank=rank, dropout=dropout)


def _randomise_adapter(model, scale: float):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, scale)


def test_stats_match_a_full_forward_by_hand(batch):
    ids, attn, C = batch
    model = _model()
    _randomise_adapter(model, 0.1)
    model.eval()
    stats = completion_token_stats(model, ids, attn, C)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    logp = out.logits.float().log_softmax(-1)
    P = ids.shape[1] - C
    for t in range(C):  # token at P+t is emitted from position P+t-1
        pos = P + t - 1
        expect_lp = logp[torch.arange(3), pos, ids[:, P + t]]
        torch.testing.assert_close(stats["logps"][:, t], expect_lp, atol=1e-5, rtol=1e-5)
        expect_h = -(logp[:, pos].exp() * logp[:, pos]).sum(-1)
        torch.testing.assert_close(stats["entropies"][:, t], expect_h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            stats["hidden"][:, t], out.hidden_states[-1][:, pos], atol=1e-5, rtol=1e-5
        )


def test_zero_adapter_gives_no_arca_signal_and_uniform_weights(batch):
    ids, attn, C = batch
    inputs = scheme_inputs(_model(), ids, attn, C)  # fresh LoRA: B = 0
    mask = torch.ones(3, C)
    assert torch.equal(inputs["h_adapted"], inputs["h_base"])
    assert torch.equal(inputs["logps"], inputs["ref_logps"])
    assert (token_scores("arca", mask=mask, **inputs) == 0).all()
    torch.testing.assert_close(
        token_weights("arca", mask=mask, **inputs), torch.full((3, C), 1 / C)
    )


def test_adapter_disabled_pass_is_the_base_model(batch):
    ids, attn, C = batch
    model = _model()
    base_stats = completion_token_stats(model, ids, attn, C)  # B = 0: base model
    _randomise_adapter(model, 0.1)
    inputs = scheme_inputs(model, ids, attn, C)
    torch.testing.assert_close(inputs["ref_logps"], base_stats["logps"])
    torch.testing.assert_close(inputs["h_base"], base_stats["hidden"])
    assert (inputs["h_adapted"] - inputs["h_base"]).abs().max() > 1e-3


def test_scoring_runs_without_dropout_and_restores_train_mode(batch):
    ids, attn, C = batch
    model = _model(dropout=0.5)
    _randomise_adapter(model, 0.1)
    model.train()
    a = completion_token_stats(model, ids, attn, C)
    b = completion_token_stats(model, ids, attn, C)
    assert model.training
    torch.testing.assert_close(a["logps"], b["logps"], atol=0, rtol=0)


def test_disabled_adapter_needs_a_peft_model(batch):
    ids, attn, C = batch
    with pytest.raises(ValueError, match="disable_adapter"):
        completion_token_stats(
            tiny_qwen3(vocab_size=128, hidden_size=32), ids, attn, C, adapter=False
        )


def test_completion_mask_keeps_first_eos_and_drops_the_rest():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5], [2, 9, 9, 9, 9]])
    assert completion_mask(ids, 2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
