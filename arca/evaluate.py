"""Held-out evaluation: greedy accuracy and pass@k (paper 4.1).

Generation is Hugging Face ``generate`` in left-padded batches; ``k`` or more
samples per problem at the paper's temperature 1.0 / top-p 0.95 give the
unbiased pass@k estimate ``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021).
Every completion is written to a JSONL file with its reward, the summary to a
JSON file.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from arca.io import atomic_write_json, atomic_write_text
from arca.tasks.arithmetic import DEFAULT_LEVEL
from arca.tasks.base import make_prompt
from arca.tasks.grading import math_rewards


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct.

    ``1 - C(n-c, k) / C(n, k)``: the probability that ``k`` of the ``n`` samples,
    drawn without replacement, include a correct one. Needs ``n >= k >= 1``.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if k < 1 or n < k:
        raise ValueError(f"pass@k needs n >= k >= 1, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n], got c={c}, n={n}")
    if n - c < k:
        return 1.0
    # Product form: exact, and no huge binomials.
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def _prompts(rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Each row's prompt: text, or a conversation (rendered by :func:`generate`)."""
    return [r["prompt"] if "prompt" in r else make_prompt(r["problem"]) for r in rows]


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    num_samples: int = 1,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 0.95,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Completions of each prompt: ``num_samples`` per prompt (1 when greedy).

    Prompts are text, or conversations rendered with the tokenizer's chat
    template as TRL renders them; they are left-padded into batches of
    ``batch_size`` prompts; ``progress`` is called with the number of prompts
    finished after each batch.
    """
    from arca.tasks.custom import prompt_text

    if greedy and num_samples != 1:
        raise ValueError("greedy decoding gives one completion per prompt; use num_samples=1")
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    device = next(model.parameters()).device
    out: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [prompt_text(p, tokenizer) for p in prompts[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            kwargs: dict[str, Any] = (
                {"do_sample": False}
                if greedy
                else {
                    "do_sample": True,
                    "temperature": temperature,
                    "top_p": top_p,
                    "num_return_sequences": num_samples,
                }
            )
            seqs = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **kwargs,
            )
            texts = tokenizer.batch_decode(
                seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
            out += [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(chunk))]
            if progress is not None:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def greedy_accuracy(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    max_new_tokens: int = 512,
    batch_size: int = 16,
) -> float:
    """Fraction of ``rows`` (``problem``/``prompt`` and ``answer``) solved greedily."""
    comps = generate(
        model, tokenizer, _prompts(rows), max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    rewards = math_rewards([c[0] for c in comps], [r["answer"] for r in rows])
    return sum(rewards) / max(1, len(rows))


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
    prompts = _prompts(rows)
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


#: The files a peft adapter folder keeps its weights in, preferred first.
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter(adapter: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a LoRA adapter folder, after checking that
    the folder holds what peft needs: a valid config and a weights file. Raises
    ``FileNotFoundError``/``ValueError`` naming the folder or file."""
    import json

    from peft import PeftConfig

    folder = Path(adapter)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(
            f"{cfg_path}: not valid JSON ({e}); copy it again from the training run's adapter/"
        ) from None
    missing = [
        k for k in ("peft_type", "r", "target_modules") if not isinstance(cfg, dict) or k not in cfg
    ]
    if missing:
        raise ValueError(
            f"{cfg_path}: not a LoRA adapter config (missing {', '.join(missing)}); "
            "copy it again from the training run's adapter/"
        )
    try:
        PeftConfig.from_pretrained(str(folder))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: not a valid peft adapter config ({e})") from None
    if not any((folder / w).is_file() for w in ADAPTER_WEIGHTS):
        raise FileNotFoundError(
            f"{adapter}: the adapter folder has no weights ({' or '.join(ADAPTER_WEIGHTS)}); "
            "copy them from the training run's adapter/ folder"
        )
    return cfg


