"""CreditGRPOTrainer on TRL: exactness against stock GRPO, A*T*w in the loss, configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer

from arca.credit import token_weights, weighted_pg_loss
from arca.models import LORA_TARGETS, tiny_qwen3
from arca.models.tiny import build_tokenizer
from arca.trainer import BUILTIN, CreditGRPOConfig, CreditGRPOTrainer


def reward(completions, **_):
    return [float(len(c) % 3 == 0) + 0.1 * c.count("1") for c in completions]


def make(
    cls=CreditGRPOTrainer,
    cfg=CreditGRPOConfig,
    tmp="/tmp/arca-trainer-test",
    steps=3,
    peft=True,
    lora_dropout=0.0,
    trainer_kw=None,
    **extra,
):
    tok = build_tokenizer()
    model = tiny_qwen3(vocab_size=len(tok), hidden_size=32, seed=0)
    if not peft:
        # TRL builds its reference model (beta > 0) from the model's folder, as
        # for any model loaded with from_pretrained.
        from transformers import AutoModelForCausalLM

        model.save_pretrained(f"{tmp}/initial")
        model = AutoModelForCausalLM.from_pretrained(f"{tmp}/initial")
    ds = Dataset.from_dict({"prompt": [f"What is {i} + {i}?" for i in range(16)]})
    extra.setdefault("save_strategy", "no")
    extra.setdefault("loss_type", "grpo")
    extra.setdefault("per_device_train_batch_size", 8)
    args = cfg(
        output_dir=tmp,
        num_generations=4,
        max_steps=steps,
        max_completion_length=12,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        seed=7,
        logging_steps=1,
        bf16=False,
        **extra,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=lora_dropout)
    if peft == "model":  # a PeftModel whose adapter was trained before (non-zero)
        from peft import get_peft_model

        model = get_peft_model(model, lora)
        torch.manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    return cls(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        peft_config=lora if peft is True else None,
        **(trainer_kw or {}),
    )


def lora_state(tr):
    return {k: v.detach().clone() for k, v in tr.model.state_dict().items() if "lora_" in k}


def test_uniform_reproduces_stock_trl_exactly(tmp_path):
    stock = make(GRPOTrainer, GRPOConfig, tmp=str(tmp_path / "a"))
    stock.train()
    ours = make(tmp=str(tmp_path / "b"))
    ours.train()
    a, b = lora_state(stock), lora_state(ours)
    assert a.keys() == b.keys()
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k)  # the adapter moved
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = [h["loss"] for h in stock.state.log_history if "loss" in h]
    lb = [h["loss"] for h in ours.state.log_history if "loss" in h]
    assert la == lb and len(la) == 3


def _randomise_adapter(tr, scale=0.05):
    with torch.no_grad():  # a non-zero residual, so every scheme has signal
        for n, p in tr.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, scale)


@pytest.mark.parametrize("in_forward", [True, False])
@pytest.mark.parametrize("scheme", BUILTIN)
def test_weights_reach_the_loss_as_A_T_w(scheme, in_forward, tmp_path):
    """Gradient of TRL's loss with A*T*w advantages == gradient of eq. 6
    (weighted_pg_loss), whether the weights are read in the training forward
    or from arca's own scoring passes; w equals the scoring passes' weights."""
    tr = make(tmp=str(tmp_path), token_weighting=scheme, credit_from_training_forward=in_forward)
    _randomise_adapter(tr)
    _check_A_T_w(tr, scheme, in_forward)


@pytest.mark.parametrize("scheme", ["divergence", "arca"])
def test_full_fine_tuning_weights_reach_the_loss_as_A_T_w(scheme, tmp_path):
    tr = make(tmp=str(tmp_path), peft=False, token_weighting=scheme)
    with torch.no_grad():  # the policy moves away from the frozen initial model
        for p in tr.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    _check_A_T_w(tr, scheme, in_forward=True)


def _check_A_T_w(tr, scheme, in_forward):
    batch = next(iter(tr.get_train_dataloader()))
    seen = []  # TRL's (B,) advantages as _apply_credit receives them
    real = tr._apply_credit
    tr._apply_credit = lambda o, c, **kw: (
        seen.append(o.get("arca_advantage", o["advantages"])),
        real(o, c, **kw),
    )[1]
    torch.manual_seed(0)
    out = tr._generate_and_score_completions(batch)
    if "arca_advantage" in out:
        seen.append(out["arca_advantage"])
    A = seen[0].clone()
    assert A.dim() == 1 and A.abs().sum() > 0
    # Weighed later: in the training forward, or (high_entropy, whose threshold is
    # one micro-batch's) when TRL trains each micro-batch.
    later = in_forward or scheme == "high_entropy"
    assert ("arca_advantage" in out) == (later and scheme != "uniform")
    mask = out["completion_mask"]
    credit = tr._credit_inputs(out)  # no-grad, dropout-free passes
    req = {k: credit[k] for k in tr.scheme.requires}
    w = token_weights(scheme, mask=mask, eps=tr.args.weight_eps, **req)

    params = [p for n, p in tr.model.named_parameters() if p.requires_grad]
    tr.current_gradient_accumulation_steps = 1  # set by the training loop; one micro-batch here
    tr.model.zero_grad()
    tr._compute_loss(tr.model, out).backward()
    got = [p.grad.clone() for p in params]
    if scheme != "uniform":
        expect = A[:, None] * mask.sum(1, keepdim=True) * w
        torch.testing.assert_close(out["advantages"], expect, atol=1e-5, rtol=1e-4)

    tr.model.zero_grad()
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attn = torch.cat([out["prompt_mask"], mask], 1)
    logps, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, attn, mask.size(1))
    weighted_pg_loss(
        logps,
        A,
        w,
        mask,
        loss_type=tr.args.loss_type,
        max_completion_length=tr.args.max_completion_length,
        num_items=float(out["num_items_in_batch"]) if "num_items_in_batch" in out else None,
    ).backward()
    for g, p in zip(got, params, strict=True):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("loss_type", ["bnpo", "dr_grpo", "dapo", "cispo", "sapo"])
@pytest.mark.parametrize("scheme", ["uniform", "surprisal", "arca"])
def test_every_supported_loss_type_is_the_weighted_loss_under_its_normaliser(
    loss_type, scheme, tmp_path
):
    """TRL's loss with A*T*w advantages has the gradient of weighted_pg_loss with
    the loss type's per-sequence share (uniform: TRL's own loss, unchanged)."""
    extra = {"epsilon_high": 5.0} if loss_type == "cispo" else {}  # CISPO's clip, above ratio 1
    tr = make(tmp=str(tmp_path), token_weighting=scheme, loss_type=loss_type, **extra)
    _randomise_adapter(tr)
    _check_A_T_w(tr, scheme, in_forward=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss_type="luspo"), "loss_type: 'luspo' is not supported .*one number per sequence"),
        (dict(loss_type="vespo"), "loss_type: 'vespo' is not supported .*nonlinear"),
        (
            dict(token_weighting="arca", importance_sampling_level="sequence"),
            "importance_sampling_level: 'sequence' .* would train exactly as uniform",
        ),
        (dict(advantage_estimator="rloo", scale_rewards="batch"), "scale_rewards: .*rloo"),
    ],
)
def test_configs_where_token_weights_would_be_a_no_op_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CreditGRPOConfig(output_dir="/tmp/x", report_to=[], use_cpu=True, **kwargs)


def test_rloo_with_normalize_then_sum_is_refused():
    """TRL's normalize_then_sum z-scores each reward in its group and the sum
    over the batch: that is no leave-one-out baseline, whatever the label."""
    with pytest.raises(ValueError, match="multi_objective_aggregation: 'normalize_then_sum'.*rloo"):
        CreditGRPOConfig(
            output_dir="/tmp/x", report_to=[], use_cpu=True, advantage_estimator="rloo",
            multi_objective_aggregation="normalize_then_sum",
        )  # fmt: skip
    cfg = CreditGRPOConfig(
        output_dir="/tmp/x", report_to=[], use_cpu=True,
        multi_objective_aggregation="normalize_then_sum",
    )  # fmt: skip
    assert cfg.advantage_estimator == "grpo"  # GRPO's z-score is what it computes


def test_rloo_says_it_unscales_the_rewards(caplog):
    with caplog.at_level("WARNING", logger="arca.trainer"):
        cfg = CreditGRPOConfig(
            output_dir="/tmp/x", report_to=[], use_cpu=True, advantage_estimator="rloo"
        )
    assert cfg.scale_rewards == "none" and "scale_rewards set to 'none'" in caplog.text


def test_without_args_a_credit_config_is_built_as_trl_builds_its_own(tmp_path, monkeypatch):
    import arca.trainer

    class OnCPU(CreditGRPOConfig):  # TRL's default (bf16) needs a GPU; the rest is default
        def __init__(self, *a, **k):
            super().__init__(*a, use_cpu=True, bf16=False, report_to=[], **k)

    monkeypatch.setattr(arca.trainer, "CreditGRPOConfig", OnCPU)
    monkeypatch.chdir(tmp_path)
    tok = build_tokenizer()
    model = tiny_qwen3(vocab_size=len(tok), hidden_size=32, seed=0)
    ds = Dataset.from_dict({"prompt": ["What is 1 + 1?"] * 8})
    tr = CreditGRPOTrainer(model=model, reward_funcs=reward, train_dataset=ds, processing_class=tok)
    assert isinstance(tr.args, OnCPU) and tr.args.token_weighting == "uniform"
    assert tr.args.output_dir.endswith("-GRPO")


def test_save_total_limit_applies_to_the_run_folder(tmp_path):
    tr = make(
        tmp=str(tmp_path), token_weighting="surprisal", save_strategy="steps", save_steps=1,
        save_total_limit=2,
    )  # fmt: skip
    tr.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


@pytest.mark.parametrize(
    "scheme, beta, expected",
    # Full-sequence forwards per generated batch, the training forward included.
    # Stock TRL: 1 with beta = 0, 2 with beta > 0 (its KL reference).
    [
        ("uniform", 0.0, 1),
        ("surprisal", 0.0, 1),
        ("entropy", 0.0, 1),
        ("divergence", 0.0, 2),
        ("arca", 0.0, 2),
        ("arca_local", 0.0, 1),
        ("surprisal", 0.04, 2),
        ("divergence", 0.04, 2),
        ("arca", 0.04, 2),
        ("arca_local", 0.04, 2),
    ],
)
def test_forward_passes_per_scheme(scheme, beta, expected, tmp_path):
    from arca.scoring import backbone

    tr = make(tmp=str(tmp_path), token_weighting=scheme, beta=beta)
    _randomise_adapter(tr)
    lengths = []
    handle = backbone(tr.model).register_forward_hook(
        lambda _m, _a, o: lengths.append(o.last_hidden_state.shape[1])
    )
    batch = next(iter(tr.get_train_dataloader()))
    out = tr._generate_and_score_completions(batch)
    tr.current_gradient_accumulation_steps = 1
    tr._compute_loss(tr.model, out)
    handle.remove()
    full = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
    assert lengths.count(full) == expected  # generation's forwards are shorter
    assert out["advantages"].shape == (
        out["completion_ids"].shape if scheme != "uniform" else out["completion_ids"].shape[:1]
    )


def test_arca_residual_is_zero_at_step_0_and_grows(tmp_path):
    tr = make(tmp=str(tmp_path), token_weighting="arca", shadow_diagnostics=True)
    tr.train()
    logs = [h for h in tr.state.log_history if "credit/residual_max" in h]
    assert len(logs) == 3
    assert logs[0]["credit/residual_max"] == 0.0  # LoRA B starts at zero
    assert logs[0]["credit/arca/effective_ratio"] == pytest.approx(1.0)  # so ARCA is uniform
    assert logs[-1]["credit/residual_max"] > 0.0
    assert logs[-1]["credit/gini"] > 0.0
    for name in BUILTIN:  # shadow diagnostics on the same batches
        assert 0.0 <= logs[-1][f"credit/{name}/gini"] <= 1.0
    assert logs[0]["credit/residual_below_noise"] == 1.0  # a zero residual is below any floor
    assert 0.0 <= logs[-1]["credit/residual_below_noise"] < 1.0


def test_arca_local_trains_uniform_at_step_0_then_concentrates(tmp_path):
    """No adapter-disabled pass, weights from hooks in the training forward,
    with gradient checkpointing (whose recompute must not record again)."""
    tr = make(
        tmp=str(tmp_path),
        token_weighting="arca_local",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    tr.train()
    logs = [h for h in tr.state.log_history if "credit/gini" in h]
    assert len(logs) == 3
    assert logs[0]["credit/effective_ratio"] == pytest.approx(1.0)  # LoRA B starts at zero
    assert logs[-1]["credit/gini"] > 0.0
    assert "credit/residual_mean" not in logs[-1]  # no base hidden states were computed


def test_rloo_advantage_is_reward_minus_leave_one_out_mean(tmp_path):
    from arca.credit import group_advantages

    tr = make(tmp=str(tmp_path), advantage_estimator="rloo")
    assert tr.args.scale_rewards == "none"
    batch = next(iter(tr.get_train_dataloader()))
    out = tr._generate_and_score_completions(batch)
    rewards = torch.tensor(list(tr._logs["rewards"]["reward"])[-8:])
    torch.testing.assert_close(
        out["advantages"], group_advantages(rewards, 4, "rloo"), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(token_weighting="nope"), "token_weighting: unknown scheme 'nope'; valid: uniform"),
        (dict(weight_eps=-1.0), "weight_eps: must be >= 0"),
        (dict(residual_noise_factor=-1.0), "residual_noise_factor: must be >= 0"),
        (dict(weight_eps_mode="percent"), "weight_eps_mode"),
        (dict(advantage_estimator="ppo"), "advantage_estimator: must be one of grpo, rloo"),
        (dict(loss_type="ppo"), "loss_type: 'ppo' is not supported"),
        (dict(num_generations=1), "num_generations: a group needs at least 2"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CreditGRPOConfig(output_dir="/tmp/x", report_to=[], use_cpu=True, **kwargs)


def test_frozen_peft_model_is_rejected():
    from peft import get_peft_model

    tok = build_tokenizer()
    model = get_peft_model(
        tiny_qwen3(vocab_size=len(tok), hidden_size=32),
        LoraConfig(r=2, target_modules=LORA_TARGETS),
    )
    for p in model.parameters():
        p.requires_grad_(False)
    args = CreditGRPOConfig(
        output_dir="/tmp/x",
        report_to=[],
        use_cpu=True,
        per_device_train_batch_size=4,
        num_generations=4,
    )
    with pytest.raises(ValueError, match="no trainable parameters"):
        CreditGRPOTrainer(
            model=copy.deepcopy(model),
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": ["a"] * 4}),
            processing_class=tok,
        )


@pytest.mark.parametrize("scheme", ["divergence", "arca"])
def test_with_kl_the_reference_pass_is_shared_with_trl(scheme, tmp_path):
    """beta > 0: exactly one adapter-disabled forward (TRL's), and its outputs equal arca's own pass."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from arca.scoring import backbone

    tr = make(tmp=str(tmp_path), token_weighting=scheme, beta=0.04)
    _randomise_adapter(tr)
    model = tr.accelerator.unwrap_model(tr.model)
    probe = next(m for m in model.modules() if isinstance(m, BaseTunerLayer))
    disabled_calls = []
    handle = backbone(model).register_forward_hook(
        lambda *_: disabled_calls.append(probe.disable_adapters)
    )
    batch = next(iter(tr.get_train_dataloader()))
    captured = {}
    real = tr._base_inputs

    def spy(out, reference):
        captured["inputs"] = real(out, reference)
        captured["out"] = out
        return captured["inputs"]

    tr._base_inputs = spy
    tr._generate_and_score_completions(batch)
    handle.remove()
    assert sum(disabled_calls) == 1  # TRL's KL reference pass, and nothing else
    own = tr._scoring_pass(captured["out"], adapter=False)
    torch.testing.assert_close(captured["inputs"]["ref_logps"], own["logps"])
    torch.testing.assert_close(captured["inputs"]["h_base"], own["hidden"])


@pytest.mark.parametrize("scheme", ["divergence", "arca"])
def test_a_peft_model_with_kl_is_compared_with_trls_reference_adapter(scheme, tmp_path):
    """A PeftModel with beta > 0: TRL's KL reference is a frozen copy of the
    adapter as given ("ref"), not the bare base model. arca's base side is that
    same pass: no extra forward, the reference log-probs TRL's own, the base
    hidden state the reference adapter's, drift equal to TRL's kl."""
    from trl.trainer.utils import use_adapter

    from arca.scoring import capture_final_hidden

    tr = make(tmp=str(tmp_path), token_weighting=scheme, beta=0.04, peft="model")
    model = tr.accelerator.unwrap_model(tr.model)
    assert "ref" in model.peft_config  # TRL's reference adapter
    _randomise_adapter(tr)  # the policy moves away from it (the "ref" copy stays)
    n, out = _full_forwards(tr)
    assert n == 2  # the training forward and TRL's reference pass, nothing more
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    C = out["completion_ids"].shape[1]
    with torch.no_grad(), use_adapter(model, "ref"), capture_final_hidden(model, C) as h:
        ref_logps, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, attn, C)
    torch.testing.assert_close(out["ref_per_token_logps"], ref_logps)
    if scheme == "divergence":
        torch.testing.assert_close(out["arca_ref_logps"], ref_logps)
    else:
        torch.testing.assert_close(out["arca_h_base"], torch.cat(h, dim=0))
    with torch.no_grad(), model.disable_adapter():  # the bare base model differs
        bare, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, attn, C)
    assert not torch.allclose(bare, ref_logps, atol=1e-4)


