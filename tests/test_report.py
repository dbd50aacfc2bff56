"""`arca report`: tables against hand-computed values, plots and HTML produced
and valid, errors that name the file."""

from __future__ import annotations

import csv
import html.parser
import math

import pytest
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
    _, _, res = sweep_dir
    vs = _row(res["tables"]["versus_uniform"], "method", "arca_r4")
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
    VOID = {"meta", "br", "img", "hr", "link", "input"}

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
    # The last sampled step (2) of the ARCA run, one column per scheme.
    assert "arca_r4 (seed 1, step 2)" in page and page.count('class="col"') == 2
    spans = [a for t, a in checker.tags if t == "span" and a.get("class") == "t"]
    assert len(spans) == 12  # 6 tokens x 2 schemes
    # Uniform tokens are white (alpha 0); ARCA's rising weights go blue -> orange.
    assert spans[0]["style"].endswith(",0.00)")
    assert "49,130,189" in spans[6]["style"] and "230,85,13" in spans[11]["style"]


def test_tokens_html_without_samples(tmp_path):
    make_run(tmp_path, "uniform_r64", 1, scheme="uniform", rewards=[0.1], gini=[0], eff=[1])
    build_report([tmp_path], tmp_path / "rep")
    assert "No sampled completions" in (tmp_path / "rep" / "tokens.html").read_text()


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
    assert page.count('class="t err"') == 3  # the legend's example, token #1 in both columns
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
    assert acc == {"uniform_r64": "4", "arca_r64": "2"}
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
