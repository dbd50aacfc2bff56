"""Grading worker process: JSON lines in (``{"gold", "pred"}``), verdicts out.

Run as ``python -m arca.tasks._grade_worker`` by :mod:`arca.tasks.grading`.
Here math-verify runs in a main thread, so its ``signal.alarm`` timeouts work
and touch no one else's alarms.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from arca.tasks.grading import verify_answer

    for line in sys.stdin:
        req = json.loads(line)
        try:
            ok = verify_answer(req["gold"], req["pred"])
        except Exception:  # a timeout or a parser crash is a wrong answer
            ok = False
        sys.stdout.write(json.dumps({"ok": bool(ok)}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
