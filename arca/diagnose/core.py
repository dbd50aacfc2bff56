"""The diagnosis itself: every scheme's weights on the same completions for the
base model and each policy, their concentration, credit correctness, drift,
rank correlations and, for LoRA policies, the paper's propositions checked.

The field's schemes beside the paper's (:data:`FIELD_SCHEMES`):

- ``oracle`` (a ceiling: it reads the ground truth), wherever the diagnosis has
  one. Completions have no advantages here, so every wrong completion with a
  located first error is treated as pushed down (a negative advantage);
- ``ktae`` and ``lambda_grpo``, where the completions can be rewarded (a task
  given): the completions of one prompt are a group (sampled ones:
  ``--group-size`` per prompt; read from a file: the rows that share a prompt
  text), each completion's advantage GRPO's ``(R - mean) / (std + 1e-4)`` of the
  task's reward within its group (TRL's constant; a group of one gets 0), and
  KTAE counts as correct a reward of at least ``correct_reward``. They are
  graded on their own token advantages (signed metrics, on the rows with a
  negative advantage, as in training) and are the same for every model: they
  read only the completions and their rewards;
- ``oar_g`` with ``oar=True`` (``arca diagnose --oar-g``): its saliency needs
  one no-grad forward, one forward with a graph and one backward to the input
  embeddings per batch and model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from arca.credit import (
    BUILTIN_SCHEMES,
    FIELD_SCHEMES,
    METRICS,
    classify_regime,
    compares_with_base,
    correctness_summary,
    credit_correctness,
    effective_token_ratio,
    gini,
    mass_ratio,
    rank_correlation,
    sign_flip_share,
    signed_credit_correctness,
    token_credit,
)
from arca.credit.diagnostics import SPARSE_RATIO_BELOW, UNIFORM_GINI_BELOW
from arca.credit.schemes import hidden_residual_norm
from arca.credit.weights import token_weights
from arca.diagnose.completions import Completion, batch
from arca.diagnose.policies import Models, Policy, adapter_state
from arca.scoring import (
    capture_adapter_shift,
    completion_token_stats,
    outcome_saliency,
    token_kl,
    writes_residual,
)
from arca.tasks.base import ErrorLocator, Located
from arca.tasks.locate import answer_starts, ground_truth
from arca.theory import (
    capture_lora_contributions,
    check_prop1,
    check_prop2,
    check_prop3,
    lm_head_weight,
    operator_norm,
)

#: Scored for every policy (``arca_local`` too when the adapter writes into the
#: residual stream); on the base model, those that compare a policy with it are
#: undefined (:func:`arca.credit.compares_with_base`).
SCHEMES = tuple(s for s in BUILTIN_SCHEMES if s != "arca_local")


BASE_SCHEMES = tuple(s for s in SCHEMES if not compares_with_base(s))

#: The order of a model's schemes in the result.
ORDER = (*SCHEMES, "arca_local", *FIELD_SCHEMES)

#: GRPO's constant in the std of a group's rewards, as TRL computes advantages.
ADVANTAGE_EPS = 1e-4


HTML_COUNT = 6


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
        signed: dict[str, torch.Tensor] | None = None,
        advantages: torch.Tensor | None = None,
    ) -> None:
        """``signed``: the token advantages of the schemes of kind advantages
        (their ``weights`` are the shares of each row's push), graded by the
        signed metrics on the rows whose ``advantages`` ``(B,)`` are negative."""
        n = mask.sum(dim=1).to(torch.float64)
        signed = signed or {}
        for s, w in weights.items():
            d = self.per.setdefault(s, {})
            e = effective_token_ratio(w, mask).cpu()
            vals = {"gini": gini(w, mask).cpu(), "effective_ratio": e, "effective_n": e * n.cpu()}
            if s in signed:
                assert advantages is not None
                vals["sign_flip_share"] = sign_flip_share(signed[s], mask, advantages)
                vals["mass_ratio"] = mass_ratio(signed[s], mask, advantages)
            if truth is not None and s in signed:
                vals |= signed_credit_correctness(
                    signed[s],
                    mask,
                    truth["error_index"],
                    advantages=advantages,
                    correct=truth["correct"],
                    result_mask=truth["result_mask"],
                    template_mask=truth["template_mask"],
                )
            elif truth is not None:
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
            for k in ("sign_flip_share", "mass_ratio"):  # schemes that change the push
                if k in cat:
                    entry[k] = _quantiles(cat[k])["mean"]
            if "prefix_blame" in cat:
                entry["correctness"] = correctness_summary({k: cat[k] for k in METRICS if k in cat})
            schemes[s] = entry
        ordered = {s: schemes[s] for s in ORDER if s in schemes}
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


def prompt_groups(items: Sequence[Completion]) -> torch.Tensor:
    """``(N,)`` long: the completions of one prompt text are a group."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(c.prompt, len(ids)) for c in items], dtype=torch.long)


def grouped_advantages(rewards: Sequence[float], group: torch.Tensor) -> torch.Tensor:
    """GRPO's advantages within each group, as TRL computes them:
    ``(R - mean) / (std + 1e-4)`` with the unbiased std; a group of one, or of
    equal rewards, gets 0. ``(N,)`` float64."""
    r = torch.tensor([float(x) for x in rewards], dtype=torch.float64)
    adv = torch.zeros_like(r)
    for g in torch.unique(group):
        rows = group == g
        if int(rows.sum()) < 2:
            continue
        x = r[rows]
        adv[rows] = (x - x.mean()) / (x.std(correction=1) + ADVANTAGE_EPS)
    return adv


def group_credit(
    items: Sequence[Completion],
    rewards: Sequence[float],
    tokenizer: Any,
    *,
    correct_reward: float = 1.0,
) -> dict[str, torch.Tensor]:
    """``ktae``'s and ``lambda_grpo``'s token advantages and weights of every
    completion, right-padded ``(N, T_max)`` as :func:`batch` lays completions
    out (a diagnosis slices its batches from them), with ``advantages``
    ``(N,)`` and ``group`` ``(N,)``. KTAE's correctness: reward at least
    ``correct_reward``; its zeroed ids: the end-of-sequence and pad tokens, as
    in training."""
    if len(rewards) != len(items):
        raise ValueError(f"{len(rewards)} rewards for {len(items)} completions")
    T = max(len(c.completion_ids) for c in items)
    ids = torch.zeros(len(items), T, dtype=torch.long)
    mask = torch.zeros(len(items), T, dtype=torch.bool)
    for i, c in enumerate(items):
        ids[i, : len(c.completion_ids)] = torch.tensor(c.completion_ids)
        mask[i, : len(c.completion_ids)] = True
    group = prompt_groups(items)
    adv = grouped_advantages(rewards, group).float()
    correct = torch.tensor([float(x) >= correct_reward for x in rewards])
    zero = tuple(t for t in {tokenizer.eos_token_id, tokenizer.pad_token_id} if t is not None)
    out = {"advantages": adv, "group": group}
    for name, extra, opts in (
        ("ktae", {"correct": correct}, {"zero_token_ids": zero}),
        ("lambda_grpo", {}, None),
    ):
        a, w = token_credit(
            name,
            mask=mask,
            advantages=adv,
            completion_ids=ids,
            group=group,
            options=opts,
            **extra,
        )
        out[name], out[f"weights/{name}"] = a, w
    return out


def _field_weights(
    start: int,
    mask: torch.Tensor,
    truth: dict[str, torch.Tensor] | None,
    grouped: dict[str, torch.Tensor] | None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
    """The model-independent field schemes on one batch: ``(weights, signed
    token advantages, the rows' advantages)``. The oracle treats every
    located wrong completion as negative (no advantages here)."""
    weights: dict[str, torch.Tensor] = {}
    signed: dict[str, torch.Tensor] = {}
    adv = None
    B, C = mask.shape
    if truth is not None:
        err = truth["error_index"]
        pushed_down = torch.where(err >= 0, -1.0, 1.0).to(mask.device)
        weights["oracle"] = token_weights(
            "oracle", mask=mask, error_index=err, advantages=pushed_down
        )
    if grouped is not None:
        rows = slice(start, start + B)
        adv = grouped["advantages"][rows].to(mask.device)
        for name in ("ktae", "lambda_grpo"):
            signed[name] = grouped[name][rows, :C].to(mask.device)
            weights[name] = grouped[f"weights/{name}"][rows, :C].to(mask.device)
    return weights, signed, adv


def _oar_weights(
    model: nn.Module,
    ids: torch.Tensor,
    attn: torch.Tensor,
    mask: torch.Tensor,
    tokenizer: Any,
    seed: int,
) -> torch.Tensor:
    """OAR-G's weights for one batch under ``model`` (its own passes; arca's
    defaults: quantile 0.5, beta 1, noise std 1e-3, the noise seeded by ``seed``)."""
    C = mask.shape[1]
    start = answer_starts(tokenizer, ids[:, -C:], mask)
    sal = outcome_saliency(
        model, ids, attn, mask, start, generator=torch.Generator().manual_seed(seed)
    )
    return token_weights("oar_g", mask=mask, saliency=sal, answer_start=start)


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
    rewards: Sequence[float] | None = None,
    correct_reward: float = 1.0,
    oar: bool = False,
    seed: int = 1337,
) -> dict[str, Any]:
    """Score ``items`` with the base model and every policy in ``models``;
    returns the JSON-ready result (see the module docstring). The ground
    truth of the credit-correctness metrics: ``locate``, the task's error
    locator, or ``located``, one location per item made beforehand (the
    Monte-Carlo locator's, :mod:`arca.tasks.mc`). ``rewards``: each item's
    task reward, which ``ktae`` and ``lambda_grpo`` need (skipped without);
    ``oar``: score ``oar_g`` too (its own passes, noise seeded by ``seed``)."""
    if not items:
        raise ValueError("no completions to diagnose")
    grouped = (
        group_credit(items, rewards, tokenizer, correct_reward=correct_reward)
        if rewards is not None
        else None
    )
    device = next(models.base.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    L = operator_norm(lm_head_weight(models.base))
    # Base pass once per batch, kept (on the CPU) for every policy.
    base_rows, cache = _Rows(), []
    truth_summary: dict[str, Any] = {"wrong": 0, "located": 0, "correct": 0, "first_error_step": {}}
    has_truth = locate is not None or located is not None
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, attn, mask = (t.to(device) for t in batch(chunk, pad))
        C = mask.shape[1]
        with models.base_ctx() as m:
            b = completion_token_stats(m, ids, attn, C)
            oar_w = _oar_weights(m, ids, attn, mask, tokenizer, seed + start) if oar else None
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
        field = _field_weights(start, mask, truth, grouped)
        bw |= field[0] | ({"oar_g": oar_w} if oar_w is not None else {})
        base_rows.add(bw, mask, truth, field[1], field[2])
        cache.append(
            {k: v.cpu() for k, v in b.items()}
            | {"truth": truth, "start": start, "weights": {k: v.cpu() for k, v in bw.items()}}
            | {"field": field}
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
                    seed if oar else None,
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
        "field_schemes": {
            "oracle": "ceiling: uses the ground truth; every located wrong completion treated "
            "as negative (share 0.5 on its first wrong token, the rest uniform)"
            if has_truth
            else "not scored: no ground truth",
            "ktae, lambda_grpo": (
                f"groups: completions sharing a prompt ({int(grouped['group'].max()) + 1} "
                f"groups); advantages: GRPO (R - mean) / (std + {ADVANTAGE_EPS:g}) of the "
                f"task's reward in each group; KTAE's correct: reward >= {correct_reward:g}"
            )
            if grouped is not None
            else "not scored: no task reward for these completions",
            "oar_g": "scored (quantile 0.5, beta 1, noise std 1e-3; arca's defaults)"
            if oar
            else "not scored (arca diagnose --oar-g: one forward with a graph and one backward "
            "more per batch and model)",
        },
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
    oar_seed: int | None = None,
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
        ids, attn, mask = (t.to(device) for t in batch(chunk, pad))
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
        weights, signed, adv = c["field"]  # the same completions and rewards for every model
        w |= weights
        if oar_seed is not None:
            w["oar_g"] = _oar_weights(model, ids, attn, mask, tokenizer, oar_seed + c["start"])
        rows.add(w, mask, c["truth"], signed, adv)
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
