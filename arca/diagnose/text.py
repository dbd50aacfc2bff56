"""A diagnosis as text: the console summary, its table, the propositions'
findings and report.md."""

from __future__ import annotations

import html
import math
from typing import Any

from arca.credit.schemes import scheme_label


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
    field = res.get("field_schemes")
    if field:
        lines.append(
            "(the field's schemes: "
            + "; ".join(f"{k}: {v}" for k, v in field.items())
            + ". ktae and lambda_grpo give per-token advantages: their weights are each "
            "token's share of the row's push |a_t| / sum |a|, their blame and lift count only "
            "pushes down, on the completions with a negative advantage)"
        )
        flips = [
            f"{s} {_f(d['sign_flip_share'], '.1%')} of tokens pushed against their completion's "
            f"advantage, mass {_f(d['mass_ratio'], '.2f')} x GRPO's"
            for s, d in res["models"][0]["schemes"].items()
            if isinstance(d.get("sign_flip_share"), float) and not math.isnan(d["sign_flip_share"])
        ]
        if flips:
            lines.append("(" + "; ".join(flips) + ")")
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
                rows.append([*first, scheme_label(s), "undefined: " + d["undefined"]])
                continue
            r = [
                *first,
                scheme_label(s),
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
    """The summary as markdown: in a ``<pre>`` block, HTML-escaped, so that
    model output can neither close a code fence nor inject markup, and ``<``
    reads as ``<`` (a fenced block would show ``&lt;`` literally)."""
    body = html.escape(format_summary(res), quote=False)
    lines = [f"# {html.escape(title, quote=False)}", "", f"<pre>\n{body}\n</pre>", ""]
    lines += ["[tokens.html](tokens.html): the first completions, one column per scheme.", ""]
    return "\n".join(lines)
