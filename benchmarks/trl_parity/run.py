"""TRL parity: TRL's own GRPO tests, stock and with arca's trainer swapped in.

    # once: TRL's tests, exported from a TRL git checkout (never into this repo)
    python benchmarks/trl_parity/run.py --export-from /path/to/trl.git --rev <commit> \\
        --tests /tmp/trl-tests
    # then
    python benchmarks/trl_parity/run.py --tests /tmp/trl-tests [--subset quick|full] \\
        [-k EXPR] [--jobs 2] [--workdir DIR [--resume]] [--json OUT.json] \\
        [--arca-default token_weighting=arca ...] [--stock-from DIR] [--summarize]

Runs ``tests/test_grpo_trainer.py`` from ``--tests`` twice with pytest:
stock (``-p parity_plugin``: local stand-in models and datasets, offline) and
arca (``-p parity_plugin -p arca_swap``: ``trl.GRPOTrainer``/``GRPOConfig``
are ``CreditGRPOTrainer``/``CreditGRPOConfig`` before collection). Tests that
need what this machine cannot have are deselected (:data:`DESELECT`, with the
reason); TRL's own skip markers (GPU, vLLM, liger, ...) skip others. Prints a
per-test table and the tests that pass stock and fail with arca; exits 1 if
there are any that :data:`EXPECTED` does not explain.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEST_FILE = "tests/test_grpo_trainer.py"
#: What TRL's test file imports from its tests/ folder.
EXPORT = [
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/testing_utils.py",
    "tests/testing_constants.py",
    TEST_FILE,
]

_T = f"{TEST_FILE}::TestGRPOTrainer"
#: Node-id prefixes left out of both runs, and why.
DESELECT: dict[str, str] = {
    f"{TEST_FILE}::TestGRPOTrainerVLM": "vision-language models: their processors (image "
    "preprocessor configs, multimodal chat templates) and the zen-image datasets exist only "
    "on the Hub and are not stood in",
    f"{TEST_FILE}::TestGRPOTrainerSlow": "needs a CUDA/XPU accelerator (TRL marks the class "
    "require_torch_accelerator; on CPU it would only report skips)",
}

#: Tests in the quick subset (--subset quick): one of each trainer feature the
#: full file exercises several times over (test_train on 6 architectures, 7 loss
#: types, 5 reward scalings, ...), chosen to keep each side well under 15 minutes
#: on a 2-core CPU.
QUICK = [
    "TestGetHighEntropyMask",
    "TestGRPORolloutDispatch",
    "TestTransformersContinuousBatchingContract",
    f"{_T}::test_init_minimal",
    f"{_T}::test_train[trl-internal-testing/tiny-Qwen2ForCausalLM-2.5]",
    f"{_T}::test_train[trl-internal-testing/tiny-Qwen3MoeForCausalLM]",
    f"{_T}::test_train_dataset_format",
    f"{_T}::test_trust_remote_code",
    f"{_T}::test_train_loss_types",
    f"{_T}::test_train_with_eval",
    f"{_T}::test_train_with_iterable_dataset",
    f"{_T}::test_init_with_eval_dataset",
    f"{_T}::test_train_multiple_iterations",
    f"{_T}::test_train_peft_config",
    f"{_T}::test_train_peft_model",
    f"{_T}::test_train_peft_with_gradient_checkpointing",
    f"{_T}::test_train_multiple_reward_funcs_with_weights",
    f"{_T}::test_train_beta_non_zero",
    f"{_T}::test_train_with_sync_ref_model",
    f"{_T}::test_train_with_off_policy_mask",
    f"{_T}::test_train_with_bias_correction_kl",
    f"{_T}::test_train_with_cast_lm_head_to_fp32",
    f"{_T}::test_train_with_adaptive_entropy",
    f"{_T}::test_entropy_bonus_scale",
    f"{_T}::test_train_with_entropy_filter",
    f"{_T}::test_train_scale_rewards",
    f"{_T}::test_train_with_mask_truncated_completions",
    f"{_T}::test_warning_raised_sequence_level_with_token_summed_loss",
    f"{_T}::test_train_delta_clipping",
    f"{_T}::test_prepare_input_called_with_correct_data",
    f"{_T}::test_train_sequence_importance_sampling",
    f"{_T}::test_train_with_chat_template_kwargs",
    f"{_T}::test_no_reward_source_raises",
    f"{_T}::test_correct_reward_processing_classes_list",
]

#: arca's documented refusals: a stock-pass/arca-fail whose failure is one of
#: these ValueErrors is by design (arca/credit/loss.py, CreditGRPOConfig).
EXPECTED: dict[str, str] = {
    r"loss_type: '(luspo|vespo)' is not supported": "arca refuses loss_type {0} "
    "(arca.credit.loss.REFUSED_LOSS_TYPES)",
    r"importance_sampling_level: 'sequence' makes the importance ratio": "arca refuses "
    "sequence-level importance sampling with a non-uniform scheme (the token weights cancel)",
}


def export(git_dir: Path, rev: str, dest: Path) -> None:
    """Copy TRL's test files at ``rev`` out of a bare or normal git dir; record
    the commit in ``dest/TRL_REV``."""
    git = ["git", f"--git-dir={git_dir}"]
    rev = subprocess.run(
        [*git, "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        [*git, "archive", rev, *EXPORT],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "TRL_REV").write_text(rev + "\n")


def _pytest(side: str, select: list[str], args: argparse.Namespace, report: Path) -> list[str]:
    # pytest in-process under this script (see main): on a shared machine, a broad
    # `pkill -f pytest` from another job must not end a half-hour run.
    cmd = [sys.executable, __file__, "--pytest", *select, "-p", "parity_plugin"]
    if side == "arca":
        cmd += ["-p", "arca_swap"]
    cmd += ["-p", "no:cacheprovider", "-q", "-rN", "--tb=line", "-W", "ignore::FutureWarning"]
    cmd += [f"--parity-timeout={args.timeout}", f"--parity-report={report}"]
    if args.resume:
        cmd.append("--parity-resume")
    for node in DESELECT:
        cmd += ["--deselect", node]
    if args.k:
        cmd += ["-k", args.k]
    return cmd


def arca_defaults(args: argparse.Namespace) -> dict[str, object]:
    """``--arca-default FIELD=VALUE`` options as a dict (arca_swap reads it as JSON)."""
    out: dict[str, object] = {}
    for item in args.arca_default:
        key, sep, raw = item.partition("=")
        if not sep:
            sys.exit(f"--arca-default {item!r}: expected FIELD=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def run_sides(tests: Path, args: argparse.Namespace, workdir: Path) -> dict[str, dict]:
    """Both pytest runs (concurrently with ``--jobs 2``); each side's report."""
    if args.subset == "quick":
        select = [f"{TEST_FILE}::{n}" if not n.startswith(TEST_FILE) else n for n in QUICK]
    else:
        select = [TEST_FILE]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
    # One thread per run: the tiny models gain nothing from more, and two runs share 2 cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["ARCA_PARITY_DEFAULTS"] = json.dumps(arca_defaults(args))
    sides = ["stock", "arca"]
    procs: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    results: dict[str, dict] = {}
    if args.stock_from:
        # The stock side does not depend on arca: reuse an earlier run of the same selection.
        results["stock"] = _load(args.stock_from / "stock.json")
        sides.remove("stock")
    if args.summarize:
        return results | {side: _load(workdir / f"{side}.json") for side in sides}

    def start(side: str) -> None:
        report = workdir / f"{side}.json"
        log = (workdir / f"{side}.log").open("a" if args.resume else "w")
        cmd = _pytest(side, select, args, report)
        print(f"[{side}] {' '.join(cmd)}", flush=True)
        p = subprocess.Popen(cmd, cwd=tests, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs[side] = (p, time.monotonic(), report)

    def finish(side: str) -> None:
        p, t0, report = procs.pop(side)
        p.wait()
        wall = time.monotonic() - t0
        if not report.exists():
            sys.exit(
                f"[{side}] pytest wrote no report (exit {p.returncode}); see {workdir / side}.log"
            )
        res = results[side] = _load(report)
        state = "" if res["exitstatus"] is not None else ", INCOMPLETE: rerun with --resume"
        print(f"[{side}] done in {wall / 60:.1f} min (exit {p.returncode}{state})", flush=True)

    if args.jobs >= 2:
        for side in sides:
            start(side)
        for side in sides:
            finish(side)
    else:
        for side in sides:
            start(side)
            finish(side)
    return results


def _load(report: Path) -> dict:
    res = json.loads(report.read_text())
    res["process_wall_s"] = res["wall_s"]
    return res


def _counts(tests: dict[str, dict]) -> dict[str, int]:
    out: dict[str, int] = {"selected": len(tests)}
    for t in tests.values():
        out[t["outcome"]] = out.get(t["outcome"], 0) + 1
    return out


def compare(results: dict[str, dict]) -> dict:
    """Per-test outcomes side by side, counts, and the stock-pass/arca-fail list."""
    stock, arca = results["stock"]["tests"], results["arca"]["tests"]
    rows = []
    for node in sorted(set(stock) | set(arca)):
        s = stock.get(node, {"outcome": "missing", "message": ""})
        a = arca.get(node, {"outcome": "missing", "message": ""})
        rows.append(
            {
                "test": node.split("::", 1)[-1],
                "stock": s["outcome"],
                "arca": a["outcome"],
                "stock_message": s["message"],
                "arca_message": a["message"],
                "stock_s": round(s.get("duration", 0), 1),
                "arca_s": round(a.get("duration", 0), 1),
            }
        )
    regressions = [r for r in rows if r["stock"] == "passed" and r["arca"] != "passed"]
    for r in regressions:
        r["expected"] = _expected(r["arca_message"])
    return {
        "counts": {side: _counts(results[side]["tests"]) for side in results},
        "wall_s": {side: results[side]["process_wall_s"] for side in results},
        "rows": rows,
        "stock_pass_arca_fail": regressions,
    }


def _expected(message: str) -> str | None:
    for pattern, why in EXPECTED.items():
        m = re.search(pattern, message)
        if m:
            return why.format(*m.groups())
    return None


def print_table(summary: dict) -> None:
    width = max((len(r["test"]) for r in summary["rows"]), default=4)
    print(f"\n{'test':<{width}}  {'stock':<8} {'arca':<8}")
    for r in summary["rows"]:
        flag = "  <-- differs" if r["stock"] != r["arca"] else ""
        print(f"{r['test']:<{width}}  {r['stock']:<8} {r['arca']:<8}{flag}")
    for side, c in summary["counts"].items():
        wall = summary["wall_s"][side]
        print(
            f"\n{side}: " + ", ".join(f"{k} {v}" for k, v in c.items()) + f"; {wall / 60:.1f} min"
        )
    print(f"\nDeselected (both sides): {len(DESELECT)} groups")
    for node, why in DESELECT.items():
        print(f"  {node.split('::', 1)[-1]}: {why}")
    regs = summary["stock_pass_arca_fail"]
    print(f"\nStock passes, arca does not: {len(regs)}")
    for r in regs:
        why = f"expected: {r['expected']}" if r["expected"] else "UNEXPECTED"
        print(f"  {r['test']}: {r['arca']}: {r['arca_message']}\n    ({why})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--pytest"]:
        import pytest

        return int(pytest.main(argv[1:]))
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tests",
        type=Path,
        default=Path(tempfile.gettempdir()) / "trl-tests",
        help="folder holding TRL's tests/ (exported, outside this repository)",
    )
    ap.add_argument(
        "--export-from", type=Path, help="a TRL git dir to export the tests from, then exit"
    )
    ap.add_argument("--rev", default="HEAD", help="the TRL commit to export (with --export-from)")
    ap.add_argument("--subset", choices=["quick", "full"], default="quick")
    ap.add_argument("-k", default=None, help="pytest -k expression, on both sides")
    ap.add_argument("--jobs", type=int, default=1, help="2: run both sides at once")
    ap.add_argument("--timeout", type=float, default=300, help="per-test limit, seconds")
    ap.add_argument(
        "--arca-default",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a CreditGRPOConfig default on the arca side (VALUE as JSON, else a string), "
        "e.g. token_weighting=arca shadow_diagnostics=true; repeatable",
    )
    ap.add_argument(
        "--workdir", type=Path, default=None, help="logs and raw reports (default: a temp dir)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the comparison here")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the outcomes already in --workdir's reports and run only the rest",
    )
    ap.add_argument(
        "--summarize",
        action="store_true",
        help="run nothing: compare the reports already in --workdir (and --stock-from)",
    )
    ap.add_argument(
        "--stock-from",
        type=Path,
        default=None,
        help="reuse stock.json from an earlier --workdir (same selection) instead of rerunning",
    )
    args = ap.parse_args(argv)

    if args.export_from:
        export(args.export_from, args.rev, args.tests)
        rev = (args.tests / "TRL_REV").read_text().strip()
        print(f"exported {len(EXPORT)} files at {rev} to {args.tests}")
        return 0
    if not (args.tests / TEST_FILE).is_file():
        sys.exit(f"{args.tests / TEST_FILE} not found: export TRL's tests first (--export-from)")
    if REPO in args.tests.resolve().parents or args.tests.resolve() == REPO:
        sys.exit("--tests must be outside this repository (TRL's code is not committed here)")
    if (args.resume or args.summarize) and not args.workdir:
        sys.exit("--resume and --summarize need the --workdir of an earlier run")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trl-parity-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Build the stand-ins once, before two runs race to.
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    import standins

    standins.build_hub_cache()
    results = run_sides(args.tests, args, workdir)
    summary = compare(results)
    summary |= {
        "trl_rev": (args.tests / "TRL_REV").read_text().strip()
        if (args.tests / "TRL_REV").exists()
        else None,
        "trl": results["stock"]["trl"],
        "subset": args.subset,
        "k": args.k,
        "arca_defaults": arca_defaults(args),
        "deselected": DESELECT,
    }
    print_table(summary)
    print(f"\nlogs: {workdir}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if any(not r["expected"] for r in summary["stock_pass_arca_fail"]) else 0


if __name__ == "__main__":
    sys.exit(main())
