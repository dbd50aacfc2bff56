"""``arca diagnose``: where does token credit land, on *your* models?

No training. For a base (initial) model and one or more policies trained from
it, and one set of completions, it scores the completions with every model and
reports, per model and scheme:

- concentration: Gini, effective-token ratio and count (mean and 10/50/90%
  quantiles over completions) and the regime (uniform broadcast / middle /
  sparse; thresholds stated), with the mean length ``T``;
- credit correctness against a ground truth of where each wrong completion
  first went wrong (``--locator``): the task's exact locator where it has one
  (arithmetic's worked solutions, a custom ``error_locator``), or on any task
  with a reward, Monte-Carlo values of prefixes (:mod:`arca.tasks.mc`: ``k``
  continuations per prefix from ``--mc-model``, binary search for the first
  zero-value step), estimated once, recorded in ``diagnose.json`` with their
  cost and, where the task also has an exact locator, their agreement with it,
  and cached in ``completions.jsonl`` for the next diagnosis of the same
  completions: prefix blame, error lift, top-1/3 hit on every wrong completion
  with a located error, and (exact locators) the share of the weight on result
  tokens of correct ones (:mod:`arca.credit.correctness`);
- drift: the exact mean per-position ``KL(pi || pi_base)`` over the vocabulary;
- Spearman rank correlations between the schemes' weights;
- for LoRA policies, the paper's propositions checked numerically
  (:mod:`arca.theory`): ``L = ||W_lm||_op``, ``beta``, Prop. 2's bound, Prop.
  1's stated and corrected bounds, Prop. 3's variances from hooks on the LoRA
  layers; a violated bound is printed as a finding with the completion.

The first row is always the base model alone: surprisal, entropy and
high-entropy weights exist before any training, divergence and ARCA (which
compare a policy with the base model) do not. Policies are LoRA adapters on the
base model (``--adapter A [B ...]``), or fully fine-tuned checkpoints with
``--ref-model INITIAL --model CKPT [CKPT ...]``, whose divergence and ARCA
compare with the initial model. All rows score the same completions: sampled
from the base model (``--task``, or ``--config`` for any task arca train
takes, ``task: custom`` included) or the last policy (``--sample-from
policy``), or read from a JSONL file (``--completions``; ``--task`` or
``--config`` then names their task, for its ground truth).

Outputs: ``OUT/diagnose.json``, ``OUT/report.md``, ``OUT/tokens.html`` and
``OUT/completions.jsonl`` (the completions diagnosed, to reuse with
``--completions`` on other checkpoints).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arca.credit import (
    BUILTIN_SCHEMES,
    METRICS,
    classify_regime,
    compares_with_base,
    correctness_summary,
    credit_correctness,
    effective_token_ratio,
    gini,
    rank_correlation,
)
from arca.credit.diagnostics import SPARSE_RATIO_BELOW, UNIFORM_GINI_BELOW
from arca.credit.schemes import hidden_residual_norm
from arca.credit.weights import token_weights
from arca.evaluate import adapter_errors, check_adapter, load_policy
from arca.io import atomic_write_json, atomic_write_text, json_safe
from arca.models import resolve
from arca.report.tokens import render
from arca.scoring import (
    capture_adapter_shift,
    completion_token_stats,
    eval_mode,
    token_kl,
    writes_residual,
)
from arca.tasks.arithmetic import DEFAULT_LEVEL
from arca.tasks.base import ErrorLocator, Located, Task
from arca.tasks.custom import is_conversation, prompt_text
from arca.tasks.loaders import load_task, task_from_config, task_locator
from arca.tasks.locate import ground_truth, locate_tokens, token_spans
from arca.tasks.mc import (
    MCResult,
    MCSettings,
    MonteCarloLocator,
    StepRule,
    add_locator_arguments,
    agreement,
    binary_bound,
    cache_key,
    describe,
    mc_settings,
    step_boundaries,
    token_cuts,
)
from arca.tasks.mc import located as mc_located
from arca.theory import (
    capture_lora_contributions,
    check_prop1,
    check_prop2,
    check_prop3,
    lm_head_weight,
    operator_norm,
)
from arca.train import config_path, read_config

#: Scored for every policy (``arca_local`` too when the adapter writes into the
#: residual stream); on the base model, those that compare a policy with it are
#: undefined (:func:`arca.credit.compares_with_base`).
SCHEMES = tuple(s for s in BUILTIN_SCHEMES if s != "arca_local")
BASE_SCHEMES = tuple(s for s in SCHEMES if not compares_with_base(s))
HTML_COUNT = 6


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


# ------------------------------------------------------------------ input


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


def _batch(items: Sequence[Completion], pad_id: int) -> tuple[torch.Tensor, ...]:
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


# ------------------------------------------------------------------ models


def adapter_state(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """``{"present", "zero", "modules", "rank", "targets_head"}`` of a LoRA
    adapter (``name``, or every adapter)."""
    if not hasattr(model, "disable_adapter"):
        return {"present": False, "zero": True, "modules": 0, "rank": None, "targets_head": False}
    bs = [
        (n, p)
        for n, p in model.named_parameters()
        if "lora_B" in n and (name is None or f".{name}." in n)
    ]
    ranks = {p.shape[1] for _, p in bs}
    return {
        "present": True,
        "zero": all(bool((p == 0).all()) for _, p in bs),
        "modules": len(bs),
        "rank": max(ranks) if ranks else None,
        "targets_head": any("lm_head" in n for n, _ in bs),
    }


@dataclass
class Policy:
    """A model to diagnose against the base: a LoRA adapter on the base model
    (``adapter`` is its peft adapter name) or a separate fully fine-tuned model."""

    label: str
    model: nn.Module
    adapter: str | None = None
    path: str | None = None

    @property
    def kind(self) -> str:
        return "adapter" if self.adapter is not None else "model"

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        if self.adapter is not None:
            self.model.set_adapter(self.adapter)
        yield self.model


@dataclass
class Models:
    """The base model and the policies, as :func:`load_models` builds them."""

    base: nn.Module
    policies: list[Policy]
    #: The base pass runs inside the peft model with its adapters disabled.
    base_is_peft: bool = False

    @contextmanager
    def base_ctx(self) -> Iterator[nn.Module]:
        with self.base.disable_adapter() if self.base_is_peft else nullcontext():
            yield self.base


def load_models(
    model: str,
    *,
    adapters: Sequence[str] = (),
    checkpoints: Sequence[str] = (),
    dtype: str = "auto",
    device: str | None = None,
) -> tuple[Models, Any]:
    """``(Models, tokenizer)``: ``model`` (``tiny``, ``smollm2``, a folder or a
    Hub id) as the base, with LoRA ``adapters`` on it, or full ``checkpoints``
    fine-tuned from it."""
    if adapters and checkpoints:
        raise ValueError("--adapter and --ref-model exclude each other: LoRA or full fine-tuning")
    configs = [check_adapter(a) for a in adapters]
    if not adapters:
        base, tok = load_policy(model, dtype=dtype, device=device)
        vocab = base.get_output_embeddings().weight.shape[0]
        policies = []
        for c in checkpoints:
            m = load_policy(c, dtype=dtype, device=device)[0].eval()
            v = m.get_output_embeddings().weight.shape[0]
            if v != vocab:
                raise ValueError(
                    f"--model {c}: its vocabulary has {v} entries, the reference model's {vocab}; "
                    "a checkpoint must be fine-tuned from --ref-model"
                )
            policies.append(Policy(c, m, path=c))
        return Models(base.eval(), policies), tok
    peft_model, tok = load_policy(model, adapters[0], dtype=dtype, device=device)
    # load_policy names its adapter "default"; the others get p1, p2, ...
    names = ["default"]
    for i, (a, cfg) in enumerate(zip(adapters[1:], configs[1:], strict=True), 1):
        with adapter_errors(a, cfg, model):
            peft_model.load_adapter(a, adapter_name=f"p{i}")
        names.append(f"p{i}")
    peft_model.eval()
    policies = [
        Policy(a, peft_model, adapter=n, path=a) for a, n in zip(adapters, names, strict=True)
    ]
    return Models(peft_model, policies, base_is_peft=True), tok


# ------------------------------------------------------------------ core


def _quantiles(x: torch.Tensor) -> dict[str, float]:
    x = x[~x.isnan()].double()
    if x.numel() == 0:
        return {"mean": math.nan, "p10": math.nan, "p50": math.nan, "p90": math.nan}
    q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"mean": float(x.mean()), "p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


class _Rows:
    """Per-row values of one model, gathered over the batches."""

    def __init__(self) -> None:
        self.per: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.corr: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.kl_sum = 0.0
        self.kl_tokens = 0

    def add(
        self,
        weights: dict[str, torch.Tensor],
        mask: torch.Tensor,
        truth: dict[str, torch.Tensor] | None,
    ) -> None:
        n = mask.sum(dim=1).to(torch.float64)
        for s, w in weights.items():
            d = self.per.setdefault(s, {})
            e = effective_token_ratio(w, mask).cpu()
            vals = {"gini": gini(w, mask).cpu(), "effective_ratio": e, "effective_n": e * n.cpu()}
            if truth is not None:
                vals |= credit_correctness(
                    w,
                    mask,
                    truth["error_index"],
                    correct=truth["correct"],
                    result_mask=truth["result_mask"],
                    template_mask=truth["template_mask"],
                )
            for k, v in vals.items():
                d.setdefault(k, []).append(v.cpu())
        ranked = [s for s in weights if s != "uniform"]  # uniform weights have no ranking
        for i, a in enumerate(ranked):
            for b in ranked[i + 1 :]:
                self.corr.setdefault((a, b), []).append(
                    rank_correlation(weights[a], weights[b], mask).cpu()
                )

    def summary(self, undefined: Sequence[str] = ()) -> dict[str, Any]:
        schemes: dict[str, Any] = {}
        for s in undefined:
            schemes[s] = {"undefined": "the policy is the base model"}
        for s, d in self.per.items():
            cat = {k: torch.cat(v) for k, v in d.items()}
            entry: dict[str, Any] = {
                k: _quantiles(cat[k]) for k in ("gini", "effective_ratio", "effective_n")
            }
            entry["regime"] = classify_regime(
                entry["gini"]["mean"], entry["effective_ratio"]["mean"]
            )
            if "prefix_blame" in cat:
                entry["correctness"] = correctness_summary({k: cat[k] for k in METRICS if k in cat})
            schemes[s] = entry
        ordered = {s: schemes[s] for s in (*SCHEMES, "arca_local") if s in schemes}
        corr = {}
        for (a, b), v in self.corr.items():
            x = torch.cat(v)
            corr[f"{a}~{b}"] = float(x.nanmean()) if not x.isnan().all() else math.nan
        return {"schemes": ordered, "rank_correlation": corr}


class _Props:
    """The propositions' checks for one LoRA policy, gathered over the batches."""

    def __init__(self, L: float, eps: float) -> None:
        self.L, self.eps = L, eps
        self.p1: dict[str, list[torch.Tensor]] = {}
        self.p2: list[dict[str, Any]] = []
        self.p3: dict[str, list[Any]] = {"var_arca": [], "max_v": [], "ratio": [], "argmax": []}
        self.lengths: list[int] = []

    def add(
        self, inputs: dict[str, torch.Tensor], mask: torch.Tensor, contrib: dict, start: int
    ) -> None:
        resid = hidden_residual_norm(inputs["h_adapted"], inputs["h_base"]).float()
        r2 = check_prop2(inputs["logps"], inputs["ref_logps"], resid, mask, self.L)
        if r2["first_violation"] is not None:
            r2["first_violation"][0] += start
        self.p2.append(r2)
        for k, v in check_prop1(
            inputs["logps"], inputs["ref_logps"], resid, mask, self.L, self.eps
        ).items():
            self.p1.setdefault(k, []).append(v.cpu())
        stacked = {k: torch.cat(v, dim=0) for k, v in contrib.items()}
        r3 = check_prop3(resid, stacked, mask)
        for k in ("var_arca", "max_v", "ratio"):
            self.p3[k].append(r3[k].cpu())
        self.p3["argmax"] += r3["argmax"]
        self.lengths += mask.sum(dim=1).tolist()

    def summary(self, items: Sequence[Completion], modules: int) -> dict[str, Any]:
        p2_parts, lengths = self.p2, self.lengths
        L = self.L
        beta = max(r["beta"] for r in p2_parts)
        max_d = max(r["max_abs_dlogp"] for r in p2_parts)
        first = next((r["first_violation"] for r in p2_parts if r["first_violation"]), None)
        prop2 = {
            "beta": beta,
            "bound": 2 * L * beta,
            "max_abs_dlogp": max_d,
            "ratio": max_d / (2 * L * beta) if beta > 0 else (0.0 if max_d == 0 else math.inf),
            "token_ratio": max(r["token_ratio"] for r in p2_parts),
            "violations": sum(r["violations"] for r in p2_parts),
            "tokens": sum(r["tokens"] for r in p2_parts),
            "first_violation": (
                {"completion": first[0], "position": first[1], "where": items[first[0]].where}
                if first
                else None
            ),
        }
        c = {k: torch.cat(v) for k, v in self.p1.items()}
        bad_stated = (~c["holds_stated"]).nonzero().flatten().tolist()
        bad_corr = (~c["holds_corrected"]).nonzero().flatten().tolist()

        def _example(i: int) -> dict[str, Any]:
            return {
                "completion": i,
                "where": items[i].where,
                "tokens": lengths[i],
                "l1": float(c["l1"][i]),
                "stated": float(c["stated"][i]),
                "corrected": float(c["corrected"][i]),
            }

        active = c["stated"] > 0

        def _median(x: torch.Tensor) -> float:
            return float(x.median()) if x.numel() else math.nan

        prop1 = {
            "completions": len(items),
            "holds_stated": int(c["holds_stated"].sum()),
            "holds_corrected": int(c["holds_corrected"].sum()),
            "median_l1_over_stated": _median(c["l1"][active] / c["stated"][active]),
            "median_l1_over_corrected": _median(c["l1"][active] / c["corrected"][active]),
            "stated_violations": [_example(i) for i in bad_stated[:5]],
            "corrected_violations": [_example(i) for i in bad_corr[:5]],
        }
        ratio = torch.cat(self.p3["ratio"])
        var_a, max_v = torch.cat(self.p3["var_arca"]), torch.cat(self.p3["max_v"])
        names = [n for n in self.p3["argmax"] if n]
        top = max(set(names), key=names.count) if names else None
        prop3 = {
            "modules": modules,
            "var_arca_median": float(var_a.median()),
            "max_v_median": float(max_v.nanmedian()) if not max_v.isnan().all() else math.nan,
            "ratio_median": float(ratio.nanmedian()) if not ratio.isnan().all() else math.nan,
            "holds": int((var_a >= max_v).sum()),
            "comparable": int((~max_v.isnan()).sum()),
            "dominant_module": top,
            "dominant_share": names.count(top) / len(names) if names else math.nan,
        }
        return {"prop1": prop1, "prop2": prop2, "prop3": prop3}


