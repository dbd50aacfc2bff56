"""The field's schemes in CreditGRPOTrainer: the (B, T) advantages TRL trains on
equal the plain references' (tests/reference_schemes.py), with the gradient of
the loss they define; the passes each costs; the oracle's refusal without
ground truth; the shadow diagnostics and signed metrics."""

from __future__ import annotations

import pytest
import reference_schemes as ref
import torch
from test_trainer import _full_forwards, _randomise_adapter, halfway, make

from arca.credit import signed_credit_correctness
from arca.trainer import CreditGRPOConfig


def generated(tr):
    """One generated batch and TRL's (B,) advantages as arca received them."""
    batch = next(iter(tr.get_train_dataloader()))
    seen = []
    real = tr._apply_credit

    def spy(o, c, **kw):
        seen.append(o.get("arca_advantage", o["advantages"]).clone())
        return real(o, c, **kw)

    tr._apply_credit = spy
    torch.manual_seed(0)
    out = tr._generate_and_score_completions(batch)
    tr._apply_credit = real
    # Weighed later (in the training forward, or per micro-batch): TRL's advantages are kept.
    return out, seen[0] if seen else out["arca_advantage"]


def rows_of(out):
    mask = out["completion_mask"].bool()
    return [out["completion_ids"][i][mask[i]].tolist() for i in range(mask.size(0))]


def laid_out(values, mask):
    """Per-row lists of values on the real tokens of ``mask`` (B, T)."""
    out = torch.zeros(mask.shape, dtype=torch.float32)
    for i, v in enumerate(values):
        out[i, mask[i].bool()] = torch.tensor(v, dtype=torch.float32)
    return out


def check_loss_gradient(tr, out, expect):
    """TRL's loss on ``out`` has the gradient of ``-sum_it c_it log pi(y_it)``
    with ``c_it = a_it / (B T_i)`` (loss_type grpo, on-policy), ``a = expect``."""
    mask = out["completion_mask"]
    torch.testing.assert_close(out["advantages"], expect, atol=1e-5, rtol=1e-4)
    params = [p for p in tr.model.parameters() if p.requires_grad]
    tr.current_gradient_accumulation_steps = 1
    tr.model.zero_grad()
    tr._compute_loss(tr.model, out).backward()
    got = [p.grad.clone() for p in params]
    tr.model.zero_grad()
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attn = torch.cat([out["prompt_mask"], mask], 1)
    logps, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, attn, mask.size(1))
    B, n = mask.size(0), mask.sum(1, keepdim=True).clamp_min(1)
    coef = expect / (B * n)
    (-(coef * torch.where(mask.bool(), logps, 0.0)).sum()).backward()
    for g, p in zip(got, params, strict=True):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-3)


def rewards_of(tr):
    return (tr._rewards_per_func * tr.reward_weights).nansum(dim=1).tolist()


@pytest.mark.parametrize("scheme", ["ktae", "lambda_grpo"])
def test_group_schemes_reach_the_loss_as_the_references_advantages(scheme, tmp_path):
    tr = make(tmp=str(tmp_path), token_weighting=scheme, trainer_kw={"correct_reward": 1.0})
    with torch.no_grad():  # peaked next-token distributions: a group's completions share openings
        tr.accelerator.unwrap_model(tr.model).get_output_embeddings().weight.mul_(10)
    out, A = generated(tr)
    rows, mask = rows_of(out), out["completion_mask"]
    if scheme == "ktae":
        # Correct: the task's reward at least correct_reward (arca eval's rule).
        ok = [1.0 if r >= 1.0 else 0.0 for r in rewards_of(tr)]
        assert 0 < sum(ok) < len(ok)
        eos, pad = tr.processing_class.eos_token_id, tr.processing_class.pad_token_id
        expect = ref.ktae_token_advantages(
            rows, ok, 4, advantages=A.tolist(), zero_token_ids=(eos, pad)
        )
    else:
        expect = ref.lambda_grpo_token_advantages(rows, [0.0] * len(rows), 4, advantages=A.tolist())
    a = laid_out(expect, mask)
    assert not torch.allclose(a, A[:, None] * torch.ones_like(a) * mask)  # not GRPO's
    check_loss_gradient(tr, out, a)


