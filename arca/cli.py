"""The ``arca`` command line. Each verb lives in its own module and adds its
own sub-parser; this file only dispatches."""

from __future__ import annotations

import argparse
import sys
import warnings

from arca import __version__


def build_parser() -> argparse.ArgumentParser:
    from arca import demo, evaluate
    from arca.models import smollm2, tiny

    parser = argparse.ArgumentParser(
        prog="arca",
        description="Token-level credit assignment for LLM RL with LoRA (ARCA and baselines).",
    )
    parser.add_argument("--version", action="version", version=f"arca {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(sub)
    evaluate.add_parser(sub)
    tiny.add_parser(sub)
    smollm2.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # peft calls a transformers API that warns on every model wrap; not the user's concern.
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Input errors: one clear line, no traceback.
        print(f"arca {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"arca {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
