"""The scoring passes feed the schemes the quantities the paper defines."""

from __future__ import annotations

from contextlib import contextmanager

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


def test_lm_head_chunking_changes_nothing(batch):
    ids, attn, C = batch
    model = _model()
    _randomise_adapter(model, 0.1)
    whole = completion_token_stats(model, ids, attn, C, chunk=C)
    for chunk in (1, 2):
        part = completion_token_stats(model, ids, attn, C, chunk=chunk)
        for k in whole:
            torch.testing.assert_close(part[k], whole[k], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="chunk: must be >= 1"):
        completion_token_stats(model, ids, attn, C, chunk=0)


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


# ------------------------------------------------------------- arca_local


def _last_block_down_proj_only(scale: float):
    from peft import LoraConfig, get_peft_model

    base = tiny_qwen3(vocab_size=128, hidden_size=32, seed=0)
    last = base.config.num_hidden_layers - 1
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=[f"layers.{last}.mlp.down_proj"])
    model = get_peft_model(base, cfg)
    _randomise_adapter(model, scale)
    return model.eval()


@pytest.mark.parametrize("scale", [1e-3, 1e-2])
def test_adapter_shift_is_the_first_order_residual_when_there_is_no_indirect_path(batch, scale):
    """LoRA on the last block's down_proj only: the residual is norm(x + v) - norm(x),
    whose first-order term is exactly arca_local's J_norm v (error O(v^2))."""
    from arca.scoring import capture_adapter_shift

    ids, attn, C = batch
    model = _last_block_down_proj_only(scale)
    with capture_adapter_shift(model, C) as shifts:
        inputs = scheme_inputs(model, ids, attn, C)
    assert len(shifts) == 1  # the adapter-disabled pass adds nothing
    exact = inputs["h_adapted"] - inputs["h_base"]
    rel = (shifts[0] - exact).norm() / exact.norm()
    assert exact.norm() > 0 and rel < 30 * scale  # first order: the gap shrinks with the adapter


def test_adapter_deltas_are_the_layers_own_output_and_a_fresh_adapter_shifts_nothing(batch):
    from arca.scoring import capture_adapter_deltas, capture_adapter_shift

    ids, attn, C = batch
    fresh = _model(dropout=0.5)
    with capture_adapter_shift(fresh, C) as shifts, torch.no_grad():
        fresh(input_ids=ids, attention_mask=attn)
    assert shifts[0].shape == (3, C, 32)
    assert torch.count_nonzero(shifts[0]) == 0  # LoRA B starts at zero

    model = _model(dropout=0.5)
    _randomise_adapter(model, 0.1)
    name = "model.layers.1.mlp.down_proj"
    layer = model.get_submodule("base_model.model." + name)
    seen = []
    layer.register_forward_hook(lambda _m, a, _o: seen.append(a[0][:, -(C + 1) : -1]))
    got = []
    for train in (True, False):
        model.train(train)
        torch.manual_seed(0)
        with capture_adapter_deltas(model, C, lambda n: n == name) as d, torch.no_grad():
            model(input_ids=ids, attention_mask=attn)
        got.append(d[name][0])
    by_hand = (
        seen[1] @ layer.lora_A["default"].weight.T @ layer.lora_B["default"].weight.T
    ) * layer.scaling["default"]
    torch.testing.assert_close(got[1], by_hand)  # eval: s B A x exactly
    # Training: the forward's own LoRA-dropout draw, as in its log-probs.
    assert (got[0] - got[1]).abs().max() > 1e-3


@contextmanager
def released_parameters(model):
    """DeepSpeed ZeRO-3's condition: each module's own parameters exist only
    during its forward (gathered by a pre-hook, released by a post-hook
    registered before arca's hooks); elsewhere they are empty tensors."""
    stash, handles = {}, []

    def gather(m, _a):
        for p in m.parameters(recurse=False):
            p.data = stash[id(p)]

    def release(m, _a, _o):
        for p in m.parameters(recurse=False):
            p.data = torch.empty(0, dtype=p.dtype)

    for m in model.modules():
        own = list(m.parameters(recurse=False))
        for p in own:
            stash.setdefault(id(p), p.data)  # tied weights: one parameter, two modules
            p.data = torch.empty(0, dtype=p.dtype)
        if own:
            handles += [m.register_forward_pre_hook(gather), m.register_forward_hook(release)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.data = stash[id(p)]


def test_adapter_captures_never_read_a_released_parameter(batch):
    """Under ZeRO-3 (or FSDP with LoRA modules wrapped on their own) a hook on a
    LoRA layer runs after its weights were released: the captures must come
    from the layers' outputs, and the final norm's weight be read before release."""
    from arca.scoring import capture_adapter_deltas, capture_adapter_shift

    ids, attn, C = batch
    model = _model()
    _randomise_adapter(model, 0.1)
    model.eval()

    def run():
        with (
            capture_adapter_deltas(model, C) as deltas,
            capture_adapter_shift(model, C) as shift,
            torch.no_grad(),
        ):
            model(input_ids=ids, attention_mask=attn)
        return deltas, shift

    want_d, want_s = run()
    with released_parameters(model):
        got_d, got_s = run()
        lora_a = next(p for n, p in model.named_parameters() if "lora_A" in n)
        assert lora_a.numel() == 0  # the simulation does release
    assert got_d.keys() == want_d.keys()
    for k in want_d:
        torch.testing.assert_close(got_d[k][0], want_d[k][0])
    torch.testing.assert_close(got_s[0], want_s[0])


def test_arca_local_needs_lora_on_a_residual_writer():
    from peft import LoraConfig, get_peft_model

    from arca.scoring import capture_adapter_shift

    model = get_peft_model(
        tiny_qwen3(vocab_size=128, hidden_size=32, seed=0),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    with pytest.raises(ValueError, match="the adapter targets: q_proj, v_proj"):
        with capture_adapter_shift(model, 3):
            pass


def test_a_dora_adapter_is_refused_where_lora_outputs_are_read(batch):
    from peft import LoraConfig, get_peft_model

    from arca.scoring import capture_adapter_shift, uses_lora_variant

    model = get_peft_model(
        tiny_qwen3(vocab_size=128, hidden_size=32, seed=0),
        LoraConfig(r=2, target_modules=["o_proj", "down_proj"], use_dora=True),
    )
    assert uses_lora_variant(model)
    with pytest.raises(ValueError, match="DoRA"):
        with capture_adapter_shift(model, 3):
            pass
