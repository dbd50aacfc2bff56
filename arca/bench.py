"""``arca bench``: does credit change learning?

``arca sweep --preset tiny-bench`` with five seeds, two runs at a time on the
CPU: every credit scheme arca has (uniform; the oracle, which places the
credit of a wrong completion on its first wrong token from the task's ground
truth, a ceiling, not a method one can deploy; the paper's schemes;
``high_entropy``; the field's KTAE, OAR-G and lambda-GRPO) trained on the
same problems with the same seeds, each with its learning curve (held-out
greedy accuracy during training), then the report: where each scheme's credit
lands, the area under its curve and its final accuracy against uniform with
intervals and the minimum detectable effect. docs/credit-bench.md is its
leaderboard. Every option of ``arca sweep`` applies; run it again and finished
runs are skipped.
"""

from __future__ import annotations

import argparse

from arca.sweep import add_sweep_arguments, finish, options, sweep

#: The bench's duration, measured (docs/credit-bench.md): said once, here.
DURATION = "about 65 min on 2 CPU cores"
SEEDS = "1,2,3,4,5"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help=f"the credit bench: every scheme x 5 seeds with learning curves ({DURATION})",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sweep_arguments(p, preset="tiny-bench", seeds=SEEDS, jobs=2)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if not args.out:
        args.out = "runs/bench"
    opts = options(args)
    print(
        "arca bench: every credit scheme on the tiny model, "
        f"{len(opts['seeds'] or [])} seeds each, with learning curves: {DURATION}."
    )
    return finish(sweep(**opts, title="arca bench: does credit change learning?"))
