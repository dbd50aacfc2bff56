"""``tokens.html``: sampled completions with each token coloured by its weight,
one column per scheme, so a reader sees where each scheme puts the credit.

The page is one self-contained static file (inline CSS, no scripts). Every
piece of text that came from a model or a data file is HTML-escaped. Where the
task has a ground truth, the first wrong token of a wrong completion is
outlined in every column.

Layout: a navigation bar links every step and completion; long completions
fold to their first lines behind a ``<details>`` toggle; the scheme columns
reflow (six side by side on a wide screen, one under another on a phone); each
token is one unbreakable span (lines wrap between tokens, never inside one, so
``<eos>`` stays whole); and each token's text colour is black or white,
whichever contrasts more with its background (at least 4.5:1 on every weight
colour).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from arca.credit import effective_token_ratio, gini, scheme_label
from arca.report.runs import SCHEME_ORDER, Method
from arca.run_folder import sample_step

#: Colour saturates at this many-fold the uniform weight (or 1/this).
SATURATION = 8.0
#: Weights above uniform shade towards orange, below towards blue, over white.
ABOVE, BELOW = (230, 85, 13), (49, 130, 189)
WHITE = (255, 255, 255)
#: Completions longer than this many characters or lines fold to their first
#: lines: a column of 1,500 tokens would otherwise be thousands of pixels tall.
FOLD_CHARS, FOLD_LINES = 480, 12
#: Prompts longer than this (few-shot prompts) fold entirely, their last line shown.
FOLD_PROMPT_CHARS = 600


def load_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/samples.jsonl``, each ``step`` counted from 1
    whatever the file's age."""
    path = run_dir / "samples.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if not (isinstance(rec.get("tokens"), list) and isinstance(rec.get("weights"), dict)):
            continue
        if "step" in rec:
            if not all(isinstance(rec.get(k, 0), int) for k in ("step", "step_base")):
                continue
            rec = {**rec, "step": sample_step(rec), "step_base": 1}
        out.append(rec)
    return out


def _spread(steps: Sequence[int], n: int) -> list[int]:
    """``n`` of the sorted ``steps``: the first, the last and evenly between."""
    if len(steps) <= n:
        return list(steps)
    if n <= 1:
        return [steps[-1]]
    return [steps[i] for i in sorted({round(k * (len(steps) - 1) / (n - 1)) for k in range(n)})]


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def pick_samples(
    methods: Sequence[Method], count: int = 4, steps: int = 3
) -> tuple[str, list[dict[str, Any]]]:
    """``(run label, records)`` of the highest-rank ARCA run (else the first
    run with samples): up to ``count`` completions from each of ``steps``
    sampled steps (the first, the last and evenly between, in order),
    preferring completions with a nonzero advantage."""
    order = sorted(methods, key=lambda m: (m.scheme != "arca", -(m.rank or 0)))
    for m in order:
        for r in m.runs:
            recs = [x for x in load_samples(r.path) if "step" in x]
            if not recs:
                continue
            shown = _spread(sorted({x["step"] for x in recs}), steps)
            out = []
            for s in shown:
                at = [x for x in recs if x["step"] == s]
                at.sort(key=lambda x: abs(x.get("advantage", 0.0)) == 0)
                out += at[:count]
            trained = max((int(x["step"]) for x in r.metrics if "step" in x), default=None)
            which = f"step{'s' if len(shown) > 1 else ''} {_and([str(s) for s in shown])}"
            if trained is not None:
                which += f" of {trained}"
            return f"{m.name} (seed {r.seed}, {which})", out
    return "", []


def _heading(rec: dict[str, Any]) -> str:
    parts = []
    if "step" in rec:
        parts.append(f"step {int(rec['step'])}")
    parts.append(f"completion {int(rec.get('index', 0))}")
    info = [f"{len(rec['tokens'])} tokens"]
    if "advantage" in rec:
        info.insert(0, f"advantage {float(rec['advantage']):+.3f}")
    if rec.get("correct") is True:
        info.append("correct")
    elif rec.get("first_error") is not None:
        info.append(f"first wrong token: #{int(rec['first_error'])}")
    elif rec.get("correct") is False:
        info.append("wrong, error not located")
    if rec.get("where"):
        info.append(str(rec["where"]))
    return html.escape(f"{', '.join(parts)} ({', '.join(info)})")