def test_lambda_grpo_reads_a_tool_output_as_context(tmp_path):
    """Completions that differ only inside a tool output (``tool_mask`` 0) share
    their first token but not the one after the tool output, whose context
    differs: it keeps ``A_i``; the tool output gets no credit."""
    tr = make(tmp=str(tmp_path), token_weighting="lambda_grpo")
    out, A = generated(tr)
    B, k = A.numel(), tr.num_generations
    ids = torch.tensor([[1, 50 + i, 50 + B + i, 2] for i in range(B)])
    tool = torch.tensor([[1, 0, 0, 1]] * B)
    out = {k: v for k, v in out.items() if k != "arca_advantage"} | {
        "advantages": torch.linspace(-1.0, 1.0, B),  # TRL's (B,), as at generation time
        "completion_ids": ids,
        "completion_mask": torch.ones_like(ids),
        "tool_mask": tool,
    }
    got = tr._group_token_advantages(out)["arca_ta_lambda_grpo"]
    adv = tr._rollout_advantages(out)
    assert (adv != 0).all()
    expect = torch.stack([adv / k, 0 * adv, 0 * adv, adv], dim=1)
    torch.testing.assert_close(got, expect)


@pytest.mark.parametrize("rest", ["uniform", "after"])
def test_oracle_reaches_the_loss_with_its_share_on_the_first_wrong_token(rest, tmp_path):
    share = 0.6
    tr = make(
        tmp=str(tmp_path),
        token_weighting="oracle",
        oracle_share=share,
        oracle_rest=rest,
        trainer_kw={"error_locator": halfway},
    )
    out, A = generated(tr)
    mask, err = out["completion_mask"].bool(), out["arca_error_index"]
    expect = []
    for i in range(mask.size(0)):  # a plain oracle, token by token
        n, e = int(mask[i].sum()), int(err[i])
        if e < 0 or float(A[i]) >= 0 or n == 1:
            w = [1.0 / n] * n if e < 0 or float(A[i]) >= 0 else [1.0]
        else:
            after = list(range(e + 1, n)) if rest == "after" and e + 1 < n else None
            others = after or [t for t in range(n) if t != e]
            w = [
                share if t == e else (1 - share) / len(others) if t in others else 0.0
                for t in range(n)
            ]
        expect.append([float(A[i]) * n * x for x in w])
    targeted = (err >= 0) & (A < 0)
    assert targeted.any() and (~targeted).any()
    check_loss_gradient(tr, out, laid_out(expect, mask))


def test_oar_g_reaches_the_loss_reshaped_as_the_reference(tmp_path, monkeypatch):
    """The tiny model writes no \\boxed: the answer span is set to each
    completion's second half, so the saliency has a reasoning span to score."""
    import arca.trainer

    def second_half(tokenizer, ids, mask):
        n = mask.sum(1)
        return torch.where(n >= 2, n // 2, -1)

    monkeypatch.setattr(arca.trainer, "answer_starts", second_half)
    tr = make(tmp=str(tmp_path), token_weighting="oar_g", oar_quantile=0.3, oar_beta=2.0)
    _randomise_adapter(tr)
    out, A = generated(tr)
    assert all(p.grad is None for p in tr.model.parameters())  # no parameter gradient leaked
    mask, sal, start = out["completion_mask"].bool(), out["arca_saliency"], out["arca_answer_start"]
    assert (sal[mask & (torch.arange(mask.size(1)) < start[:, None])] > 0).any()
    expect = []
    for i in range(mask.size(0)):
        n, L = int(mask[i].sum()), max(int(start[i]), 0)
        w = ref.oar_bilevel_weights(sal[i, :L].tolist(), threshold_quantile=0.3, beta=2.0)
        expect.append(ref.oar_token_advantages(float(A[i]), w, n))
    check_loss_gradient(tr, out, laid_out(expect, mask))


def test_oar_g_draws_no_training_randomness(tmp_path, monkeypatch):
    import arca.trainer

    monkeypatch.setattr(
        arca.trainer, "answer_starts", lambda tok, ids, mask: torch.where(mask.sum(1) >= 2, 1, -1)
    )
    tr = make(tmp=str(tmp_path), token_weighting="oar_g")
    out, _ = generated(tr)
    before = torch.get_rng_state()
    again = tr._oar_inputs(out)
    assert torch.equal(torch.get_rng_state(), before)
    torch.testing.assert_close(again["arca_saliency"], out["arca_saliency"])  # seeded per step


@pytest.mark.parametrize(
    "scheme, forwards, with_graph",
    # Full-sequence forwards of the policy per generated batch, the training one
    # included (stock TRL: 1 with beta = 0), and those at generation time with
    # an autograd graph (OAR-G's noisy forward, whose backward reaches only the
    # input embeddings).
    [("oracle", 1, 0), ("ktae", 1, 0), ("lambda_grpo", 1, 0), ("oar_g", 3, 1)],
)
def test_forward_passes_of_the_field_schemes(scheme, forwards, with_graph, tmp_path, monkeypatch):
    import arca.trainer
    from arca.scoring import backbone

    monkeypatch.setattr(
        arca.trainer, "answer_starts", lambda tok, ids, mask: torch.where(mask.sum(1) >= 2, 1, -1)
    )
    tr = make(tmp=str(tmp_path), token_weighting=scheme, trainer_kw={"error_locator": halfway})
    _randomise_adapter(tr)
    grads = []
    handle = backbone(tr.model).register_forward_hook(
        lambda _m, _a, o: grads.append((o.last_hidden_state.shape[1], torch.is_grad_enabled()))
    )
    batch = next(iter(tr.get_train_dataloader()))
    out = tr._generate_and_score_completions(batch)
    handle.remove()
    full = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
    assert sum(1 for n, g in grads if n == full and g) == with_graph
    n, _ = _full_forwards(tr)
    assert n == forwards


def test_oracle_is_refused_without_ground_truth(tmp_path):
    with pytest.raises(
        ValueError, match="token_weighting: 'oracle' is a ceiling that uses the ground truth"
    ):
        make(tmp=str(tmp_path), token_weighting="oracle")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(oracle_share=1.5), r"oracle_share: must be in \[0, 1\]"),
        (dict(oracle_rest="before"), "oracle_rest: must be one of uniform, after"),
        (dict(ktae_beta=-1.0), "ktae_beta: must be a finite number >= 0"),
        (dict(ktae_alpha=0.0, ktae_beta=0.0), "ktae_alpha, ktae_beta: at least one must be > 0"),
        (dict(oar_quantile=2.0), r"oar_quantile: must be in \[0, 1\]"),
        (dict(oar_noise_std=float("nan")), "oar_noise_std: must be a finite number"),
    ],
)
def test_field_scheme_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CreditGRPOConfig(output_dir="/tmp/x", report_to=[], use_cpu=True, **kwargs)


