"""The report says a ground-truth scheme is a ceiling wherever it names it:
the method rows of an oracle run and the oracle's shadow column."""

from __future__ import annotations

from report_fixtures import make_run

from arca.report import build_report


def test_an_oracle_run_is_labelled_a_ceiling_in_every_table(tmp_path):
    truth = {"prefix_blame": 0.2, "error_lift": 5.0, "top1_hit": 1.0}
    shadow = {"uniform": (0.0, 1.0), "oracle": (0.4, 0.3), "ktae": (0.1, 0.9)}
    common = dict(
        rewards=[0.1, 0.2], greedy=[1, 0, 0, 0], samples=[[1, 0, 0, 0]] * 4, shadow=shadow
    )
    make_run(
        tmp_path, "uniform_r64", 1, scheme="uniform", gini=[0, 0], eff=[1, 1],
        correctness={"uniform": truth, "oracle": truth}, **common,
    )  # fmt: skip
    make_run(
        tmp_path, "oracle_r64", 1, scheme="oracle", gini=[0.4, 0.4], eff=[0.3, 0.3],
        correctness={"oracle": truth, "uniform": truth}, **common,
    )  # fmt: skip
    res = build_report([tmp_path], tmp_path / "report")
    t = res["tables"]
    ceiling = "oracle_r64 (ceiling: uses ground truth)"
    for name in ("table1_config", "table2_accuracy", "versus_uniform", "table3_concentration"):
        assert ceiling in [r.get("method", r.get("run")) for r in t[name]], name
    assert ceiling in [r["method"] for r in t["credit_correctness"]]
    assert "uniform_r64" in [r["method"] for r in t["table3_concentration"]]
    gini = t["shadow_gini"]
    assert "oracle (ceiling: uses ground truth)" in gini[0] and "oracle" not in gini[0]
    assert "ktae" in gini[0]  # a deployable scheme keeps its name
    assert [r["run"] for r in gini][-1] == ceiling
    md = (tmp_path / "report" / "report.md").read_text()
    assert "oracle_r64 (ceiling: uses ground truth)" in md
