"""`arca report`: tables against hand-computed values, plots and HTML produced
and valid, errors that name the file."""

from __future__ import annotations

import csv
import html.parser
import math

import pytest
import yaml
from report_fixtures import make_run

from arca.cli import main
from arca.report import build_report, find_run_dirs, load_run
from arca.report.runs import group_methods

SHADOW = {"uniform": (0.0, 1.0), "surprisal": (0.9, 0.06), "arca": (0.2, 0.85)}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    # uniform: two seeds. Problem-level greedy results [1,1,0,0] and [1,0,0,0].
    make_run(
        root,
        "uniform_r64",
        1,
        scheme="uniform",
        rewards=[0.1, 0.2, 0.3],
        gini=[0, 0, 0],
        eff=[1, 1, 1],
        greedy=[1, 1, 0, 0],
        samples=[[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
        shadow=SHADOW,
    )
    make_run(
        root,
        "uniform_r64",
        2,
        scheme="uniform",
        rewards=[0.3, 0.3, 0.3],
        gini=[0, 0, 0],
        eff=[1, 1, 1],
        greedy=[1, 0, 0, 0],
        samples=[[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        shadow=SHADOW,
    )
    make_run(
        root,
        "arca_r4",
        1,
        scheme="arca",
        rank=4,
        rewards=[0.2, 0.4, 0.6],
        gini=[0.1, 0.2, 0.3],
        eff=[0.9, 0.8, 0.7],
        greedy=[1, 1, 1, 0],
        samples=[[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
        shadow=SHADOW,
        tokens=["<script>", "alert(1)", "</script>", " &amp;", "\n", "ok"],
    )
    make_run(
        root,
        "arca_r4",
        2,
        scheme="arca",
        rank=4,
        rewards=[0.4, 0.4, 0.4],
        gini=[0.3, 0.3, 0.3],
        eff=[0.6, 0.6, 0.6],
        greedy=[1, 1, 1, 1],
        samples=[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]],
        shadow=SHADOW,
    )
    make_run(
        root,
        "surprisal_r64",
        1,
        scheme="surprisal",
        rewards=[0.0, 0.0],
        gini=[0.94, 0.96],
        eff=[0.05, 0.07],
        greedy=[0, 0, 0, 1],
        samples=[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]],
        shadow=SHADOW,
    )
    out = root / "report"
    res = build_report([root], out, failed=[("divergence_r64 seed 1", "/x/run.log")])
    return root, out, res


def _row(table, key, value):
    return next(r for r in table if r[key] == value)


def test_methods_in_paper_order_with_seeds(sweep_dir):
    _, _, res = sweep_dir
    assert [m.name for m in res["methods"]] == ["uniform_r64", "surprisal_r64", "arca_r4"]
    assert [m.seeds for m in res["methods"]] == [[1, 2], [1], [1, 2]]


def test_table2_matches_hand_computed(sweep_dir):
    _, _, res = sweep_dir
    t2 = res["tables"]["table2_accuracy"]
    uni, arca, surp = (_row(t2, "method", n) for n in ("uniform_r64", "arca_r4", "surprisal_r64"))
    # Greedy: seed 1 2/4, seed 2 1/4 -> mean 0.375; two seeds -> interval = the two values.
    assert uni["greedy acc"].value == pytest.approx(0.375)
    assert (uni["greedy acc"].low, uni["greedy acc"].high) == pytest.approx((0.25, 0.5))
    # pass@4 with 4 samples = any correct: seed 1 -> 2/4, seed 2 -> 1/4.
    assert uni["pass@4"].value == pytest.approx(0.375)
    # Train reward averaged over steps per seed (0.2 and 0.3), then over seeds.
    assert uni["train reward"].value == pytest.approx(0.25)
    assert arca["greedy acc"].value == pytest.approx(0.875)
    assert arca["train reward"].value == pytest.approx(0.4)
    assert surp["greedy acc"].value == 0.25 and math.isnan(surp["greedy acc"].low)
    assert str(surp["greedy acc"]) == "25.0%"
    assert str(uni["greedy acc"]) == "37.5% [25.0%, 50.0%]"


def test_table3_and_regimes(sweep_dir):
    _, _, res = sweep_dir
    t3 = res["tables"]["table3_concentration"]
    arca = _row(t3, "method", "arca_r4")
    assert arca["Gini"].value == pytest.approx((0.2 + 0.3) / 2)
    assert arca["EffN/T"].value == pytest.approx((0.8 + 0.6) / 2)
    assert arca["regime"] == "middle regime"
    assert _row(t3, "method", "uniform_r64")["regime"] == "uniform broadcast"
    surp = _row(t3, "method", "surprisal_r64")
    assert surp["Gini"].value == pytest.approx(0.95) and surp["regime"] == "sparse"


def test_versus_uniform_is_paired_over_problems(sweep_dir):
    from arca.report.tables import versus_uniform_table

    _, _, res = sweep_dir
    # No uniform run at rank 4: not compared with rank 64's unless asked.
    vs = _row(res["tables"]["versus_uniform"], "method", "arca_r4")
    assert vs["vs"] == "-" and math.isnan(vs["d greedy acc"].value)
    assert vs["p (greedy acc)"].startswith(
        "n/a: no uniform run with the same settings (the nearest, uniform_r64: lora_r 4 vs 64, "
        "lora_alpha 8 vs 128; --any-rank"
    )
    vs = _row(versus_uniform_table(res["methods"], any_rank=True), "method", "arca_r4")
    assert vs["vs"] == "uniform_r64" and vs["differs"] == "lora_r 4 vs 64, lora_alpha 8 vs 128"
    # Greedy: arca mean 0.875, uniform mean 0.375.
    assert vs["d greedy acc"].value == pytest.approx(0.5)
    assert vs["d greedy acc"].low <= 0.5 <= vs["d greedy acc"].high
    assert str(vs["d greedy acc"]).startswith("+50.0 pp")
    assert 0.0 <= float(vs["p (greedy acc)"]) <= 1.0


def test_shadow_tables_one_per_metric_led_by_the_initial_model(sweep_dir):
    _, _, res = sweep_dir
    t = res["tables"]
    assert _row(t["shadow_gini"], "run", "arca_r4")["surprisal"].value == pytest.approx(0.9)
    assert _row(t["shadow_effective_ratio"], "run", "arca_r4")["arca"].value == pytest.approx(0.85)
    base = t["shadow_gini"][0]  # no diagnosis given: the runs' step-1 batches
    assert base["run"] == "initial model (step-1 batches)"
    assert base["surprisal"].value == pytest.approx(0.9) and base["surprisal"].seeds == 2
    assert base["arca"] == "undefined (policy = initial model)"
    assert "shadow_prefix_blame" not in t  # no run logged ground truth


def test_csv_and_markdown(sweep_dir):
    _, out, _ = sweep_dir
    rows = list(csv.DictReader((out / "tables.csv").open()))
    cell = next(
        r
        for r in rows
        if r["table"] == "table2_accuracy"
        and r["row"] == "uniform_r64"
        and r["column"] == "greedy acc"
    )
    assert float(cell["value"]) == pytest.approx(0.375) and cell["seeds"] == "2"
    assert float(cell["ci_low"]) == pytest.approx(0.25)
    md = (out / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Shadow diagnostics", "Against uniform"):
        assert heading in md
    assert "divergence_r64 seed 1" in md and "/x/run.log" in md  # failed runs are listed
    assert "| arca_r4 | arca | grpo | LoRA r 4 | 8 |" in md
    assert "Not measured" not in md or "has no error locator" in md


def test_plots_are_valid_pngs(sweep_dir):
    import matplotlib.image

    _, out, res = sweep_dir
    for name in ("reward", "concentration", "residual", "regimes"):
        path = out / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(path)
        assert img.shape[0] > 300 and img.shape[1] > 600
        # Not a blank canvas: many distinct colours.
        assert len({tuple(p) for p in img.reshape(-1, img.shape[2])[::97]}) > 20
    assert {p.name for p in res["files"]} >= {"report.md", "tables.csv", "tokens.html"}


class _Checker(html.parser.HTMLParser):
    VOID = {"meta", "br", "img", "hr", "link", "input", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_tokens_html_is_well_formed_and_escaped(sweep_dir):
    _, out, _ = sweep_dir
    page = (out / "tokens.html").read_text()
    checker = _Checker()
    checker.feed(page)
    assert checker.errors == [] and checker.stack == []
    tags = [t for t, _ in checker.tags]
    assert "script" not in tags and "b" not in tags  # model output and prompts stay text
    assert (
        "&lt;script&gt;" in page
        and "&amp;amp;" in page
        and "What is &lt;b&gt;1+1&lt;/b&gt;?" in page
    )
    # Both sampled steps (of the 3 trained) of the ARCA run, one column per scheme.
    assert "arca_r4 (seed 1, steps 1 and 2 of 3)" in page and page.count('class="col"') == 4
    spans = [a for t, a in checker.tags if t == "span" and a.get("class") == "t"]
    assert len(spans) == 24  # 6 tokens x 2 schemes x 2 steps
    # Uniform tokens are white; ARCA's rising weights go blue -> orange.
    rgb = [bytes.fromhex(a["style"].split("#")[1][:6]) for a in spans]
    assert rgb[0] == b"\xff\xff\xff" and rgb[6][2] > rgb[6][0] and rgb[11][0] > rgb[11][2]
    # Steps and completions are linked from the navigation bar.
    ids = {a["id"] for _, a in checker.tags if "id" in a}
    links = [a["href"] for t, a in checker.tags if t == "a" and a.get("href", "").startswith("#")]
    assert {"#step-1", "#step-2", "#step-2-0"} <= set(links) and {x[1:] for x in links} <= ids


def test_tokens_html_without_samples(tmp_path):
    make_run(tmp_path, "uniform_r64", 1, scheme="uniform", rewards=[0.1], gini=[0], eff=[1])
    build_report([tmp_path], tmp_path / "rep")
    assert "No sampled completions" in (tmp_path / "rep" / "tokens.html").read_text()


def test_samples_from_before_step_base_are_counted_from_1(tmp_path):
    """samples.jsonl files written before `step_base` counted steps from 0: read
    as the step being taken, as metrics.jsonl counts it, they never mislabel one."""
    import json

    from arca.report import tokens

    d = make_run(tmp_path, "arca_r4", 1, scheme="arca", rewards=[0.1] * 3, gini=[0] * 3,
                 eff=[1] * 3, tokens=["1", "<eos>"])  # fmt: skip
    old = {"index": 0, "advantage": 0.5, "tokens": ["1"], "weights": {"arca": [1.0]}}
    new = {**old, "step": 3, "step_base": 1}
    lines = [{**old, "step": 0}, {**old, "step": 1}, new, {**old, "step": "x"}]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"cut')
    assert [r["step"] for r in tokens.load_samples(d)] == [1, 2, 3]
    assert [tokens.sample_step(r) for r in lines[:3]] == [1, 2, 3]
    methods = group_methods([load_run(d)])
    label, recs = tokens.pick_samples(methods, steps=2)
    assert label == "arca_r4 (seed 1, steps 1 and 3 of 3)" and [r["step"] for r in recs] == [1, 3]
    page = tokens.render(label, recs)
    assert "<h2>step 1</h2>" in page and "<h2>step 3</h2>" in page and "step 0" not in page


def test_token_text_contrasts_with_every_weight_colour():
    from arca.report.tokens import SATURATION, colours, contrast_ratio

    n = 100
    for k in range(-60, 61):  # 1/8x ... 8x uniform and past both ends
        bg, fg = colours(SATURATION ** (k / 40) / n, n)
        assert contrast_ratio(bg, fg) >= 4.5, (k, bg, fg)
    assert colours(1 / n, n)[0] == (255, 255, 255)
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)


def test_long_completions_fold_and_tokens_stay_whole():
    from arca.report.tokens import render

    short = {"step": 1, "index": 0, "tokens": ["1", "<eos>"], "weights": {"arca": [0.5, 0.5]}}
    long = {"step": 5, "index": 1, "tokens": ["12", " +", "\n"] * 400 + ["<eos>"],
            "weights": {"arca": [1 / 1201] * 1201}}  # fmt: skip
    page = render("run", [short, long])
    checker = _Checker()
    checker.feed(page)
    assert checker.errors == [] and checker.stack == []
    # One fold toggle: the long completion's, right in its article.
    assert page.count('<details class="fold">') == 1 and "show all 1,201 tokens" in page
    assert page.index('id="step-5-0"') < page.index('<details class="fold">')
    # Each token is one unbreakable span; lines break between tokens (<wbr>).
    assert ".t{white-space:pre;" in page
    assert '">&lt;eos&gt;</span>' in page and "</span><wbr><span" in page
    # Without steps (arca diagnose): the bar links the completions.
    page = render("model", [{k: v for k, v in short.items() if k != "step"}])
    assert 'href="#c-0"' in page and 'id="c-0"' in page and "<h2>" not in page


def test_cli_report_default_out_and_summary(sweep_dir, capsys, tmp_path):
    root, _, _ = sweep_dir
    assert main(["report", str(root / "arca_r4" / "seed-1"), "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "arca_r4" in text and "middle regime" in text and (tmp_path / "r" / "report.md").exists()


def test_duplicate_name_and_seed_is_an_error(tmp_path):
    a = make_run(tmp_path / "a", "x", 1, scheme="uniform", rewards=[0.1], gini=[0], eff=[1])
    b = make_run(tmp_path / "b", "x", 1, scheme="uniform", rewards=[0.1], gini=[0], eff=[1])
    with pytest.raises(ValueError, match="share seed 1"):
        group_methods([load_run(a), load_run(b)])


def test_bad_inputs_name_the_file_and_line(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_run_dirs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run folders" in capsys.readouterr().err
    d = make_run(
        tmp_path, "x", 1, scheme="uniform", rewards=[0.1, 0.2, 0.3], gini=[0] * 3, eff=[1] * 3
    )
    lines = (d / "metrics.jsonl").read_text().splitlines()
    # A cut-off last line (a killed run) is tolerated; a broken middle line is not.
    (d / "metrics.jsonl").write_text("\n".join([*lines, '{"step": 4, "rew']) + "\n")
    assert len(load_run(d).metrics) == 3
    (d / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
        load_run(d)


# ------------------------------------------------------------ ground truth

TRUTH = {
    "uniform": {"prefix_blame": 0.44, "error_lift": 1.0, "top1_hit": 0.04, "top3_hit": 0.12},
    "surprisal": {"prefix_blame": 0.02, "error_lift": 22.0, "top1_hit": 0.8, "top3_hit": 0.9},
}


@pytest.fixture(scope="module")
def truth_dir(tmp_path_factory):
    import json

    root = tmp_path_factory.mktemp("truth")
    common = dict(
        rewards=[0.2, 0.3],
        greedy=[1, 0, 1, 0],
        samples=[[1, 0, 0, 0]] * 4,
        shadow={"uniform": (0.0, 1.0), "surprisal": (0.9, 0.06)},
    )
    for seed, blame in ((1, 0.02), (2, 0.04)):
        truth = {**TRUTH, "surprisal": {**TRUTH["surprisal"], "prefix_blame": blame}}
        make_run(
            root,
            "surprisal_r64",
            seed,
            scheme="surprisal",
            gini=[0.9, 0.9],
            eff=[0.06, 0.06],
            correctness=truth,
            drift=[0.0, 0.01],
            extra={"credit/dropout": 0.05},
            **common,
        )
    make_run(
        root,
        "uniform_r64",
        1,
        scheme="uniform",
        gini=[0, 0],
        eff=[1, 1],
        correctness=TRUTH,
        drift=[0.0, 0.01],
        **common,
    )
    for scheme in ("uniform", "surprisal"):
        make_run(
            root,
            f"{scheme}_full",
            1,
            scheme=scheme,
            gini=[0.5, 0.5],
            eff=[0.5, 0.5],
            correctness=TRUTH,
            drift=[0.0, 0.02],
            full=True,
            tokens=["4", "7", "<eos>"] if scheme == "surprisal" else None,
            first_error=1 if scheme == "surprisal" else None,
            **common,
        )
    make_run(root, "<b>odd</b>", 1, scheme="entropy", gini=[0.9, 0.9], eff=[0.1, 0.1], **common)
    base = root / "base-model"
    base.mkdir()
    q = lambda v: {"mean": v, "p10": v, "p50": v, "p90": v}  # noqa: E731
    (base / "diagnose.json").write_text(
        json.dumps(
            {
                "completions": 256,
                "mean_length": 25.0,
                "sampled_from": "sampled from the base model",
                "models": [
                    {
                        "label": "base model",
                        "schemes": {
                            "uniform": {
                                "gini": q(0.0),
                                "effective_ratio": q(1.0),
                                "effective_n": q(25.0),
                                "correctness": {"prefix_blame": 0.45, "error_lift": 1.0},
                            },
                            "surprisal": {
                                "gini": q(0.94),
                                "effective_ratio": q(0.05),
                                "effective_n": q(1.4),
                                "correctness": {"prefix_blame": 0.03, "error_lift": 20.0},
                            },
                            "divergence": {"undefined": "no adapter"},
                        },
                    }
                ],
            }
        )
    )
    res = build_report([root], root / "report", base=base)
    return root, res


def test_correctness_table_of_the_trained_scheme(truth_dir):
    _, res = truth_dir
    t = res["tables"]["credit_correctness"]
    s = _row(t, "method", "surprisal_r64")
    assert s["prefix blame"].value == pytest.approx(0.03) and s["prefix blame"].seeds == 2
    assert s["uniform's blame"].value == pytest.approx(0.44)
    assert s["error lift"].value == pytest.approx(22.0) and s["top-1 hit"].value == pytest.approx(
        0.8
    )
    assert s["trains"] == "LoRA r64" and _row(t, "method", "uniform_full")["trains"] == "full"
    assert math.isnan(_row(t, "method", "<b>odd</b>")["prefix blame"].value)  # no ground truth


def test_base_row_comes_from_the_diagnosis(truth_dir):
    _, res = truth_dir
    blame = res["tables"]["shadow_prefix_blame"]
    assert (
        blame[0]["run"]
        == "base model (256 completions, sampled from the base model; arca diagnose)"
    )
    assert blame[0]["surprisal"].value == pytest.approx(0.03)
    eff = res["tables"]["shadow_effective_ratio"]
    assert eff[0]["surprisal"].value == pytest.approx(0.05)
    assert eff[0]["mean T"].value == 25.0 and "mean T" in eff[1]  # EffN/T beside its T
    assert "shadow_effective_n" not in res["tables"]  # no run logged EffN


def test_full_fine_tuning_is_compared_with_its_own_uniform_and_seeds_are_marked(truth_dir):
    _, res = truth_dir
    vs = res["tables"]["versus_uniform"]
    assert _row(vs, "method", "surprisal_full")["vs"] == "uniform_full"
    s = _row(vs, "method", "surprisal_r64")
    assert s["vs"] == "uniform_r64" and s["seeds"] == "2 vs 1" and "one seed" in s["note"]
    aa = res["tables"]["seed_spread"]
    assert [r["method"] for r in aa] == ["surprisal_r64"]  # the only method with two seeds
    assert aa[0]["d greedy acc"].value == 0.0  # identical seeds: no spread


def test_report_says_dropout_escapes_names_and_draws_the_new_plots(truth_dir):
    import matplotlib.image

    root, res = truth_dir
    md = (root / "report" / "report.md").read_text()
    assert "surprisal_r64 (p = 0.05) were read from the training forward" in md
    assert "<b>odd</b>" not in md and "&lt;b&gt;odd&lt;/b&gt;" in md
    assert "## Credit correctness" in md and "credit.png" in md
    for name in ("credit", "drift"):
        img = matplotlib.image.imread(root / "report" / f"{name}.png")
        assert (
            img.shape[0] > 250 and len({tuple(p) for p in img.reshape(-1, img.shape[2])[::97]}) > 20
        )
    page = (root / "report" / "tokens.html").read_text()
    # the legend's example, token #1 in both columns of both sampled steps
    assert page.count('class="t err"') == 5
    assert "first wrong token: #1" in page


def test_summary_shows_the_correctness_columns(truth_dir):
    from arca.report import summary_text

    _, res = truth_dir
    text = summary_text(res["tables"])
    head, *rows = text.splitlines()
    assert head.split()[-4:] == ["blame", "lift", "top-1", "regime"]
    row = next(r for r in rows if r.startswith("surprisal_r64"))
    assert "0.030" in row and "22.00" in row and "sparse" in row


def test_no_ground_truth_is_said_and_no_stale_plot_is_shown(sweep_dir, tmp_path):
    root, out, _ = sweep_dir
    md = (out / "report.md").read_text()
    assert "Not measured: the task (arithmetic) has no error locator" in md
    # No ground truth and no drift: credit.png and drift.png are not drawn, and a
    # file left by an earlier report in the folder is removed, not linked.
    (tmp_path / "credit.png").write_bytes(b"old")
    build_report([root], tmp_path)
    assert not (tmp_path / "credit.png").exists() and not (tmp_path / "drift.png").exists()
    assert "credit.png" not in (tmp_path / "report.md").read_text()


def test_a_scheme_against_a_base_the_policy_never_left_is_not_called_a_regime(tmp_path):
    """Two steps inside a 3-step warm-up: lr 0 at step 1, so the adapter is
    still zero and ARCA's weights are uniform by construction."""
    for name, scheme in (("uniform_r64", "uniform"), ("arca_r64", "arca")):
        make_run(
            tmp_path / "runs",
            name,
            1,
            scheme=scheme,
            rewards=[0.1, 0.2],
            gini=[0.0, 0.0],
            eff=[1.0, 1.0],
            extra={"credit/residual_max": 0.0, "credit/drift_kl": 0.0},
        )
    res = build_report([tmp_path / "runs"], tmp_path / "report")
    rows = {r["method"]: r["regime"] for r in res["tables"]["table3_concentration"]}
    assert rows["arca_r64"].startswith("uniform: policy = base model")
    assert rows["uniform_r64"] == "uniform broadcast"  # uniform by design, not by accident
    md = (tmp_path / "report" / "report.md").read_text()
    assert "arca_r64: every logged ARCA residual and drift from the base model is exactly 0" in md


def test_evaluations_on_different_held_out_sets_are_flagged_not_compared(tmp_path):
    make_run(
        tmp_path / "runs", "uniform_r64", 1, scheme="uniform", rewards=[0.1], gini=[0.0],
        eff=[1.0], greedy=[1, 0, 0, 1], samples=[[1, 0, 0, 0]] * 4,
    )  # fmt: skip
    make_run(
        tmp_path / "runs", "arca_r64", 1, scheme="arca", rewards=[0.1], gini=[0.2],
        eff=[0.8], greedy=[1, 1], samples=[[1, 1, 0, 0]] * 2,
    )  # fmt: skip
    res = build_report([tmp_path / "runs"], tmp_path / "report")
    acc = {r["method"]: r["problems"] for r in res["tables"]["table2_accuracy"]}
    assert acc == {"base model (untrained)": "-", "uniform_r64": "4", "arca_r64": "2"}
    (row,) = res["tables"]["versus_uniform"]
    assert row["p (greedy acc)"] == "n/a: different held-out sets (2 vs 4 problems)"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "The evaluations cover different held-out sets" in md


def test_a_non_finite_metric_is_flagged_not_given_a_regime(tmp_path):
    make_run(
        tmp_path / "runs", "surprisal_r64", 1, scheme="surprisal", rewards=[0.1, 0.1],
        gini=[0.5, float("inf")], eff=[0.2, 0.2],
    )  # fmt: skip
    res = build_report([tmp_path / "runs"], tmp_path / "report")
    (row,) = res["tables"]["table3_concentration"]
    assert row["regime"].startswith("n/a: non-finite Gini or EffN/T")


def test_baseline_and_a_single_runs_own_report_folder(sweep_dir, capsys):
    root, _, _ = sweep_dir
    res = build_report([root], root / "report-b", baseline="arca_r4")
    rows = res["tables"]["versus_uniform"]
    assert rows and all(r["vs"] == "arca_r4" for r in rows)
    assert {r["method"] for r in rows} == {"uniform_r64", "surprisal_r64"}
    assert (
        "### Against arca_r4 on the same held-out problems"
        in (root / "report-b" / "report.md").read_text()
    )
    with pytest.raises(ValueError, match="--baseline: no method named 'nope'"):
        build_report([root], root / "report-c", baseline="nope")
    # One run's report goes in its own folder: two runs' reports never collide.
    for seed in (1, 2):
        assert main(["report", str(root / "arca_r4" / f"seed-{seed}")]) == 0
        assert (root / "arca_r4" / f"seed-{seed}" / "report" / "report.md").is_file()


# ------------------------------------------------------------ base model row


def _base_eval(run, greedy=0.25, passk=0.5, seed=None, **settings):
    """An eval-base/results.json as `arca eval --run RUN --base` writes it, with
    the run's own settings unless ``settings`` changes some."""
    import json

    import yaml

    from arca.run_folder import eval_settings

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "eval-base").mkdir()
    res = {
        "problems": 4, "greedy_accuracy": greedy, "pass@4": passk, "k": 4,
        "samples_per_problem": 4, "seed": cfg["seed"] if seed is None else seed,
        "weights": "base", "settings": {**eval_settings(cfg), **settings},
    }  # fmt: skip
    (run / "eval-base" / "results.json").write_text(json.dumps(res))


def _two_runs(root):
    runs = []
    for name, scheme, greedy in (
        ("uniform_r64", "uniform", [1, 0, 0, 0]),
        ("arca_r4", "arca", [1, 1, 0, 0]),
    ):
        runs.append(
            make_run(
                root,
                name,
                1,
                scheme=scheme,
                rewards=[0.1],
                gini=[0.2],
                eff=[0.8],
                greedy=greedy,
                samples=[[1, 0, 0, 0]] * 4,
            )  # fmt: skip
        )
    return runs


def test_base_model_row_leads_the_accuracy_table(tmp_path, capsys):
    from arca.report import summary_text

    uni, _ = _two_runs(tmp_path / "runs")
    # Not evaluated: the row says so and how to get it.
    res = build_report([tmp_path / "runs"], tmp_path / "r0")
    row = res["tables"]["table2_accuracy"][0]
    assert row["method"] == "base model (untrained)"
    assert row["greedy acc"].startswith("n/a (not evaluated: run arca eval --run ")
    assert row["greedy acc"].endswith(" --base)") and row["pass@4"] == "n/a"
    # Evaluated with the runs' settings (by the sweep, in the first run's folder).
    _base_eval(uni, greedy=0.25, passk=0.5)
    res = build_report([tmp_path / "runs"], tmp_path / "r1")
    row = res["tables"]["table2_accuracy"][0]
    assert row["method"] == "base model (untrained)" and row["problems"] == "4"
    assert str(row["greedy acc"]) == "25.0%" and str(row["pass@4"]) == "50.0%"
    md = (tmp_path / "r1" / "report.md").read_text()
    assert "| base model (untrained) | 25.0% | 50.0% | - | 4 |" in md
    assert "arca eval --run RUN --base" in md
    base_line = summary_text(res["tables"]).splitlines()[1]
    assert base_line.split()[:5] == ["base", "model", "(untrained)", "25.0%", "50.0%"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"max_completion_length": 64}, "max_completion_length 64 for the base, 512 for"),
        ({"model_name_or_path": "smollm2"}, "model_name_or_path 'smollm2' for the base"),
        ({"seed": 99}, "sampled with seed 99, the runs with 1"),
    ],
)
def test_a_base_evaluated_otherwise_is_not_set_beside_the_runs(tmp_path, change, says):
    uni, _ = _two_runs(tmp_path / "runs")
    _base_eval(uni, **change)
    res = build_report([tmp_path / "runs"], tmp_path / "r")
    (row,) = [r for r in res["tables"]["table2_accuracy"] if r["method"].startswith("base")]
    assert row["greedy acc"].startswith("n/a (evaluated with other settings: ")
    assert says in row["greedy acc"] and row["pass@4"] == "n/a" and row["problems"] == "-"


def test_runs_evaluated_two_ways_get_a_base_row_each(tmp_path):
    import yaml

    uni, arca = _two_runs(tmp_path / "runs")
    cfg = yaml.safe_load((arca / "config.yaml").read_text())
    (arca / "config.yaml").write_text(yaml.safe_dump({**cfg, "max_completion_length": 64}))
    _base_eval(uni, greedy=0.25)
    _base_eval(arca, greedy=0.5)
    res = build_report([tmp_path / "runs"], tmp_path / "r")
    rows = {r["method"]: str(r["greedy acc"]) for r in res["tables"]["table2_accuracy"][:2]}
    assert rows == {
        "base model (untrained), beside uniform_r64": "25.0%",
        "base model (untrained), beside arca_r4": "50.0%",
    }


# ------------------------------------------------------------ plots


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    """A report of 12 methods, keeping every figure it saves for inspection."""
    import random

    from arca.report import plots

    root = tmp_path_factory.mktemp("twelve")
    rng = random.Random(0)
    for i in range(12):
        g = 0.02 if i < 2 else 0.07 * i
        make_run(
            root / "runs", f"m{i:02d}", 1, scheme="uniform" if i < 2 else "surprisal", rank=4 + i,
            rewards=[0.2 + 0.02 * t + rng.uniform(-0.05, 0.05) for t in range(20)],
            gini=[g] * 20, eff=[1 - g] * 20, greedy=[1, 0, 1, 0], samples=[[1, 0, 0, 0]] * 4,
        )  # fmt: skip
    figs = {}
    save = plots._save

    def keep(plt, fig, path, dpi=120):
        figs[path.name] = fig
        return save(plt, fig, path, dpi)

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "_save", keep)
    try:
        build_report([root / "runs"], root / "report")
    finally:
        mp.undo()
    return figs


def test_twelve_methods_get_twelve_distinct_styles(twelve):
    from matplotlib.colors import to_hex

    for name in ("reward.png", "concentration.png", "residual.png"):
        lines = [
            ln
            for ax in twelve[name].axes
            for ln in ax.get_lines()
            if not ln.get_label().startswith("_")
        ]
        by_method: dict[str, set] = {}
        for ln in lines:
            by_method.setdefault(ln.get_label(), set()).add(
                (to_hex(ln.get_color()), ln.get_linestyle())
            )
        assert len(by_method) == 12
        assert all(len(s) == 1 for s in by_method.values())  # one style per method in every axes
        assert len({next(iter(s)) for s in by_method.values()}) == 12
    # The same method looks the same in every plot of the report.
    reward = {
        ln.get_label(): to_hex(ln.get_color()) for ln in twelve["reward.png"].axes[0].get_lines()
    }
    dots = twelve["regimes.png"].axes[0].collections[-12:]
    colours = [to_hex(c.get_facecolor()[0]) for c in dots]
    assert len(set(colours)) == 12
    assert colours == [reward[f"m{i:02d}"] for i in range(12)]


def test_legends_stay_off_the_data(twelve):
    assert set(twelve) >= {"reward.png", "concentration.png", "residual.png", "regimes.png"}
    for name, fig in twelve.items():
        fig.canvas.draw()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        assert legends, name
        for leg in legends:
            box = leg.get_window_extent()
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent()), (name, ax.get_title())


def test_concentration_thresholds_are_labelled(twelve):
    from arca.credit.diagnostics import SPARSE_RATIO_BELOW, UNIFORM_GINI_BELOW

    fig = twelve["concentration.png"]
    fig.canvas.draw()
    gini_ax, ratio_ax = fig.axes
    for ax, value, words in (
        (gini_ax, UNIFORM_GINI_BELOW, f"uniform broadcast (Gini < {UNIFORM_GINI_BELOW:g})"),
        (ratio_ax, SPARSE_RATIO_BELOW, f"sparse (EffN/T < {SPARSE_RATIO_BELOW:g})"),
    ):
        (text,) = [t for t in ax.texts if words in t.get_text()]
        assert text.get_position()[1] == value  # on the threshold line itself
        assert any(ln.get_ydata()[0] == value for ln in ax.get_lines())
        legend = ratio_ax.get_legend().get_window_extent()
        assert not text.get_window_extent().overlaps(legend)


def test_report_names_the_ground_truth_of_each_run(tmp_path):
    from arca.report import ground_truth_of

    corr = {"uniform": {"prefix_blame": 0.4, "error_lift": 1.0}}
    kw = dict(rewards=[0.1, 0.2], gini=[0.0, 0.0], eff=[1.0, 1.0], correctness=corr)
    a = make_run(tmp_path, "uniform_r64", 1, scheme="uniform", **kw)
    make_run(tmp_path, "surprisal_r64", 1, scheme="surprisal", **kw)
    cfg = yaml.safe_load((a / "config.yaml").read_text())
    cfg |= {"error_locator": "mc", "mc_k": 8, "mc_every": 5, "mc_completions": 4}
    (a / "config.yaml").write_text(yaml.safe_dump(cfg))
    build_report([tmp_path], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "- Ground truth of uniform_r64: Monte-Carlo (k = 8, step cuts, binary search, " in md
    assert "every 5 steps on up to 4 completions per process" in md
    assert "- Ground truth of surprisal_r64: exact: the arithmetic task's worked solutions" in md
    from arca.report.tokens import render

    rec = {"tokens": ["a", "b"], "weights": {"uniform": [0.5, 0.5]}, "first_error": 1}
    assert "(ground truth: Monte-Carlo (k = 8" in render("run", [rec], truth=ground_truth_of(cfg))
    assert ground_truth_of({"task": "custom", "error_locator": "f.py:loc"}).endswith("f.py:loc")


def test_a_one_run_sweep_is_reported_in_the_sweep_folder(tmp_path, capsys):
    """`arca report SWEEP` on a sweep of one run wrote into the run's folder,
    leaving the sweep's report/ stale."""
    sweep = tmp_path / "sweep"
    run = make_run(sweep, "uni", 1, scheme="uniform", rewards=[0.1, 0.2], gini=[0, 0], eff=[1, 1])
    assert main(["report", str(sweep)]) == 0
    assert (sweep / "report" / "report.md").is_file() and not (run / "report").exists()
    assert main(["report", str(run)]) == 0  # one run given: its own folder, as before
    assert (run / "report" / "report.md").is_file()


def test_the_console_summary_heads_the_pass_at_k_it_holds(tmp_path, capsys):
    """Runs evaluated with --k 2 kept a console column headed pass@4 (and n/a)."""
    import json

    run = make_run(
        tmp_path,
        "uni",
        1,
        scheme="uniform",
        rewards=[0.1, 0.2],
        gini=[0, 0],
        eff=[1, 1],
        greedy=[1, 0],
        samples=[[1, 0, 0, 0], [0, 0, 0, 0]],
    )
    res = json.loads((run / "eval" / "results.json").read_text())
    res = {k: v for k, v in res.items() if k != "pass@4"} | {"pass@2": 0.5, "k": 2}
    (run / "eval" / "results.json").write_text(json.dumps(res))
    assert main(["report", str(run)]) == 0
    head, row = capsys.readouterr().out.splitlines()[:2]
    assert "pass@2" in head and "pass@4" not in head
    assert "50.0%" in row


# ------------------------------------------------------------ like with like


def _eval_run(root, name, seed, scheme="uniform", greedy=(1, 0, 0, 0), **kw):
    """A one-step run evaluated on four problems (rank 64 unless ``rank``)."""
    return make_run(
        root, name, seed, scheme=scheme, rewards=[0.1], gini=[0.0], eff=[1.0],
        greedy=list(greedy), samples=[[g, 0, 0, 0] for g in greedy], **kw,
    )  # fmt: skip


def test_runs_of_one_name_on_different_levels_are_two_methods(tmp_path):
    """Same run_name, arithmetic level 1 and level 3: two methods, labelled by
    what differs, never one averaged method or an A/A table of the level gap."""
    lv1 = [f"level-1 problem {i}" for i in range(4)]
    lv3 = [f"level-3 problem {i}" for i in range(4)]
    _eval_run(tmp_path / "a", "uniform_r64", 2, greedy=(1, 1, 1, 0),
              config={"level": 1}, problems=lv1)  # fmt: skip
    _eval_run(tmp_path / "b", "uniform_r64", 1337, greedy=(0, 0, 0, 1),
              config={"level": 3}, problems=lv3)  # fmt: skip
    res = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "report")
    names = [m.name for m in res["methods"]]
    assert names == ["uniform_r64 [level 1]", "uniform_r64 [level 3]"]
    assert [m.seeds for m in res["methods"]] == [[2], [1337]]
    t1 = {r["run"]: (r["task"], r["seeds"]) for r in res["tables"]["table1_config"]}
    assert t1 == {
        "uniform_r64 [level 1]": ("arithmetic level 1", "2"),
        "uniform_r64 [level 3]": ("arithmetic level 3", "1337"),
    }
    acc = {r["method"]: r["greedy acc"] for r in res["tables"]["table2_accuracy"][1:]}
    assert acc["uniform_r64 [level 1]"].value == 0.75 and acc["uniform_r64 [level 3]"].value == 0.25
    assert res["tables"]["seed_spread"] == []  # one seed each: no A/A of the level gap
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Runs named uniform_r64 differ in level (1, 3)" in md
    # Four problems each, other problems: said, though the counts agree.
    assert "different held-out sets** (another task, level, data or split)" in md


def test_a_run_without_a_field_counts_as_the_default_it_ran_with(tmp_path):
    from arca.report.runs import method_identity
    from arca.tasks.arithmetic import DEFAULT_LEVEL

    _eval_run(tmp_path / "a", "uniform_r64", 1)
    _eval_run(tmp_path / "b", "uniform_r64", 2, config={"level": DEFAULT_LEVEL})
    methods = group_methods([load_run(d) for d in find_run_dirs([tmp_path])])
    assert [(m.name, m.seeds) for m in methods] == [("uniform_r64", [1, 2])]
    assert method_identity({})["level"] == DEFAULT_LEVEL
    assert method_identity({"model_identity": "abc"})["model_identity"] == "abc"
    assert method_identity({"seed": 3, "output_dir": "x"}) == method_identity({})


def test_paired_tests_pair_only_identical_problems(tmp_path):
    """Four problems each, counts equal: different problems are n/a with the
    reason; the same problems in another order are paired by their text."""
    texts = [f"What is {i} + {i}?" for i in range(4)]
    _eval_run(tmp_path / "r", "uniform_r64", 1, greedy=(1, 1, 0, 0), problems=texts)
    # Another split: the same count of other problems.
    _eval_run(tmp_path / "r", "surprisal_r64", 1, scheme="surprisal", greedy=(1, 1, 1, 1),
              config={"split_seed": 5}, problems=[f"What is {i} * 3?" for i in range(4)])  # fmt: skip
    # The same problems, evaluated in reverse order: greedy [0, 0, 1, 1] in `texts` order.
    _eval_run(tmp_path / "r", "entropy_r64", 1, scheme="entropy", greedy=(1, 1, 0, 0),
              problems=texts[::-1])  # fmt: skip
    res = build_report([tmp_path / "r"], tmp_path / "report", baseline="uniform_r64")
    rows = {r["method"]: r for r in res["tables"]["versus_uniform"]}
    surp = rows["surprisal_r64"]
    assert math.isnan(surp["d greedy acc"].value)
    assert surp["p (greedy acc)"] == "n/a: different held-out problems (0 of 4 shared)"
    ent = rows["entropy_r64"]
    # The means agree either way; paired by index every problem would agree too
    # (interval [0, 0]), paired by problem every answer differs.
    d = ent["d greedy acc"]
    assert d.value == 0.0 and d.low < 0 < d.high
    from arca.report.runs import aligned

    uni = next(m for m in res["methods"] if m.name == "uniform_r64")
    en = next(m for m in res["methods"] if m.name == "entropy_r64")
    a, b, why = aligned(en, uni, "greedy")
    # In entropy's order (texts reversed): uniform's scores follow their problems.
    assert why == "" and a.tolist() == [[1, 1, 0, 0]] and b.tolist() == [[0, 0, 1, 1]]


def test_an_arithmetic_run_is_not_paired_with_a_custom_task(tmp_path):
    _eval_run(tmp_path / "r", "uniform_r64", 1, greedy=(1, 0, 0, 0))
    _eval_run(tmp_path / "r", "custom_r64", 1, scheme="surprisal", greedy=(1, 1, 1, 0),
              config={"task": "custom", "data": "mine.jsonl"},
              problems=[f"Q{i}" for i in range(4)])  # fmt: skip
    res = build_report([tmp_path / "r"], tmp_path / "report", baseline="uniform_r64")
    (row,) = res["tables"]["versus_uniform"]
    assert row["p (greedy acc)"] == "n/a: different held-out problems (0 of 4 shared)"
    assert "task" in row["differs"]  # the baseline was named, and how it differs is said


def test_seeds_evaluated_on_other_problems_are_not_an_a_a_pair(tmp_path):
    _eval_run(tmp_path / "r", "uniform_r64", 1, greedy=(1, 1, 0, 0))
    _eval_run(tmp_path / "r", "uniform_r64", 2, greedy=(0, 0, 0, 0),
              problems=[f"other {i}" for i in range(4)])  # fmt: skip
    res = build_report([tmp_path / "r"], tmp_path / "report")
    (row,) = res["tables"]["seed_spread"]
    assert math.isnan(row["d greedy acc"].value)
    assert row["p (greedy acc)"].startswith("n/a: seeds evaluated on different problems")


def test_each_method_is_compared_with_the_uniform_run_of_its_own_settings(tmp_path):
    """uniform_r16 sorts before uniform_r64: arca_r64 is still compared with
    uniform_r64; an ARCA run on another level has no uniform run to compare with."""
    _eval_run(tmp_path / "r", "uniform_r16", 1, rank=16, greedy=(0, 0, 0, 0))
    _eval_run(tmp_path / "r", "uniform_r64", 1, greedy=(1, 1, 0, 0))
    _eval_run(tmp_path / "r", "arca_r64", 1, scheme="arca", greedy=(1, 1, 1, 0))
    _eval_run(tmp_path / "r", "arca_l1_r64", 1, scheme="arca", greedy=(1, 1, 1, 1),
              config={"level": 1})  # fmt: skip
    res = build_report([tmp_path / "r"], tmp_path / "report")
    rows = {r["method"]: r for r in res["tables"]["versus_uniform"]}
    assert rows["arca_r64"]["vs"] == "uniform_r64" and rows["arca_r64"]["differs"] == ""
    assert rows["arca_r64"]["d greedy acc"].value == pytest.approx(0.25)
    other = rows["arca_l1_r64"]
    assert other["vs"] == "-" and math.isnan(other["d greedy acc"].value)
    assert "(the nearest, uniform_r64: level 1 vs 3;" in other["p (greedy acc)"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "### Against uniform_r64 on the same held-out problems" in md


def test_accuracy_counts_rewards_from_correct_reward_as_arca_eval_does(tmp_path):
    """Weighted rewards (format 1 + answer 1, correct at 2): the paired tests
    count correct completions, agree with Table 2 and never fail on a problem
    whose rewards sum above its sample count."""
    cfg = {"correct_reward": 2.0, "reward_weights": [1.0, 1.0]}
    make_run(
        tmp_path / "r", "uniform_r64", 1, scheme="uniform", rewards=[0.1], gini=[0.0],
        eff=[1.0], config=cfg, greedy=[2, 1, 1, 0],
        samples=[[2, 2, 2, 2], [1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 0, 0]],
    )  # fmt: skip
    make_run(
        tmp_path / "r", "arca_r64", 1, scheme="arca", rewards=[0.1], gini=[0.2], eff=[0.8],
        config=cfg, greedy=[2, 2, 1, 1],
        samples=[[2, 1, 1, 1], [2, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
    )  # fmt: skip
    res = build_report([tmp_path / "r"], tmp_path / "report")
    acc = {r["method"]: r for r in res["tables"]["table2_accuracy"][1:]}
    assert acc["uniform_r64"]["greedy acc"].value == 0.25  # 1 of 4 reached 2
    assert acc["arca_r64"]["greedy acc"].value == 0.5
    (row,) = res["tables"]["versus_uniform"]
    assert row["d greedy acc"].value == pytest.approx(0.25)  # Table 2's difference
    # pass@4: uniform 1 of 4 problems, arca 2 of 4.
    assert acc["arca_r64"]["pass@4"].value - acc["uniform_r64"]["pass@4"].value == 0.25
    assert row["d pass@4"].value == pytest.approx(0.25)


def test_method_fields_default_to_what_arca_train_runs_with():
    import dataclasses

    from trl import ModelConfig

    from arca.report.runs import METHOD_FIELDS
    from arca.train import RunArguments
    from arca.trainer import CreditGRPOConfig

    defaults = {}
    for cls in (RunArguments, CreditGRPOConfig, ModelConfig):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults.setdefault(f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                defaults.setdefault(f.name, f.default_factory())
    # arca train's own choices where TRL's differ (train.parse, _cpu_defaults).
    from arca.models import LORA_TARGETS

    chosen = {"model_name_or_path": "tiny", "use_peft": True, "lora_target_modules": LORA_TARGETS}
    for name, value in METHOD_FIELDS.items():
        if name == "model_identity":  # recorded by arca itself, not a setting
            continue
        assert name in defaults, f"{name} is not a setting of arca train"
        assert value == chosen.get(name, defaults[name]), name
    # What changes an evaluation changes the method too.
    from arca.run_folder import BASE_EVAL_FIELDS

    assert set(BASE_EVAL_FIELDS) <= set(METHOD_FIELDS)


def test_initial_model_rows_keep_runs_of_other_setups_apart(tmp_path):
    """Step-1 batches of one seed are one batch only for runs of one setup:
    level 1 and level 3 (or another K) give a row each, never the first run's."""
    for name, level, k, g in (
        ("a", 1, 4, 0.5),
        ("b", 3, 4, 0.9),
        ("c", 3, 8, 0.7),
        ("d", 3, 4, 0.9),
    ):
        make_run(
            tmp_path / "r", name, 1, scheme="surprisal" if name != "d" else "entropy",
            rewards=[0.1, 0.1], gini=[g, g], eff=[0.1, 0.1], shadow={"surprisal": (g, 0.1)},
            config={"level": level, "num_generations": k,
                    "learning_rate": 1e-4 if name == "d" else 3e-4},
        )  # fmt: skip
    res = build_report([tmp_path / "r"], tmp_path / "report")
    lead = [r for r in res["tables"]["shadow_gini"] if r["trains"] == "-"]
    got = {r["run"]: (r["surprisal"].value, r["surprisal"].seeds) for r in lead}
    # b and d differ in scheme and learning rate alone: one step-1 batch.
    assert got == {
        "initial model (step-1 batches), beside a": (0.5, 1),
        "initial model (step-1 batches), beside b, d": (0.9, 1),
        "initial model (step-1 batches), beside c": (0.7, 1),
    }
    eff = res["tables"]["shadow_effective_ratio"]
    assert [r["run"] for r in eff[3:]] == ["a", "b", "c", "d"] and "mean T" in eff[3]


def test_a_diagnosis_scored_otherwise_than_the_runs_is_marked(truth_dir, tmp_path):
    """The base-model row of the shadow tables says when the diagnosis used
    another eps, quantile, eps mode or decoding than the runs beside it."""
    import json
    import shutil

    root, _ = truth_dir
    base = tmp_path / "base"
    shutil.copytree(root / "base-model", base)
    res = build_report([root], tmp_path / "same", base=base)
    label = res["tables"]["shadow_gini"][0]["run"]
    assert label == "base model (256 completions, sampled from the base model; arca diagnose)"
    diag = json.loads((base / "diagnose.json").read_text())
    (base / "diagnose.json").write_text(json.dumps({**diag, "eps": 1e-3, "temperature": 0.7}))
    res = build_report([root], tmp_path / "other", base=base)
    label = res["tables"]["shadow_gini"][0]["run"]
    assert label.endswith(
        "; scored otherwise than the runs: weight_eps 0.001 (runs: 1e-08), "
        "temperature 0.7 (runs: 1.0))"
    ), label


def test_learning_curves_area_final_accuracy_and_power(tmp_path):
    from report_fixtures import write_curve

    from arca.stats import mde

    kw = dict(rewards=[0.1, 0.2], gini=[0.0, 0.0], eff=[1.0, 1.0])
    # uniform: steps 0, 2, 4 on 4 problems; oracle better on problem 3 from step 2.
    u1 = make_run(tmp_path, "uniform_r64", 1, scheme="uniform", **kw)
    u2 = make_run(tmp_path, "uniform_r64", 2, scheme="uniform", **kw)
    o1 = make_run(tmp_path, "surprisal_r64", 1, scheme="surprisal", **kw)
    o2 = make_run(tmp_path, "surprisal_r64", 2, scheme="surprisal", **kw)
    base = [1, 0, 0, 0]
    for r in (u1, u2):
        write_curve(r, [0, 2, 4], [base, [1, 1, 0, 0], [1, 1, 0, 0]])
    for r in (o1, o2):
        write_curve(r, [0, 2, 4], [base, [1, 1, 1, 0], [1, 1, 1, 0]])
    res = build_report([tmp_path], tmp_path / "report")
    t = res["tables"]["learning_curves"]
    u, o = _row(t, "method", "uniform_r64"), _row(t, "method", "surprisal_r64")
    # Uniform: per problem trapezoids / span 4: p0 = 1, p1 = (0+1)/2*2 + 1*2 = 3 -> 0.75, p2 = p3 = 0.
    assert u["AUC"].value == pytest.approx((1 + 0.75) / 4)
    assert o["AUC"].value == pytest.approx((1 + 0.75 + 0.75) / 4)
    assert u["final acc"].value == pytest.approx(0.5) and o["final acc"].value == pytest.approx(
        0.75
    )
    assert o["vs"] == "uniform_r64" and u["vs"] == "-"
    assert o["d AUC"].value == pytest.approx(0.75 / 4) and o["d final"].value == pytest.approx(0.25)
    assert o["MDE (AUC)"].value > 0 and o["MDE (final)"].value >= o["MDE (AUC)"].value
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Learning curves" in md and "curves.png" in md
    assert (tmp_path / "report" / "curves.png").is_file()
    assert mde(1.0) == pytest.approx(2.8016, abs=1e-3)


def test_curves_of_other_problems_or_steps_are_not_paired(tmp_path):
    from report_fixtures import write_curve

    kw = dict(rewards=[0.1, 0.2], gini=[0.0, 0.0], eff=[1.0, 1.0])
    u = make_run(tmp_path, "uniform_r64", 1, scheme="uniform", **kw)
    s = make_run(tmp_path, "surprisal_r64", 1, scheme="surprisal", **kw)
    write_curve(u, [0, 2], [[1, 0], [1, 1]], sha="aaa")
    write_curve(s, [0, 2], [[1, 0], [1, 1]], sha="bbb")
    res = build_report([tmp_path], tmp_path / "report")
    row = _row(res["tables"]["learning_curves"], "method", "surprisal_r64")
    assert "n/a" in row["p (AUC)"] and math.isnan(row["d AUC"].value)


def test_power_statement_from_the_seed_spread(tmp_path):
    from arca.report.tables import seed_noise

    kw = dict(rewards=[0.1, 0.2], gini=[0.0, 0.0], eff=[1.0, 1.0])
    # greedy accuracies 0.5 and 0.75 for two seeds of one method: sd = 0.1768
    make_run(
        tmp_path,
        "uniform_r64",
        1,
        scheme="uniform",
        greedy=[1, 0, 1, 0],
        samples=[[1, 0, 0, 0]] * 4,
        **kw,
    )
    make_run(
        tmp_path,
        "uniform_r64",
        2,
        scheme="uniform",
        greedy=[1, 1, 1, 0],
        samples=[[1, 0, 0, 0]] * 4,
        **kw,
    )
    res = build_report([tmp_path], tmp_path / "report")
    noise = seed_noise(res["methods"])
    assert noise["sd"] == pytest.approx(math.sqrt(0.125**2 * 2), rel=1e-6)
    assert noise["seeds"] == 2 and noise["mde"] == pytest.approx(2.8016 * noise["sd"], rel=1e-3)
    assert noise["seeds_needed"]["10 pp"] >= 2
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**Power (from the A/A spread).**" in md and "17.7 pp" in md
