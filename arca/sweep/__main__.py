"""``python -m arca.sweep SPEC.json``: one run of a sweep, in its own process
(:func:`arca.sweep.runner.worker`: train unless trained, then evaluate)."""

import sys

from arca.sweep.runner import worker

sys.exit(worker(sys.argv[1]))
