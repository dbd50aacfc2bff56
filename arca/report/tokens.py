"""``tokens.html``: sampled completions with each token coloured by its weight,
one column per scheme, so a reader sees where each scheme puts the credit.

The page is self-contained (inline CSS, no scripts). Every piece of text that
came from a model or a data file is HTML-escaped. Where the task has a ground
truth, the first wrong token of a wrong completion is outlined in every column.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from arca.credit import effective_token_ratio, gini
from arca.report.runs import SCHEME_ORDER, Method

#: Colour saturates at this many-fold the uniform weight (or 1/this).
SATURATION = 8.0


def load_samples(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "samples.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(rec.get("tokens"), list) and isinstance(rec.get("weights"), dict):
            out.append(rec)
    return out


def pick_samples(methods: Sequence[Method], count: int = 4) -> tuple[str, list[dict[str, Any]]]:
    """``(run label, records)``: up to ``count`` completions from the last
    sampled step of the highest-rank ARCA run (else the first run with
    samples), preferring completions with a nonzero advantage."""
    order = sorted(methods, key=lambda m: (m.scheme != "arca", -(m.rank or 0)))
    for m in order:
        for r in m.runs:
            recs = load_samples(r.path)
            if not recs:
                continue
            last = max(x["step"] for x in recs)
            at = [x for x in recs if x["step"] == last]
            at.sort(key=lambda x: abs(x.get("advantage", 0.0)) == 0)
            return f"{m.name} (seed {r.seed}, step {last})", at[:count]
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


def _style(w: float, n: int) -> str:
    ratio = max(w * n, 1e-12)
    x = max(-1.0, min(1.0, math.log(ratio) / math.log(SATURATION)))
    rgb = "230,85,13" if x > 0 else "49,130,189"
    return f"background:rgba({rgb},{abs(x):.2f})"


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
    return "".join(spans)


def _stats(w: Sequence[float]) -> str:
    if not w:
        return ""
    t = torch.tensor([list(w)], dtype=torch.float64)
    m = torch.ones_like(t, dtype=torch.bool)
    return f"Gini {float(gini(t, m)[0]):.2f} · EffN/T {float(effective_token_ratio(t, m)[0]):.2f}"


def render(
    label: str,
    samples: Sequence[dict[str, Any]],
    title: str = "arca: token weights",
    source: str = "sampled during training by",
) -> str:
    """The page as a string. Each record has ``tokens``, ``weights`` (scheme ->
    per-token list) and optionally ``prompt``, ``step``, ``index``,
    ``advantage`` and ``where`` (e.g. a file and line)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>",
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}",
        ".grid{display:grid;gap:10px;margin:0.5em 0 2em}",
        ".col{border:1px solid #ddd;border-radius:4px;padding:6px;font-family:ui-monospace,monospace;"
        "font-size:13px;line-height:1.7;white-space:pre-wrap;word-break:break-all}",
        ".col h3{font-family:system-ui,sans-serif;font-size:13px;margin:0 0 4px}",
        ".col .s{font-family:system-ui,sans-serif;font-size:11px;color:#666;margin-bottom:4px}",
        ".t{border-radius:2px}",
        ".err{outline:2px solid #c00;outline-offset:-1px}",
        ".prompt{font-family:ui-monospace,monospace;white-space:pre-wrap;background:#f6f6f6;padding:6px}",
        ".legend span{display:inline-block;padding:2px 8px;font-size:12px}",
        "</style></head><body>",
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
    parts += [
        f"<p>Completions {html.escape(source)} <strong>{html.escape(label)}</strong>. Each token "
        "is coloured by its weight relative to uniform (w<sub>t</sub>·T): orange above, blue "
        "below, white at uniform. Hover a token for its weight. Columns are the schemes "
        "evaluated on the same completion (shadow diagnostics). "
        '<span class="t err">Outlined</span>: the first wrong token of a wrong completion '
        "(the task's ground truth).</p>",
        f'<p class="legend">{legend}</p>',
    ]
    last_prompt = None
    for rec in samples:
        schemes = sorted(
            rec["weights"],
            key=lambda s: (SCHEME_ORDER.index(s) if s in SCHEME_ORDER else len(SCHEME_ORDER), s),
        )
        parts.append(f"<h2>{_heading(rec)}</h2>")
        # Completions of one group share a prompt: show it once.
        if rec.get("prompt") and rec["prompt"] != last_prompt:
            parts.append(f'<div class="prompt">{html.escape(str(rec["prompt"]))}</div>')
        last_prompt = rec.get("prompt")
        err = rec.get("first_error")
        err = int(err) if isinstance(err, int) and 0 <= err < len(rec["tokens"]) else None
        cols = [
            f'<div class="col"><h3>{html.escape(s)}</h3><div class="s">{_stats(rec["weights"][s])}</div>'
            f"{_column([str(t) for t in rec['tokens']], rec['weights'][s], err)}</div>"
            for s in schemes
        ]
        parts.append(
            f'<div class="grid" style="grid-template-columns:repeat({len(cols)},minmax(0,1fr))">'
            + "".join(cols)
            + "</div>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
