"""Hand-made run folders (config.yaml, metrics.jsonl, eval/, samples.jsonl)
whose table values can be computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def make_run(
    root: Path,
    name: str,
    seed: int,
    *,
    scheme: str,
    rank: int = 64,
    rewards: list[float],
    gini: list[float],
    eff: list[float],
    greedy: list[float] | None = None,
    samples: list[list[float]] | None = None,
    shadow: dict[str, tuple[float, float]] | None = None,
    tokens: list[str] | None = None,
    correctness: dict[str, dict[str, float]] | None = None,
    drift: list[float] | None = None,
    full: bool = False,
    first_error: int | None = None,
    extra: dict[str, float] | None = None,
    config: dict | None = None,
    problems: list[str] | None = None,
) -> Path:
    """A run folder. ``config`` overrides config.yaml fields; ``problems``: the
    held-out problems' text in evaluation order (default ``problem 0``, ...);
    the evaluation counts a reward as correct from the config's ``correct_reward``
    (default 1), as ``arca eval`` does."""
    d = root / name / f"seed-{seed}"
    d.mkdir(parents=True)
    cfg = {
        "run_name": name,
        "seed": seed,
        "token_weighting": scheme,
        "lora_r": rank,
        "lora_alpha": 2 * rank,
        "learning_rate": 3e-4,
        "max_steps": len(rewards),
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "advantage_estimator": "grpo",
        "beta": 0.0,
        "weight_eps": 1e-8,
        "model_name_or_path": "tiny",
        "task": "arithmetic",
        "temperature": 1.0,  # the presets' decoding
        "top_p": 0.95,
    }
    if full:
        cfg["use_peft"] = False
    cfg |= config or {}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for i, (r, g, e) in enumerate(zip(rewards, gini, eff, strict=True)):
        rec = {"step": i + 1, "reward": r, "credit/gini": g, "credit/effective_ratio": e}
        rec["credit/residual_mean"] = 0.01 * i
        rec["credit/residual_max"] = 0.03 * i
        for s, (sg, se) in (shadow or {}).items():
            rec[f"credit/{s}/gini"], rec[f"credit/{s}/effective_ratio"] = sg, se
        if drift is not None:
            rec["credit/drift_kl"] = drift[i]
        rec |= extra or {}
        for s, values in (correctness or {}).items():
            for metric, v in values.items():
                rec[f"credit/{s}/{metric}"] = v
                if s == scheme:
                    rec[f"credit/{metric}"] = v
            rec["credit/blamed_fraction"] = 0.25
        lines.append(json.dumps(rec))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if greedy is not None:
        assert samples is not None
        (d / "eval").mkdir()
        texts = problems or [f"problem {i}" for i in range(len(greedy))]
        comps = []
        for i, (g, ss) in enumerate(zip(greedy, samples, strict=True)):
            base = {"index": i, "problem": texts[i], "answer": f"answer to {texts[i]}"}
            comps.append({**base, "mode": "greedy", "sample": 0, "completion": "x", "reward": g})
            for j, s in enumerate(ss):
                comps.append(
                    {**base, "mode": "sample", "sample": j, "completion": "y", "reward": s}
                )
        (d / "eval" / "completions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in comps))
        from arca.generation import pass_at_k

        ok = float(cfg.get("correct_reward", 1.0))
        res = {
            "problems": len(greedy),
            "greedy_accuracy": sum(g >= ok for g in greedy) / len(greedy),
            "pass@4": sum(pass_at_k(len(s), sum(x >= ok for x in s), 4) for s in samples)
            / len(samples),
            "correct_reward": ok,
            "k": 4,
        }
        (d / "eval" / "results.json").write_text(json.dumps(res))
    if tokens is not None:
        n = len(tokens)
        weights = {"uniform": [1 / n] * n, scheme: [(i + 1) / (n * (n + 1) / 2) for i in range(n)]}
        rec = {
            "step": 2,
            "step_base": 1,  # steps counted from 1, as metrics.jsonl counts them
            "index": 0,
            "prompt": "What is <b>1+1</b>?",
            "advantage": 0.5,
            "tokens": tokens,
            "weights": weights,
        }
        if first_error is not None:
            rec |= {"first_error": first_error, "correct": False}
        (d / "samples.jsonl").write_text(
            json.dumps({**rec, "step": 1}) + "\n" + json.dumps(rec) + "\n"
        )
    return d


def write_curve(run: Path, steps: list[int], correct: list[list[int]], sha: str = "p") -> None:
    """A learning curve (``curve.jsonl``): per step, 0/1 per problem."""
    lines = [
        json.dumps(
            {
                "step": s,
                "greedy_accuracy": sum(c) / len(c),
                "problems": len(c),
                "correct": c,
                "problems_sha": sha,
            }
        )
        for s, c in zip(steps, correct, strict=True)
    ]
    (run / "curve.jsonl").write_text("\n".join(lines) + "\n")
