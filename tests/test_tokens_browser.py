"""tokens.html in a real headless browser (Chromium through playwright): what a
reader sees, checked on the DOM rather than on screenshots.

Skipped, saying why, where Chromium or playwright is missing; CI sets
ARCA_REQUIRE_BROWSER=1 (.ci/run), which turns that skip into a failure.
Playwright never downloads a browser here: it drives the system's Chromium.
"""

from __future__ import annotations

import os
import shutil

import pytest

from arca.report.tokens import render

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCHEMES = ("uniform", "surprisal", "entropy", "divergence", "arca", "high_entropy")
#: Tokens as a tokenizer cuts them: digits without spaces between them (a line
#: may only break between tokens), HTML-looking text, special tokens, newlines.
PIECES = ["12", "34", "56", " +", " 7", " =", " total", "\n", "<script>", "alert(1)", "</script>",
          " &amp;", " <b>", "====", "<eos>"]  # fmt: skip


def _need_browser() -> str:
    """The Chromium executable, or a skip (a failure under ARCA_REQUIRE_BROWSER=1)."""
    missing = None
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing is None and exe is None:
        missing = "no chromium on PATH (Debian: apt-get install chromium)"
    if missing is not None:
        if os.environ.get("ARCA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ARCA_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(f"browser test: {missing}; ARCA_REQUIRE_BROWSER=1 makes this a failure")
    return str(exe)


def _record(step: int, index: int, n: int) -> dict:
    toks = [PIECES[(i * 7 + index) % len(PIECES)] for i in range(n - 1)] + ["<eos>"]
    weights = {}
    for k, s in enumerate(SCHEMES):
        # From 1/16x to 16x uniform: past both ends of the colour scale.
        raw = [1.0 if s == "uniform" else 16.0 ** (((i * (k + 3)) % 41) / 20 - 1) for i in range(n)]
        weights[s] = [x / sum(raw) for x in raw]
    return {
        "step": step,
        "index": index,
        "prompt": f"What is 12 + 34? <script>document.title='pwned {index}'</script>",
        "advantage": 0.5 - index,
        "tokens": toks,
        "weights": weights,
        "first_error": 5,
        "correct": False,
    }


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    # Two steps: two long completions (folded) and a short one each.
    recs = [_record(s, i, 1500 if i < 2 else 30) for s in (1, 25) for i in range(3)]
    path = tmp_path_factory.mktemp("tokens") / "tokens.html"
    path.write_text(render("arca_r16 (seed 1, steps 1 and 25 of 25)", recs), encoding="utf-8")
    return path


# Every check runs in the page and returns what failed (an empty list: none).
LAYOUT = """() => {
  const vw = document.documentElement.clientWidth, out = [];
  if (document.documentElement.scrollWidth > vw) out.push('page scrolls sideways');
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (!r.width) continue;
    // Inside a box that clips or scrolls, content cannot widen the page.
    let a = el.parentElement;
    while (a && a !== document.body && getComputedStyle(a).overflowX === 'visible') a = a.parentElement;
    if (a && a !== document.body) continue;
    if (r.right > vw + 0.5 || r.left < -0.5) out.push(`${el.tagName}.${el.className} ${r.left}..${r.right}`);
  }
  for (const t of document.querySelectorAll('.toks')) {
    if (t.scrollWidth > t.clientWidth + 1) out.push(`a column scrolls sideways: ${t.scrollWidth} > ${t.clientWidth}`);
  }
  return out.slice(0, 10);
}"""

TOKENS = """() => {
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const rgba = s => s.match(/[\\d.]+/g).map(Number);
  const bgOf = el => {
    for (; el; el = el.parentElement) {
      const c = rgba(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [], spans = document.querySelectorAll('.t');
  for (const el of [...spans, ...document.querySelectorAll('.legend span')]) {
    const cs = getComputedStyle(el);
    const a = lum(rgba(cs.color)), b = lum(bgOf(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) out.push(`contrast ${ratio.toFixed(2)}: ${cs.color} on ${cs.backgroundColor}`);
  }
  let lines = 0;
  for (const el of spans) {
    const cs = getComputedStyle(el);
    // white-space:pre is nowrap with spaces kept (CSS Text 4: text-wrap-mode).
    const wrap = cs.textWrapMode !== undefined ? cs.textWrapMode : (cs.whiteSpace === 'pre' ? 'nowrap' : cs.whiteSpace);
    if (wrap !== 'nowrap') out.push(`wraps inside: ${el.textContent} (${cs.whiteSpace})`);
    // Laid out whole: one box, on one line (a newline token ends its line).
    if (!el.textContent.includes('\\n') && el.getClientRects().length > 1) out.push(`split: ${el.textContent}`);
    lines += el.getClientRects().length > 0;
  }
  return {count: spans.length, laidOut: lines, failures: out.slice(0, 10)};
}"""

STRUCTURE = """() => {
  const links = [...document.querySelectorAll('nav a')].map(a => a.getAttribute('href'));
  return {
    links: links,
    dangling: links.filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1))),
    folds: document.querySelectorAll('article.c > details.fold').length,
    articles: document.querySelectorAll('article.c').length,
    scripts: document.querySelectorAll('script').length,
    bold: document.querySelectorAll('b').length,
    title: document.title,
    folded: (t => t && getComputedStyle(t).maxHeight)(document.querySelector('details.fold ~ .grid .toks')),
  };
}"""


def test_tokens_page_in_a_browser(page_file):
    exe = _need_browser()  # in the test, not a fixture: a missing browser FAILS, not ERRORs
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=ARGS)
        try:
            for width in (390, 1280):
                _check(browser.new_page(viewport={"width": width, "height": 900}), page_file, width)
        finally:
            browser.close()


def _check(page, page_file, width: int) -> None:
    """Every check at one viewport width, folded and then unfolded."""
    page.goto(page_file.as_uri())
    s = page.evaluate(STRUCTURE)
    # Model output and prompts stayed text: no injected element ran or exists.
    assert s["scripts"] == 0 and s["bold"] == 0 and "pwned" not in s["title"]
    # Each long completion folds; every navigation link lands on an element.
    assert s["articles"] == 6 and s["folds"] == 4 and s["folded"] != "none"
    assert s["dangling"] == [] and {"#step-1", "#step-25", "#step-25-2"} <= set(s["links"])
    assert page.evaluate(LAYOUT) == [], width
    full = page.evaluate("document.documentElement.scrollHeight")
    # Unfolded (as a reader clicking "show all"): every token laid out and checked.
    for summary in page.locator("details.fold > summary").all():
        summary.click()
    assert page.evaluate(STRUCTURE)["folded"] == "none"
    assert page.evaluate("document.documentElement.scrollHeight") > 3 * full
    assert page.evaluate(LAYOUT) == [], width
    t = page.evaluate(TOKENS)
    # + 1: the explanation's outlined example
    assert t["count"] == 6 * (4 * 1500 + 2 * 30) + 1 and t["laidOut"] == t["count"]
    assert t["failures"] == [], width
