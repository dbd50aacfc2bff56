"""`arca diagnose` and arca.theory: bounds checked by hand on small models,
the base-model row, several policies on the same completions (LoRA and full
fine-tuning), exact drift, ground truth, file input errors, HTML escaping."""

from __future__ import annotations

import json
import math

import pytest
import torch

from arca.cli import main
from arca.credit import rank_correlation
from arca.diagnose import Completion, adapter_message, diagnose, read_completions
from arca.models import add_lora, tiny_qwen3
from arca.models.tiny import build_tokenizer
from arca.theory import check_prop2, check_prop3, operator_norm, prop1_counterexample


@pytest.mark.parametrize("shape", [(300, 16), (16, 300), (7, 7)])
def test_operator_norm_is_the_largest_singular_value(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = float(torch.linalg.matrix_norm(w.double(), ord=2))
    assert operator_norm(w) == pytest.approx(expected, rel=1e-10)
    assert operator_norm(w, chunk=5) == pytest.approx(expected, rel=1e-10)


def test_prop1_counterexample_matches_the_closed_form():
    # Tokens alternate 0, 1 under W = [[1], [-1]], h_base = 0, dh = beta:
    # ||dw||_1 = beta / (log 2 + log cosh beta); the stated bound is
    # 4 sqrt(2) beta / (T log 2), exceeded once T >= 6.
    beta = 0.1
    for T in (4, 6, 8, 32):
        r = prop1_counterexample(T, beta)
        l1 = beta / (math.log(2) + math.log(math.cosh(beta)))
        assert r["l1"] == pytest.approx(l1, rel=1e-5)
        assert r["stated"] == pytest.approx(4 * math.sqrt(2) * beta / (T * math.log(2)), rel=1e-5)
        assert (r["l1"] > r["stated"]) == (T >= 6)
        assert r["l1"] <= r["corrected"]  # 4 L T beta / sum alpha_ref holds


def test_prop2_check_counts_and_locates_violations():
    logps = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.0, -2.5, -1.0]])  # |dlogp| = 0, 0.5, 2.0
    resid = torch.tensor([[0.1, 0.1, 0.1]])
    r = check_prop2(logps, ref, resid, torch.ones(1, 3), L=5.0)  # bound 2 * 5 * 0.1 = 1
    assert r["bound"] == pytest.approx(1.0) and r["max_abs_dlogp"] == pytest.approx(2.0)
    assert (
        r["violations"] == 1 and r["first_violation"] == [0, 2] and r["ratio"] == pytest.approx(2.0)
    )


def test_prop3_check_by_hand():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    resid = torch.tensor([[1.0, 3.0, 1.0, 3.0], [2.0, 2.0, 9.0, 9.0]])  # Var 1, 0
    contrib = {
        "a": torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 3.0, 0, 0]]),  # Var 0.25, 1
        "b": torch.tensor([[0.0, 0.0, 0.0, 4.0], [1.0, 1.0, 0, 0]]),
    }  # Var 3, 0
    r = check_prop3(resid, contrib, mask)
    assert r["var_arca"].tolist() == pytest.approx([1.0, 0.0])
    assert r["max_v"].tolist() == pytest.approx([3.0, 1.0]) and r["argmax"] == ["b", "a"]
    assert r["ratio"].tolist() == pytest.approx([1 / 3, 0.0])


def test_rank_correlation_by_hand():
    x = torch.tensor([[3.0, 1, 2, 5, 9]])
    y = torch.tensor([[1.0, 4, 2, 2, 8]])  # ranks with a tie: 1, 4, 2.5, 2.5, 5
    m = torch.ones(1, 5)
    assert float(rank_correlation(x, y, m)[0]) == pytest.approx(2 / math.sqrt(95))
    assert float(rank_correlation(x, x.exp(), m)[0]) == pytest.approx(1.0)
    assert float(rank_correlation(x, -x, m)[0]) == pytest.approx(-1.0)
    assert math.isnan(float(rank_correlation(x, torch.ones(1, 5), m)[0]))
    # Padding is ignored, wherever it is.
    pad = torch.tensor([[0.0, 3, 1, 2, 5, 9, 0]]), torch.tensor([[7.0, 1, 4, 2, 2, 8, -3]])
    pm = torch.tensor([[0, 1, 1, 1, 1, 1, 0]])
    assert float(rank_correlation(*pad, pm)[0]) == pytest.approx(2 / math.sqrt(95))


