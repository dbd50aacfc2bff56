"""Held-out evaluation: greedy accuracy and pass@k (paper 4.1).

Generation is Hugging Face ``generate`` in left-padded batches; ``k`` or more
samples per problem at the paper's temperature 1.0 / top-p 0.95 give the
unbiased pass@k estimate ``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021).
Every completion is written to a JSONL file with its reward, the summary to a
JSON file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from arca.generation import generate, pass_at_k, prompts_of
from arca.io import atomic_write_json, atomic_write_text
from arca.models import identity, resolve
from arca.models.load import load_policy
from arca.run_folder import (
    eval_dir,
    eval_settings,
    final_weights,
    lock,
    read_config,
    trained_on,
)
from arca.tasks.arithmetic import DEFAULT_LEVEL
from arca.tasks.files import looks_local
from arca.tasks.grading import math_rewards
from arca.tasks.loaders import load_task, task_from_config


def evaluate(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    k: int = 4,
    num_samples: int | None = None,
    temperature: float = 1.0,
    top_p: float = 0.95,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    seed: int = 1337,
    out_dir: str | Path | None = None,
    score: Callable[[Sequence[str], Sequence[dict[str, Any]]], list[float]] | None = None,
    correct_reward: float = 1.0,
    show_progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Greedy accuracy and pass@k of ``model`` on ``rows``.

    ``score(completions, rows)`` gives each completion's reward (``rows[i]``
    is completion ``i``'s row; default: its ``\\boxed{}`` answer against the
    row's ``answer``, 0 or 1); a completion counts as correct when its reward
    is at least ``correct_reward``, which for a 0/1 reward is accuracy. The
    mean rewards are reported beside the accuracies.

    Writes ``results.json`` (the returned summary) and ``completions.jsonl``
    (one line per completion: problem index, mode, sample number, completion,
    reward) to ``out_dir`` if given.
    """
    n = num_samples if num_samples is not None else k
    if k < 1 or n < k:
        raise ValueError(f"pass@{k} needs at least k={k} samples per problem, got {n}")
    if not rows:
        raise ValueError("no problems to evaluate")
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    prompts = prompts_of(rows)
    answers = [str(r.get("answer", "")) for r in rows]
    # One bar per pass, each counting problems: one bar over both passes would
    # count every problem twice.
    greedy_bar, sample_bar = (
        tqdm(total=len(rows), desc=desc, unit="problem", position=i, disable=not show_progress)
        for i, desc in enumerate(("eval greedy", f"eval pass@{k} ({n} samples each)"))
    )
    greedy = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=greedy_bar.update,
    )
    torch.manual_seed(seed)
    samples = generate(
        model,
        tokenizer,
        prompts,
        num_samples=n,
        greedy=False,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=max(1, batch_size // n),
        progress=sample_bar.update,
    )
    greedy_bar.close()
    sample_bar.close()
    if score is None:

        def score(comps: Sequence[str], rs: Sequence[dict[str, Any]]) -> list[float]:
            return math_rewards(comps, [str(r["answer"]) for r in rs])

    g_rewards = score([c[0] for c in greedy], rows)
    flat = [c for s in samples for c in s]
    s_rewards = score(flat, [r for r in rows for _ in range(n)])
    g_ok = [r >= correct_reward for r in g_rewards]
    s_ok = [r >= correct_reward for r in s_rewards]
    correct = [sum(s_ok[i * n : (i + 1) * n]) for i in range(len(rows))]
    summary = {
        "problems": len(rows),
        "greedy_accuracy": sum(g_ok) / len(rows),
        f"pass@{k}": sum(pass_at_k(n, c, k) for c in correct) / len(rows),
        "sample_accuracy": sum(s_ok) / len(s_ok),
        "greedy_mean_reward": sum(g_rewards) / len(rows),
        "sample_mean_reward": sum(s_rewards) / len(s_rewards),
        "correct_reward": correct_reward,
        "k": k,
        "samples_per_problem": n,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        **(meta or {}),
    }
    if out_dir is not None:
        import json

        out = Path(out_dir)
        lines = []
        for i, r in enumerate(rows):
            base = {"index": i, "problem": r.get("problem", r["prompt"]), "answer": answers[i]}
            lines.append(
                {
                    **base,
                    "mode": "greedy",
                    "sample": 0,
                    "completion": greedy[i][0],
                    "reward": g_rewards[i],
                }
            )
            for j in range(n):
                lines.append(
                    {
                        **base,
                        "mode": "sample",
                        "sample": j,
                        "completion": samples[i][j],
                        "reward": s_rewards[i * n + j],
                    }
                )
        atomic_write_text(out / "completions.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
        atomic_write_json(out / "results.json", summary)
    return summary


# ------------------------------------------------------------------- CLI


def evaluate_run(
    run_dir: str | Path,
    *,
    k: int = 4,
    limit: int | None = None,
    batch_size: int = 16,
    show_progress: bool = True,
    base: bool = False,
) -> dict[str, Any]:
    """Evaluate a finished ``arca train`` run on its own held-out set.

    Everything comes from the run's ``config.yaml``: model, task and data,
    held-out size and split seed, decoding (``temperature``, ``top_p``,
    ``max_completion_length``), precision and device. The policy is the
    base model with ``RUN_DIR/adapter``, or ``RUN_DIR/model`` for a full
    fine-tuning run; results go to ``RUN_DIR/eval/``. With ``base``, the
    control: the untrained base model alone, evaluated exactly as the run
    (training need not have finished), into ``RUN_DIR/eval-base/``.
    """

    run = Path(run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run}: not an arca run (no config.yaml)")
    # Not while a train or another evaluation writes to the run.
    with lock(run, "arca eval"):
        return _evaluate_run(
            run,
            cfg_path,
            k=k,
            limit=limit,
            batch_size=batch_size,
            show_progress=show_progress,
            base=base,
        )


def _evaluate_run(
    run: Path,
    cfg_path: Path,
    *,
    k: int,
    limit: int | None,
    batch_size: int,
    show_progress: bool,
    base: bool = False,
) -> dict[str, Any]:
    cfg = read_config(run)
    missing = [f for f in ("model_name_or_path", "task", "heldout_size") if f not in cfg]
    if missing:
        raise ValueError(f"{cfg_path}: missing field(s) {', '.join(missing)}")
    data = cfg.get("data")
    relative = isinstance(data, str) and not Path(data).expanduser().is_absolute()
    if relative and (looks_local(data) or Path(data).exists()):
        raise ValueError(
            f"{cfg_path}: data: {data} is a relative path (an older arca recorded it so), so "
            "which file the run trained on depends on the folder you run from; write that "
            "file's absolute path into config.yaml"
        )
    task = task_from_config(cfg, train_size=1)
    if limit is not None and limit < 1:
        raise ValueError(f"--limit: must be >= 1, got {limit}")
    full = task.heldout.to_list()
    rows = full[:limit] if limit else full
    # A partial evaluation never replaces the full one that sweeps and reports read.
    out_dir = eval_dir(run, len(rows), len(full), base=base)
    dtype = "bfloat16" if cfg.get("bf16") else "auto"
    # The control needs no trained weights: it is what training started from.
    found = ("base", None) if base else final_weights(run)
    if found is None:
        raise FileNotFoundError(
            f"{run}: training has not finished (no adapter/ or model/); resume it with "
            f"arca train --config {cfg_path} --resume true"
        )
    kind, weights = found
    device = "cpu" if cfg.get("use_cpu") else None
    on: Path | None = None
    if kind == "base":
        weights = trained_on(run)
        model, tok = load_policy(
            str(weights or cfg["model_name_or_path"]), dtype=dtype, device=device
        )
    elif kind == "adapter":
        # The folder it was trained on, as for --base: a name such as tiny
        # may since have come to mean another model.
        on = trained_on(run)
        model, tok = load_policy(
            str(on or cfg["model_name_or_path"]), str(weights), dtype=dtype, device=device
        )
    else:
        model, tok = load_policy(str(weights), dtype=dtype, device=device)
    if kind in ("base", "adapter"):
        check_identity(cfg, str(weights if kind == "base" else on) if (weights or on) else None)
    meta = {
        "run": str(run),
        "model": cfg["model_name_or_path"],
        "weights": kind,
        **({} if weights is None else {kind: str(weights)}),
        **({"base": str(on)} if on is not None else {}),
        # What a report checks before it sets a base-model evaluation beside this one.
        "settings": eval_settings(cfg),
        "task": cfg["task"],
        "source": task.source,
        "heldout_size": len(full),
    }
    return evaluate(
        model,
        tok,
        rows,
        k=k,
        temperature=float(cfg.get("temperature", 1.0)),
        top_p=float(cfg.get("top_p", 0.95)),
        max_new_tokens=int(cfg.get("max_completion_length", 512)),
        batch_size=batch_size,
        seed=int(cfg.get("seed", 1337)),
        out_dir=out_dir,
        score=task.score,
        correct_reward=float(cfg.get("correct_reward", 1.0)),
        show_progress=show_progress,
        meta=meta,
    )


def check_identity(cfg: dict[str, Any], folder: str | None) -> None:
    """Refuse to evaluate a run on a model other than the one it started from:
    its ``config.yaml`` records ``model_identity`` (by content), and the model
    about to be loaded (``folder``, else the config's name) must match it."""
    recorded = cfg.get("model_identity")
    if not recorded:
        return  # recorded by arca since it identifies models by content
    path = folder or resolve(str(cfg["model_name_or_path"]))
    now = identity(path)
    if now != recorded:
        raise ValueError(
            f"model_identity: the run started from {cfg['model_name_or_path']} = {recorded}, "
            f"but {path} is now {now} (rebuilt, or another model of that name); evaluate on "
            "the model it trained from, or train the run again"
        )


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="greedy accuracy and pass@k on a task's held-out set",
        description="Evaluate a model (+adapter) on a held-out set, or a finished "
        "`arca train` run with --run RUN_DIR (settings from its config.yaml, results "
        "in RUN_DIR/eval/; with --base, its untrained base model in RUN_DIR/eval-base/).",
    )
    p.add_argument("--run", help="a finished arca train run folder: evaluate it as configured")
    p.add_argument(
        "--base",
        action="store_true",
        help="with --run: evaluate the run's untrained base model instead (no adapter), with the "
        "run's task and decoding, into RUN_DIR/eval-base/: the report's base-model row",
    )
    # Defaults are filled in by _main (STANDALONE), so that with --run a flag
    # given at all is known and refused rather than silently ignored.
    p.add_argument("--model", help="'tiny' (default), 'smollm2', a model folder, or a Hub id")
    p.add_argument("--adapter", help="a LoRA adapter folder (from save_pretrained)")
    p.add_argument("--task", choices=["arithmetic", "math", "gsm8k"], help="default: arithmetic")
    p.add_argument(
        "--data", help="MATH/GSM8K source: a .jsonl/.json/.parquet file, a folder, or a Hub id"
    )
    p.add_argument("--heldout-size", type=int, help="held-out problems (default 200, the paper's)")
    p.add_argument(
        "--split-seed", type=int, help="held-out split seed (default: arithmetic 0, MATH 1337)"
    )
    p.add_argument(
        "--level", type=int, help=f"arithmetic difficulty level (default {DEFAULT_LEVEL})"
    )
    p.add_argument(
        "--few-shot", type=int, help="arithmetic: worked examples per prompt (default 0)"
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N held-out problems")
    p.add_argument("--k", type=int, default=4, help="pass@k (paper: 4)")
    p.add_argument("--samples", type=int, help="samples per problem for pass@k (default: k)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (default 0.95)")
    p.add_argument("--max-new-tokens", type=int, help="default 512")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, help="sampling seed (default 1337)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], help="default: auto")
    p.add_argument(
        "--skip-malformed", action="store_true", help="skip (and count) malformed data rows"
    )
    p.add_argument(
        "--out", help="folder for results.json and completions.jsonl (default runs/eval)"
    )
    p.set_defaults(func=_main)


#: ``arca eval`` without ``--run``: what each flag defaults to. With ``--run``
#: every one of them comes from the run's config.yaml and may not be given.
STANDALONE: dict[str, Any] = {
    "model": "tiny",
    "adapter": None,
    "task": "arithmetic",
    "data": None,
    "heldout_size": 200,
    "split_seed": None,
    "level": DEFAULT_LEVEL,
    "few_shot": 0,
    "samples": None,
    "temperature": 1.0,
    "top_p": 0.95,
    "max_new_tokens": 512,
    "seed": 1337,
    "dtype": "auto",
    "skip_malformed": False,
    "out": "runs/eval",
}


def _main(args: Any) -> int:
    if args.run:
        given = [f for f in STANDALONE if getattr(args, f) not in (None, False)]
        if given:
            flag = f"--{given[0].replace('_', '-')}"
            raise ValueError(
                f"{flag}: arca eval --run evaluates the run as it was trained (model, adapter, "
                f"data, decoding, seed and folder from {Path(args.run) / 'config.yaml'}), so "
                f"{flag} would be ignored; for other settings evaluate without --run: arca eval "
                "--model MODEL --adapter RUN/adapter ... --out DIR"
            )
    for f, default in STANDALONE.items():
        if getattr(args, f) is None:
            setattr(args, f, default)
    if not args.temperature > 0:
        raise ValueError(
            f"--temperature: must be > 0 (greedy is measured anyway), got {args.temperature}"
        )
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p: must be in (0, 1], got {args.top_p}")
    for name in ("k", "limit", "samples", "batch_size", "heldout_size", "max_new_tokens"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {v}")
    if args.samples is not None and args.samples < args.k:
        raise ValueError(f"--samples: pass@{args.k} needs at least {args.k}, got {args.samples}")
    if args.base and not args.run:
        raise ValueError(
            "--base: needs --run RUN_DIR (the run whose base model and settings to evaluate); "
            "without a run, --model alone evaluates a base model"
        )
    if args.run:
        res = evaluate_run(
            args.run, k=args.k, limit=args.limit, batch_size=args.batch_size, base=args.base
        )
        out = eval_dir(Path(args.run), res["problems"], res["heldout_size"], base=args.base)
        _print_summary(res, args.k, out)
        return 0
    task = load_task(
        args.task,
        args.data,
        heldout_size=args.heldout_size,
        skip_malformed=args.skip_malformed,
        level=args.level,
        seed=args.split_seed,
        few_shot=args.few_shot,
    )
    if task.skipped:
        print(f"skipped {task.skipped} malformed rows, e.g. {task.skipped_examples[0]}")
    rows = task.heldout.to_list()[: args.limit] if args.limit else task.heldout.to_list()
    model, tok = load_policy(args.model, args.adapter, dtype=args.dtype)
    meta = {
        "model": args.model,
        "adapter": args.adapter,
        "task": args.task,
        "source": task.source,
        "heldout_size": len(task.heldout),
    }
    res = evaluate(
        model,
        tok,
        rows,
        k=args.k,
        num_samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        out_dir=args.out,
        meta=meta,
    )
    _print_summary(res, args.k, Path(args.out))
    return 0


def _print_summary(res: dict[str, Any], k: int, out: Path) -> None:
    print(
        f"{res['task']}: {res['problems']} problems  greedy accuracy {res['greedy_accuracy']:.1%}  "
        f"pass@{k} {res[f'pass@{k}']:.1%}  ({res['seconds']:.0f}s)"
    )
    print(f"wrote {out / 'results.json'} and completions.jsonl")
