"""The Monte-Carlo locator against the exact one: agreement and cost.

    python benchmarks/mc_locator.py                       # the issue's benchmark: tiny, level 3, 256 completions, k = 8
    python benchmarks/mc_locator.py --model tiny-l1 --level 1 --ks 2,4,8,16 --search binary,all

Samples ``--samples`` completions of held-out problems from the model (4 per
problem, temperature 1, top-p 0.95, as ``arca diagnose``), then for each k
(and search) locates every wrong one by Monte-Carlo values estimated by the
same model, and compares with the exact locator (arithmetic's worked
solutions): coverage (wrong completions located), agreement on the
completions both located (same token, same step, earlier, later; hard and
soft variants), continuations per wrong completion against the binary-search
bound ``k (ceil(log2 S) + 1)`` and the all-prefixes cost ``k S``, and
seconds. A benchmark, not a test: it prints ratios and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from arca.diagnose import sample_completions
from arca.models import resolve
from arca.tasks.arithmetic import locate_error
from arca.tasks.loaders import load_task
from arca.tasks.locate import locate_tokens, token_spans
from arca.tasks.mc import (
    MCSettings,
    MonteCarloLocator,
    agreement,
    agreement_pairs,
    binary_bound,
)


def load(name: str) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return AutoModelForCausalLM.from_pretrained(path).eval(), tok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="tiny")
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--few-shot", type=int, default=0)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--ks", default="8")
    p.add_argument("--search", default="binary")
    p.add_argument("--cut", default="step")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results/mc_locator.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = load(args.model)
    task = load_task(
        "arithmetic",
        level=args.level,
        few_shot=args.few_shot,
        train_size=1,
        heldout_size=max(200, args.samples // 4),
    )
    items = sample_completions(
        model,
        tok,
        task.heldout.to_list(),
        args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    t_sample = time.perf_counter() - t0
    special = frozenset(int(t) for t in tok.all_special_ids)
    eos = tok.eos_token_id
    decoded = [token_spans(tok, c.completion_ids) for c in items]
    exact = [
        locate_tokens(locate_error(c.row, text), text, spans, c.completion_ids, eos)
        for c, (text, spans) in zip(items, decoded, strict=True)
    ]
    rows = []
    for search in args.search.split(","):
        for k in [int(x) for x in args.ks.split(",")]:
            settings = MCSettings(
                k=k, cut=args.cut, search=search, max_new_tokens=args.max_new_tokens, seed=args.seed
            )
            loc = MonteCarloLocator(model, tok, task.score, settings=settings)
            t1 = time.perf_counter()
            res = loc.locate(
                [c.prompt_ids for c in items],
                [c.completion_ids for c in items],
                [c.row for c in items],
            )
            secs = time.perf_counter() - t1
            pairs: dict[str, list] = {"hard": [], "soft": []}
            for c, (text, spans), ex, r in zip(items, decoded, exact, res, strict=True):
                if ex.correct or r.status == "correct":
                    continue
                for variant, pair in agreement_pairs(
                    ex.error_token, r, text, spans, c.completion_ids, eos=eos, special=special
                ).items():
                    pairs[variant].append(pair)
            wrong = [r for r in res if r.status != "correct"]
            segs = [len(r.cuts) - 1 for r in wrong]
            rows.append(
                {
                    "k": k,
                    "search": search,
                    "wrong": len(wrong),
                    "located": sum(r.status == "located" for r in wrong),
                    "exact_wrong_located": sum(1 for e in exact if e.error_token is not None),
                    "hard": agreement(pairs["hard"]),
                    "soft": agreement(pairs["soft"]),
                    "continuations": loc.continuations,
                    "per_wrong_queried": sum(r.continuations for r in wrong) / max(1, len(wrong)),
                    "per_wrong_generated": loc.continuations / max(1, len(wrong)),
                    "per_wrong_bound": sum(binary_bound(s, k) for s in segs) / max(1, len(segs)),
                    "per_wrong_all_prefixes": sum(k * s for s in segs) / max(1, len(segs)),
                    "seconds": round(secs, 1),
                }
            )
            r = rows[-1]
            h, s = r["hard"], r["soft"]
            print(
                f"{args.model} level {args.level} k={k:<2} {search:<6} located {r['located']}/{r['wrong']} wrong "
                f"| both {h['both']}: same token {h['same_token']:.2f} step {h['same_step']:.2f} earlier "
                f"{h['earlier']:.2f} later {h['later']:.2f} (soft: token {s['same_token']:.2f} step "
                f"{s['same_step']:.2f}) | per wrong: asked {r['per_wrong_queried']:.1f}, generated "
                f"{r['per_wrong_generated']:.1f}, bound {r['per_wrong_bound']:.1f}, all prefixes "
                f"{r['per_wrong_all_prefixes']:.1f} | {r['continuations']} continuations, {r['seconds']:.1f}s",
                flush=True,
            )
    out = {
        "model": args.model,
        "model_path": resolve(args.model),
        "level": args.level,
        "samples": len(items),
        "correct": sum(e.correct for e in exact),
        "sample_seconds": round(t_sample, 1),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"total {time.perf_counter() - t0:.0f}s (sampling {t_sample:.0f}s); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
