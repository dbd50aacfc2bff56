"""Ground truth for token credit: a task's error locator mapped onto tokens.

A task's locator (:data:`arca.tasks.base.ErrorLocator`) works in characters of
the completion text; credit lives on tokens. :func:`token_spans` gives each
generated token's character span in the decoded text (exact for any
tokenizer: pieces are decoded one by one where that reproduces the text, as
for character and byte-level BPE vocabularies, else from growing prefixes),
and :func:`ground_truth` turns a batch of completions into the tensors
:func:`arca.credit.credit_correctness` takes:

- ``error_index`` ``(B,)``: position (in the padded ``(B, T)`` layout) of each
  completion's first wrong token, ``-1`` where none is located;
- ``correct`` ``(B,)``: the locator found no error;
- ``result_mask`` / ``template_mask`` ``(B, T)``: tokens that carry a result
  (a step's value, the answer) and pure template tokens (whitespace,
  punctuation, ``\\boxed{``, end-of-sequence).

A completion that stopped early is blamed on its end-of-sequence token; one
cut off by the length limit (no such token) has no located error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from arca.tasks.base import ErrorLocator, Located


def token_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """``(text, spans)``: ``ids`` decoded without special tokens, and each
    token's ``[start, end)`` character span in that text (special tokens, such
    as end-of-sequence, are empty spans at the position where they occur)."""
    ids = [int(t) for t in ids]
    special = set(tokenizer.all_special_ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    pieces = tokenizer.batch_decode([[t] for t in ids], skip_special_tokens=True)
    pieces = ["" if t in special else p for t, p in zip(ids, pieces, strict=True)]
    if "".join(pieces) != text:
        # SentencePiece drops a word's leading space when a piece is decoded
        # alone, and byte-level pieces may split a character: use prefixes.
        ends = []
        for i in range(len(ids)):
            prefix = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
            k = 0
            while k < min(len(prefix), len(text)) and prefix[k] == text[k]:
                k += 1
            ends.append(max(k, ends[-1] if ends else 0))
        starts = [0, *ends[:-1]]
        return text, list(zip(starts, ends, strict=True))
    spans, pos = [], 0
    for p in pieces:
        spans.append((pos, pos + len(p)))
        pos += len(p)
    return text, spans


@dataclass(frozen=True)
class TokenTruth:
    """One completion's ground truth in tokens: the first wrong token's index
    among its tokens (``None``: none located), whether it is correct, and each
    token's class (``r`` result, ``o`` operand, ``t`` template; ``None`` if
    the locator gives no classes)."""

    error_token: int | None
    correct: bool
    classes: str | None
    step: int | None = None


def locate_tokens(
    located: Located,
    text: str,
    spans: Sequence[tuple[int, int]],
    ids: Sequence[int],
    eos: int | None,
) -> TokenTruth:
    """Map a character-level :class:`Located` onto the tokens of ``spans``."""
    err: int | None = None
    off = located.first_error
    if off is not None and off < len(text):
        err = next((i for i, (a, b) in enumerate(spans) if a <= off < b), None)
    elif off is not None:  # stopped early: blame the end-of-sequence token
        err = next((i for i, t in enumerate(ids) if eos is not None and t == eos), None)
    classes = None
    if located.char_classes is not None:
        cc = located.char_classes
        if len(cc) != len(text):
            raise ValueError(
                f"the locator's char_classes has {len(cc)} letters for a {len(text)}-character completion"
            )
        out = []
        for a, b in spans:
            seg = cc[a:b]
            out.append("r" if "r" in seg else "o" if "o" in seg else "t")
        classes = "".join(out)
    correct = off is None and located.unlocated is None
    return TokenTruth(err, correct, classes, located.step if err is not None else None)


def ground_truth(
    locate: ErrorLocator | None,
    rows: Sequence[Mapping[str, Any]],
    completion_ids: Tensor,
    mask: Tensor,
    tokenizer: Any,
    *,
    located: Sequence[Located | None] | None = None,
) -> dict[str, Tensor]:
    """Batch ground truth for ``completion_ids`` ``(B, T)`` (its real tokens
    are where ``mask`` is 1; padding on either side), one dataset row per
    completion, from ``locate`` or, when given, the locations already made
    (``located``, e.g. Monte-Carlo ones, :mod:`arca.tasks.mc`; ``None`` for a
    row that was not checked). Returns ``error_index`` ``(B,)`` long (-1: none
    located), ``correct`` ``(B,)`` bool, ``located`` ``(B,)`` bool (a wrong
    completion whose error was placed on a token), ``checked`` ``(B,)`` bool
    (the row has a ground truth at all), ``error_step`` ``(B,)`` long (the
    locator's step of the first error, -1 where there is none or the locator
    gives no steps), ``result_mask`` and ``template_mask`` ``(B, T)`` bool, on
    the device of ``completion_ids``."""
    if len(rows) != completion_ids.size(0):
        raise ValueError(f"{len(rows)} rows for {completion_ids.size(0)} completions")
    if located is None and locate is None:
        raise ValueError("ground_truth needs a locator or the locations")
    if located is not None and len(located) != completion_ids.size(0):
        raise ValueError(f"{len(located)} locations for {completion_ids.size(0)} completions")
    B, T = completion_ids.shape
    bmask = mask.bool().cpu()
    ids_cpu = completion_ids.cpu()
    error = torch.full((B,), -1, dtype=torch.long)
    step = torch.full((B,), -1, dtype=torch.long)
    correct = torch.zeros(B, dtype=torch.bool)
    checked = torch.zeros(B, dtype=torch.bool)
    result = torch.zeros(B, T, dtype=torch.bool)
    template = torch.zeros(B, T, dtype=torch.bool)
    eos = tokenizer.eos_token_id
    for i in range(B):
        pos = bmask[i].nonzero().flatten()
        ids = ids_cpu[i, pos].tolist()
        text, spans = token_spans(tokenizer, ids)
        where = located[i] if located is not None else locate(rows[i], text)  # type: ignore[misc]
        if where is None:
            continue
        checked[i] = True
        truth = locate_tokens(where, text, spans, ids, eos)
        correct[i] = truth.correct
        if truth.error_token is not None:
            error[i] = pos[truth.error_token]
            step[i] = truth.step if truth.step is not None else -1
        if truth.classes is not None:
            cls = torch.tensor([ord(c) for c in truth.classes])
            result[i, pos] = cls == ord("r")
            template[i, pos] = cls == ord("t")
    dev = completion_ids.device
    return {
        "error_index": error.to(dev),
        "correct": correct.to(dev),
        "located": (error >= 0).to(dev),
        "checked": checked.to(dev),
        "error_step": step.to(dev),
        "result_mask": result.to(dev),
        "template_mask": template.to(dev),
    }


def answer_starts(
    tokenizer: Any, completion_ids: Tensor, mask: Tensor, marker: str = "\\boxed"
) -> Tensor:
    """Where each completion's answer span starts: the position (in the padded
    ``(B, T)`` layout) of the token holding the first character of its *last*
    ``marker`` (default ``\\boxed``), ``-1`` for a completion without one.
    OAR-G's split (:mod:`arca.credit.oar`): the tokens before are the reasoning
    span, those from there on the answer span. ``(B,)`` long, on the device of
    ``completion_ids``."""
    B = completion_ids.size(0)
    out = torch.full((B,), -1, dtype=torch.long)
    bmask = mask.bool().cpu()
    ids_cpu = completion_ids.cpu()
    for i in range(B):
        pos = bmask[i].nonzero().flatten()
        text, spans = token_spans(tokenizer, ids_cpu[i, pos].tolist())
        off = text.rfind(marker)
        if off < 0:
            continue
        j = next((k for k, (a, b) in enumerate(spans) if a <= off < b), None)
        if j is not None:
            out[i] = pos[j]
    return out.to(completion_ids.device)


__all__ = ["TokenTruth", "answer_starts", "ground_truth", "locate_tokens", "token_spans"]
