"""Answer grading with math-verify, bounded in time and safe from any thread.

math-verify bounds each parse/compare with ``signal.alarm``, which only works in
a process's main thread and would clobber any alarm the caller set (a trainer's
watchdog, pytest-timeout). So arca never calls it in the caller's process:
grading runs in up to two worker subprocesses, where math-verify keeps its
own per-call timeouts in the workers' main threads, and the parent waits on
each verdict with an outer bound. A worker that misses the bound (a
comparison stuck outside Python) is killed and replaced, and that answer
scores 0.

Cheap verdicts never leave the caller: no ``\\boxed{}`` scores 0, and a boxed
answer identical to the reference (ignoring spaces) scores 1.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from arca.tasks.boxed import extract_boxed

#: math-verify's own limit per parse and per comparison, inside a worker.
MATH_VERIFY_TIMEOUT_S = 5
#: The parent's bound on one answer (two parses and a comparison, plus queueing).
OUTER_TIMEOUT_S = 30.0


def verify_answer(gold: str, pred: str) -> bool:
    """math-verify's verdict on two bare answers, in *this* process.

    Both are wrapped as ``$...$`` before parsing (a bare ``(-\\infty, 3]``
    otherwise mis-parses) and compared as ``verify(gold, pred)``, in that order
    (the comparison is not symmetric). Uses ``signal.alarm``: call it from a main
    thread only; :func:`math_reward` does that for you.
    """
    from math_verify import parse, verify

    g = parse(f"${gold}$", parsing_timeout=MATH_VERIFY_TIMEOUT_S)
    p = parse(f"${pred}$", parsing_timeout=MATH_VERIFY_TIMEOUT_S)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=MATH_VERIFY_TIMEOUT_S))


class _Worker:
    """One grading subprocess, talking JSON lines over its stdin/stdout.

    A plain subprocess rather than a ``multiprocessing`` pool: spawn-style
    pools re-import the caller's ``__main__`` in every worker, which re-runs
    an unguarded user script.
    """

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arca.tasks._grade_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.dead = False
        self.fd = self.proc.stdout.fileno()
        # Our own line buffer over raw reads: select() on a pipe read through a
        # buffered file misses lines already pulled into Python's buffer.
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)

    def send(self, gold: str, pred: str) -> None:
        try:
            self.proc.stdin.write(json.dumps({"gold": gold, "pred": pred}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # the worker died; receive() reports it
            self.dead = True

    def receive(self, timeout: float) -> bool | None:
        """The next verdict, or None if none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if self.dead or left <= 0 or not self.sel.select(left):
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:  # the worker died
                self.dead = True
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return bool(json.loads(line)["ok"])

    def kill(self) -> None:
        self.sel.close()
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class _Grader:
    """Lazily started workers; one batch at a time (callers in other threads wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self.restarts = 0  # workers replaced after a missed bound (observability, tests)

    def close(self) -> None:
        with self._lock:
            for w in self._workers:
                w.kill()
            self._workers = []

    def grade(self, items: list[tuple[str, str]], timeout: float) -> list[bool]:
        with self._lock:
            n = max(1, min(2, os.cpu_count() or 1, len(items)))
            while len(self._workers) < n:
                self._workers.append(_Worker())
            verdicts = [False] * len(items)
            queue = list(range(len(items)))
            while queue:
                shares = [queue[w::n] for w in range(n)]
                queue = []
                for w, share in enumerate(shares):
                    for i in share:
                        self._workers[w].send(*items[i])
                for w, share in enumerate(shares):
                    for pos, i in enumerate(share):
                        ok = self._workers[w].receive(timeout)
                        if ok is None:
                            # Stuck or dead: this answer scores 0, the worker is
                            # replaced, and its unanswered items are regraded.
                            self._workers[w].kill()
                            self._workers[w] = _Worker()
                            self.restarts += 1
                            queue += share[pos + 1 :]
                            break
                        verdicts[i] = ok
            return verdicts


_GRADER = _Grader()
atexit.register(_GRADER.close)


def _normalise(s: str) -> str:
    return "".join(s.split())


def math_rewards(
    completions: Sequence[str], answers: Sequence[str], *, timeout: float = OUTER_TIMEOUT_S
) -> list[float]:
    """:func:`math_reward` for a batch, graded concurrently. Same order as the input."""
    if len(completions) != len(answers):
        raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
    rewards = [0.0] * len(completions)
    todo: list[tuple[int, str, str]] = []
    for i, (c, a) in enumerate(zip(completions, answers, strict=True)):
        pred = extract_boxed(c)
        if pred is None or not pred:
            continue
        if _normalise(pred) == _normalise(str(a)):
            rewards[i] = 1.0
            continue
        todo.append((i, str(a), pred))
    if todo:
        verdicts = _GRADER.grade([(gold, pred) for _, gold, pred in todo], timeout)
        for (i, _, _), ok in zip(todo, verdicts, strict=True):
            rewards[i] = 1.0 if ok else 0.0
    return rewards


def math_reward(completion: str, answer: str) -> float:
    """1.0 if the last ``\\boxed{}`` of ``completion`` matches ``answer``, else 0.0.

    ``answer`` is the bare reference (``\\frac{1}{2}``, ``(-\\infty, 3]``, ``12``).
    A completion without a boxed answer scores 0. Safe to call from any thread;
    bounded in time (see the module docstring).
    """
    return math_rewards([completion], [answer])[0]
