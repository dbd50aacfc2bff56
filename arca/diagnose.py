"""``arca diagnose``: does token credit degenerate on *your* model and adapter?

For a base model, an optional LoRA adapter (trained with any framework, saved
with peft's ``save_pretrained``) and a set of completions (a JSONL file of
``{"prompt", "completion"}`` rows, e.g. a run's ``samples.jsonl`` or any
framework's rollouts; or sampled from the adapted model on a task), it
computes every scheme's per-token weights from one adapted and one
adapter-disabled pass per batch and reports:

- per scheme (``arca_local`` too when the adapter has LoRA on a layer that
  writes into the residual stream): Gini and effective-token ratio (mean and 10/50/90% quantiles
  over completions) and the regime (uniform broadcast / middle / spuriously
  sparse, thresholds stated);
- Spearman rank correlations between the schemes' weights;
- the paper's propositions checked numerically (:mod:`arca.theory`):
  ``L = ||W_lm||_op``, ``beta``, Prop. 2's bound, Prop. 1's stated and
  corrected bounds, Prop. 3's variances from hooks on the LoRA layers; a
  violated bound is printed as a finding with the completion;
- ``tokens.html`` with the first completions coloured by each scheme's weights.

Outputs: ``OUT/diagnose.json``, ``OUT/report.md``, ``OUT/tokens.html`` and
``OUT/completions.jsonl`` (the completions diagnosed, to reuse with
``--completions`` on another checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arca.credit import classify_regime, effective_token_ratio, gini, rank_correlation
from arca.credit.diagnostics import SPARSE_RATIO_BELOW, UNIFORM_GINI_BELOW
from arca.credit.schemes import hidden_residual_norm
from arca.credit.weights import token_weights
from arca.io import atomic_write_json, atomic_write_text
from arca.scoring import (
    capture_adapter_shift,
    completion_token_stats,
    scheme_inputs,
    writes_residual,
)
from arca.theory import (
    capture_lora_contributions,
    check_prop1,
    check_prop2,
    check_prop3,
    lm_head_weight,
    operator_norm,
)

SCHEMES = ("uniform", "surprisal", "entropy", "divergence", "arca")
HTML_COUNT = 6


@dataclass
class Completion:
    prompt: str
    prompt_ids: list[int]
    completion_ids: list[int]
    where: str  # "FILE:LINE" or "task problem i, sample j"


# ------------------------------------------------------------------ input


def read_completions(path: str | Path, tokenizer: Any) -> list[Completion]:
    """Completions from a JSONL file: one object per line with ``prompt`` (str)
    and ``completion`` (str) or ``tokens`` (list of str, as in a run's
    ``samples.jsonl``). A malformed line is an error naming the file and line."""
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
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: 'prompt' must be a string")
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
        out.append(Completion(prompt, pids, ids, where))
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
) -> list[Completion]:
    """``n`` completions: ``group_size`` samples (temperature 1, top-p 0.95, as
    in GRPO rollouts) for each of the first ``ceil(n / group_size)`` rows."""
    from arca.evaluate import generate

    k = max(1, group_size)
    prompts = [r["prompt"] for r in rows[: math.ceil(n / k)]]
    if len(prompts) * k < n:
        raise ValueError(f"--samples {n}: the task has only {len(rows)} held-out problems")
    torch.manual_seed(seed)
    texts = generate(
        model, tokenizer, prompts, num_samples=k, greedy=False, max_new_tokens=max_new_tokens
    )
    out = []
    for i, (p, group) in enumerate(zip(prompts, texts, strict=True)):
        pids = tokenizer(p, add_special_tokens=False)["input_ids"]
        for j, t in enumerate(group):
            ids = tokenizer(t, add_special_tokens=False)["input_ids"]
            if ids and len(out) < n:
                out.append(Completion(p, pids, ids, f"problem {i}, sample {j}"))
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


# ------------------------------------------------------------------ adapter


def adapter_state(model: nn.Module) -> dict[str, Any]:
    """``{"present", "zero", "modules", "rank", "targets_head"}`` of the LoRA adapter."""
    if not hasattr(model, "disable_adapter"):
        return {"present": False, "zero": True, "modules": 0, "rank": None, "targets_head": False}
    bs = [(n, p) for n, p in model.named_parameters() if "lora_B" in n]
    ranks = {p.shape[1] for _, p in bs}
    return {
        "present": True,
        "zero": all(bool((p == 0).all()) for _, p in bs),
        "modules": len(bs),
        "rank": max(ranks) if ranks else None,
        "targets_head": any("lm_head" in n for n, _ in bs),
    }


# ------------------------------------------------------------------ core


def _quantiles(x: torch.Tensor) -> dict[str, float]:
    x = x[~x.isnan()].double()
    if x.numel() == 0:
        return {"mean": math.nan, "p10": math.nan, "p50": math.nan, "p90": math.nan}
    q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"mean": float(x.mean()), "p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


@torch.no_grad()
def diagnose(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[Completion],
    *,
    eps: float = 1e-8,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Weights, concentration, correlations and the propositions' checks for
    ``items``. Returns a JSON-ready dict (see the module docstring)."""
    if not items:
        raise ValueError("no completions to diagnose")
    state = adapter_state(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    L = operator_norm(lm_head_weight(model))
    # arca_local reads the LoRA layers that write into the residual stream.
    local = state["present"] and writes_residual(model)
    schemes = SCHEMES + (("arca_local",) if local else ())
    per: dict[str, dict[str, list[torch.Tensor]]] = {s: {"gini": [], "eff": []} for s in schemes}
    corr: dict[tuple[str, str], list[torch.Tensor]] = {}
    p1: dict[str, list[torch.Tensor]] = {}
    p3: dict[str, list[Any]] = {"var_arca": [], "max_v": [], "ratio": [], "argmax": []}
    p2_parts: list[dict[str, Any]] = []
    lengths: list[int] = []
    html: list[dict[str, Any]] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, attn, mask = (t.to(device) for t in _batch(chunk, pad))
        C = mask.shape[1]
        if state["present"]:
            shift = capture_adapter_shift(model, C) if local else nullcontext([])
            with capture_lora_contributions(model, C) as contrib, shift as shifts:
                inputs = scheme_inputs(model, ids, attn, C)
            if local:
                inputs["h_shift"] = shifts[0]
        else:  # the base model alone: no shift, no residual
            contrib = {}
            on = completion_token_stats(model, ids, attn, C)
            inputs = {
                "logps": on["logps"],
                "entropies": on["entropies"],
                "h_adapted": on["hidden"],
                "ref_logps": on["logps"],
                "h_base": on["hidden"],
            }
        weights = {s: token_weights(s, mask=mask, eps=eps, **inputs) for s in schemes}
        for s, w in weights.items():
            per[s]["gini"].append(gini(w, mask).cpu())
            per[s]["eff"].append(effective_token_ratio(w, mask).cpu())
        ranked = schemes[1:]  # uniform weights have no ranking
        for i, a in enumerate(ranked):
            for b in ranked[i + 1 :]:
                corr.setdefault((a, b), []).append(
                    rank_correlation(weights[a], weights[b], mask).cpu()
                )
        resid = hidden_residual_norm(inputs["h_adapted"], inputs["h_base"]).float()
        r2 = check_prop2(inputs["logps"], inputs["ref_logps"], resid, mask, L)
        if r2["first_violation"] is not None:
            r2["first_violation"][0] += start
        p2_parts.append(r2)
        for k, v in check_prop1(inputs["logps"], inputs["ref_logps"], resid, mask, L, eps).items():
            p1.setdefault(k, []).append(v.cpu())
        stacked = {k: torch.cat(v, dim=0) for k, v in contrib.items()}
        r3 = check_prop3(resid, stacked, mask)
        for k in ("var_arca", "max_v", "ratio"):
            p3[k].append(r3[k].cpu())
        p3["argmax"] += r3["argmax"]
        lengths += mask.sum(dim=1).tolist()
        for j, c in enumerate(chunk):
            if len(html) >= HTML_COUNT:
                break
            n = len(c.completion_ids)
            html.append(
                {
                    "index": start + j,
                    "where": c.where,
                    "prompt": c.prompt,
                    "tokens": [tokenizer.decode([t]) for t in c.completion_ids],
                    "weights": {s: [float(x) for x in w[j, :n]] for s, w in weights.items()},
                }
            )
        if progress is not None:
            progress(len(chunk))
    return _summarise(items, state, L, eps, per, corr, p1, p2_parts, p3, lengths, html)


def _summarise(
    items: Sequence[Completion],
    state: dict[str, Any],
    L: float,
    eps: float,
    per: dict[str, dict[str, list[torch.Tensor]]],
    corr: dict[tuple[str, str], list[torch.Tensor]],
    p1: dict[str, list[torch.Tensor]],
    p2_parts: list[dict[str, Any]],
    p3: dict[str, list[Any]],
    lengths: list[int],
    html: list[dict[str, Any]],
) -> dict[str, Any]:
    schemes = {}
    for s, d in per.items():
        g, e = torch.cat(d["gini"]), torch.cat(d["eff"])
        gq, eq = _quantiles(g), _quantiles(e)
        schemes[s] = {
            "gini": gq,
            "effective_ratio": eq,
            "regime": classify_regime(gq["mean"], eq["mean"]),
        }
    correlations = {
        f"{a}~{b}": float(torch.cat(v).nanmean()) if not torch.cat(v).isnan().all() else math.nan
        for (a, b), v in corr.items()
    }
    beta = max(r["beta"] for r in p2_parts)
    max_d = max(r["max_abs_dlogp"] for r in p2_parts)
    viol = sum(r["violations"] for r in p2_parts)
    first = next((r["first_violation"] for r in p2_parts if r["first_violation"]), None)
    prop2 = {
        "beta": beta,
        "bound": 2 * L * beta,
        "max_abs_dlogp": max_d,
        "ratio": max_d / (2 * L * beta) if beta > 0 else (0.0 if max_d == 0 else math.inf),
        "token_ratio": max(r["token_ratio"] for r in p2_parts),
        "violations": viol,
        "tokens": sum(r["tokens"] for r in p2_parts),
        "first_violation": (
            {"completion": first[0], "position": first[1], "where": items[first[0]].where}
            if first
            else None
        ),
    }
    c = {k: torch.cat(v) for k, v in p1.items()}
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
    prop1 = {
        "completions": len(items),
        "holds_stated": int(c["holds_stated"].sum()),
        "holds_corrected": int(c["holds_corrected"].sum()),
        "median_l1_over_stated": float((c["l1"][active] / c["stated"][active]).median())
        if active.any()
        else math.nan,
        "median_l1_over_corrected": float((c["l1"][active] / c["corrected"][active]).median())
        if active.any()
        else math.nan,
        "stated_violations": [_example(i) for i in bad_stated[:5]],
        "corrected_violations": [_example(i) for i in bad_corr[:5]],
    }
    ratio = torch.cat(p3["ratio"])
    var_a, max_v = torch.cat(p3["var_arca"]), torch.cat(p3["max_v"])
    names = [n for n in p3["argmax"] if n]
    top = max(set(names), key=names.count) if names else None
    prop3 = {
        "modules": state["modules"],
        "var_arca_median": float(var_a.median()),
        "max_v_median": float(max_v.nanmedian()) if not max_v.isnan().all() else math.nan,
        "ratio_median": float(ratio.nanmedian()) if not ratio.isnan().all() else math.nan,
        "holds": int((var_a >= max_v).sum()),
        "comparable": int((~max_v.isnan()).sum()),
        "dominant_module": top,
        "dominant_share": names.count(top) / len(names) if names else math.nan,
    }
    return {
        "completions": len(items),
        "tokens": int(sum(lengths)),
        "eps": eps,
        "thresholds": {
            "uniform_gini_below": UNIFORM_GINI_BELOW,
            "sparse_ratio_below": SPARSE_RATIO_BELOW,
        },
        "adapter": state,
        "L": L,
        "schemes": schemes,
        "rank_correlation": correlations,
        "prop1": prop1,
        "prop2": prop2,
        "prop3": prop3,
        "samples": html,
    }


# ------------------------------------------------------------------ text


def adapter_message(state: dict[str, Any]) -> str | None:
    """The plain statement for an absent or untrained adapter, else None."""
    if not state["present"]:
        return (
            "No adapter: the adapted and base models are the same, so divergence and ARCA "
            "have no signal and their weights are uniform by construction."
        )
    if state["zero"]:
        return (
            "The adapter's B matrices are all zero (a freshly initialised LoRA adapter): "
            "ARCA has no signal yet and its weights are uniform by construction, as are "
            "divergence's."
        )
    return None


def format_summary(res: dict[str, Any]) -> str:
    lines = []
    msg = adapter_message(res["adapter"])
    if msg:
        lines += [msg, ""]
    head = f"{'scheme':<11} {'Gini mean [p10, p50, p90]':<28} {'EffN/T mean [p10, p50, p90]':<30} regime"
    lines.append(head)
    for s, d in res["schemes"].items():
        g, e = d["gini"], d["effective_ratio"]
        lines.append(
            f"{s:<11} {g['mean']:.3f} [{g['p10']:.2f}, {g['p50']:.2f}, {g['p90']:.2f}]      "
            f"{e['mean']:.3f} [{e['p10']:.2f}, {e['p50']:.2f}, {e['p90']:.2f}]        {d['regime']}"
        )
    t = res["thresholds"]
    lines += [
        f"(regimes of the mean: uniform broadcast if Gini < {t['uniform_gini_below']}, "
        f"spuriously sparse if EffN/T < {t['sparse_ratio_below']}, else middle; eps = {res['eps']:g})",
        "",
        "Spearman rank correlation of the weights (mean over completions):",
    ]
    lines += [f"  {k.replace('~', ' ~ '):<26} {_f(v)}" for k, v in res["rank_correlation"].items()]
    p1, p2, p3 = res["prop1"], res["prop2"], res["prop3"]
    lines += [
        "",
        "The paper's propositions (Appendix C.6-C.7), checked:",
        f"  L = ||W_lm||_op = {res['L']:.4g}    beta = max_t ||dh_t|| = {p2['beta']:.4g}",
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
        f"{p3['dominant_module']}, {_f(p3['dominant_share'])} of completions; {p3['modules']} LoRA modules)"
        if p3["comparable"]
        else "  Prop. 3  no adapter contribution to compare (no LoRA modules, or all B = 0)",
    ]
    for f in findings(res):
        lines.append(f"  FINDING: {f}")
    return "\n".join(lines)


def findings(res: dict[str, Any]) -> list[str]:
    """Violated bounds, each with the offending completion."""
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


def _f(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def report_markdown(res: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "```", format_summary(res), "```", ""]
    lines += ["[tokens.html](tokens.html): the first completions, one column per scheme.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="token-signal degeneration on any model + LoRA adapter, with the paper's bounds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="tiny", help="'tiny', 'smollm2', a model folder, or a Hub id")
    p.add_argument("--adapter", help="a LoRA adapter folder (peft save_pretrained)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--completions", help="JSONL of {prompt, completion} (or samples.jsonl)")
    src.add_argument(
        "--task", choices=["arithmetic", "math", "gsm8k"], help="sample from this task"
    )
    p.add_argument("--samples", type=int, default=32, help="completions to sample with --task")
    p.add_argument("--group-size", type=int, default=4, help="samples per prompt with --task")
    p.add_argument("--data", help="MATH/GSM8K source for --task")
    p.add_argument("--level", type=int, default=1)
    p.add_argument("--few-shot", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--eps", type=float, default=1e-8, help="normalisation floor (paper eq. 8)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default="runs/diagnose")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from arca.evaluate import load_policy

    if args.samples < 1 or args.batch_size < 1 or args.eps < 0:
        raise ValueError("--samples and --batch-size must be >= 1 and --eps >= 0")
    t0 = time.perf_counter()
    model, tok = load_policy(args.model, args.adapter, dtype=args.dtype)
    model.eval()
    if args.completions:
        items = read_completions(args.completions, tok)
    else:
        from arca.tasks.loaders import load_task

        task = load_task(
            args.task, args.data, level=args.level, few_shot=args.few_shot, train_size=1
        )
        items = sample_completions(
            model,
            tok,
            task.heldout.to_list(),
            args.samples,
            group_size=args.group_size,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
    bar = tqdm(total=len(items), desc="diagnose", unit="completion")
    res = diagnose(model, tok, items, eps=args.eps, batch_size=args.batch_size, progress=bar.update)
    bar.close()
    res["model"], res["adapter_path"] = args.model, args.adapter
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    atomic_write_json(out / "diagnose.json", res)
    title = f"arca diagnose: {args.model}" + (f" + {args.adapter}" if args.adapter else "")
    atomic_write_text(out / "report.md", report_markdown(res, title))
    # The exact completions, to diagnose other checkpoints on the same text.
    atomic_write_text(
        out / "completions.jsonl",
        "".join(
            json.dumps(
                {"prompt": c.prompt, "completion": tok.decode(c.completion_ids), "where": c.where}
            )
            + "\n"
            for c in items
        ),
    )
    from arca.report.tokens import render

    atomic_write_text(
        out / "tokens.html",
        render(title, res["samples"], title="arca diagnose: token weights", source="diagnosed for"),
    )
    print(f"{res['completions']} completions, {res['tokens']} tokens ({res['seconds']:.0f}s)\n")
    print(format_summary(res))
    print(f"\nwrote {out / 'diagnose.json'}, report.md, tokens.html, completions.jsonl")
    return 0
