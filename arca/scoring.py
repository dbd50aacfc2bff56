"""Per-token inputs of the credit schemes from a Hugging Face causal LM.

Two no-grad passes over ``prompt + completion`` give everything the built-in
schemes read: one with the LoRA adapter on (``logps``, ``entropies``,
``h_adapted``) and one inside ``peft``'s ``disable_adapter()`` (``ref_logps``,
``h_base``). Each runs the backbone once and the LM head on slices of
positions, so no pass holds ``(B, C, V)`` logits. The trainer reads hidden
states with a hook on the backbone, whose ``last_hidden_state`` is what the LM
head projects (also in TRL's fused head, which never calls ``lm_head``).

This module is for analysis and diagnosis. The trainer (``arca.trainer``)
reads its inputs from the training forward and TRL's KL-reference pass where
it can; its module docstring lists the passes it adds.
"""

from __future__ import annotations

import re
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


_WRAPPERS = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every peft LoRA layer (a module holding ``lora_A``
    and ``lora_B`` dicts), in model order, names without peft's prefix and
    FSDP's or activation checkpointing's wrapper segments."""
    return [
        (_WRAPPERS.sub("", name).replace("base_model.model.", ""), m)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "lora_A", None), nn.ModuleDict)
        and isinstance(getattr(m, "lora_B", None), nn.ModuleDict)
    ]


def _is_variant(m: nn.Module) -> bool:
    return any(v is not None for v in getattr(m, "lora_variant", {}).values()) or any(
        getattr(m, "use_dora", {}).values()
    )


def uses_lora_variant(model: nn.Module) -> bool:
    """Does any LoRA layer of ``model`` use a variant such as DoRA (whose
    output is not ``lora_B``'s, so the adapter-output captures refuse it)?"""
    return any(_is_variant(m) for _, m in lora_layers(model))


@contextmanager
def _lora_outputs(
    layers: list[tuple[str, nn.Module]], n_completion: int, on_layer: Callable[[str, Tensor], None]
) -> Iterator[None]:
    """Call ``on_layer(name, delta)`` after each forward of each LoRA layer in
    ``layers``, with ``delta = sum_a s_a B_a A_a drop(x)`` over its active
    adapters: float32, detached, at the positions that emit the last
    ``n_completion`` tokens.

    ``delta`` is read from the ``lora_B`` modules' own outputs, never from a
    weight: under DeepSpeed ZeRO-3 and FSDP a hook runs after the parameters
    have been released again. So it carries the forward's LoRA-dropout draw
    when the model is in training mode (none in ``eval()``). Layers whose
    adapter is disabled (``disable_adapter()``) or merged do not call
    ``lora_B`` and report nothing.
    """
    pending: dict[str, Tensor] = {}

    def on_b(key: str, scale: float) -> Callable[..., None]:
        def hook(_m: nn.Module, _a: Any, out: Tensor) -> None:
            d = out[:, -(n_completion + 1) : -1].detach().float() * scale
            pending[key] = pending[key] + d if key in pending else d

        return hook

    def on_layer_done(key: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if key in pending:
                on_layer(key, pending.pop(key))

        return hook

    for name, m in layers:
        if _is_variant(m):
            # DoRA rescales the layer's output by a learnt magnitude, and calls lora_B
            # on its own to compute it: lora_B's output is not the adapter's contribution.
            raise ValueError(
                f"{name}: a LoRA variant (DoRA, use_dora: true) is not supported where arca "
                "reads the LoRA layers' outputs (arca_local, shadow diagnostics, arca scan); "
                "use plain LoRA, or the arca scheme"
            )
    handles = []
    for name, m in layers:
        for a, b in m.lora_B.items():
            handles.append(b.register_forward_hook(on_b(name, float(m.scaling[a]))))
        # A module's forward hook runs after its children's: the adapters are all in.
        handles.append(m.register_forward_hook(on_layer_done(name)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture_adapter_deltas(
    model: nn.Module,
    n_completion: int,
    select: Callable[[str], bool] | None = None,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> Iterator[dict[str, list[Tensor]]]:
    """Each LoRA layer's own output ``scaling * B A x`` at the positions that
    emit the last ``n_completion`` tokens: ``{layer name: [(b, C, out) per call]}``,
    float32, detached.

    Read from the layers' outputs in the forward (no extra pass, no weight
    read; see :func:`_lora_outputs`), so run the model in ``eval()`` for a
    dropout-free value. Layers with the adapter disabled or merged record
    nothing; ``select`` filters layers by name; ``reduce`` (e.g. a norm over
    the last dim) is applied in the hook, so only its result is kept.
    """
    captured: dict[str, list[Tensor]] = {}

    def keep(name: str, d: Tensor) -> None:
        captured.setdefault(name, []).append(d if reduce is None else reduce(d))

    layers = [(n, m) for n, m in lora_layers(model) if select is None or select(n)]
    with _lora_outputs(layers, n_completion, keep):
        yield captured


#: Module names of the layers whose output is added to the residual stream
#: (attention output and MLP down projections across common architectures).
RESIDUAL_WRITERS = ("o_proj", "down_proj", "out_proj", "c_proj", "fc2", "w2", "dense_4h_to_h")
_FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm")


def _writers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in lora_layers(model) if n.rsplit(".", 1)[-1] in RESIDUAL_WRITERS]


def writes_residual(model: nn.Module, adapter: str | None = None) -> bool:
    """Does the adapter (``adapter``, or any loaded one) have a LoRA layer that
    writes into the residual stream (what ``arca_local`` reads)?"""
    return any(adapter is None or adapter in m.lora_A for _, m in _writers(model))


def residual_writers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The LoRA layers ``arca_local`` reads; an error naming the adapter's
    targets if there is none."""
    layers = _writers(model)
    if not layers:
        targets = sorted({n.rsplit(".", 1)[-1] for n, _ in lora_layers(model)})
        raise ValueError(
            "arca_local needs LoRA on a layer that writes into the residual stream "
            f"({', '.join(RESIDUAL_WRITERS)}); the adapter targets: {', '.join(targets) or 'nothing'}"
        )
    return layers


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied to the residual stream just before the LM head."""
    body = backbone(model)
    for name in _FINAL_NORMS:
        m = getattr(body, name, None)
        if isinstance(m, nn.Module) and hasattr(m, "weight"):
            return m
    raise ValueError(
        f"{type(body).__name__} has no final norm named {', '.join(_FINAL_NORMS)}; "
        "arca_local needs it to map the adapter's residual write to the LM-head input"
    )


def norm_jacobian_vp(norm: nn.Module, x: Tensor, v: Tensor) -> Tensor:
    """``J(x) v``: the first-order change of ``norm(x)`` when ``x`` moves by ``v``,
    ``(..., d)``, for RMSNorm (``g x / rms(x)``) and LayerNorm (centred first).
    In float32; ``x`` is the norm's input."""
    x, v = x.float(), v.float()
    centred = isinstance(norm, nn.LayerNorm)
    if centred:
        x = x - x.mean(-1, keepdim=True)
        v = v - v.mean(-1, keepdim=True)
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
    var = x.square().mean(-1, keepdim=True) + eps
    along = (x * v).mean(-1, keepdim=True) / var
    return norm.weight.float() * (v - x * along) / var.sqrt()


@contextmanager
def capture_adapter_shift(model: nn.Module, n_completion: int) -> Iterator[list[Tensor]]:
    """Per forward call, the adapter's direct shift of the LM-head input at the
    positions that emit the last ``n_completion`` tokens: ``J_norm(x) sum_l
    v_l``, ``(b, C, d)`` float32, where ``v_l = s B_l A_l x_l`` are the outputs
    of the LoRA layers that write into the residual stream
    (:data:`RESIDUAL_WRITERS`) in every block and ``J_norm`` is the final
    norm's Jacobian at the adapted residual stream ``x``.

    This is ``arca_local``'s input: Prop. 3's ``sum_l B_l A_l x_l`` without
    its ``e_t``, read inside a forward that runs anyway from the LoRA layers'
    outputs (:func:`_lora_outputs`: in training mode with that forward's
    LoRA-dropout draw). Forwards with the adapter disabled add nothing.
    """
    layers = residual_writers(model)
    norm = final_norm(model)
    shifts: list[Tensor] = []
    pending: list[Tensor] = []  # this forward's residual writes so far

    def on_norm(_m: nn.Module, args: Any, _out: Any) -> None:
        # The final norm runs after every block, so all of this forward's writes are in.
        if pending:
            x = args[0][:, -(n_completion + 1) : -1].detach()
            with torch.no_grad():
                shifts.append(norm_jacobian_vp(norm, x, torch.stack(pending).sum(0)))
            pending.clear()

    # prepend: run before hooks registered earlier, such as DeepSpeed ZeRO-3's,
    # which release the norm's weight after its forward.
    handle = norm.register_forward_hook(on_norm, prepend=True)
    try:
        with _lora_outputs(layers, n_completion, lambda _n, d: pending.append(d)):
            yield shifts
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


#: Tokens projected through the LM head at a time: a scoring pass holds
#: ``LOGIT_CHUNK * V`` logits (80 MB at Qwen3's 151,936 entries), whatever the batch.
LOGIT_CHUNK = 128


@torch.no_grad()
def completion_token_stats(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    n_completion: int,
    *,
    adapter: bool = True,
    chunk: int = LOGIT_CHUNK,
) -> dict[str, Tensor]:
    """One no-grad pass: statistics of the last ``n_completion`` tokens.

    Args:
        model: a causal LM (a ``peft.PeftModel`` when ``adapter=False``).
        input_ids, attention_mask: ``(B, P + C)``, prompts left-padded and
            completions right-padded, as ``generate`` returns them.
        n_completion: ``C``.
        adapter: ``False`` runs the pass inside ``model.disable_adapter()``.
        chunk: tokens per LM-head projection. The body runs once; the head
            runs on ``chunk`` of the ``B * C`` completion positions at a time,
            so the pass holds ``chunk * V`` logits, never ``B * C * V``.

    Returns:
        ``logps`` ``(B, C)``: log-prob of each completion token; ``entropies``
        ``(B, C)``: entropy of the distribution it was drawn from; ``hidden``
        ``(B, C, d)``: the LM-head input at the position emitting it.
        All float32 except ``hidden``, which keeps the model's dtype.
    """
    if not adapter and not hasattr(model, "disable_adapter"):
        raise ValueError("adapter=False needs a peft model with disable_adapter()")
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    ctx = model.disable_adapter() if not adapter else nullcontext()
    head = model.get_output_embeddings()
    with ctx, eval_mode(model):
        body = backbone(model)(input_ids=input_ids, attention_mask=attention_mask)
        # Position t's state predicts token t+1.
        hidden = body.last_hidden_state[:, -(n_completion + 1) : -1]
        B, C, d = hidden.shape
        flat = hidden.reshape(B * C, d)
        targets = input_ids[:, -n_completion:].reshape(B * C)
        logps, entropies = [], []
        for s in range(0, B * C, chunk):
            logp = head(flat[s : s + chunk]).float().log_softmax(dim=-1)
            logps.append(logp.gather(-1, targets[s : s + chunk, None]).squeeze(-1))
            entropies.append(-(logp.exp() * logp).sum(dim=-1))
    return {
        "logps": torch.cat(logps).view(B, C),
        "entropies": torch.cat(entropies).view(B, C),
        "hidden": hidden,
    }


@torch.no_grad()
def token_kl(
    head_p: Callable[[Tensor], Tensor],
    hidden_p: Tensor,
    head_q: Callable[[Tensor], Tensor],
    hidden_q: Tensor,
    *,
    chunk: int = LOGIT_CHUNK,
) -> Tensor:
    """Exact ``KL(p || q)`` over the vocabulary at every position, ``(B, C)``.

    ``p = softmax(head_p(hidden_p))`` and ``q = softmax(head_q(hidden_q))``:
    two models' next-token distributions from their LM-head inputs ``(B, C, d)``
    (e.g. :func:`completion_token_stats`'s ``hidden``). Chunked like the
    scoring passes: ``chunk * V`` logits at a time, in float32.
    """
    if hidden_p.shape[:2] != hidden_q.shape[:2]:
        raise ValueError(
            f"hidden states differ in shape: {tuple(hidden_p.shape)} vs {tuple(hidden_q.shape)}"
        )
    B, C = hidden_p.shape[:2]
    fp, fq = hidden_p.reshape(B * C, -1), hidden_q.reshape(B * C, -1)
    out = []
    for s in range(0, B * C, chunk):
        lp = head_p(fp[s : s + chunk]).float().log_softmax(-1)
        lq = head_q(fq[s : s + chunk]).float().log_softmax(-1)
        out.append((lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0))
    return torch.cat(out).view(B, C) if out else hidden_p.new_zeros(B, C)


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


def outcome_saliency(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    answer_start: Tensor,
    *,
    noise_std: float = 1e-3,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
) -> Tensor:
    """OAR-G's token importance (arXiv 2601.07408; docs/credit-schemes.md section 2):
    how much each reasoning token's input embedding moves the distribution over
    the answer.

    Per row, the answer span is the completion's tokens from ``answer_start``
    on, the reasoning span those before it. ``P_final`` is the softmax of the
    mean of the logits at the positions that predict the answer tokens (the LM
    head is linear, so: of the head applied to the mean hidden state there).
    ``p0`` comes from a clean no-grad forward on the input embeddings ``E``;
    a second forward, on ``E + noise`` (Gaussian, std ``noise_std``, on the
    reasoning positions only: at zero noise the KL's gradient vanishes), gives
    ``p_noisy``; ``J = KL(p0 || p_noisy)``; the importance of reasoning token
    ``t`` is ``|<dJ/de_t, e_t>|`` (gradient x input, summed over the hidden
    dimension). The gradient is taken with ``torch.autograd.grad`` with respect
    to the embeddings alone, so no parameter's ``.grad`` is touched. Dropout is
    off for both forwards.

    Cost per call: two forwards over ``batch_size`` rows at a time (one
    no-grad, one with a graph to the embeddings) and one backward to the
    embeddings (no weight gradients).

    Args:
        model: a causal LM (a peft model with its adapter as it should be).
        input_ids, attention_mask: ``(B, P + C)``, prompts left-padded,
            completions right-padded (TRL's and ``generate``'s layout).
        completion_mask: ``(B, C)``, 1 = real completion token.
        answer_start: ``(B,)`` the completion column where the answer span
            starts, ``-1`` for none (that row's importances are 0).
        noise_std: the noise's standard deviation (the official 1e-3).
        generator: where the noise is drawn (on the CPU); keep it apart from
            the training RNG.

    Returns ``(B, C)`` float32, ``>= 0`` on each row's reasoning span, 0 elsewhere.
    """
    B, S = input_ids.shape
    C = completion_mask.shape[1]
    device = input_ids.device
    cols = torch.arange(C, device=device)[None, :]
    real = completion_mask.to(device).bool()
    start = answer_start.to(device)[:, None]
    has = start >= 0
    answer = real & has & (cols >= start)
    reasoning = real & has & (cols < start)
    out = torch.zeros(B, C, dtype=torch.float32, device=device)
    body, head = backbone(model), model.get_output_embeddings()
    embed = model.get_input_embeddings()

    def p_final_logits(hidden: Tensor, ans: Tensor) -> Tensor:
        # Position P + c - 1 predicts completion column c.
        pred = hidden[:, S - C - 1 : S - 1]
        w = ans.to(pred.dtype)
        mean = (pred * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True)
        return head(mean).float()

    with eval_mode(model):
        for i in range(0, B, batch_size):
            rows = slice(i, i + batch_size)
            ans, rsn = answer[rows], reasoning[rows]
            keep = ans.any(dim=1) & rsn.any(dim=1)
            if not bool(keep.any()):
                continue
            ids, attn = input_ids[rows][keep], attention_mask[rows][keep]
            ans, rsn = ans[keep], rsn[keep]
            with torch.no_grad():
                e = embed(ids).detach()
                clean = body(inputs_embeds=e, attention_mask=attn).last_hidden_state
                log_p0 = p_final_logits(clean, ans).log_softmax(-1)
            noise = torch.randn(e.shape, generator=generator, dtype=torch.float32)
            on = torch.zeros(ids.shape, dtype=torch.bool, device=device)
            on[:, S - C :] = rsn
            noise = noise.to(device=device, dtype=e.dtype) * noise_std * on[..., None]
            x = e.clone().requires_grad_(True)
            with torch.enable_grad():
                noisy = body(inputs_embeds=x + noise, attention_mask=attn).last_hidden_state
                log_q = p_final_logits(noisy, ans).log_softmax(-1)
                p0 = log_p0.exp()
                # KL(p0 || p_noisy) as the official code writes it (log(p0 + 1e-12)).
                J = (p0 * (torch.log(p0 + 1e-12) - log_q)).sum()
                (grad,) = torch.autograd.grad(J, x)
            sal = (grad.float() * e.float()).sum(dim=-1).abs()[:, S - C :]
            block = out[rows]
            block[keep] = torch.where(rsn, sal, 0.0)
            out[rows] = block
    return out