@pytest.mark.parametrize("beta", [0.04, 0.0])
def test_a_peft_models_drift_is_from_the_adapter_as_given(beta, tmp_path):
    """Drift, divergence and ARCA compare with the initial policy: the adapter
    as given, zero at step 1 (TRL's kl too with beta > 0), whatever beta."""
    tr = make(tmp=str(tmp_path), token_weighting="divergence", beta=beta, steps=2, peft="model")
    tr.train()
    logs = [h for h in tr.state.log_history if "credit/drift_kl" in h]
    assert len(logs) == 2 and logs[0]["credit/drift_kl"] == pytest.approx(0.0, abs=1e-7)
    assert logs[1]["credit/drift_kl"] > 1e-6  # one update later the policy has moved
    for h in logs if beta else []:  # from the adapter as given, as TRL's KL is
        assert h["credit/drift_kl"] == pytest.approx(h["kl"], rel=1e-4, abs=1e-9)


@pytest.mark.parametrize(
    "path",
    [
        {},  # weights read in the training forward
        {"credit_from_training_forward": False},  # arca's scoring pass at generation time
        {"num_iterations": 2},  # TRL's old-log-prob pass at generation time
    ],
)
def test_high_entropy_takes_trls_threshold_over_each_training_micro_batch(path, tmp_path):
    """One rule on every path: the top quantile of the real tokens of the rows
    TRL trains in one forward (TRL's get_high_entropy_mask), however the
    entropies were read. A generation batch of 8 trained as two micro-batches
    of 4 is two pools, not one."""
    from arca.credit import normalize

    q = 0.3
    tr = make(tmp=str(tmp_path), token_weighting="high_entropy", steps=1,
              per_device_train_batch_size=4, gradient_accumulation_steps=2,
              high_entropy_quantile=q, **path)  # fmt: skip
    seen = []
    real = tr._log_credit

    def spy(mode, w, mask, credit, out, adv):
        seen.append((w.clone(), mask.clone(), credit["entropies"].clone()))
        return real(mode, w, mask, credit, out, adv)

    tr._log_credit = spy
    tr.train()
    assert [m.shape[0] for _, m, _ in seen] == [4, 4]  # weighed once per micro-batch
    for w, mask, entropies in seen:
        top = tr.get_high_entropy_mask(entropies, mask, 1 - q)
        assert 0 < top.sum() < mask.sum()
        torch.testing.assert_close(w, normalize(top.float(), mask, tr.args.weight_eps))


