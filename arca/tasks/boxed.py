"""Finding the final ``\\boxed{...}`` answer in LaTeX text."""

from __future__ import annotations

import re

# \boxed or \fbox, not followed by a letter (so \boxedtext is not a match).
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``), and
    the brace-less form ``\\boxed 5`` gives the following token (``5``).
    Returns ``None`` when there is no complete box; an unclosed one
    (``\\boxed{12`` from a truncated completion) does not count, nor does an
    empty one: a model that copies the instruction "put the final answer in
    \\boxed{}" after its answer has not answered ``""``.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_boxed expects a str, got {type(text).__name__}")
    for m in reversed(list(_BOX.finditer(text))):
        content = _box_content(text, m.end())
        if content is not None and content.strip():
            return content.strip()
    return None


def _box_content(text: str, i: int) -> str | None:
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":
        # "\boxed 5": the answer runs to the next space or math delimiter.
        j = i
        while j < n and not text[j].isspace() and text[j] not in "$":
            j += 1
        return text[i:j] or None
    depth = 0
    for j in range(i, n):
        c = text[j]
        escaped = text[j - 1] == "\\"  # \{ and \} (set braces) neither open nor close
        if c == "{" and not escaped:
            depth += 1
        elif c == "}" and not escaped:
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None
