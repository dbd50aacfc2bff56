"""The command line shared by the scripts that study one trained adapter on
fixed completions (``arca_local_fidelity.py``, ``bf16_residual.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from arca.diagnose import Completion, read_completions
from arca.models.load import load_policy


def parser(doc: str | None, limit: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="tiny, smollm2, a folder or a Hub id")
    ap.add_argument("--adapter", required=True, help="a peft LoRA adapter folder")
    ap.add_argument("--completions", required=True, help="JSONL, as for arca diagnose")
    ap.add_argument("--limit", type=int, default=limit, help="first N completions")
    ap.add_argument("--json", help="write the results here")
    return ap


def load(args: argparse.Namespace) -> tuple[Any, Any, list[Completion]]:
    """The adapted model in float32 on CPU, in eval mode, its tokenizer, and
    the first ``--limit`` completions."""
    model, tok = load_policy(args.model, args.adapter, dtype="float32", device="cpu")
    model.eval()
    return model, tok, read_completions(args.completions, tok)[: args.limit]