def _luminance(rgb: Sequence[int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""

    def lin(c: int) -> float:
        x = c / 255
        return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (1 to 21)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def colours(w: float, n: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(background, text)`` of a token of weight ``w`` among ``n``: the
    background shades from white towards orange (above uniform) or blue
    (below), opaque so the text colour can be chosen against it."""
    ratio = max(w * n, 1e-12)
    x = max(-1.0, min(1.0, math.log(ratio) / math.log(SATURATION)))
    alpha = round(abs(x), 2)
    r, g, b = (round(255 + (c - 255) * alpha) for c in (ABOVE if x > 0 else BELOW))
    bg, black = (r, g, b), (0, 0, 0)
    return bg, black if contrast_ratio(bg, black) >= contrast_ratio(bg, WHITE) else WHITE


def _style(w: float, n: int) -> str:
    bg, fg = colours(w, n)
    # Black is the stylesheet's token colour: only white needs saying.
    return f"background:#{bg[0]:02x}{bg[1]:02x}{bg[2]:02x}" + (";color:#fff" if fg == WHITE else "")


def _column(tokens: Sequence[str], w: Sequence[float], error: int | None = None) -> str:
    n = len(tokens)
    spans = []
    for i, (t, x) in enumerate(zip(tokens, w, strict=False)):
        note = "; the first wrong token" if i == error else ""
        title = html.escape(f"w={x:.4g} ({x * n:.2f}x uniform){note}", quote=True)
        cls = "t err" if i == error else "t"
        spans.append(
            f'<span class="{cls}" style="{_style(x, n)}" title="{title}">{html.escape(t)}</span>'
        )
    # Tokens never wrap inside (white-space:pre); <wbr> lets a line break
    # between any two, even where the text has no space (digits, "=====").
    return "<wbr>".join(spans)


def _stats(w: Sequence[float]) -> str:
    if not w:
        return ""
    t = torch.tensor([list(w)], dtype=torch.float64)
    m = torch.ones_like(t, dtype=torch.bool)
    return f"Gini {float(gini(t, m)[0]):.2f} · EffN/T {float(effective_token_ratio(t, m)[0]):.2f}"


CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;line-height:1.45}
h1,h2,h3,p{overflow-wrap:anywhere}
h2{margin:1.2em 0 0.3em;border-bottom:2px solid #ddd}
h3{font-size:15px;margin:1em 0 0.3em}
a{color:#0645ad}
nav{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #ccc;
padding:6px 0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:14px}
nav span{display:inline-flex;flex-wrap:wrap;gap:2px 8px;align-items:baseline}
nav .st{font-weight:bold}
[id]{scroll-margin-top:4.5em}
.grid{display:grid;gap:10px;grid-template-columns:repeat(auto-fit,
minmax(min(100%,max(10em,(100% - (var(--n) - 1) * 10px) / var(--n))),1fr))}
.col{min-width:0;border:1px solid #ddd;border-radius:4px;padding:6px}
.col h4{font-size:13px;margin:0 0 2px}
.col .s{font-size:11px;color:#555;margin-bottom:4px}
.toks{font-family:ui-monospace,monospace;font-size:13px;line-height:1.7;white-space:pre-wrap;
overflow-x:auto}
.t{white-space:pre;color:#000;border-radius:2px}
.err{outline:2px solid #c00;outline-offset:-1px}
.c:has(>details.fold:not([open])) .toks{max-height:calc(10 * 1.7em);overflow:hidden;
-webkit-mask-image:linear-gradient(#000 80%,transparent);mask-image:linear-gradient(#000 80%,transparent)}
details.fold>summary,details.p>summary{cursor:pointer;font-size:13px;margin:4px 0}
details.fold>summary{color:#0645ad}
details.fold[open] .shut,details.fold:not([open]) .open{display:none}
.prompt{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;
overflow-wrap:anywhere;background:#f4f4f4;padding:6px;margin:4px 0}
details.p>summary{font-family:ui-monospace,monospace;overflow-wrap:anywhere;background:#f4f4f4;
padding:6px}
.legend span{display:inline-block;padding:2px 8px;font-size:12px;color:#000}
@media (max-width:40em){body{margin:0.6em}h1{font-size:1.4em}nav{position:static}}
"""


def _prompt(prompt: str) -> str:
    text = html.escape(prompt)
    if len(prompt) <= FOLD_PROMPT_CHARS and prompt.count("\n") < FOLD_LINES:
        return f'<div class="prompt">{text}</div>'
    # Few-shot prompts end with the question: show that line while folded.
    tail = prompt.rstrip().rsplit("\n", 1)[-1][-200:]
    lines = prompt.count("\n") + 1
    return (
        f'<details class="p"><summary>prompt, {lines} lines, ending: {html.escape(tail)}'
        f'</summary><div class="prompt">{text}</div></details>'
    )


def _completion(rec: dict[str, Any], anchor: str, prompt: bool) -> str:
    schemes = sorted(
        rec["weights"],
        key=lambda s: (SCHEME_ORDER.index(s) if s in SCHEME_ORDER else len(SCHEME_ORDER), s),
    )
    tokens = [str(t) for t in rec["tokens"]]
    err = rec.get("first_error")
    err = err if isinstance(err, int) and 0 <= err < len(tokens) else None
    parts = [f'<article class="c" id="{anchor}">', f"<h3>{_heading(rec)}</h3>"]
    if prompt:
        parts.append(_prompt(str(rec["prompt"])))
    text = "".join(tokens)
    if len(text) > FOLD_CHARS or text.count("\n") >= FOLD_LINES:
        # Opening it lifts the height cap of every column of this completion (CSS :has()).
        parts.append(
            f'<details class="fold"><summary><span class="shut">show all {len(tokens):,} '
            'tokens</span><span class="open">show the first lines only</span></summary></details>'
        )
    # --n: all the columns side by side where each gets 10em, else as many as fit.
    parts.append(f'<div class="grid" style="--n:{len(schemes)}">')
    parts += [
        f'<div class="col"><h4>{html.escape(scheme_label(s))}</h4>'
        f'<div class="s">{_stats(rec["weights"][s])}'
        f'</div><div class="toks">{_column(tokens, rec["weights"][s], err)}</div></div>'
        for s in schemes
    ]
    parts.append("</div></article>")
    return "".join(parts)


OWN_LOCATOR = "the task's own locator"


def render(
    label: str,
    samples: Sequence[dict[str, Any]],
    title: str = "arca: token weights",
    source: str = "sampled during training by",
    truth: str | None = None,
) -> str:
    """The page as a string. Each record has ``tokens``, ``weights`` (scheme ->
    per-token list) and optionally ``prompt``, ``step`` (counted from 1),
    ``index``, ``advantage`` and ``where`` (e.g. a file and line). Records
    with a ``step`` are grouped by step, in the order given. ``truth`` names
    the ground truth that placed the outlined first errors (exact, or
    Monte-Carlo with its settings)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if not samples:
        parts.append("<p>No sampled completions with weights were found (samples.jsonl).</p>")
        parts.append("</body></html>")
        return "\n".join(parts)
    legend = "".join(
        f'<span style="{_style(r, 1)}">{html.escape(lbl)}</span>'
        for r, lbl in (
            (1 / SATURATION, f"1/{SATURATION:g}x"),
            (0.5, "0.5x"),
            (1.0, "1x = uniform"),
            (2.0, "2x"),
            (SATURATION, f">= {SATURATION:g}x"),
        )
    )
    # Sections: one per step, in the order given (one untitled section without steps).
    groups: list[tuple[int | None, list[dict[str, Any]]]] = []
    for rec in samples:
        step = int(rec["step"]) if "step" in rec else None
        if not groups or groups[-1][0] != step:
            groups.append((step, []))
        groups[-1][1].append(rec)
    anchors = [
        [f"step-{s}-{k}" if s is not None else f"c-{k}" for k in range(len(recs))]
        for s, recs in groups
    ]
    nav = []
    for (step, recs), ids in zip(groups, anchors, strict=True):
        head = f'<a class="st" href="#step-{step}">step {step}</a>' if step is not None else ""
        links = "".join(
            f'<a href="#{a}">#{int(r.get("index", k))}</a>'
            for k, (r, a) in enumerate(zip(recs, ids, strict=True))
        )
        nav.append(f"<span>{head}{links}</span>")
    parts += [
        f"<p>Completions {html.escape(source)} <strong>{html.escape(label)}</strong>. Each token "
        "is coloured by its weight relative to uniform (w<sub>t</sub>·T): orange above, blue "
        "below, white at uniform. Hover a token for its weight. Columns are the schemes "
        "evaluated on the same completion (shadow diagnostics). "
        '<span class="t err">Outlined</span>: the first wrong token of a wrong completion '
        f"(ground truth: {html.escape(truth or OWN_LOCATOR)}). Long completions show their "
        "first lines; "
        "“show all” unfolds every column.</p>",
        f'<p class="legend">{legend}</p>',
        f'<nav aria-label="steps and completions">{"".join(nav)}</nav>',
    ]
    for (step, recs), ids in zip(groups, anchors, strict=True):
        if step is not None:
            parts.append(f'<section id="step-{step}"><h2>step {step}</h2>')
        else:
            parts.append("<section>")
        last_prompt = None
        for rec, anchor in zip(recs, ids, strict=True):
            # Completions of one group share a prompt: show it once.
            new = bool(rec.get("prompt")) and rec["prompt"] != last_prompt
            parts.append(_completion(rec, anchor, new))
            last_prompt = rec.get("prompt")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
