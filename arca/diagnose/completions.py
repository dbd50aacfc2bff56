"""The completions a diagnosis scores: read from a JSONL file (a diagnosis's
own, a run's samples.jsonl, your own) or sampled from a model, with the
dataset row each answers (for its ground truth)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from arca.tasks.formats import is_conversation, prompt_text


@dataclass
class Completion:
    prompt: str
    prompt_ids: list[int]
    completion_ids: list[int]
    where: str  # "FILE:LINE" or "task problem i, sample j"
    #: The dataset row it answers (``prompt`` and the task's columns), for ground truth.
    row: dict[str, Any] = field(default_factory=dict)
    #: A Monte-Carlo location made earlier (:meth:`arca.tasks.mc.MCResult.record`
    #: with its ``key``), read back with the completion: reused under the same key.
    mc: dict[str, Any] | None = None


def read_completions(path: str | Path, tokenizer: Any) -> list[Completion]:
    """Completions from a JSONL file: one object per line with ``prompt`` (str,
    or a conversation rendered with the tokenizer's chat template) and
    ``completion`` (str) or ``tokens`` (list of str, as in a run's
    ``samples.jsonl``), and optionally ``mc``, a Monte-Carlo location that
    ``arca diagnose`` wrote there. A malformed line is an error naming the
    file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--completions: no such file: {p}")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        prompt = rec.get("prompt")
        if is_conversation(prompt):
            prompt = prompt_text(prompt, tokenizer)
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: 'prompt' must be a string or a list of messages")
        if "completion" in rec:
            text = rec["completion"]
            if not isinstance(text, str):
                raise ValueError(f"{where}: 'completion' must be a string")
        elif isinstance(rec.get("tokens"), list) and all(isinstance(t, str) for t in rec["tokens"]):
            text = "".join(rec["tokens"])
        else:
            raise ValueError(
                f"{where}: needs 'completion' (a string) or 'tokens' (a list of strings)"
            )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"{where}: the completion is empty")
        pids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        row = {k: v for k, v in rec.items() if k not in ("completion", "tokens", "weights", "mc")}
        mc = rec.get("mc") if isinstance(rec.get("mc"), dict) else None
        out.append(Completion(prompt, pids, ids, where, row, mc))
    if not out:
        raise ValueError(f"--completions: {p} holds no completions")
    return out


def sample_completions(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    n: int,
    *,
    group_size: int = 4,
    max_new_tokens: int = 64,
    seed: int = 1337,
    batch_size: int = 8,
) -> list[Completion]:
    """``n`` completions: ``group_size`` samples (temperature 1, top-p 0.95, as
    in GRPO rollouts) for each of the first ``ceil(n / group_size)`` rows.

    The generated token ids are kept as generated, up to and including the
    end-of-sequence token where the model stopped (TRL's completions keep it);
    a completion cut by ``max_new_tokens`` has none."""
    k = max(1, group_size)
    chosen = list(rows[: math.ceil(n / k)])
    if len(chosen) * k < n:
        raise ValueError(f"--samples {n}: the task has only {len(rows)} held-out problems")
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    torch.manual_seed(seed)
    out: list[Completion] = []
    try:
        for start in range(0, len(chosen), batch_size):
            group = chosen[start : start + batch_size]
            texts = [prompt_text(r["prompt"], tokenizer) for r in group]
            enc = tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            seqs = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                num_return_sequences=k,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            comp = seqs[:, enc["input_ids"].shape[1] :].tolist()
            for i, row in enumerate(group):
                pids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
                for j in range(k):
                    ids = comp[i * k + j]
                    if eos in ids:
                        ids = ids[: ids.index(eos) + 1]
                    if ids and len(out) < n:
                        where = f"problem {start + i}, sample {j}"
                        out.append(Completion(texts[i], pids, ids, where, dict(row)))
    finally:
        tokenizer.padding_side = side
    return out


def batch(items: Sequence[Completion], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Prompts left-padded, completions right-padded (as ``generate`` returns)."""
    P = max(len(c.prompt_ids) for c in items)
    C = max(len(c.completion_ids) for c in items)
    ids, attn, mask = [], [], []
    for c in items:
        lp, lc = len(c.prompt_ids), len(c.completion_ids)
        ids.append([pad_id] * (P - lp) + c.prompt_ids + c.completion_ids + [pad_id] * (C - lc))
        attn.append([0] * (P - lp) + [1] * (lp + lc) + [0] * (C - lc))
        mask.append([1] * lc + [0] * (C - lc))
    return torch.tensor(ids), torch.tensor(attn), torch.tensor(mask)
