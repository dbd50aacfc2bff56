"""``arca diagnose``: the command line."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from arca.config import config_path, read_config
from arca.diagnose.completions import read_completions, sample_completions
from arca.diagnose.core import diagnose_models
from arca.diagnose.policies import load_models
from arca.diagnose.text import format_summary, report_markdown
from arca.diagnose.truth import Truth, choose_locator, estimating_model, monte_carlo_truth
from arca.io import atomic_write_json, atomic_write_text, json_safe
from arca.report.tokens import render
from arca.tasks.arithmetic import DEFAULT_LEVEL
from arca.tasks.base import Task
from arca.tasks.formats import is_conversation
from arca.tasks.loaders import load_task, task_from_config, task_locator
from arca.tasks.mc import (
    add_locator_arguments,
    mc_settings,
    step_boundaries,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="where token credit lands on a base model and its LoRA or fully fine-tuned policies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        nargs="+",
        help="the base model ('tiny', the default, or --config's model; 'smollm2', a folder or "
        "a Hub id); with --ref-model, one or more fully fine-tuned checkpoints of it",
    )
    p.add_argument("--adapter", nargs="+", default=[], help="LoRA adapter folder(s) on --model")
    p.add_argument(
        "--ref-model", help="the initial model the --model checkpoints were fine-tuned from"
    )
    p.add_argument("--completions", help="JSONL of {prompt, completion} (or a run's samples.jsonl)")
    p.add_argument(
        "--task",
        choices=["arithmetic", "math", "gsm8k"],
        help="sample held-out completions from this task; with --completions, the task they "
        "answer (for its ground truth)",
    )
    p.add_argument(
        "--config",
        help="an arca train config (or a run's config.yaml) whose task to use: any task, "
        "task: custom included (its data, prompts, reward_funcs, correct_reward, error_locator)",
    )
    p.add_argument(
        "--sample-from",
        choices=["base", "policy"],
        default="base",
        help="with --task: sample from the base model (default: every row scores the same "
        "text) or the last policy given",
    )
    p.add_argument("--samples", type=int, default=32, help="completions to sample with --task")
    p.add_argument("--group-size", type=int, default=4, help="samples per prompt with --task")
    p.add_argument("--data", help="MATH/GSM8K source for --task")
    p.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="arithmetic difficulty level")
    p.add_argument("--few-shot", type=int, default=0)
    p.add_argument("--heldout-size", type=int, default=200, help="the task's held-out set size")
    p.add_argument(
        "--split-seed", type=int, help="held-out split seed (default: the task's, as arca train)"
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--eps", type=float, default=1e-8, help="normalisation floor (paper eq. 8)")
    p.add_argument(
        "--high-entropy-quantile", type=float, default=0.2, help="high_entropy's token fraction"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="completions per pass; also the pool high_entropy takes its quantile over (as "
        "TRL's per-batch threshold)",
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument(
        "--oar-g",
        action="store_true",
        help="also score oar_g (OAR-G's input-gradient saliency: one forward with a graph and "
        "one backward to the input embeddings more per batch and model)",
    )
    add_locator_arguments(p)
    p.add_argument("--out", default="runs/diagnose")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    if args.samples < 1 or args.batch_size < 1 or args.eps < 0:
        raise ValueError("--samples and --batch-size must be >= 1 and --eps >= 0")
    if not 0 < args.high_entropy_quantile <= 1:
        raise ValueError("--high-entropy-quantile: must be in (0, 1]")
    if not args.completions and not args.task and not args.config:
        raise ValueError("give --task or --config (to sample completions) or --completions FILE")
    if args.task and args.config:
        raise ValueError("--task and --config exclude each other: --config names its own task")
    if args.ref_model is not None and not args.model:
        raise ValueError(
            "--ref-model: name the fine-tuned checkpoints with --model CKPT [CKPT ...]"
        )
    settings = mc_settings(args)  # checked before any model loads
    cfg = read_config(config_path(args.config)) if args.config else None
    args.model = args.model or [str((cfg or {}).get("model_name_or_path") or "tiny")]
    if args.ref_model is None and len(args.model) != 1:
        raise ValueError("--model: one base model (several only as checkpoints with --ref-model)")
    t0 = time.perf_counter()
    # The task: what grades a completion and, where it can, locates its error.
    if cfg is not None:
        task: Task | None = task_from_config(cfg, train_size=1)
        task_name = str(cfg.get("task", "arithmetic"))
        correct_reward = float(cfg.get("correct_reward", 1.0))
    elif args.task and not args.completions:
        task = load_task(
            args.task,
            args.data,
            level=args.level,
            few_shot=args.few_shot,
            train_size=1,
            heldout_size=args.heldout_size,
            seed=args.split_seed,
        )
        task_name, correct_reward = args.task, 1.0
    elif args.task:
        # The completions are given: the task only grades and locates, so its
        # data (a Hub download for MATH) is never loaded.
        task = Task(args.task, None, None, locate_error=task_locator(args.task))
        task_name, correct_reward = args.task, 1.0
    else:
        task, task_name, correct_reward = None, "(none)", 1.0
    exact = task.locate_error if task is not None else None
    kind = choose_locator(args.locator, exact, task is not None, task_name)
    base = args.ref_model or args.model[0]
    models, tok = load_models(
        base,
        adapters=args.adapter,
        checkpoints=args.model if args.ref_model else (),
        dtype=args.dtype,
    )
    sampled_from = None
    if args.completions:
        items = read_completions(args.completions, tok)
    else:
        assert task is not None
        src = models.policies[-1] if args.sample_from == "policy" and models.policies else None
        sampled_from = f"sampled from policy {src.label}" if src else "sampled from the base model"
        ctx = src.active() if src else models.base_ctx()
        with ctx as sampler:
            items = sample_completions(
                sampler,
                tok,
                task.heldout.to_list(),
                args.samples,
                group_size=args.group_size,
                max_new_tokens=args.max_new_tokens,
                seed=args.seed,
            )
    if kind == "mc":
        assert task is not None
        ctx, label = estimating_model(args.mc_model, models, base, args.dtype)
        grader = (
            f"task {task_name}"
            + (f" level {args.level}" if task_name == "arithmetic" and cfg is None else "")
            + f", reward {', '.join(getattr(f, '__name__', '?') for f in task.trl_rewards())}"
            + f", correct_reward {correct_reward:g}"
        )
        wrong_bar = tqdm(desc="mc locator", unit="continuation")
        with ctx as estimator:
            truth = monte_carlo_truth(
                estimator,
                tok,
                items,
                score=task.score,
                correct_reward=correct_reward,
                settings=settings,
                estimator_label=label,
                grader=grader,
                exact=exact,
                rule=task.step_rule or step_boundaries,
                progress=wrong_bar.update,
            )
        wrong_bar.close()
    elif kind == "exact":
        truth = Truth(
            "exact",
            {"kind": "exact", "description": f"exact: the {task_name} task's own locator"},
            locate=exact,
        )
    else:
        truth = Truth("none", {"kind": "none", "description": "none"})
    rewards = _rewards(task, items, tok)
    total = len(items) * (1 + len(models.policies))
    bar = tqdm(total=total, desc="diagnose", unit="completion")
    res = diagnose_models(
        models,
        tok,
        items,
        eps=args.eps,
        batch_size=args.batch_size,
        locate=truth.locate,
        located=truth.located,
        high_entropy_quantile=args.high_entropy_quantile,
        progress=bar.update,
        rewards=rewards,
        correct_reward=correct_reward,
        oar=args.oar_g,
        seed=args.seed,
    )
    bar.close()
    res = {"locator": truth.record, **res}
    if truth.agreement is not None:
        res["agreement_with_exact"] = truth.agreement
    res["sampled_from"] = sampled_from or f"read from {args.completions}"
    res["task"] = task_name
    res["base"] = base
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    atomic_write_json(out / "diagnose.json", res)
    names = ", ".join(p.label for p in models.policies)
    title = f"arca diagnose: {base}" + (f" vs {names}" if names else "")
    atomic_write_text(out / "report.md", report_markdown(res, title))
    # The exact completions, to diagnose other checkpoints on the same text,
    # with their Monte-Carlo locations (reused there under the same settings).
    recs = []
    for i, c in enumerate(items):
        rec = {
            **c.row,
            # Special tokens kept: read back, "<eos>" is the EOS token again.
            "completion": tok.decode(c.completion_ids),
            "where": c.where,
        }
        if not is_conversation(rec.get("prompt")):
            rec["prompt"] = c.prompt
        if truth.results is not None:
            loc = truth.located[i] if truth.located else None
            rec["mc"] = truth.results[i].record() | {
                "key": truth.key,
                "first_error": loc.first_error if loc is not None else None,
            }
        recs.append(json.dumps(json_safe(rec)) + "\n")
    atomic_write_text(out / "completions.jsonl", "".join(recs))
    shown = models.policies[-1].label if models.policies else "the base model"
    atomic_write_text(
        out / "tokens.html",
        render(
            shown,
            res["samples"],
            title="arca diagnose: token weights",
            source="weighted by",
            truth=truth.record["description"],
        ),
    )
    print(f"({res['seconds']:.0f}s)\n")
    print(format_summary(res))
    print(f"\nwrote {out / 'diagnose.json'}, report.md, tokens.html, completions.jsonl")
    return 0


def _rewards(task: Task | None, items: list, tok: Any) -> list[float] | None:
    """Each completion's task reward (decoded without special tokens, as TRL
    hands completions to its rewards), for ktae and lambda_grpo; None without a
    task, or when the completions' rows lack what the reward reads (then said)."""
    if task is None:
        return None
    texts = [tok.decode(c.completion_ids, skip_special_tokens=True) for c in items]
    try:
        return [float(r) for r in task.score(texts, [c.row for c in items])]
    except KeyError as e:
        why = f"the completions' rows lack {e} for the task's reward (give it in the file)"
    except (ValueError, TypeError) as e:  # a user's reward that cannot score these rows
        why = f"the task's reward could not score them ({str(e).splitlines()[0]})"
    print(f"ktae and lambda_grpo not scored: {why}")
    return None
