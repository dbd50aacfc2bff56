"""`arca diagnose` and arca.theory: bounds checked by hand on small models,
the zero-adapter case, file input errors, HTML escaping."""

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
    p2 = res["prop2"]
    assert p2["beta"] > 0.01 and p2["violations"] == 0 and 0 < p2["ratio"] <= 1.0
    assert p2["bound"] == pytest.approx(2 * 3.0 * p2["beta"])
    assert res["prop1"]["holds_corrected"] == 6
    assert res["prop3"]["comparable"] == 6 and res["prop3"]["modules"] == 7
    assert res["schemes"]["arca"]["gini"]["mean"] > 0.01
    assert res["schemes"]["arca_local"]["gini"]["mean"] > 0.01  # LoRA on o_proj/down_proj
    assert -1.0 <= res["rank_correlation"]["arca~arca_local"] <= 1.0
    assert adapter_message(res["adapter"]) is None


def test_zero_adapter_and_no_adapter_say_so_and_give_uniform_arca():
    model, tok = _one_layer(c=1.0)
    for m in (add_lora(model, rank=4, dropout=0.0), model):
        res = diagnose(m, tok, _items(tok, 3))
        assert res["prop2"]["beta"] == 0.0 and res["prop2"]["max_abs_dlogp"] == 0.0
        for s in ("arca", "divergence") + (("arca_local",) if m is not model else ()):
            assert res["schemes"][s]["gini"]["mean"] == pytest.approx(0.0, abs=1e-6)
            assert res["schemes"][s]["regime"] == "uniform broadcast"
        assert ("arca_local" in res["schemes"]) == (m is not model)  # no adapter, no LoRA layers
        msg = adapter_message(res["adapter"])
        assert "uniform by construction" in msg
    assert "B matrices are all zero" in adapter_message({"present": True, "zero": True})
    assert adapter_message({"present": False, "zero": True}).startswith("No adapter")


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
    res = json.loads((out / "diagnose.json").read_text())
    assert res["completions"] == 2 and res["prop2"]["violations"] == 0
    assert res["L"] > 0 and res["adapter"]["present"] and not res["adapter"]["zero"]


def test_cli_samples_from_a_task(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "diagnose",
                "--model",
                "tiny",
                "--task",
                "arithmetic",
                "--samples",
                "6",
                "--max-new-tokens",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("6 completions") and "No adapter" in text
    again = read_completions(out / "completions.jsonl", _tok())  # reusable as --completions
    assert len(again) == 6 and again[0].where.endswith("completions.jsonl:1")
    assert (
        json.loads((out / "diagnose.json").read_text())["schemes"]["arca"]["regime"]
        == "uniform broadcast"
    )


def test_cli_errors(tmp_path, capsys):
    assert main(["diagnose", "--completions", str(tmp_path / "nope.jsonl")]) == 2
    assert "--completions: no such file" in capsys.readouterr().err
    assert main(["diagnose", "--adapter", str(tmp_path), "--task", "arithmetic"]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err


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