def _weights(
    schemes: Sequence[str],
    mask: torch.Tensor,
    inputs: dict[str, torch.Tensor],
    eps: float,
    q: float,
) -> dict[str, torch.Tensor]:
    return {
        s: token_weights(
            s,
            mask=mask,
            eps=eps,
            options={"quantile": q} if s == "high_entropy" else None,
            **inputs,
        )
        for s in schemes
    }


@torch.no_grad()
def diagnose_models(
    models: Models,
    tokenizer: Any,
    items: Sequence[Completion],
    *,
    eps: float = 1e-8,
    batch_size: int = 8,
    locate: ErrorLocator | None = None,
    located: Sequence[Located | None] | None = None,
    high_entropy_quantile: float = 0.2,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score ``items`` with the base model and every policy in ``models``;
    returns the JSON-ready result (see the module docstring). The ground
    truth of the credit-correctness metrics: ``locate``, the task's error
    locator, or ``located``, one location per item made beforehand (the
    Monte-Carlo locator's, :mod:`arca.tasks.mc`)."""
    if not items:
        raise ValueError("no completions to diagnose")
    device = next(models.base.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    L = operator_norm(lm_head_weight(models.base))
    # Base pass once per batch, kept (on the CPU) for every policy.
    base_rows, cache = _Rows(), []
    truth_summary: dict[str, Any] = {"wrong": 0, "located": 0, "correct": 0, "first_error_step": {}}
    has_truth = locate is not None or located is not None
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, attn, mask = (t.to(device) for t in _batch(chunk, pad))
        C = mask.shape[1]
        with models.base_ctx() as m:
            b = completion_token_stats(m, ids, attn, C)
        truth = None
        if has_truth:
            where = None if located is None else located[start : start + batch_size]
            truth = ground_truth(
                locate, [c.row for c in chunk], ids[:, -C:], mask, tokenizer, located=where
            )
            truth_summary["correct"] += int(truth["correct"].sum())
            truth_summary["wrong"] += int((~truth["correct"]).sum())
            truth_summary["located"] += int(truth["located"].sum())
            steps = truth_summary["first_error_step"]
            for k in truth["error_step"][truth["error_step"] >= 0].tolist():
                steps[str(k)] = steps.get(str(k), 0) + 1
        inputs = {"logps": b["logps"], "entropies": b["entropies"]}
        bw = _weights(BASE_SCHEMES, mask, inputs, eps, high_entropy_quantile)
        base_rows.add(bw, mask, truth)
        cache.append(
            {k: v.cpu() for k, v in b.items()}
            | {"truth": truth, "start": start, "weights": {k: v.cpu() for k, v in bw.items()}}
        )
        if progress is not None:
            progress(len(chunk))
    local = any(
        p.kind == "adapter" and writes_residual(p.model, p.adapter) for p in models.policies
    )
    undefined = [s for s in SCHEMES if compares_with_base(s)] + (["arca_local"] if local else [])
    base_summary = base_rows.summary(undefined=undefined)
    results = [{"label": "base model", "kind": "base", "drift_kl": 0.0, **base_summary}]
    lengths = [len(c.completion_ids) for c in items]
    samples: list[dict[str, Any]] = []
    for pol in models.policies:
        with pol.active() as model:
            results.append(
                _diagnose_policy(
                    L,
                    pol,
                    model,
                    models,
                    tokenizer,
                    items,
                    cache,
                    pad,
                    device,
                    eps,
                    high_entropy_quantile,
                    samples,
                    progress,
                )
            )
    if not models.policies:  # the page shows the base model's weights
        samples = _samples(items, cache, tokenizer)
    return {
        "completions": len(items),
        "tokens": int(sum(lengths)),
        "mean_length": sum(lengths) / len(lengths),
        "eps": eps,
        "high_entropy_quantile": high_entropy_quantile,
        "thresholds": {
            "uniform_gini_below": UNIFORM_GINI_BELOW,
            "sparse_ratio_below": SPARSE_RATIO_BELOW,
        },
        "L": L,
        "ground_truth": truth_summary if has_truth else None,
        "models": results,
        "samples": samples,
    }


def diagnose(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[Completion],
    **kw: Any,
) -> dict[str, Any]:
    """:func:`diagnose_models` for one model: a peft model (its active
    adapter against the base) or a plain model (the base row alone)."""
    if hasattr(model, "disable_adapter"):
        pol = Policy("adapter", model, adapter=model.active_adapter)
        return diagnose_models(Models(model, [pol], base_is_peft=True), tokenizer, items, **kw)
    return diagnose_models(Models(model, []), tokenizer, items, **kw)


def _diagnose_policy(
    L: float,
    pol: Policy,
    model: nn.Module,
    models: Models,
    tokenizer: Any,
    items: Sequence[Completion],
    cache: list[dict[str, Any]],
    pad: int,
    device: Any,
    eps: float,
    q: float,
    samples: list[dict[str, Any]],
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    lora = pol.kind == "adapter"
    state = adapter_state(model, pol.adapter) if lora else None
    local = lora and writes_residual(model, pol.adapter)
    schemes = SCHEMES + (("arca_local",) if local else ())
    rows = _Rows()
    props = _Props(L, eps) if lora else None
    head_p = model.get_output_embeddings()

    def head_q(x: torch.Tensor) -> torch.Tensor:
        # The base side's head: inside the base context only while it runs, so
        # a LoRA on lm_head stays active for the policy side.
        with models.base_ctx() as base:
            return base.get_output_embeddings()(x)

    for c in cache:
        chunk = items[c["start"] : c["start"] + batch_size_of(c)]
        ids, attn, mask = (t.to(device) for t in _batch(chunk, pad))
        C = mask.shape[1]
        shift = capture_adapter_shift(model, C) if local else nullcontext([])
        contrib = capture_lora_contributions(model, C) if lora else nullcontext({})
        with contrib as lora_out, shift as shifts:
            on = completion_token_stats(model, ids, attn, C)
        h_base = c["hidden"].to(device)
        inputs = {
            "logps": on["logps"],
            "entropies": on["entropies"],
            "h_adapted": on["hidden"],
            "ref_logps": c["logps"].to(device),
            "h_base": h_base,
        }
        if local:
            inputs["h_shift"] = shifts[0]
        w = _weights(schemes, mask, inputs, eps, q)
        rows.add(w, mask, c["truth"])
        kl = token_kl(head_p, on["hidden"], head_q, h_base)
        m = mask.bool()
        rows.kl_sum += float(kl[m].sum())
        rows.kl_tokens += int(m.sum())
        if props is not None:
            props.add(inputs, mask, lora_out, c["start"])
        if pol is models.policies[-1]:
            samples += _page_rows(chunk, c, w, tokenizer, len(samples))
        if progress is not None:
            progress(len(chunk))
    res: dict[str, Any] = {
        "label": pol.label,
        "kind": pol.kind,
        "path": pol.path,
        "drift_kl": rows.kl_sum / max(1, rows.kl_tokens),
        **rows.summary(),
    }
    if props is not None:
        res["adapter"] = state
        res["L"] = props.L
        res |= props.summary(items, state["modules"])
    return res


def batch_size_of(c: dict[str, Any]) -> int:
    return int(c["logps"].shape[0])


def _page_rows(
    chunk: Sequence[Completion],
    c: dict[str, Any],
    w: dict[str, torch.Tensor],
    tokenizer: Any,
    have: int,
) -> list[dict[str, Any]]:
    out = []
    truth = c["truth"]
    for j, item in enumerate(chunk):
        if have + len(out) >= HTML_COUNT:
            break
        n = len(item.completion_ids)
        rec = {
            "index": c["start"] + j,
            "where": item.where,
            "prompt": item.prompt,
            "tokens": [tokenizer.decode([t]) for t in item.completion_ids],
            "weights": {s: [float(x) for x in wt[j, :n]] for s, wt in w.items()},
        }
        if truth is not None:
            e = int(truth["error_index"][j])
            rec["first_error"] = e if e >= 0 else None
            rec["correct"] = bool(truth["correct"][j])
        out.append(rec)
    return out


def _samples(
    items: Sequence[Completion], cache: list[dict[str, Any]], tokenizer: Any
) -> list[dict[str, Any]]:
    """The page's rows when there is no policy: the base model's weights."""
    out: list[dict[str, Any]] = []
    for c in cache:
        chunk = items[c["start"] : c["start"] + batch_size_of(c)]
        out += _page_rows(chunk, c, c["weights"], tokenizer, len(out))
        if len(out) >= HTML_COUNT:
            break
    return out


# ------------------------------------------------------------------ text


def adapter_message(state: dict[str, Any] | None) -> str | None:
    """The plain statement for an untrained adapter, else None."""
    if state is not None and state["present"] and state["zero"]:
        return (
            "The adapter's B matrices are all zero (a freshly initialised LoRA adapter): "
            "it is the base model, so ARCA and divergence have no signal and their weights "
            "are uniform by construction."
        )
    return None


def _f(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def format_summary(res: dict[str, Any]) -> str:
    lines = []
    gt = res.get("ground_truth")
    lines.append(
        f"{res['completions']} completions, mean length T = {res['mean_length']:.1f} tokens"
        + (f"; {res['sampled_from']}" if res.get("sampled_from") else "")
    )
    if gt is None:
        lines.append(
            "No ground truth: the task has no error locator (or none was named), so whether "
            "credit lands on the error is not measured."
        )
    else:
        loc = res.get("locator") or {}
        lines.append(
            f"Ground truth: {loc.get('description', 'the task locator')}. {gt['correct']} correct, "
            f"{gt['wrong']} wrong, of which {gt['located']} have a located first error (the error "
            "metrics average over those)."
        )
        if loc.get("kind") == "mc":
            pw = loc["per_wrong"]
            why = "; ".join(f"{n}: {r}" for r, n in loc["not_locatable"].items())
            lines.append(
                f"Monte-Carlo: {loc['continuations']} continuations generated in {loc['seconds']:.0f}s "
                f"({loc['cached']} completions' locations reused); per wrong completion the "
                f"search asked for {pw['queried']:.1f} (binary-search bound {pw['binary_bound']:.1f}, "
                f"every prefix {pw['all_prefixes']:.1f}, over {pw['steps']:.1f} steps)"
                + (f", {pw['generated']:.1f} generated" if pw.get("generated") is not None else "")
                + " (identical prefixes share theirs)"
                + (f"; not locatable: {why}" if why else "")
                + "."
            )
        agree = res.get("agreement_with_exact")
        if agree:
            lines.append(
                f"Against the exact locator, on the {agree['both']} wrong completions both "
                f"located: same token {_f(agree['same_token'], '.0%')}, same step "
                f"{_f(agree['same_step'], '.0%')}, earlier {_f(agree['earlier'], '.0%')}, later "
                f"{_f(agree['later'], '.0%')} (soft variant: same token "
                f"{_f(agree['soft']['same_token'], '.0%')}, same step "
                f"{_f(agree['soft']['same_step'], '.0%')}); located by the exact locator only: "
                f"{agree['exact_only']}, by Monte-Carlo only: {agree['mc_only']}."
            )
        if gt.get("first_error_step"):
            where = ", ".join(
                f"step {k}: {n}"
                for k, n in sorted(gt["first_error_step"].items(), key=lambda x: int(x[0]))
            )
            steps = (
                "a step is the text between two cut points"
                if loc.get("kind") == "mc"
                else "the last step of a problem is its final answer"
            )
            lines.append(f"Where they first go wrong ({where}; {steps}).")
    for m in res["models"]:
        msg = adapter_message(m.get("adapter"))
        if msg:
            lines += ["", f"{m['label']}: {msg}"]
    lines += ["", _table(res)]
    t = res["thresholds"]
    lines += [
        f"(regimes of the mean: uniform broadcast if Gini < {t['uniform_gini_below']}, "
        f"sparse if EffN/T < {t['sparse_ratio_below']}, else middle; eps = {res['eps']:g}; "
        "drift: mean per-token KL(pi || base) over the vocabulary; blame: weight share on the "
        "correct prefix of wrong completions; lift: T x weight on the first wrong token "
        "(uniform 1); top-1/3: first wrong token among the 1/3 heaviest; result / templ: "
        "weight share on result / template tokens of correct completions)",
    ]
    for m in res["models"][1:]:
        lines += [
            "",
            f"{m['label']}: Spearman rank correlation of the weights (mean over completions):",
        ]
        lines += [
            f"  {k.replace('~', ' ~ '):<28} {_f(v)}" for k, v in m["rank_correlation"].items()
        ]
        if "prop1" in m:
            lines += _props_text(m)
        else:
            lines.append(
                "  The propositions (Appendix C.6-C.7) are about a LoRA adapter on a fixed LM "
                "head; full fine-tuning changes the head too, so they are not checked."
            )
    return "\n".join(lines)


def _table(res: dict[str, Any]) -> str:
    truth = res.get("ground_truth") is not None
    head = ["model", "drift", "scheme", "Gini", "EffN/T", "EffN"]
    if truth:
        head += ["blame", "lift", "top-1", "top-3", "result", "templ"]
    head.append("regime")
    rows = []
    for m in res["models"]:
        label = _short_label(m["label"])
        for i, (s, d) in enumerate(m["schemes"].items()):
            first = (label, _f(m["drift_kl"], ".4f")) if i == 0 else ("", "")
            if d.get("undefined"):
                rows.append([*first, s, "undefined: " + d["undefined"]])
                continue
            r = [
                *first,
                s,
                _f(d["gini"]["mean"], ".3f"),
                _f(d["effective_ratio"]["mean"], ".3f"),
                _f(d["effective_n"]["mean"], ".1f"),
            ]
            if truth:
                c = d.get("correctness", {})
                r += [
                    _f(c.get("prefix_blame"), ".3f"),
                    _f(c.get("error_lift"), ".2f"),
                    _f(c.get("top1_hit"), ".2f"),
                    _f(c.get("top3_hit"), ".2f"),
                    _f(c.get("result_share"), ".2f"),
                    _f(c.get("template_share"), ".2f"),
                ]
            rows.append([*r, d["regime"]])
    widths = [len(h) for h in head]
    for r in rows:
        if len(r) == len(head):
            widths = [max(w, len(x)) for w, x in zip(widths, r, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    for r in rows:
        if len(r) < len(head):  # an undefined scheme: its text spans the columns
            out.append(
                "  ".join(x.ljust(w) for x, w in zip(r[:3], widths, strict=False)) + "  " + r[3]
            )
        else:
            out.append("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(out)


def _short_label(label: str, width: int = 28) -> str:
    return label if len(label) <= width else "..." + label[-(width - 3) :]


def _props_text(m: dict[str, Any]) -> list[str]:
    p1, p2, p3 = m["prop1"], m["prop2"], m["prop3"]
    lines = [
        "  The paper's propositions (Appendix C.6-C.7), checked:",
        f"  L = ||W_lm||_op = {m['L']:.4g}    beta = max_t ||dh_t|| = {p2['beta']:.4g}",
        f"  Prop. 2  |dlogp_t| <= 2 L beta = {p2['bound']:.4g}: max |dlogp| = {p2['max_abs_dlogp']:.4g} "
        f"(ratio {_f(p2['ratio'])}; tightest per-token ratio |dlogp_t| / (2 L ||dh_t||) = "
        f"{_f(p2['token_ratio'])}); {p2['violations']} of {p2['tokens']} tokens over the bound",
        f"  Prop. 1  as stated (4 L beta / sum alpha_ref): holds for {p1['holds_stated']}/{p1['completions']} "
        f"completions (median l1/bound {_f(p1['median_l1_over_stated'])}); corrected "
        f"(4 L sum_t ||dh_t|| / sum alpha_ref): {p1['holds_corrected']}/{p1['completions']} "
        f"(median {_f(p1['median_l1_over_corrected'])}); the stated constant lacks a factor T, "
        "see docs/diagnose.md",
        f"  Prop. 3  Var_t(alpha_ARCA) >= max_l V_l in {p3['holds']}/{p3['comparable']} completions "
        f"(median ratio {_f(p3['ratio_median'])}; the largest V_l is most often "
        f"{p3['dominant_module']}, in {_f(100 * p3['dominant_share'], '.0f')}% of completions; "
        f"{p3['modules']} LoRA modules)"
        if p3["comparable"]
        else "  Prop. 3  no adapter contribution to compare (all B = 0)",
    ]
    lines += [f"  FINDING: {f}" for f in findings(m)]
    return lines


def findings(res: dict[str, Any]) -> list[str]:
    """Violated bounds of one LoRA policy, each with the offending completion."""
    out = []
    p2 = res["prop2"]
    if p2["violations"]:
        v = p2["first_violation"]
        out.append(
            f"Prop. 2 fails on {p2['violations']} tokens, first at completion {v['completion']} "
            f"({v['where']}), position {v['position']}"
            + (
                " (the adapter changes lm_head, which the bound assumes fixed)"
                if res["adapter"]["targets_head"]
                else ""
            )
        )
    for ex in res["prop1"]["stated_violations"][:1]:
        out.append(
            f"Prop. 1's stated constant fails for {res['prop1']['completions'] - res['prop1']['holds_stated']} "
            f"completions, e.g. completion {ex['completion']} ({ex['where']}, T = {ex['tokens']}): "
            f"l1 = {ex['l1']:.4g} > 4 L beta / sum alpha_ref = {ex['stated']:.4g}; the stated constant "
            "lacks a factor T (docs/diagnose.md); the corrected bound "
            + ("holds." if not res["prop1"]["corrected_violations"] else "fails too.")
        )
    for ex in res["prop1"]["corrected_violations"][:1]:
        out.append(
            f"Prop. 1's corrected bound fails at completion {ex['completion']} ({ex['where']}): "
            f"l1 = {ex['l1']:.4g} > {ex['corrected']:.4g}"
        )
    return out


def report_markdown(res: dict[str, Any], title: str) -> str:
    import html

    body = html.escape(format_summary(res), quote=False)
    lines = [f"# {html.escape(title, quote=False)}", "", "```", body, "```", ""]
    lines += ["[tokens.html](tokens.html): the first completions, one column per scheme.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI


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
    add_locator_arguments(p)
    p.add_argument("--out", default="runs/diagnose")
    p.set_defaults(func=_main)


def choose_locator(kind: str, exact: ErrorLocator | None, graded: bool, task: str) -> str:
    """Which ground truth ``--locator`` asks for on this task: ``exact``,
    ``mc`` or ``none``; an error naming the fix when it cannot be had."""
    if kind == "auto":
        return "exact" if exact is not None else "mc" if graded else "none"
    if kind == "exact" and exact is None:
        raise ValueError(
            f"--locator exact: the {task} task has no exact locator (arithmetic has one, a "
            "custom task names its error_locator); use --locator mc"
        )
    if kind == "mc" and not graded:
        raise ValueError(
            "--locator mc: grading continuations needs the task's reward: give --task or --config"
        )
    return kind


@dataclass
class Truth:
    """The ground truth of one diagnosis: which (``record``, diagnose.json's
    ``"locator"``) and, for Monte-Carlo, the locations and their agreement
    with the exact locator where the task has one."""

    kind: str
    record: dict[str, Any]
    locate: ErrorLocator | None = None
    located: list[Located | None] | None = None
    results: list[MCResult] | None = None
    key: str | None = None
    agreement: dict[str, Any] | None = None


def monte_carlo_truth(
    estimator: nn.Module,
    tokenizer: Any,
    items: Sequence[Completion],
    *,
    score: Callable[..., list[float]],
    correct_reward: float,
    settings: MCSettings,
    estimator_label: str,
    grader: str,
    exact: ErrorLocator | None = None,
    rule: StepRule = step_boundaries,
    progress: Callable[[int], None] | None = None,
) -> Truth:
    """Locate every item's first error by Monte-Carlo values (:mod:`arca.tasks.mc`)
    with ``estimator`` (used as given: in eval mode, its adapter state set);
    items whose cached location (:attr:`Completion.mc`) has the same key are
    not located again. With ``exact``, also the agreement of the two."""
    t0 = time.perf_counter()
    key = cache_key(settings, estimator_label, grader)
    results: list[MCResult | None] = [
        MCResult.from_record(c.mc) if c.mc and c.mc.get("key") == key else None for c in items
    ]
    todo = [i for i, r in enumerate(results) if r is None]
    loc = MonteCarloLocator(
        estimator, tokenizer, score, correct_reward=correct_reward, settings=settings, rule=rule
    )
    if todo:
        with eval_mode(estimator):
            fresh = loc.locate(
                [items[i].prompt_ids for i in todo],
                [items[i].completion_ids for i in todo],
                [items[i].row for i in todo],
                progress=progress,
            )
        for i, r in zip(todo, fresh, strict=True):
            results[i] = r
    done = [r for r in results if r is not None]
    special = frozenset(int(t) for t in tokenizer.all_special_ids)
    located_list: list[Located | None] = []
    pairs: dict[str, list[tuple[int | None, int | None, list[int]]]] = {"hard": [], "soft": []}
    for c, r in zip(items, done, strict=True):
        text, spans = token_spans(tokenizer, c.completion_ids)
        located_list.append(mc_located(r, text, spans))
        if exact is None or r.status == "correct":
            continue
        eos = tokenizer.eos_token_id
        ex = locate_tokens(exact(c.row, text), text, spans, c.completion_ids, eos)
        if ex.correct:
            continue
        steps = token_cuts(text, spans, c.completion_ids, special=special)
        for variant, soft in (("hard", False), ("soft", True)):
            mc = locate_tokens(
                mc_located(r, text, spans, soft=soft), text, spans, c.completion_ids, eos
            )
            pairs[variant].append((ex.error_token, mc.error_token, steps))
    wrong = [r for r in done if r.status != "correct"]
    reasons: dict[str, int] = {}
    for r in wrong:
        if r.status == "not_locatable":
            reasons[r.reason or "?"] = reasons.get(r.reason or "?", 0) + 1
    segs = [len(r.cuts) - 1 for r in wrong]
    record = {
        "kind": "mc",
        "description": describe(settings, estimator_label),
        **asdict(settings),
        "model": estimator_label,
        "grader": grader,
        # Generated in this run: identical prefixes share their continuations,
        # and cached locations (same key) cost none.
        "continuations": loc.continuations,
        "cached": len(items) - len(todo),
        "wrong": len(wrong),
        "located": sum(r.status == "located" for r in wrong),
        "not_locatable": reasons,
        "per_wrong": {
            # What the search asked for: k per prefix value it needed.
            "queried": sum(r.continuations for r in wrong) / len(wrong) if wrong else 0.0,
            "generated": loc.continuations / len(wrong)
            if wrong and not len(items) - len(todo)
            else None,
            "binary_bound": sum(binary_bound(s, settings.k) for s in segs) / len(segs)
            if segs
            else 0.0,
            "all_prefixes": sum(settings.k * s for s in segs) / len(segs) if segs else 0.0,
            "steps": sum(segs) / len(segs) if segs else 0.0,
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "key": key,
    }
    agree = None
    if exact is not None:
        agree = agreement(pairs["hard"]) | {"soft": agreement(pairs["soft"])}
    return Truth("mc", record, located=located_list, results=done, key=key, agreement=agree)


def _estimator(choice: str, models: Models, base: str, dtype: str) -> tuple[Any, str]:
    """The context giving ``--mc-model``'s estimating model, and its label
    (the base model's label names the folder it was loaded from, which for
    arca's tiny models holds its build hash)."""
    if choice == "base":
        return models.base_ctx(), f"the base model {base} ({resolve(base)})"
    if choice == "policy":
        if not models.policies:
            raise ValueError(
                "--mc-model policy: no policy given (--adapter or --ref-model/--model)"
            )
        pol = models.policies[-1]
        return pol.active(), f"policy {pol.label}"
    path = Path(choice)
    if (path / "adapter_config.json").is_file():
        m, _ = load_policy(base, str(path), dtype=dtype)
        return nullcontext(m), f"adapter {path.resolve()} on {base}"
    if path.is_dir() or choice in ("tiny", "tiny-l1", "smollm2"):
        m, _ = load_policy(choice, dtype=dtype)
        return nullcontext(m), f"model {choice} ({resolve(choice)})"
    raise ValueError(
        f"--mc-model: {choice!r} is not base, policy, a model folder or a LoRA adapter folder"
    )


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
        ctx, label = _estimator(args.mc_model, models, base, args.dtype)
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
