"""The models of a diagnosis: the base model and the policies trained from it
(LoRA adapters on it, or fully fine-tuned checkpoints), loaded once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from torch import nn

from arca.models.load import adapter_errors, check_adapter, load_policy


def adapter_state(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """``{"present", "zero", "modules", "rank", "targets_head"}`` of a LoRA
    adapter (``name``, or every adapter)."""
    if not hasattr(model, "disable_adapter"):
        return {"present": False, "zero": True, "modules": 0, "rank": None, "targets_head": False}
    bs = [
        (n, p)
        for n, p in model.named_parameters()
        if "lora_B" in n and (name is None or f".{name}." in n)
    ]
    ranks = {p.shape[1] for _, p in bs}
    return {
        "present": True,
        "zero": all(bool((p == 0).all()) for _, p in bs),
        "modules": len(bs),
        "rank": max(ranks) if ranks else None,
        "targets_head": any("lm_head" in n for n, _ in bs),
    }


@dataclass
class Policy:
    """A model to diagnose against the base: a LoRA adapter on the base model
    (``adapter`` is its peft adapter name) or a separate fully fine-tuned model."""

    label: str
    model: nn.Module
    adapter: str | None = None
    path: str | None = None

    @property
    def kind(self) -> str:
        return "adapter" if self.adapter is not None else "model"

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        if self.adapter is not None:
            self.model.set_adapter(self.adapter)
        yield self.model


@dataclass
class Models:
    """The base model and the policies, as :func:`load_models` builds them."""

    base: nn.Module
    policies: list[Policy]
    #: The base pass runs inside the peft model with its adapters disabled.
    base_is_peft: bool = False

    @contextmanager
    def base_ctx(self) -> Iterator[nn.Module]:
        with self.base.disable_adapter() if self.base_is_peft else nullcontext():
            yield self.base


def load_models(
    model: str,
    *,
    adapters: Sequence[str] = (),
    checkpoints: Sequence[str] = (),
    dtype: str = "auto",
    device: str | None = None,
) -> tuple[Models, Any]:
    """``(Models, tokenizer)``: ``model`` (``tiny``, ``smollm2``, a folder or a
    Hub id) as the base, with LoRA ``adapters`` on it, or full ``checkpoints``
    fine-tuned from it."""
    if adapters and checkpoints:
        raise ValueError("--adapter and --ref-model exclude each other: LoRA or full fine-tuning")
    configs = [check_adapter(a) for a in adapters]
    if not adapters:
        base, tok = load_policy(model, dtype=dtype, device=device)
        vocab = base.get_output_embeddings().weight.shape[0]
        policies = []
        for c in checkpoints:
            m = load_policy(c, dtype=dtype, device=device)[0].eval()
            v = m.get_output_embeddings().weight.shape[0]
            if v != vocab:
                raise ValueError(
                    f"--model {c}: its vocabulary has {v} entries, the reference model's {vocab}; "
                    "a checkpoint must be fine-tuned from --ref-model"
                )
            policies.append(Policy(c, m, path=c))
        return Models(base.eval(), policies), tok
    peft_model, tok = load_policy(model, adapters[0], dtype=dtype, device=device)
    # load_policy names its adapter "default"; the others get p1, p2, ...
    names = ["default"]
    for i, (a, cfg) in enumerate(zip(adapters[1:], configs[1:], strict=True), 1):
        with adapter_errors(a, cfg, model):
            peft_model.load_adapter(a, adapter_name=f"p{i}")
        names.append(f"p{i}")
    peft_model.eval()
    policies = [
        Policy(a, peft_model, adapter=n, path=a) for a, n in zip(adapters, names, strict=True)
    ]
    return Models(peft_model, policies, base_is_peft=True), tok
