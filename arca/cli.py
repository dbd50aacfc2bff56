"""The ``arca`` command line. Each verb lives in its own module and adds its
own sub-parser; this file only dispatches."""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Callable

from arca import __version__


def build_parser() -> argparse.ArgumentParser:
    from arca import bench, demo, diagnose, evaluate, report, scan, sweep
    from arca.models import smollm2, tiny

    parser = argparse.ArgumentParser(
        prog="arca",
        description="Token-level credit assignment for LLM RL with LoRA (ARCA and baselines).",
    )
    parser.add_argument("--version", action="version", version=f"arca {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(sub)
    bench.add_parser(sub)
    sub.add_parser(
        "train", help="GRPO/RLOO + LoRA with token-credit weighting (arca train --config FILE.yaml)"
    )
    evaluate.add_parser(sub)
    sweep.add_parser(sub)
    report.add_parser(sub)
    diagnose.add_parser(sub)
    scan.add_parser(sub)
    tiny.add_parser(sub)
    smollm2.add_parser(sub)
    # Options are spelt out: an abbreviation (`--temp`) is refused, never read
    # as whichever option it happens to begin.
    for p in (parser, *sub.choices.values()):
        p.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Deprecations that the pinned TRL and peft trigger inside transformers (its
    # gradient_checkpointing renames) on every config and model wrap: not the user's concern.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    if argv[:1] == ["train"]:
        # TRL's parser owns `arca train`: --config FILE.yaml plus --field value overrides.
        return _guarded("train", lambda: __import__("arca.train", fromlist=["main"]).main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _guarded(args.command, lambda: args.func(args))


def _guarded(command: str, fn: Callable[[], int | None]) -> int:
    # Loaded here, not at the top: `arca --version` and `--help` stay light.
    from arca.tasks.rewards import UserCodeError

    try:
        return int(fn() or 0)
    except UserCodeError as e:
        # The user's own function raised: its traceback is theirs to read
        # (from the call into it down), then what arca knows in one line.
        _close_progress_bars()
        cause = e.__cause__ or e
        traceback.print_exception(type(cause), cause, cause.__traceback__)
        print(f"arca {command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        _close_progress_bars()
        # Input errors (files missing, unreadable, in use, not writable): one
        # clear line, no traceback. OSError's message names its file.
        print(f"arca {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"arca {command}: interrupted", file=sys.stderr)
        return 130


def _close_progress_bars() -> None:
    """Close the progress bars a failure left open (training's), so that the
    error is the last line and not printed into a bar that redraws after it."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