def test_shadow_diagnostics_grade_the_field_schemes_on_the_same_batch(tmp_path):
    """oracle (ground truth at hand), ktae and lambda_grpo (no pass) beside the
    built-in schemes; oar_g only when trained. The oracle's error lift on a
    blamed row is T x share; ktae's signed metrics are those of its own advantages."""
    tr = make(
        tmp=str(tmp_path),
        token_weighting="surprisal",
        shadow_diagnostics=True,
        trainer_kw={"error_locator": halfway},
    )
    _randomise_adapter(tr)
    out, A = generated(tr)
    tr.current_gradient_accumulation_steps = 1
    tr._compute_loss(tr.model, out)  # shadow diagnostics weigh each micro-batch here
    m = tr._metrics["train"]
    for name in ("oracle", "ktae", "lambda_grpo"):
        assert f"credit/{name}/gini" in m and f"credit/{name}/prefix_blame" in m
    assert not any(k.startswith("credit/oar_g/") for k in m)
    assert "credit/ktae/sign_flip_share" in m and "credit/lambda_grpo/mass_ratio" in m
    assert "credit/oracle/mass_ratio" not in m  # a redistribution: nothing to say
    mask, err = out["completion_mask"].bool(), out["arca_error_index"]
    blamed = (err >= 0) & (A < 0)
    assert blamed.any()
    n = mask.sum(1).float()
    share = tr.args.oracle_share  # the shadow oracle is the run's configured one
    assert m["credit/oracle/error_lift"] == pytest.approx((share * n[blamed]).tolist())
    per = signed_credit_correctness(out["arca_ta_ktae"], mask, err, advantages=A)
    assert m["credit/ktae/prefix_blame"] == pytest.approx(per["prefix_blame"][blamed].tolist())


def test_answer_starts_finds_the_last_boxed():
    from arca.models.tiny import build_tokenizer
    from arca.tasks.locate import answer_starts

    tok = build_tokenizer()
    texts = ["2+2=4. \\boxed{4}", "no answer here", "\\boxed{1} then \\boxed{2}"]
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    T = max(map(len, rows)) + 2
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.bool)
    for i, r in enumerate(rows):  # left-padded by 2 positions
        ids[i, 2 : 2 + len(r)] = torch.tensor(r)
        mask[i, 2 : 2 + len(r)] = True
    got = answer_starts(tok, ids, mask).tolist()
    assert got == [2 + texts[0].index("\\boxed"), -1, 2 + texts[2].rindex("\\boxed")]