def _bad_safetensors(folder: Path, names: Sequence[str] | None = None) -> tuple[Path, str] | None:
    """The first ``*.safetensors`` file in ``folder`` (or of ``names``) that
    safetensors cannot open, with its error; None if all open."""
    from safetensors import SafetensorError, safe_open

    files = (
        [folder / n for n in names] if names is not None else sorted(folder.glob("*.safetensors"))
    )
    for f in files:
        if not f.is_file():
            continue
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            return f, str(e)
    return None


@contextmanager
def adapter_errors(adapter: str, cfg: dict[str, Any], base: str) -> Iterator[None]:
    """Turn peft's errors on loading ``adapter`` onto ``base`` into one-line
    ``ValueError``s: damaged weights, or an adapter of another base model."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:
        bad = _bad_safetensors(Path(adapter), ADAPTER_WEIGHTS[:1])
        f = bad[0] if bad else Path(adapter, ADAPTER_WEIGHTS[0])
        raise ValueError(
            f"{f}: not a readable safetensors file ({e}); the file is damaged or cut short: "
            "copy it again from the training run's adapter/ folder"
        ) from None
    except RuntimeError as e:
        msg = str(e)
        if "size mismatch" not in msg:
            raise
        m = re.search(
            r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) "
            r"from checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)",
            msg,
        )
        first = (
            f"{m[1].removeprefix('base_model.model.')} is {m[2]} in the adapter, {m[3]} in the model"
            if m
            else msg.strip().splitlines()[-1].strip()
        )
        trained = cfg.get("base_model_name_or_path") or "another base model"
        raise ValueError(
            f"{adapter}: adapter was trained for {trained}, not {base} (shapes differ: {first}); "
            "give the adapter's base model with --model"
        ) from None


def same_model(trained: str, model: str, path: str) -> bool:
    """Is the model an adapter records as its base (``trained``, its
    ``base_model_name_or_path``) the one named ``model``, found at ``path``?
    A folder here must be the same folder; a folder of another machine, one
    of the same name (arca's cache keys its models by their build); a Hub id,
    the same id, unless ``model`` is a local folder (which may hold it)."""
    rec = Path(os.path.expanduser(trained))
    here = Path(os.path.expanduser(path))
    if rec.is_dir():
        return here.is_dir() and os.path.samefile(rec, here)
    if rec.is_absolute():
        return rec.name == here.name
    return trained in (model, path) or here.is_dir()


def load_policy(
    model: str, adapter: str | None = None, *, dtype: str = "auto", device: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from ``"tiny"`` (the embedded model), ``"smollm2"``,
    a local folder or a Hub id, optionally with a LoRA adapter folder on top. ``device``
    defaults to CUDA when available. Damaged weights, a broken adapter folder or an
    adapter of another base model raise ``ValueError``/``FileNotFoundError`` naming
    the file."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arca.models import resolve

    cfg = check_adapter(adapter) if adapter is not None else None
    path = resolve(model)
    trained = (cfg or {}).get("base_model_name_or_path")
    if (
        adapter is not None
        and trained
        and isinstance(trained, str)
        and not same_model(trained, model, path)
    ):
        # Same shapes load without complaint, so compare the names before loading.
        raise ValueError(
            f"{adapter}: adapter was trained for {trained}, not {model} ({path}); give the "
            "adapter's base model with --model"
        )
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    try:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except SafetensorError as e:
        bad = _bad_safetensors(Path(path)) if Path(path).is_dir() else None
        where = bad[0] if bad else model
        raise ValueError(
            f"{where}: not a readable safetensors file ({e}); the file is damaged or cut short: "
            "save or download the model again"
        ) from None
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        # Batched generation pads; as arca train does, the end-of-sequence token pads.
        tok.pad_token = tok.eos_token
    if adapter is not None:
        from peft import PeftModel

        with adapter_errors(adapter, cfg or {}, model):
            m = PeftModel.from_pretrained(m, adapter)
    if device is None and torch.cuda.is_available():
        device = "cuda"
    if device is not None:
        m = m.to(device)
    return m, tok


#: The config fields (with the defaults :func:`evaluate_run` reads them with)
#: that decide an evaluation's problems, prompts, grading and decoding: a base
#: model's evaluation stands beside a run's only when all of them agree (and the
#: sampling seed is one of the runs'). A field that changes what is evaluated
#: belongs here.
BASE_EVAL_FIELDS: dict[str, Any] = {
    "model_name_or_path": None,
    "task": None,
    "data": None,
    "level": DEFAULT_LEVEL,
    "few_shot": 0,
    "split_seed": None,
    "heldout_size": None,
    "skip_malformed": False,
    "prompt_template": None,
    "prompt_column": "prompt",
    "columns": None,
    "use_chat_template": False,
    "system_prompt": None,
    "reward_funcs": None,
    "reward_weights": None,
    "correct_reward": 1.0,
    "temperature": 1.0,
    "top_p": 0.95,
    "max_completion_length": 512,
    "bf16": False,
    # The contents of the data and reward files (arca train records them).
    "files_sha256": None,
}


def eval_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The :data:`BASE_EVAL_FIELDS` of a run config, defaults filled in."""
    return {f: cfg.get(f, d) for f, d in BASE_EVAL_FIELDS.items()}


def eval_dir(run: Path, problems: int, heldout_size: int, *, base: bool = False) -> Path:
    """Where a run's evaluation of ``problems`` of its ``heldout_size`` held-out
    problems goes: ``eval/`` for all of them, else ``eval-firstN/``; with
    ``base``, the untrained base model's: ``eval-base/`` or ``eval-base-firstN/``."""
    name = "eval-base" if base else "eval"
    return run / name if problems == heldout_size else run / f"{name}-first{problems}"


def evaluated(run_dir: str | Path, *, base: bool = False) -> bool:
    """Does the run hold a complete evaluation (``eval/results.json`` over its
    whole held-out set; with ``base``, the base model's ``eval-base/``)? One cut
    short by ``--limit`` by an older arca, which wrote it there, does not count."""
    import json

    import yaml

    run = Path(run_dir)
    res_path = run / ("eval-base" if base else "eval") / "results.json"
    cfg_path = run / "config.yaml"
    if not res_path.is_file():
        return False
    try:
        res = json.loads(res_path.read_text(encoding="utf-8"))
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{res_path}: unreadable ({e}); delete it to evaluate again") from e
    want = res.get("heldout_size", (cfg or {}).get("heldout_size"))
    return want is None or int(res.get("problems", 0)) >= int(want)


def _trained_on(run: Path) -> Path | None:
    """The model folder the run's LoRA adapter was trained on, when the adapter
    names one that is here: a name such as ``tiny`` may have come to mean
    another model since the run was trained, and the control is the run's own
    starting point. None otherwise (no adapter yet, a Hub id, another machine)."""
    import json

    cfg_path = run / "adapter" / "adapter_config.json"
    try:
        base = json.loads(cfg_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(base) if isinstance(base, str) and base and Path(base).is_dir() else None


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
    from arca.io import folder_lock

    # Not while a train or another evaluation writes to the run.
    with folder_lock(run, "arca eval"):
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
    import yaml

    from arca.tasks.loaders import _looks_local, task_from_config
    from arca.train import final_weights

    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    missing = [f for f in ("model_name_or_path", "task", "heldout_size") if f not in cfg]
    if missing:
        raise ValueError(f"{cfg_path}: missing field(s) {', '.join(missing)}")
    data = cfg.get("data")
    relative = isinstance(data, str) and not Path(data).expanduser().is_absolute()
    if relative and (_looks_local(data) or Path(data).exists()):
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
        weights = _trained_on(run)
        model, tok = load_policy(
            str(weights or cfg["model_name_or_path"]), dtype=dtype, device=device
        )
    elif kind == "adapter":
        # The folder it was trained on, as for --base: a name such as tiny
        # may since have come to mean another model.
        on = _trained_on(run)
        model, tok = load_policy(
            str(on or cfg["model_name_or_path"]), str(weights), dtype=dtype, device=device
        )
    else:
        model, tok = load_policy(str(weights), dtype=dtype, device=device)
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
    from arca.tasks.loaders import load_task

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
