"""Per-token inputs of the credit schemes from a Hugging Face causal LM.

Two no-grad passes over ``prompt + completion`` give everything the built-in
schemes read: one with the LoRA adapter on (``logps``, ``entropies``,
``h_adapted``) and one inside ``peft``'s ``disable_adapter()`` (``ref_logps``,
``h_base``). The hidden state is captured with a hook on the backbone, whose
``last_hidden_state`` is what the LM head projects (here and in TRL's fused
head, which never calls the ``lm_head`` module).

This module is for analysis and diagnosis. The trainer (``arca.trainer``)
reuses TRL's own passes instead, so it pays for no extra forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn


def backbone(model: nn.Module) -> nn.Module:
    """The transformer body whose ``last_hidden_state`` feeds the LM head
    (unwrapping a peft model). TRL's fused LM head reads it directly and never
    calls the ``lm_head`` module, so this is where the state is captured."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model


@contextmanager
def capture_final_hidden(
    model: nn.Module,
    n_completion: int | None,
    *,
    keep: Callable[[], bool] | None = None,
) -> Iterator[list[Tensor]]:
    """Per forward call, the last hidden state at the positions that emit the
    last ``n_completion`` tokens: detached ``(b, C, d)`` slices, in call order.

    ``n_completion=None`` keeps the whole ``(b, L, d)`` state (for a caller that
    learns ``C`` only after the forward); ``keep`` filters calls (e.g. only
    those run with the adapter disabled).
    """
    chunks: list[Tensor] = []

    def hook(_m: nn.Module, _a: Any, out: Any) -> None:
        if keep is not None and not keep():
            return
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if n_completion is not None:
            h = h[:, -(n_completion + 1) : -1]
        chunks.append(h.detach())

    handle = backbone(model).register_forward_hook(hook)
    try:
        yield chunks
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off (LoRA dropout included) for scoring, restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def completion_token_stats(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    n_completion: int,
    *,
    adapter: bool = True,
) -> dict[str, Tensor]:
    """One no-grad pass: statistics of the last ``n_completion`` tokens.

    Args:
        model: a causal LM (a ``peft.PeftModel`` when ``adapter=False``).
        input_ids, attention_mask: ``(B, P + C)``, prompts left-padded and
            completions right-padded, as ``generate`` returns them.
        n_completion: ``C``.
        adapter: ``False`` runs the pass inside ``model.disable_adapter()``.

    Returns:
        ``logps`` ``(B, C)``: log-prob of each completion token; ``entropies``
        ``(B, C)``: entropy of the distribution it was drawn from; ``hidden``
        ``(B, C, d)``: the LM-head input at the position emitting it.
        All float32 except ``hidden``, which keeps the model's dtype.
    """
    if not adapter and not hasattr(model, "disable_adapter"):
        raise ValueError("adapter=False needs a peft model with disable_adapter()")
    ctx = model.disable_adapter() if not adapter else nullcontext()
    with ctx, eval_mode(model), capture_final_hidden(model, n_completion) as captured:
        # Position t's logits predict token t+1: keep C+1 positions, drop the last.
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=n_completion + 1
        )
    logp_all = out.logits[:, :-1].float().log_softmax(dim=-1)
    targets = input_ids[:, -n_completion:]
    logps = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropies = -(logp_all.exp() * logp_all).sum(dim=-1)
    hidden = captured[-1]
    return {"logps": logps, "entropies": entropies, "hidden": hidden}


def scheme_inputs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, n_completion: int
) -> dict[str, Tensor]:
    """All built-in schemes' inputs: one adapted and one adapter-disabled pass.

    Returns ``logps``, ``entropies``, ``h_adapted`` (adapter on) and
    ``ref_logps``, ``h_base`` (adapter off), ready for
    :func:`arca.credit.token_weights`.
    """
    on = completion_token_stats(model, input_ids, attention_mask, n_completion, adapter=True)
    off = completion_token_stats(model, input_ids, attention_mask, n_completion, adapter=False)
    return {
        "logps": on["logps"],
        "entropies": on["entropies"],
        "h_adapted": on["hidden"],
        "ref_logps": off["logps"],
        "h_base": off["hidden"],
    }


def completion_mask(completion_ids: Tensor, eos_token_id: int) -> Tensor:
    """``(B, C)`` mask: 1 up to and including each row's first EOS, 0 after."""
    is_eos = completion_ids == eos_token_id
    # Count EOS tokens strictly before each position; real while that count is 0.
    before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return (before == 0).int()