# ------------------------------------------------------------ ground truth


def halfway(row, text):
    """A stand-in locator: the first error is the middle character; every
    character is a result."""
    from arca.tasks.base import Located

    return Located(len(text) // 2 if len(text) >= 2 else None, "r" * len(text))


def test_correctness_metrics_are_logged_per_row_for_every_scheme(tmp_path):
    from arca.credit import credit_correctness
    from arca.tasks.locate import ground_truth

    tr = make(
        tmp=str(tmp_path),
        token_weighting="arca",
        shadow_diagnostics=True,
        trainer_kw={"error_locator": halfway},
    )
    _randomise_adapter(tr)
    batch = next(iter(tr.get_train_dataloader()))
    out = tr._generate_and_score_completions(batch)
    tr.current_gradient_accumulation_steps = 1
    tr._compute_loss(tr.model, out)
    m = tr._metrics["train"]
    mask = out["completion_mask"]
    gt = ground_truth(halfway, batch, out["completion_ids"], mask, tr.processing_class)
    for k, v in gt.items():  # carried through TRL's batch dict unchanged
        assert torch.equal(out[f"arca_{k}"], v), k
    adv = out["arca_advantage"]
    blamed = (gt["error_index"] >= 0) & (adv < 0)
    assert blamed.any() and (~blamed).any()
    assert m["credit/blamed_fraction"] == blamed.float().tolist()
    # uniform: prefix blame is exactly prefix / T for every blamed row
    n = mask.sum(1).float()
    prefix = torch.stack([mask[i, : gt["error_index"][i]].sum() for i in range(len(n))]).float()
    expect = (prefix / n)[blamed]
    assert m["credit/uniform/prefix_blame"] == pytest.approx(expect.tolist())
    assert m["credit/uniform/error_lift"] == pytest.approx([1.0] * int(blamed.sum()))
    # the trained scheme's values are its shadow values, and match a recomputation
    assert m["credit/prefix_blame"] == m["credit/arca/prefix_blame"]
    w = tr._weights("surprisal", mask, tr._credit_inputs(out))
    per = credit_correctness(w, mask, gt["error_index"], advantages=adv)
    got = torch.tensor(m["credit/surprisal/top1_hit"])
    torch.testing.assert_close(got, per["top1_hit"][blamed].float(), atol=1e-6, rtol=0)
    for name in BUILTIN:
        assert f"credit/{name}/effective_n" in m
    # one value per row: TRL's mean over the logging window is the mean over rows
    assert m["credit/length"] == n.tolist()
    assert m["credit/uniform/effective_n"] == pytest.approx(n.tolist())


def test_sample_writer_records_the_first_wrong_token(tmp_path):
    import json

    from arca.callbacks import SampleWriter

    tr = make(tmp=str(tmp_path), token_weighting="surprisal", trainer_kw={"error_locator": halfway})
    tr.sample_writer = SampleWriter(tmp_path / "samples.jsonl", every=1, count=3)
    tr.train()
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert recs and all("first_error" in r and "correct" in r for r in recs)
    # Steps counted as metrics.jsonl counts them, from 1, and marked so.
    assert [r["step"] for r in recs] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert {r["step_base"] for r in recs} == {1}
    special = {"<pad>", "<bos>", "<eos>", "<unk>"}  # zero-width in the decoded text
    checked = 0
    for r in recs:
        chars = [i for i, t in enumerate(r["tokens"]) if t not in special]  # one char each
        if r["first_error"] is not None:
            assert r["first_error"] == chars[len(chars) // 2]
            assert not r["correct"]
            checked += 1
    assert checked


def test_sample_writer_is_due_at_step_1_every_n_steps_and_the_last():
    from arca.callbacks import SampleWriter

    w = SampleWriter("unused.jsonl", every=10, count=4)
    assert [s for s in range(1, 26) if w.due(s, last=25)] == [1, 10, 20, 25]
    assert [s for s in range(1, 31) if w.due(s, last=30)] == [1, 10, 20, 30]
    # A batch trained on for 4 steps (generated at 1, 5, 9, ...): sampled once
    # when those steps hold a due one, labelled with the step it was generated at.
    assert [s for s in range(1, 26, 4) if w.due(s, last=24, span=4)] == [1, 9, 17, 21]
    w.last_step = 10  # this step's rows were already taken (gradient accumulation)
    assert not w.due(10) and not SampleWriter("x", every=0, count=4).due(1)
    # Records of files written before step_base counted from 0.
    assert (
        SampleWriter.step_of({"step": 0}) == 1
        and SampleWriter.step_of({"step": 10, "step_base": 1}) == 10
    )


@pytest.mark.parametrize("per_generation, steps", [(None, [1, 2, 4, 5]), (2, [1, 3, 5])])
def test_samples_are_drawn_at_step_1_every_n_and_the_last_step(per_generation, steps, tmp_path):
    import json

    from arca.callbacks import SampleWriter

    tr = make(tmp=str(tmp_path), steps=5, token_weighting="surprisal",
              steps_per_generation=per_generation)  # fmt: skip
    tr.sample_writer = SampleWriter(tmp_path / "samples.jsonl", every=2, count=1)
    tr.train()
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == steps


@pytest.mark.parametrize("in_forward, expected", [(True, 0.1), (False, 0.0)])
def test_dropout_of_the_forward_the_weights_came_from_is_logged(in_forward, expected, tmp_path):
    tr = make(
        tmp=str(tmp_path),
        token_weighting="surprisal",
        lora_dropout=0.1,
        credit_from_training_forward=in_forward,
        steps=1,
    )
    tr.train()
    (log,) = [h for h in tr.state.log_history if "credit/dropout" in h]
    assert log["credit/dropout"] == pytest.approx(expected)


def test_drift_equals_trls_kl_when_both_are_computed(tmp_path):
    tr = make(tmp=str(tmp_path), token_weighting="divergence", beta=0.04, steps=3)
    tr.train()
    logs = [h for h in tr.state.log_history if "credit/drift_kl" in h]
    assert len(logs) == 3 and logs[0]["credit/drift_kl"] == 0.0  # zero adapter at step 1
    for h in logs:  # TRL's k3 on the same log-probs
        assert h["credit/drift_kl"] == pytest.approx(h["kl"], rel=1e-4, abs=1e-9)
    assert logs[-1]["credit/drift_kl"] > 0


# ------------------------------------------------------- full fine-tuning


@pytest.mark.parametrize("beta, forwards", [(0.0, 2), (0.04, 2)])
def test_full_fine_tuning_compares_with_a_frozen_initial_model(beta, forwards, tmp_path):
    from arca.scoring import backbone

    tr = make(
        tmp=str(tmp_path), peft=False, token_weighting="arca", shadow_diagnostics=True, beta=beta
    )
    assert tr._frozen_ref is not None and tr._frozen_ref is not tr.model
    if beta:  # TRL's own reference model, shared rather than copied again
        assert tr._frozen_ref is tr.ref_model
    initial = {k: v.clone() for k, v in tr._frozen_ref.state_dict().items()}
    calls = []
    hooks = [
        backbone(m).register_forward_hook(
            lambda _m, _a, o: calls.append(o.last_hidden_state.shape[1])
        )
        for m in (tr.model, tr._frozen_ref)
    ]
    batch = next(iter(tr.get_train_dataloader()))
    out = tr._generate_and_score_completions(batch)
    tr.current_gradient_accumulation_steps = 1
    tr._compute_loss(tr.model, out)
    for h in hooks:
        h.remove()
    full = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
    assert calls.count(full) == forwards  # the training forward + one reference pass
    tr.train()
    logs = [h for h in tr.state.log_history if "credit/residual_max" in h]
    assert logs[0]["credit/residual_max"] == 0.0  # step 1: policy == initial model
    assert logs[-1]["credit/residual_max"] > 0 and logs[-1]["credit/drift_kl"] > 0
    assert logs[-1]["credit/divergence/gini"] > 0  # divergence against the initial policy
    for k, v in tr._frozen_ref.state_dict().items():
        assert torch.equal(v, initial[k]), k  # the reference never trains


def test_full_fine_tuning_refuses_arca_local(tmp_path):
    with pytest.raises(ValueError, match="with full fine-tuning .* use 'arca'"):
        make(tmp=str(tmp_path), peft=False, token_weighting="arca_local")


class FakeVLLM:
    """TRL's ``VLLMGeneration``, simulated: ``sync_weights`` merges and unmerges
    the adapter as TRL's does; ``generate`` samples with the policy itself and
    returns each sampled token's log-prob, as vLLM does."""

    def __init__(self, trainer):
        self.tr, self.syncs = trainer, 0

    def sync_weights(self):
        model = self.tr.accelerator.unwrap_model(self.tr.model)
        model.merge_adapter()
        model.unmerge_adapter()
        self.syncs += 1

    def generate(self, prompts, images, num_generations, profiler):
        model = self.tr.accelerator.unwrap_model(self.tr.model)
        eos = self.tr.processing_class.eos_token_id
        completions, logprobs = [], []
        with torch.no_grad():
            for ids in prompts:
                out = model.generate(
                    input_ids=torch.tensor([ids]),
                    max_new_tokens=self.tr.max_completion_length,
                    do_sample=True,
                    output_logits=True,
                    return_dict_in_generate=True,
                    pad_token_id=self.tr.processing_class.pad_token_id,
                )
                seq = out.sequences[0, len(ids) :].tolist()
                if eos in seq:
                    seq = seq[: seq.index(eos) + 1]
                lps = [
                    float(torch.log_softmax(lg[0].float(), -1)[t])
                    for lg, t in zip(out.logits, seq, strict=False)
                ]
                completions.append(seq)
                logprobs.append([[lp] for lp in lps])
        return prompts, completions, logprobs, None


def simulate_vllm(tr):
    """Turn on TRL's vLLM path (importance-sampling correction included) with :class:`FakeVLLM`."""
    tr.use_vllm = True
    tr.vllm_importance_sampling_correction = True
    tr.vllm_generation = FakeVLLM(tr)
    tr._last_loaded_step = -1
    return tr


def _full_forwards(tr):
    """Full-sequence forwards of the policy for one generated batch, the training one included."""
    from arca.scoring import backbone

    lengths = []
    handle = backbone(tr.model).register_forward_hook(
        lambda _m, _a, o: lengths.append(o.last_hidden_state.shape[1])
    )
    batch = next(iter(tr.get_train_dataloader()))
    torch.manual_seed(0)
    out = tr._generate_and_score_completions(batch)
    tr.current_gradient_accumulation_steps = 1
    tr._compute_loss(tr.model, out)
    handle.remove()
    return lengths.count(out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]), out


@pytest.mark.parametrize(
    "scheme, extra",
    # With vLLM TRL runs an old-log-prob pass for its importance-sampling
    # correction; arca reads the policy's inputs there. Only the base side costs.
    [("surprisal", 0), ("entropy", 0), ("arca_local", 0), ("divergence", 1), ("arca", 1)],
)
def test_with_vllm_arca_reads_the_policy_from_trls_old_logprob_pass(scheme, extra, tmp_path):
    stock = simulate_vllm(make(GRPOTrainer, GRPOConfig, tmp=str(tmp_path / "stock")))
    n_stock, out = _full_forwards(stock)
    assert "old_per_token_logps" in out and "importance_sampling_ratio" in out
    tr = simulate_vllm(make(tmp=str(tmp_path / "arca"), token_weighting=scheme))
    _randomise_adapter(tr)
    n, out = _full_forwards(tr)
    assert n - n_stock == extra
    assert tr.vllm_generation.syncs == 1
    # The weights are those of a separate dropout-free scoring pass (no dropout here).
    credit = tr._credit_inputs(out)
    w = token_weights(
        scheme,
        mask=out["completion_mask"],
        eps=tr.args.weight_eps,
        **{k: credit[k] for k in tr.scheme.requires},
    )
    assert "arca_advantage" not in out  # weighted at generation time, not deferred
    real = out["completion_mask"].bool()
    rows = out["advantages"].abs().sum(1) > 0
    assert rows.any()
    # A_i T_i w_it / sum_t (A_i T_i w_it) = w_it on rows with a nonzero advantage.
    got = out["advantages"][rows] / out["advantages"][rows].sum(1, keepdim=True)
    torch.testing.assert_close(got[real[rows]], w[rows][real[rows]], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype, warned", [(torch.bfloat16, True), (torch.float32, False)])
def test_a_16bit_base_synced_to_vllm_is_flagged(dtype, warned, tmp_path, caplog):
    tr = make(tmp=str(tmp_path), token_weighting="arca")
    tr.args.use_vllm = True  # set after init: TRL would need vLLM installed to start it
    model = tr.accelerator.unwrap_model(tr.model)
    for n, p in model.named_parameters():
        if "base_layer" in n:
            p.data = p.data.to(dtype)
    with caplog.at_level("WARNING", logger="arca.trainer"):
        tr._warn_vllm_merge_rounding(model)
    assert ("merges and unmerges the adapter" in caplog.text) == warned


def test_the_best_checkpoint_is_recorded_where_it_lies(tmp_path):
    """Checkpoints are staged and renamed: the best one must be recorded under
    its final path, in memory and in every trainer_state.json."""
    import json

    ds = Dataset.from_dict({"prompt": [f"What is {i} + {i}?" for i in range(8)]})
    tr = make(
        tmp=str(tmp_path),
        token_weighting="surprisal",
        save_strategy="steps",
        save_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        metric_for_best_model="reward",
        per_device_eval_batch_size=8,
        save_total_limit=2,
        trainer_kw={"eval_dataset": ds},
    )
    tr.train()
    best = tr.state.best_model_checkpoint
    assert best and ".checkpoint-staging" not in best and (tmp_path / Path(best).name).is_dir()
    kept = sorted(tmp_path.glob("checkpoint-*"))
    assert 1 <= len(kept) <= 3  # save_total_limit 2, plus the best one if older
    for c in kept:
        saved = json.loads((c / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert ".checkpoint-staging" not in saved


@pytest.mark.parametrize("broken", ["reads_advantages_first", "skips_the_forward"])
def test_a_changed_trl_call_order_stops_training_loudly(broken, tmp_path, monkeypatch):
    """The deferred path's one dependence on TRL's call order: if an upgrade
    reads inputs["advantages"] before the training forward, or stops routing
    that forward through _get_per_token_logps_and_entropies, training must
    stop with CALL_ORDER_BROKEN, never fall back to uniform weights silently."""
    from trl import GRPOTrainer

    from arca.trainer import CALL_ORDER_BROKEN

    stock = GRPOTrainer._compute_loss

    def reads_first(self, model, inputs):
        inputs["advantages"].dim()
        return stock(self, model, inputs)

    def skips(self, model, inputs):
        return inputs["completion_mask"].float().sum() * 0.0

    tr = make(tmp=str(tmp_path), token_weighting="surprisal", credit_from_training_forward=True)
    out = tr._generate_and_score_completions(next(iter(tr.get_train_dataloader())))
    assert "arca_advantage" in out  # the deferred path
    tr.current_gradient_accumulation_steps = 1
    fake = reads_first if broken == "reads_advantages_first" else skips
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", fake)
    with pytest.raises(RuntimeError, match=r"^TRL's call order changed"):
        tr._compute_loss(tr.model, out)
    assert CALL_ORDER_BROKEN.startswith("TRL's call order changed")
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", stock)
    tr._compute_loss(tr.model, out)  # TRL 1.16's order: weighted, (B, T) advantages
    assert out["advantages"].dim() == 2


def test_monte_carlo_ground_truth_in_training_leaves_the_run_unchanged(tmp_path):
    """error_locator: mc locates a capped sample on schedule, logs its cost,
    and draws nothing from the training RNG: the run is the same with or without it."""
    from arca.tasks.mc import MCSchedule, MCSettings

    sched = MCSchedule(
        MCSettings(k=2, max_new_tokens=12),
        score=lambda texts, rows: reward(texts),
        correct_reward=1.0,
        every=2,
        count=3,
    )
    plain = make(tmp=str(tmp_path / "a"), token_weighting="surprisal", shadow_diagnostics=True)
    plain.train()
    mc = make(
        tmp=str(tmp_path / "b"),
        token_weighting="surprisal",
        shadow_diagnostics=True,
        trainer_kw={"error_locator": sched},
    )
    seen = []
    real = mc._monte_carlo_truth

    def spy(inputs, out):
        gt = real(inputs, out)
        seen.append(None if gt is None else int(gt["checked"].sum()))
        return gt

    mc._monte_carlo_truth = spy
    mc.train()
    logs_a = [h for h in plain.state.log_history if "loss" in h]
    logs_b = [h for h in mc.state.log_history if "loss" in h]
    assert [h["loss"] for h in logs_a] == [h["loss"] for h in logs_b]
    assert [h["reward"] for h in logs_a] == [h["reward"] for h in logs_b]
    assert seen == [3, 3, None]  # steps 1 and 2 (every 2), 3 rows each; not step 3
    assert "credit/mc_seconds" in logs_b[0] and "credit/mc_seconds" not in logs_b[2]
    assert logs_b[0]["credit/mc_continuations"] > 0
    assert "credit/correct_fraction" in logs_b[0] and "credit/correct_fraction" not in logs_b[2]
    assert not any(k.startswith("credit/mc") for k in logs_a[0])
