"""Answer extraction and math-verify grading: a table of real answer pairs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from arca.tasks import extract_boxed, math_reward, math_rewards

# (reference answer, the model's boxed answer, verdict a careful grader gives)
GRADE_TABLE = [
    # fractions
    (r"\frac{1}{2}", r"\frac{1}{2}", True),
    (r"\frac{1}{2}", r"\dfrac{1}{2}", True),
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{1}{2}", "1/2", True),
    (r"\frac12", r"\tfrac{1}{2}", True),
    (r"-\frac{3}{4}", "-0.75", True),
    (r"\frac{3}{4}", "-0.75", False),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    # equations vs values
    ("3", "x=3", True),
    ("3", "x = 3", True),
    ("a=2", "2", True),
    # units, degrees, currency
    ("10", r"10\text{ cm}", True),
    ("10", r"10 \mbox{ inches}", True),
    ("90", r"90^\circ", True),
    (r"90^\circ", "90", True),
    ("4", r"4\text{ dollars}", True),
    ("2", r"\$2", True),
    # intervals
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"(-\infty, 3]", r"(-\infty,3)", False),
    # sets and lists
    (r"\{1,2,3\}", r"\{3,2,1\}", True),
    ("1,2,3", "3, 2, 1", True),
    # percentages
    (r"50\%", "50", True),
    (r"50\%", "0.5", True),
    # thousands separators
    ("1,000", "1000", True),
    ("1{,}000", "1000", True),
    ("1{,}000{,}000", "10^6", True),
    # text answers
    (r"\text{Monday}", "Monday", True),
    (r"\text{(C)}", "C", True),
    (r"\text{even}", r"\text{odd}", False),
    # radicals, expressions, matrices
    (r"\sqrt{2}", "2^{1/2}", True),
    (r"2\sqrt{3}", r"\sqrt{12}", True),
    ("x^2+2x+1", "(x+1)^2", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    ("5", "5.0", True),
    # wrong answers, and approximations that are not the exact value
    ("5", "6", False),
    ("12", "12.5", False),
    (r"\sqrt{2}", "1.414", False),
    (r"\pi", "3.14159", False),
    (r"\frac13", "0.333", False),
    ("3", "three", False),  # number words are not parsed
]


def test_table_is_big_enough():
    assert len(GRADE_TABLE) >= 30


@pytest.mark.parametrize("gold, pred, verdict", GRADE_TABLE)
def test_grade_table(gold, pred, verdict):
    completion = f"Let me work through it. Therefore the answer is $\\boxed{{{pred}}}$."
    assert math_reward(completion, gold) == (1.0 if verdict else 0.0)


def test_batch_grading_matches_single_and_keeps_order():
    comps = [f"so \\boxed{{{p}}}" for _, p, _ in GRADE_TABLE]
    golds = [g for g, _, _ in GRADE_TABLE]
    assert math_rewards(comps, golds) == [1.0 if v else 0.0 for _, _, v in GRADE_TABLE]


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{5}", "5"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{\left\{ x \right\}}", r"\left\{ x \right\}"),
        (r"\fbox{7}", "7"),
        (r"so $\boxed 5$.", "5"),
        (r"\boxed {  42 }", "42"),
        (r"\boxed{a} and a truncated \boxed{12", "a"),
        (r"\boxed{12", None),
        ("no answer here", None),
        (r"\boxedtext{3}", None),
        # An instruction copied after the answer is not an answer.
        (r"\boxed{51}. Put the final answer in \boxed{}.", "51"),
        (r"\boxed{ }", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_no_box_scores_zero_without_grading():
    assert math_reward("the answer is 5", "5") == 0.0
    assert math_reward(r"\boxed{}", "5") == 0.0


def test_safe_from_threads_and_leaves_the_callers_alarm_alone():
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    signal.alarm(120)
    try:
        results: list[float] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            r = math_reward(f"\\boxed{{\\frac{{{2 * i}}}{{2}}}}", str(i))
            with lock:
                results.append(r)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [1.0] * 6
        remaining = signal.alarm(0)
        assert 100 < remaining <= 120 and not fired
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_stuck_worker_scores_zero_and_is_replaced(monkeypatch):
    from arca.tasks import grading

    # A worker that never answers: outer bound hits, the item scores 0, the
    # worker is killed and later items are graded by a fresh one.
    grading._GRADER.close()
    real = grading._Worker.__init__
    calls = {"n": 0}

    def init(self):
        real(self)
        calls["n"] += 1
        if calls["n"] == 1:
            self.proc.kill()  # dead worker: no verdict will come
            self.proc.wait()

    monkeypatch.setattr(grading._Worker, "__init__", init)
    monkeypatch.setattr(grading.os, "cpu_count", lambda: 1)
    out = grading.math_rewards(
        [r"\boxed{0.5}", r"\boxed{1.0}", r"\boxed{3/6}"], [r"\frac12", "1", r"\frac12"], timeout=5
    )
    assert out == [0.0, 1.0, 1.0]
    grading._GRADER.close()


def test_an_unguarded_script_is_not_rerun_by_grading(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "print('body')\n"
        "from arca.tasks import math_reward\n"
        "print(math_reward(r'\\boxed{0.5}', r'\\frac12'))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["body", "1.0"]


def test_a_large_batch_is_graded_without_missed_bounds():
    """Many verdicts arrive in one pipe read; none may be lost to the outer bound."""
    from arca.tasks import grading

    grading._GRADER.close()
    before = grading._GRADER.restarts
    comps = [
        r"\boxed{0.5}",
        r"\boxed{0.25}",
    ] * 60  # not string-equal: every one goes to math-verify
    golds = [r"\frac{1}{2}"] * 120
    assert math_rewards(comps, golds, timeout=10) == [1.0, 0.0] * 60
    assert grading._GRADER.restarts == before
