"""pytest plugin: run TRL's own GRPO tests offline, on local stand-ins.

Load it with ``-p parity_plugin`` (``benchmarks/trl_parity`` on ``sys.path``),
before TRL's test files are collected. It

* points the Hugging Face hub cache at the stand-in models
  (:mod:`standins`, built on first use) and turns the Hub off, so every
  ``from_pretrained("trl-internal-testing/...")`` loads a local stand-in;
* replaces ``datasets.load_dataset`` for ``trl-internal-testing/zen`` (other
  ids go to the real function, which fails offline as it would anyway);
* adds the ``trl.import_utils.is_*_available`` helpers that TRL's test
  utilities (from a TRL checkout) import and this TRL release lacks;
* with ``--parity-timeout S`` fails a test that runs longer than S seconds
  (SIGALRM; pytest-timeout is not installed here);
* with ``--parity-report PATH`` writes each test's outcome as JSON, after
  every test; ``--parity-resume`` then runs only the tests not yet in it
  (a run killed on a shared machine goes on where it stopped).

It touches neither TRL's trainer nor its test files: the same plugin serves
the stock run and the arca run (which adds :mod:`arca_swap`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
_REPO = _HERE.parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))  # arca, for the stand-ins' tokenizer

import standins  # noqa: E402

# huggingface_hub reads these once, when first imported: set them before anything does.
os.environ["HF_HUB_CACHE"] = str(standins.cache_dir())
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Helpers TRL's test utilities import that trl.import_utils of this release may
#: lack, and the package each one checks for.
_IMPORT_SHIMS = {
    "is_joblib_available": "joblib",
    "is_fastapi_available": "fastapi",
    "is_pydantic_available": "pydantic",
    "is_uvicorn_available": "uvicorn",
    "is_vllm_ascend_available": "vllm_ascend",
}

_ZEN = f"{standins.ORG}/zen"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trl-parity")
    group.addoption(
        "--parity-timeout",
        type=float,
        default=0,
        help="fail a test after this many seconds (0: no limit)",
    )
    group.addoption("--parity-report", default=None, help="write per-test outcomes here (JSON)")
    group.addoption(
        "--parity-resume",
        action="store_true",
        help="keep the outcomes already in --parity-report and run only the other tests",
    )


def _check_hub_cache() -> None:
    import huggingface_hub.constants as hub

    if Path(hub.HF_HUB_CACHE) != Path(os.environ["HF_HUB_CACHE"]):
        raise pytest.UsageError(
            f"huggingface_hub was imported before parity_plugin (cache {hub.HF_HUB_CACHE}); "
            "load the plugin with -p parity_plugin or set HF_HUB_CACHE yourself"
        )
    if not hub.HF_HUB_OFFLINE:
        raise pytest.UsageError("HF_HUB_OFFLINE must be set before huggingface_hub is imported")


def _patch_load_dataset() -> None:
    import datasets

    real = datasets.load_dataset
    if getattr(real, "_parity_standin", False):
        return

    def load_dataset(path: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if path != _ZEN:
            return real(path, name, *args, **kwargs)
        return standins.zen(
            name, split=kwargs.get("split"), streaming=kwargs.get("streaming", False)
        )

    load_dataset._parity_standin = True  # type: ignore[attr-defined]
    # Test files bind `from datasets import load_dataset` when collected, after this runs.
    datasets.load_dataset = load_dataset


def _shim_import_utils() -> None:
    import trl.import_utils as iu

    for fn, pkg in _IMPORT_SHIMS.items():
        if not hasattr(iu, fn):
            setattr(iu, fn, lambda pkg=pkg: iu._is_package_available(pkg))


def pytest_configure(config: pytest.Config) -> None:
    _check_hub_cache()
    standins.build_hub_cache(Path(os.environ["HF_HUB_CACHE"]))
    _patch_load_dataset()
    _shim_import_utils()


class _Timeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    limit = item.config.getoption("--parity-timeout")
    if not limit:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _Timeout(f"test ran past --parity-timeout={limit:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: nodeid -> outcome, summed duration of its phases, first line of the reason.
_RESULTS: dict[str, dict[str, Any]] = {}
#: Seconds of test sessions before this one whose results were resumed.
_STATE: dict[str, Any] = {"t0": time.monotonic(), "earlier_s": 0.0, "path": None}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _RESULTS.setdefault(
        report.nodeid, {"outcome": "passed", "duration": 0.0, "message": ""}
    )
    entry["duration"] += report.duration
    xfail = hasattr(report, "wasxfail")
    if report.skipped:
        outcome = "xfailed" if xfail else "skipped"
        msg = report.wasxfail if xfail else _skip_reason(report)
    elif report.failed:
        outcome = "error" if report.when != "call" else "failed"
        msg = _first_line(report)
    elif report.when == "call" and xfail:
        outcome, msg = "xpassed", report.wasxfail
    else:
        outcome = msg = None
    # The worst phase decides: an error in teardown after a pass is an error.
    if outcome and entry["outcome"] in ("passed", "skipped", "xfailed", "xpassed"):
        entry["outcome"], entry["message"] = outcome, msg
    if report.when == "teardown":
        # After every test, so a run that is killed keeps what it finished (see --parity-resume).
        _write(exitstatus=None)


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _skip_reason(report: pytest.TestReport) -> str:
    rep = report.longrepr
    text = rep[-1] if isinstance(rep, tuple) else str(rep)
    return text.removeprefix("Skipped: ")[:300]


def _write(exitstatus: int | None) -> None:
    path = _STATE["path"]
    if not path:
        return
    import trl

    payload = {
        "trl": trl.__version__,
        "trainer": f"{trl.GRPOTrainer.__module__}.{trl.GRPOTrainer.__qualname__}",
        "wall_s": round(_STATE["earlier_s"] + time.monotonic() - _STATE["t0"], 1),
        "exitstatus": exitstatus,  # None: the session has not finished (yet)
        "tests": _RESULTS,
    }
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def pytest_sessionstart(session: pytest.Session) -> None:
    _STATE["t0"] = time.monotonic()
    _STATE["path"] = session.config.getoption("--parity-report")
    path = _STATE["path"]
    if session.config.getoption("--parity-resume") and path and Path(path).exists():
        earlier = json.loads(Path(path).read_text())
        _RESULTS.update(earlier["tests"])
        _STATE["earlier_s"] = earlier["wall_s"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _RESULTS:
        return
    done = [it for it in items if it.nodeid in _RESULTS]
    if done:
        config.hook.pytest_deselected(items=done)
        items[:] = [it for it in items if it.nodeid not in _RESULTS]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _write(exitstatus=int(exitstatus))