@pytest.mark.parametrize("noise_std", [1e-3, 1e-2])
def test_outcome_saliency_is_gradient_times_input_of_the_answer_kl(noise_std):
    """arca.scoring.outcome_saliency against a plain per-row computation from
    the full logits (the mean of the logits at the answer-predicting positions,
    not the head of the mean hidden state), with the same noise draw; no
    parameter gradient is written."""
    from arca.models import tiny_qwen3
    from arca.scoring import outcome_saliency

    torch.manual_seed(3)
    model = tiny_qwen3(vocab_size=101, hidden_size=32, seed=0)
    P, C = 4, 7
    ids = torch.randint(3, 100, (3, P + C))
    attn = torch.ones(3, P + C, dtype=torch.long)
    attn[1, :2] = 0  # a left-padded prompt
    cmask = torch.ones(3, C, dtype=torch.long)
    cmask[0, 5:] = 0  # right-padded completions
    cmask[2, 6:] = 0
    start = torch.tensor([3, 4, -1])  # the last row has no answer span
    sal = outcome_saliency(
        model, ids, attn, cmask, start, noise_std=noise_std,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    assert all(p.grad is None for p in model.parameters())
    noise = torch.randn((2, P + C, 32), generator=torch.Generator().manual_seed(5)) * noise_std
    embed = model.get_input_embeddings()
    model.eval()
    for k, i in enumerate((0, 1)):
        e = embed(ids[i : i + 1]).detach()
        n = int(cmask[i].sum())
        answer = [P + c - 1 for c in range(int(start[i]), n)]  # positions predicting the answer
        reasoning = torch.zeros(P + C, 1)
        reasoning[P : P + int(start[i])] = 1
        with torch.no_grad():
            p0 = model(inputs_embeds=e, attention_mask=attn[i : i + 1]).logits[0, answer]
            p0 = p0.mean(0).softmax(-1)
        x = e.clone().requires_grad_(True)
        logits = model(
            inputs_embeds=x + noise[k] * reasoning, attention_mask=attn[i : i + 1]
        ).logits
        log_q = logits[0, answer].mean(0).log_softmax(-1)
        J = (p0 * (torch.log(p0 + 1e-12) - log_q)).sum()
        (g,) = torch.autograd.grad(J, x)
        expect = (g * e).sum(-1).abs()[0, P : P + int(start[i])]
        torch.testing.assert_close(sal[i, : int(start[i])], expect, rtol=2e-3, atol=1e-12)
        assert (sal[i, int(start[i]) :] == 0).all() and (expect > 0).all()
    assert (sal[2] == 0).all()


@pytest.mark.parametrize(
    "over, refused",
    [
        ({"task": "arithmetic"}, False),  # its own exact locator
        ({"task": "gsm8k"}, True),
        ({"task": "gsm8k", "error_locator": "mc"}, False),
    ],
)
def test_arca_train_refuses_the_oracle_without_ground_truth_before_any_model_loads(
    over, refused, tmp_path
):
    from test_train_cli import config

    from arca.train import parse

    cfg = config(tmp_path, tmp_path / "no-model-here", token_weighting="oracle", **over)
    if refused:
        with pytest.raises(ValueError, match="token_weighting: oracle is a ceiling .* task gsm8k "
                           "has no error locator; set error_locator: mc"):  # fmt: skip
            parse(["--config", str(cfg)])
    else:
        _, args, _ = parse(["--config", str(cfg)])
        assert args.token_weighting == "oracle"


def test_arca_train_runs_the_oracle_and_records_its_settings(tmp_path, random_model):
    """arca train end to end: the oracle trained on the arithmetic task's own
    locator, ktae and lambda_grpo in the shadow diagnostics, every setting of
    the field's schemes in config.yaml, the report calling the run a ceiling."""
    import yaml
    from test_train_cli import arca_train, config, metrics

    from arca.report import build_report

    cfg = config(
        tmp_path, random_model, token_weighting="oracle", oracle_rest="uniform", max_steps=2,
        save_strategy="no",
    )  # fmt: skip
    res = arca_train("--config", str(cfg), "--output_dir", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["oracle_rest"] == "uniform" and recorded["oracle_share"] == 0.2
    assert recorded["oar_quantile"] == 0.5 and recorded["ktae_beta"] == 1.0
    rows = metrics(run)
    assert len(rows) == 2
    # (sign-flip share and mass ratio are NaN, so not written, where every A_i = 0)
    for key in ("credit/oracle/gini", "credit/ktae/gini", "credit/lambda_grpo/gini"):
        assert key in rows[0], key
    assert rows[0]["credit/oracle/gini"] == rows[0]["credit/gini"]  # the trained scheme's
    rep = build_report([run], tmp_path / "report")
    assert rep["tables"]["table3_concentration"][0]["method"].endswith(
        "(ceiling: uses ground truth)"
    )