def _tok():
    return build_tokenizer()


def _items(tok, n=6):
    out = []
    for i in range(n):
        p, c = f"What is {i} + {i + 1}?", f" {i} + {i + 1} = {2 * i + 1}. \\boxed{{{2 * i + 1}}}"
        out.append(
            Completion(
                p,
                tok(p, add_special_tokens=False)["input_ids"],
                tok(c, add_special_tokens=False)["input_ids"],
                f"item {i}",
            )
        )
    return out


def _one_layer(c: float, seed: int = 0):
    tok = _tok()
    model = tiny_qwen3(
        vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, seed=seed
    )
    with torch.no_grad():  # W_lm = c Q with orthonormal columns: every singular value is c
        q, _ = torch.linalg.qr(
            torch.randn(len(tok), 16, generator=torch.Generator().manual_seed(1))
        )
        model.lm_head.weight.copy_(c * q)
    return model, tok


def _randomise(model, scale=0.5):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


def test_one_layer_model_with_known_L_satisfies_props_1_and_2():
    model, tok = _one_layer(c=3.0)
    model = _randomise(add_lora(model, rank=4, dropout=0.0))
    res = diagnose(model, tok, _items(tok), batch_size=4)
    assert res["L"] == pytest.approx(3.0, rel=1e-6)
    base, pol = res["models"]
    assert base["label"] == "base model" and base["drift_kl"] == 0.0
    p2 = pol["prop2"]
    assert p2["beta"] > 0.01 and p2["violations"] == 0 and 0 < p2["ratio"] <= 1.0
    assert p2["bound"] == pytest.approx(2 * 3.0 * p2["beta"])
    assert pol["prop1"]["holds_corrected"] == 6
    assert pol["prop3"]["comparable"] == 6 and pol["prop3"]["modules"] == 7
    assert pol["schemes"]["arca"]["gini"]["mean"] > 0.01
    assert pol["schemes"]["arca_local"]["gini"]["mean"] > 0.01  # LoRA on o_proj/down_proj
    assert -1.0 <= pol["rank_correlation"]["arca~arca_local"] <= 1.0
    assert adapter_message(pol["adapter"]) is None
    assert pol["drift_kl"] > 0


def test_zero_adapter_and_no_adapter_say_so_and_give_uniform_arca():
    model, tok = _one_layer(c=1.0)
    res = diagnose(add_lora(model, rank=4, dropout=0.0), tok, _items(tok, 3))
    pol = res["models"][1]
    assert pol["prop2"]["beta"] == 0.0 and pol["prop2"]["max_abs_dlogp"] == 0.0
    assert pol["drift_kl"] == 0.0
    for s in ("arca", "divergence", "arca_local"):
        assert pol["schemes"][s]["gini"]["mean"] == pytest.approx(0.0, abs=1e-6)
        assert pol["schemes"][s]["regime"] == "uniform broadcast"
    assert "uniform by construction" in adapter_message(pol["adapter"])
    # No adapter at all: the base row alone, with the schemes that need a policy undefined.
    (base,) = diagnose(model, tok, _items(tok, 3))["models"]
    assert set(base["schemes"]) == {
        "uniform",
        "surprisal",
        "entropy",
        "high_entropy",
        "divergence",
        "arca",
    }
    assert base["schemes"]["arca"] == {"undefined": "the policy is the base model"}
    assert base["schemes"]["surprisal"]["gini"]["mean"] > 0
    assert adapter_message({"present": False, "zero": True}) is None


def test_the_base_row_and_every_policy_score_the_same_completions():
    from arca.diagnose import Models, Policy, diagnose_models

    model, tok = _one_layer(c=2.0)
    peft_model = _randomise(add_lora(model, rank=4, dropout=0.0))
    single = diagnose(peft_model, tok, _items(tok))
    peft_model.add_adapter("second", peft_model.peft_config["default"])
    _randomise(peft_model, scale=0.1)  # both adapters get weights
    models = Models(
        peft_model,
        [Policy("a", peft_model, adapter="default"), Policy("b", peft_model, adapter="second")],
        base_is_peft=True,
    )
    res = diagnose_models(models, tok, _items(tok))
    base, a, b = res["models"]
    assert [m["label"] for m in res["models"]] == ["base model", "a", "b"]
    # The base row is the base model whatever the policies: as scored alone.
    assert base["schemes"]["surprisal"] == single["models"][0]["schemes"]["surprisal"]
    assert a["drift_kl"] > 0 and b["drift_kl"] > 0 and a["drift_kl"] != b["drift_kl"]
    assert a["schemes"]["arca"] != b["schemes"]["arca"]


def test_adapters_with_different_targets_each_get_their_own_schemes():
    from peft import LoraConfig

    from arca.diagnose import Models, Policy, diagnose_models

    model, tok = _one_layer(c=2.0)
    peft_model = _randomise(add_lora(model, rank=4, dropout=0.0))  # o_proj/down_proj included
    peft_model.add_adapter("qv", LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    _randomise(peft_model)
    models = Models(
        peft_model,
        [Policy("all", peft_model, adapter="default"), Policy("qv", peft_model, adapter="qv")],
        base_is_peft=True,
    )
    _, every, qv = diagnose_models(models, tok, _items(tok))["models"]
    assert "arca_local" in every["schemes"] and "arca_local" not in qv["schemes"]
    assert qv["schemes"]["arca"]["gini"]["mean"] > 0


def test_drift_is_the_exact_kl_over_the_vocabulary():
    from arca.scoring import completion_token_stats, token_kl

    model, tok = _one_layer(c=2.0)
    peft_model = _randomise(add_lora(model, rank=4, dropout=0.0), scale=0.3)
    items = _items(tok, 3)
    from arca.diagnose.completions import batch as _batch

    ids, attn, mask = _batch(items, 0)
    C = mask.shape[1]
    on = completion_token_stats(peft_model, ids, attn, C)
    off = completion_token_stats(peft_model, ids, attn, C, adapter=False)
    head = peft_model.get_output_embeddings()
    kl = token_kl(head, on["hidden"], head, off["hidden"])
    with torch.no_grad():
        lp = head(on["hidden"]).log_softmax(-1)
        lq = head(off["hidden"]).log_softmax(-1)
    torch.testing.assert_close(kl, (lp.exp() * (lp - lq)).sum(-1), atol=1e-6, rtol=1e-5)
    res = diagnose(peft_model, tok, items)
    m = mask.bool()
    assert res["models"][1]["drift_kl"] == pytest.approx(float(kl[m].mean()), rel=1e-5)


def test_full_fine_tuning_checkpoints_against_their_initial_model(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    model, tok = _one_layer(c=1.5)
    model.save_pretrained(tmp_path / "init")
    tok.save_pretrained(tmp_path / "init")
    for name, scale in (("ckpt1", 0.02), ("ckpt2", 0.2)):
        m = AutoModelForCausalLM.from_pretrained(tmp_path / "init")
        with torch.no_grad():
            g = torch.Generator().manual_seed(5)
            for p in m.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
        m.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    f = tmp_path / "c.jsonl"
    f.write_text(
        "".join(
            json.dumps({"prompt": c.prompt, "completion": tok.decode(c.completion_ids)}) + "\n"
            for c in _items(tok)
        )
    )
    argv = [
        "diagnose",
        "--ref-model",
        str(tmp_path / "init"),
        "--model",
        str(tmp_path / "ckpt1"),
        str(tmp_path / "ckpt2"),
    ]
    assert main([*argv, "--completions", str(f), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "full fine-tuning changes the head too, so they are not checked" in text
    res = json.loads((tmp_path / "out" / "diagnose.json").read_text())
    base, c1, c2 = res["models"]
    assert c1["kind"] == "model" and "prop2" not in c1
    assert 0 < c1["drift_kl"] < c2["drift_kl"]  # the larger perturbation drifts more
    assert c2["schemes"]["arca"]["gini"]["mean"] > 0 and "arca_local" not in c2["schemes"]
    assert res["ground_truth"] is None and "No ground truth" in text
    # A checkpoint of another model (another vocabulary) is refused, naming it.
    tiny_qwen3(
        vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1
    ).save_pretrained(tmp_path / "other")
    argv = ["diagnose", "--ref-model", str(tmp_path / "init"), "--model", str(tmp_path / "other")]
    assert main([*argv, "--completions", str(f), "--out", str(tmp_path / "o2")]) == 2
    assert "its vocabulary has 50 entries" in capsys.readouterr().err


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt": "a", "completion": "b"}', "{oops"], ":2: not valid JSON"),
        (['{"completion": "b"}'], ":1: 'prompt' must be a string"),
        (['{"prompt": "a"}'], ":1: needs 'completion'"),
        (['{"prompt": "a", "completion": ""}'], ":1: the completion is empty"),
        (["", '["a", "b"]'], ":2: expected a JSON object"),
        ([""], "holds no completions"),
    ],
)
def test_completions_file_errors_name_the_line(tmp_path, lines, message):
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_completions(f, _tok())


def test_completions_file_accepts_samples_jsonl_tokens(tmp_path):
    f = tmp_path / "samples.jsonl"
    f.write_text(json.dumps({"prompt": "p", "tokens": [" 1", " +", " 1"], "weights": {}}) + "\n")
    (c,) = read_completions(f, _tok())
    assert _tok().decode(c.completion_ids) == " 1 + 1" and c.where.endswith("samples.jsonl:1")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    from arca.models import tiny

    model, _ = tiny.load(log=lambda _: None)
    peft_model = _randomise(add_lora(model, rank=4, dropout=0.0), scale=0.05)
    d = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(d)
    return d


def test_cli_on_a_file_escapes_html(tmp_path, adapter_dir, capsys):
    f = tmp_path / "c.jsonl"
    rows = [
        {"prompt": "What is 1 + 1?", "completion": " <script>alert(1)</script> \\boxed{2}"},
        {"prompt": "What is <b>2</b> + 2?", "completion": " 2 + 2 = 4. \\boxed{4}"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert (
        main(
            [
                "diagnose",
                "--model",
                "tiny",
                "--adapter",
                str(adapter_dir),
                "--completions",
                str(f),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Prop. 2" in text and "; 0 of " in text and "tokens over the bound" in text
    page = (out / "tokens.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" not in page  # one char per span
    assert "&lt;" in page and "What is &lt;b&gt;2&lt;/b&gt; + 2?" in page
    # report.md: escaped inside <pre>, where &lt; reads as < (a code fence showed "&lt;").
    md = (out / "report.md").read_text()
    assert "<pre>" in md and "Gini &lt; 0.05" in md and "```" not in md
    res = json.loads((out / "diagnose.json").read_text())
    pol = res["models"][1]
    assert res["completions"] == 2 and pol["prop2"]["violations"] == 0
    assert res["L"] > 0 and pol["adapter"]["present"] and not pol["adapter"]["zero"]


def test_cli_samples_from_a_task_with_ground_truth(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["diagnose", "--model", "tiny", "--task", "arithmetic", "--samples", "16"]
    assert main([*argv, "--max-new-tokens", "48", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "16 completions" in text and "; sampled from the base model" in text
    res = json.loads((out / "diagnose.json").read_text())
    gt = res["ground_truth"]
    assert gt["correct"] + gt["wrong"] == 16 and gt["wrong"] > 0 and gt["located"] > 0
    assert sum(gt["first_error_step"].values()) == gt["located"]
    assert "Where they first go wrong (step " in text
    (base,) = res["models"]
    surp = base["schemes"]["surprisal"]["correctness"]
    assert surp["error_rows"] == gt["located"] and 0 <= surp["prefix_blame"] <= 1
    uni = base["schemes"]["uniform"]["correctness"]
    assert uni["error_lift"] == pytest.approx(1.0) and base["schemes"]["arca"]["undefined"]
    # completions.jsonl keeps the end-of-sequence tokens: read back with the
    # task's ground truth, the same errors are located.
    again = tmp_path / "again"
    assert (
        main(
            [
                "diagnose",
                "--model",
                "tiny",
                "--task",
                "arithmetic",
                "--completions",
                str(out / "completions.jsonl"),
                "--out",
                str(again),
            ]
        )
        == 0
    )
    res2 = json.loads((again / "diagnose.json").read_text())
    assert res2["ground_truth"] == gt
    assert res2["models"][0]["schemes"]["surprisal"] == base["schemes"]["surprisal"]
    page = (out / "tokens.html").read_text()
    assert 'class="t err"' in page  # first wrong tokens outlined


def test_cli_errors(tmp_path, capsys):
    assert main(["diagnose", "--completions", str(tmp_path / "nope.jsonl")]) == 2
    assert "--completions: no such file" in capsys.readouterr().err
    assert main(["diagnose", "--adapter", str(tmp_path), "--task", "arithmetic"]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err
    assert main(["diagnose", "--model", "tiny"]) == 2
    assert "give --task" in capsys.readouterr().err
    assert main(["diagnose", "--model", "a", "b", "--task", "arithmetic"]) == 2
    assert "--model: one base model" in capsys.readouterr().err
    assert main(["diagnose", "--ref-model", "x", "--adapter", "y", "--task", "arithmetic"]) == 2
    assert "name the fine-tuned checkpoints with --model" in capsys.readouterr().err
    argv = [
        "diagnose",
        "--ref-model",
        "x",
        "--model",
        "a",
        "--adapter",
        "y",
        "--task",
        "arithmetic",
    ]
    assert main(argv) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_violated_bounds_are_findings_naming_the_completion():
    from arca.diagnose import findings

    res = {
        "adapter": {"targets_head": False},
        "prop2": {
            "violations": 2,
            "first_violation": {"completion": 3, "position": 7, "where": "f.jsonl:4"},
        },
        "prop1": {
            "completions": 10,
            "holds_stated": 9,
            "stated_violations": [
                {
                    "completion": 5,
                    "where": "f.jsonl:6",
                    "tokens": 8,
                    "l1": 0.14,
                    "stated": 0.10,
                    "corrected": 0.8,
                }
            ],
            "corrected_violations": [],
        },
    }
    out = findings(res)
    assert out[0].startswith(
        "Prop. 2 fails on 2 tokens, first at completion 3 (f.jsonl:4), position 7"
    )
    assert (
        "Prop. 1's stated constant fails for 1 completions, e.g. completion 5 (f.jsonl:6, T = 8)"
        in out[1]
    )
    assert out[1].endswith("the corrected bound holds.")
    clean = {**res, "prop2": {"violations": 0}, "prop1": {**res["prop1"], "stated_violations": []}}
    assert findings(clean) == []


def test_cli_monte_carlo_locator_records_itself_and_reuses_its_locations(tmp_path, capsys):
    out = tmp_path / "mc"
    argv = ["diagnose", "--model", "tiny-l1", "--task", "arithmetic", "--level", "1"]
    mc = ["--locator", "mc", "--mc-k", "4", "--max-new-tokens", "32"]
    assert main([*argv, "--samples", "24", *mc, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "diagnose.json").read_text())
    loc = res["locator"]
    assert loc["kind"] == "mc" and loc["k"] == 4 and loc["cut"] == "step"
    assert loc["search"] == "binary" and "tiny-qwen3-" in loc["model"]  # the build, by content
    assert loc["continuations"] > 0 and loc["cached"] == 0 and loc["seconds"] >= 0
    assert loc["wrong"] == res["ground_truth"]["wrong"]
    assert loc["located"] == res["ground_truth"]["located"] > 0
    assert loc["per_wrong"]["queried"] <= loc["per_wrong"]["binary_bound"]
    assert "Ground truth: Monte-Carlo (k = 4, step cuts, binary search" in text
    # The task has an exact locator too: the agreement is recorded.
    agree = res["agreement_with_exact"]
    assert agree["both"] == loc["located"] and 0 <= agree["same_step"] <= 1 and "soft" in agree
    recs = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert all(r["mc"]["key"] == loc["key"] for r in recs)
    page = (out / "tokens.html").read_text()
    assert "ground truth: Monte-Carlo (k = 4" in page
    # The same completions again: every location reused, nothing generated,
    # the same ground truth and correctness.
    again = tmp_path / "again"
    comp = ["--completions", str(out / "completions.jsonl")]
    assert main([*argv, *comp, *mc, "--out", str(again)]) == 0
    res2 = json.loads((again / "diagnose.json").read_text())
    assert res2["locator"]["cached"] == 24 and res2["locator"]["continuations"] == 0
    assert res2["ground_truth"] == res["ground_truth"]
    surp = "surprisal"
    assert res2["models"][0]["schemes"][surp] == res["models"][0]["schemes"][surp]
    # Other settings: a new key, located afresh.
    other = tmp_path / "other"
    assert main([*argv, *comp, *mc[:-2], "--mc-k", "2", "--out", str(other)]) == 0
    res3 = json.loads((other / "diagnose.json").read_text())
    assert res3["locator"]["cached"] == 0 and res3["locator"]["key"] != loc["key"]


def test_cli_locator_choice_and_refusals(tmp_path, capsys):
    f = tmp_path / "c.jsonl"
    f.write_text(
        json.dumps({"prompt": "Problem: What is 1 + 2?\nSolution:", "completion": " 3"}) + "\n"
    )
    # exact where there is none: refused before any model loads, naming the fix.
    assert main(["diagnose", "--completions", str(f), "--task", "gsm8k", "--locator", "exact"]) == 2
    assert "has no exact locator" in capsys.readouterr().err
    # mc needs something to grade with.
    assert main(["diagnose", "--completions", str(f), "--locator", "mc"]) == 2
    assert "needs the task's reward" in capsys.readouterr().err
    assert main(["diagnose", "--task", "arithmetic", "--mc-k", "0"]) == 2
    assert "mc_k (--mc-k): must be" in capsys.readouterr().err


def test_cli_monte_carlo_on_a_custom_task_without_a_locator(tmp_path, capsys):
    # A task arca knows nothing about: its own columns, template and reward.
    from arca.tasks.arithmetic import problems

    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(
            json.dumps({"q": p["problem"], "final": p["answer"]}) + "\n"
            for p, _ in zip(problems(seed=3, level=1), range(40), strict=False)
        )
    )
    (tmp_path / "rewards.py").write_text(
        "from arca.tasks.boxed import extract_boxed\n"
        "def boxed(completions, final, **kw):\n"
        "    return [float(extract_boxed(c) == f) for c, f in zip(completions, final)]\n"
    )
    cfg = tmp_path / "task.yaml"
    cfg.write_text(
        "model_name_or_path: tiny-l1\ntask: custom\n"
        f"data: {data}\nheldout_size: 16\n"
        'prompt_template: "Solve the problem step by step. Put the final answer in \\\\boxed{{}}.\\n'
        'Problem: {q}\\nSolution:"\n'
        f"reward_funcs: [{tmp_path / 'rewards.py'}:boxed]\n"
    )
    out = tmp_path / "out"
    argv = ["diagnose", "--config", str(cfg), "--samples", "16", "--mc-k", "4"]
    assert main([*argv, "--max-new-tokens", "32", "--out", str(out)]) == 0
    res = json.loads((out / "diagnose.json").read_text())
    assert res["locator"]["kind"] == "mc"  # auto: no exact locator, so Monte-Carlo
    assert "agreement_with_exact" not in res
    gt = res["ground_truth"]
    assert gt["correct"] + gt["wrong"] == 16 and gt["located"] > 0
    surp = res["models"][0]["schemes"]["surprisal"]["correctness"]
    assert surp["error_rows"] == gt["located"] and 0 <= surp["prefix_blame"] <= 1
    assert "Ground truth: Monte-Carlo" in capsys.readouterr().out
