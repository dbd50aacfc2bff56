"""GRPO/RLOO with token-level credit weighting, on TRL's ``GRPOTrainer``.

This is the one module that touches TRL internals (pinned: trl 1.16). It
overrides ``_generate_and_score_completions``: after TRL has generated,
rewarded and computed each completion's scalar advantage ``A_i``, arca scores
the batch with the configured scheme and hands TRL per-token advantages
``A_i * T_i * w_it`` of shape ``(B, T)``, where ``T_i`` is the completion's
length. With ``loss_type="grpo"`` TRL averages each sequence's token losses
over ``T_i``, so the sequence's loss becomes ``sum_t w_it * loss_it``: the
paper's estimator (eq. 6). Weights are detached and computed once per
generated batch.

Where the schemes' inputs come from. Policy-side inputs (log-probs, entropies,
the adapted hidden state, the LoRA layers' outputs) are read from the training
forward TRL runs anyway: arca defers the weighting to ``_compute_loss``,
whose forward it hooks, and sets the per-token advantages there before TRL
reads them. This holds when each generated batch is trained on once, under the
policy that generated it (TRL's own condition for skipping
``old_per_token_logps``); like TRL's ``per_token_logps.detach()`` they then
include the LoRA-dropout draw of that forward. Otherwise (``num_iterations >
1``, misaligned ``steps_per_generation``, or ``credit_from_training_forward=
False``) one no-grad, dropout-free pass at generation time scores the batch.
Adapter-off inputs (reference log-probs, base hidden states) come from TRL's
own KL-reference pass when ``beta > 0``, or from one adapter-disabled pass.

Extra forward passes per generated batch, on top of stock TRL:

=============  ==============================  ==========  =================
scheme         inputs                          beta = 0    beta > 0
=============  ==============================  ==========  =================
uniform        none                            0           0
surprisal      log-probs                       0           0
entropy        entropies                       0           0
divergence     log-probs, reference log-probs  1 (no-grad) 0
arca           adapted and base hidden states  1 (no-grad) 0
arca_local     LoRA layers' outputs (hooks)    0           0
=============  ==============================  ==========  =================

(Add one adapted no-grad pass to the non-uniform rows when the training
forward cannot be used.) ``shadow_diagnostics=True`` gathers every scheme's
inputs, so every scheme's Gini and effective-token ratio are logged on the
same batch.

Exact ARCA in low precision: the residual is the difference of two large,
nearly equal hidden states. Both are captured in the model's dtype and
subtracted in float32; ``credit/residual_below_noise`` logs the fraction
of tokens whose residual is below the rounding noise of the hidden states
(:func:`residual_noise_floor`), where the ranking is noise.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from arca.credit import (
    available_schemes,
    concentration_summary,
    get_scheme,
    hidden_residual_norm,
    normalize,
    residual_noise_floor,
    token_weights,
)
from arca.credit.advantages import ESTIMATORS
from arca.io import atomic_write_text
from arca.scoring import (
    backbone,
    capture_adapter_shift,
    capture_final_hidden,
    eval_mode,
    residual_writers,
    writes_residual,
)

BUILTIN = ("uniform", "surprisal", "entropy", "divergence", "arca", "arca_local")
_POLICY_INPUTS = {"logps", "entropies", "h_adapted", "h_shift"}
_BASE_INPUTS = {"ref_logps", "h_base"}


@dataclass
class CreditGRPOConfig(GRPOConfig):
    """``trl.GRPOConfig`` plus token-credit options. ``loss_type`` must be ``"grpo"``."""

    token_weighting: str = field(
        default="uniform",
        metadata={
            "help": "Token salience scheme: " + ", ".join(BUILTIN) + ", or a registered one."
        },
    )
    weight_eps: float = field(
        default=1e-8, metadata={"help": "Normalisation floor (paper eq. 8), >= 0."}
    )
    weight_eps_mode: str = field(
        default="absolute", metadata={"help": "'absolute' or 'relative' floor."}
    )
    advantage_estimator: str = field(default="grpo", metadata={"help": "'grpo' or 'rloo'."})
    shadow_diagnostics: bool = field(
        default=False,
        metadata={
            "help": "Log every scheme's Gini/EffN on each batch (gathers every scheme's inputs)."
        },
    )
    residual_noise_factor: float = field(
        default=4.0,
        metadata={
            "help": "credit/residual_below_noise counts tokens whose ARCA residual is under "
            "factor * eps(dtype) * ||h_base|| (eps of the training precision; measured bf16 noise: 0.2-2 eps, docs/performance.md)."
        },
    )
    credit_from_training_forward: bool = field(
        default=True,
        metadata={
            "help": "Read log-probs, entropies and hidden states from the training forward when "
            "each generated batch is trained on once (no extra pass); False: one no-grad, "
            "dropout-free scoring pass per generated batch."
        },
    )
    # TRL's default is "dapo"; only "grpo" turns A*T*w into sum_t w_t loss_t per sequence.
    loss_type: str = field(default="grpo", metadata={"help": "Must be 'grpo' (see arca.trainer)."})

    def __post_init__(self) -> None:
        if self.token_weighting not in available_schemes():
            raise ValueError(
                f"token_weighting: unknown scheme {self.token_weighting!r}; "
                f"valid: {', '.join(available_schemes())}"
            )
        if not self.residual_noise_factor >= 0:
            raise ValueError(
                f"residual_noise_factor: must be >= 0, got {self.residual_noise_factor}"
            )
        if not self.weight_eps >= 0:
            raise ValueError(f"weight_eps: must be >= 0, got {self.weight_eps}")
        if self.weight_eps_mode not in ("absolute", "relative"):
            raise ValueError(
                f"weight_eps_mode: must be 'absolute' or 'relative', got {self.weight_eps_mode!r}"
            )
        if self.advantage_estimator not in ESTIMATORS:
            raise ValueError(
                f"advantage_estimator: must be one of {', '.join(ESTIMATORS)}, got {self.advantage_estimator!r}"
            )
        if self.loss_type != "grpo":
            raise ValueError(
                f"loss_type: arca needs 'grpo' (per-sequence mean of token losses), got {self.loss_type!r}"
            )
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations: a group needs at least 2 completions, got {self.num_generations}"
            )
        if self.advantage_estimator == "rloo":
            # RLOO's baseline: K/(K-1) * (R - mean), from TRL's unscaled advantage.
            self.scale_rewards = "none"
        super().__post_init__()


def _reject_frozen_peft(model: Any) -> None:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return
    if isinstance(model, PeftModel) and not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "model is a PeftModel with no trainable parameters (loaded without is_trainable=True?); "
            "TRL would train nothing. Pass the base model with peft_config, or load the adapter "
            "with PeftModel.from_pretrained(..., is_trainable=True)."
        )


class CreditGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` whose advantages are redistributed over tokens.

    Takes the same arguments as ``GRPOTrainer`` with ``args`` a
    :class:`CreditGRPOConfig`. Logs ``credit/gini``, ``credit/effective_ratio``,
    when both hidden states are at hand ``credit/residual_mean`` /
    ``credit/residual_max`` and ``credit/residual_below_noise`` (the fraction of
    tokens whose residual is under :func:`arca.credit.residual_noise_floor`), and with
    ``shadow_diagnostics`` ``credit/<scheme>/gini`` and ``.../effective_ratio``
    for every built-in scheme.
    """

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        _reject_frozen_peft(model)
        super().__init__(model, *args, **kwargs)
        if not isinstance(self.args, CreditGRPOConfig):
            raise TypeError("CreditGRPOTrainer needs args=CreditGRPOConfig(...)")
        self.scheme = get_scheme(self.args.token_weighting)
        unwrapped = self.accelerator.unwrap_model(self.model)
        needs = set(self.scheme.requires)
        if self.args.shadow_diagnostics:
            needs |= _POLICY_INPUTS | _BASE_INPUTS
            if "h_shift" not in self.scheme.requires and not writes_residual(unwrapped):
                needs.discard("h_shift")  # arca_local's shadow needs LoRA on o/down proj
        unknown = needs - _POLICY_INPUTS - _BASE_INPUTS
        if unknown:
            raise ValueError(
                f"token_weighting: scheme {self.scheme.name!r} needs inputs the trainer does not "
                f"produce: {', '.join(sorted(unknown))}"
            )
        self._needs = needs
        self._needs_policy = bool(needs & _POLICY_INPUTS)
        self._needs_base = bool(needs & _BASE_INPUTS)
        if (self._needs_base or "h_shift" in needs) and not hasattr(unwrapped, "disable_adapter"):
            raise ValueError(
                f"token_weighting: {self.scheme.name!r} reads the LoRA adapter's effect; "
                "train a LoRA adapter (pass peft_config)"
            )
        if "h_shift" in needs:
            residual_writers(unwrapped)  # fails early, naming the adapter's targets
        # (inputs dict, hook captures) while _compute_loss runs a deferred batch.
        self._pending: tuple[dict[str, Any], dict[str, list[Tensor]]] | None = None

    # ------------------------------------------------------------ scoring

    @contextmanager
    def _policy_hooks(
        self, n_completion: int, hidden: bool = False
    ) -> Iterator[dict[str, list[Tensor]]]:
        """Hooks that read the last hidden state (``h_adapted``; always with
        ``hidden``) and ``h_shift`` from the forwards run inside, when the
        schemes need them. Forwards with the adapter disabled add no ``h_shift``."""
        model = self.accelerator.unwrap_model(self.model)
        keep_hidden = hidden or "h_adapted" in self._needs
        hidden_ctx = capture_final_hidden(model, n_completion) if keep_hidden else None
        shift = capture_adapter_shift(model, n_completion) if "h_shift" in self._needs else None
        with hidden_ctx or nullcontext([]) as hs, shift or nullcontext([]) as sh:
            yield {"h_adapted": hs, "h_shift": sh}

    def _scoring_pass(
        self, out: dict[str, Any], adapter: bool, logits: bool = True
    ) -> dict[str, Tensor]:
        """One no-grad, dropout-free pass over the batch in ``out``: ``logps``,
        ``entropies``, ``hidden`` and, adapted, ``h_shift`` when a scheme needs it.
        ``logits=False`` runs the body only (no LM head) and returns ``hidden``."""
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        C = out["completion_ids"].size(1)
        model = self.accelerator.unwrap_model(self.model)
        off = model.disable_adapter() if not adapter else nullcontext()
        bs = self.args.per_device_train_batch_size
        # eval_mode: LoRA dropout off, so weights never depend on a dropout draw.
        with torch.no_grad(), eval_mode(model), off, self._policy_hooks(C, hidden=True) as cap:
            if logits:
                logps, ent, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, attn, C, batch_size=bs, compute_entropy=True
                )
            else:
                body = backbone(model)
                for i in range(0, ids.size(0), bs):
                    with self.accelerator.autocast():
                        body(input_ids=ids[i : i + bs], attention_mask=attn[i : i + bs])
        res = {"hidden": torch.cat(cap["h_adapted"], dim=0)}
        if logits:
            res |= {"logps": logps, "entropies": ent}
        if cap["h_shift"]:
            res["h_shift"] = torch.cat(cap["h_shift"], dim=0)
        return res

    def _base_inputs(self, out: dict[str, Any], reference: list[Tensor]) -> dict[str, Tensor]:
        """``ref_logps`` and ``h_base`` for the batch in ``out``. ``reference``: full
        last hidden states captured during TRL's own adapter-disabled KL-reference
        pass (``beta > 0``), which then replaces arca's adapter-disabled pass."""
        C = out["completion_ids"].size(1)
        B = out["completion_ids"].size(0)
        if reference and "ref_per_token_logps" in out and sum(h.size(0) for h in reference) == B:
            return {
                "ref_logps": out["ref_per_token_logps"],
                "h_base": torch.cat([h[:, -(C + 1) : -1] for h in reference], dim=0),
            }
        # ARCA alone needs no reference log-probs: skip the LM head (a large
        # share of the pass at a 151,936-entry vocabulary).
        need_logps = "ref_logps" in self._needs
        off = self._scoring_pass(out, adapter=False, logits=need_logps)
        return {"h_base": off["hidden"]} | ({"ref_logps": off["logps"]} if need_logps else {})

    def _credit_inputs(
        self, out: dict[str, Any], reference: list[Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Every input the schemes need for the batch in ``out``, from no-grad
        passes (the path used when the training forward cannot be)."""
        inputs: dict[str, Tensor] = {}
        if self._needs_policy:
            on = self._scoring_pass(out, adapter=True)
            inputs.update(logps=on["logps"], entropies=on["entropies"], h_adapted=on["hidden"])
            if "h_shift" in on:
                inputs["h_shift"] = on["h_shift"]
        if self._needs_base:
            inputs.update(self._base_inputs(out, reference or []))
        return inputs

    def _defer(self, out: dict[str, Any]) -> bool:
        """Score in the training forward? Only if each sample is trained on once,
        under the policy that generated it (then TRL keeps no old log-probs)."""
        return (
            self._needs_policy
            and self.args.credit_from_training_forward
            and out.get("old_per_token_logps") is None
        )

    @contextmanager
    def _capture_reference(self) -> Iterator[list[Tensor]]:
        """Keep the backbone's output of every forward run with the adapter disabled."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        model = self.accelerator.unwrap_model(self.model)
        probe = next((m for m in model.modules() if isinstance(m, BaseTunerLayer)), None)
        if probe is None:
            yield []
            return
        with capture_final_hidden(model, None, keep=lambda: probe.disable_adapters) as chunks:
            yield chunks

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        # With beta > 0 TRL runs an adapter-disabled pass for its KL reference:
        # capture the base hidden states there instead of running another pass.
        reuse = self.beta != 0.0 and self._needs_base and self.ref_model is None
        with self._capture_reference() if reuse else nullcontext([]) as reference:
            out = super()._generate_and_score_completions(inputs)
        if not self._defer(out):
            return self._apply_credit(out, self._credit_inputs(out, reference))
        # Deferred: TRL splits and shuffles `out` into micro-batches, these keys included.
        out["arca_advantage"] = out["advantages"]
        if self._needs_base:
            for k, v in self._base_inputs(out, reference).items():
                out[f"arca_{k}"] = v
        return out

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Tensor:
        if "arca_advantage" not in inputs:
            return super()._compute_loss(model, inputs)
        # Hooks live only for the forward: gradient checkpointing's recompute
        # during backward must not record again.
        with self._policy_hooks(inputs["completion_ids"].size(1)) as captured:
            self._pending = (inputs, captured)
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._pending = None

    def _get_per_token_logps_and_entropies(
        self, model: Any, input_ids: Tensor, attention_mask: Tensor, logits_to_keep: int, **kw: Any
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        logps, ent, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, **kw
        )
        pending, self._pending = self._pending, None
        if pending is not None:
            # The training forward of a deferred batch: weigh it before TRL reads
            # inputs["advantages"] (after this call, in _compute_loss).
            inputs, captured = pending
            credit = {"logps": logps.detach()}
            if ent is not None:
                credit["entropies"] = ent.detach()
            credit |= {k: torch.cat(v, dim=0) for k, v in captured.items() if v}
            credit |= {k: inputs[f"arca_{k}"] for k in _BASE_INPUTS if f"arca_{k}" in inputs}
            self._apply_credit(inputs, credit)
        return logps, ent, aux

    def _apply_credit(self, out: dict[str, Any], credit: dict[str, Tensor]) -> dict[str, Any]:
        """Set ``out["advantages"]`` to ``A_i * T_i * w_it`` from TRL's ``(B,)``
        advantages and the schemes' inputs in ``credit``."""
        adv = out.get("arca_advantage", out["advantages"])
        if self.args.advantage_estimator == "rloo":
            k = self.num_generations
            adv = adv * (k / (k - 1))
        mask = out["completion_mask"]
        if "tool_mask" in out:
            mask = mask * out["tool_mask"]
        mode = "train" if self.model.training else "eval"
        if self.scheme.name == "uniform":
            out["advantages"] = adv  # stock TRL, bit for bit
            w = normalize(torch.ones_like(mask, dtype=torch.float32), mask)
        else:
            w = self._weights(self.scheme.name, mask, credit)
            lengths = mask.sum(dim=1, keepdim=True).to(w.dtype)
            out["advantages"] = (adv.unsqueeze(1).to(w.dtype) * lengths * w).detach()
        shadow = self._log_credit(mode, w, mask, credit)
        writer = getattr(self, "sample_writer", None)
        step = self.state.global_step
        if (
            mode == "train"
            and writer is not None
            and writer.due(step)
            and self.accelerator.is_main_process
        ):
            writer.write(step, self.processing_class, out, {self.scheme.name: w, **shadow}, adv)
        return out

    def _weights(self, scheme: str, mask: Tensor, credit: dict[str, Tensor]) -> Tensor:
        """``scheme``'s normalised weights from the inputs in ``credit``."""
        req = {k: credit[k] for k in get_scheme(scheme).requires}
        return token_weights(
            scheme, mask=mask, eps=self.args.weight_eps, eps_mode=self.args.weight_eps_mode, **req
        )

    def _log_credit(
        self, mode: str, w: Tensor, mask: Tensor, credit: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Log concentration metrics; returns the shadow schemes' weights."""
        m = self._metrics[mode]
        shadow: dict[str, Tensor] = {}
        s = concentration_summary(w, mask)
        m["credit/gini"].append(s["gini"])
        m["credit/effective_ratio"].append(s["effective_ratio"])
        if "h_adapted" in credit and "h_base" in credit:
            real = mask.bool()
            r = hidden_residual_norm(credit["h_adapted"], credit["h_base"])[real]
            if r.numel():
                m["credit/residual_mean"].append(float(r.mean()))
                m["credit/residual_max"].append(float(r.max()))
                # Under mixed precision the states are float32 but carry bf16/fp16 noise.
                amp = (
                    torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
                )
                floor = residual_noise_floor(
                    credit["h_base"], self.args.residual_noise_factor, compute_dtype=amp
                )[real]
                m["credit/residual_below_noise"].append(float((r < floor).float().mean()))
        if self.args.shadow_diagnostics:
            for name in BUILTIN:
                if all(k in credit for k in get_scheme(name).requires):
                    # The trained scheme's weights exist already; the others are new.
                    ws = w if name == self.scheme.name else self._weights(name, mask, credit)
                    sh = concentration_summary(ws, mask)
                    m[f"credit/{name}/gini"].append(sh["gini"])
                    m[f"credit/{name}/effective_ratio"].append(sh["effective_ratio"])
                    shadow[name] = ws
        return shadow

    # ------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write each checkpoint in a staging folder and rename it into place, so
        a run killed mid-save never leaves a half-written ``checkpoint-N`` that
        resume would pick up."""
        run_dir = self._get_output_dir(trial=trial)
        stage = os.path.join(run_dir, ".checkpoint-staging")
        shutil.rmtree(stage, ignore_errors=True)
        real = self._get_output_dir
        self._get_output_dir = lambda trial=None: stage  # type: ignore[method-assign]
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._get_output_dir = real  # type: ignore[method-assign]
        if self.args.should_save:
            for name in os.listdir(stage):
                dst = os.path.join(run_dir, name)
                shutil.rmtree(dst, ignore_errors=True)
                os.replace(os.path.join(stage, name), dst)
            shutil.rmtree(stage, ignore_errors=True)
            if self.state.best_model_checkpoint and stage in self.state.best_model_checkpoint:
                self.state.best_model_checkpoint = self.state.best_model_checkpoint.replace(
                    stage, run_dir
                )


# ------------------------------------------------------- run directory


class MetricsFile(TrainerCallback):
    """Appends one JSON line per logged optimizer step to ``path``, flushed and
    fsynced, so a crash loses at most the step in flight. On resume, lines past
    the checkpoint's step are dropped first (they will be produced again)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        keep = []
        if state.global_step > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if rec.get("step", 0) <= state.global_step:
                    keep.append(line)
        atomic_write_text(self.path, "".join(x + "\n" for x in keep))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if (
            not state.is_world_process_zero
            or not logs
            or "loss" not in logs
            or "train_runtime" in logs
        ):
            return
        rec = {
            "step": state.global_step,
            **{k: v for k, v in logs.items() if isinstance(v, int | float)},
        }
        if "reward_std" in rec:
            rec["reward_var"] = rec["reward_std"] ** 2
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


class SampleWriter:
    """Every ``every`` steps, append ``count`` completions (those with a nonzero
    advantage first) with their per-token weights (the trained scheme's, and
    every shadow scheme's) to ``path``."""

    def __init__(self, path: str | os.PathLike[str], every: int, count: int) -> None:
        self.path, self.every, self.count = Path(path), every, count
        self.last_step = -1

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step != self.last_step

    def write(
        self,
        step: int,
        tokenizer: Any,
        out: dict[str, Any],
        weights: dict[str, Tensor],
        adv: Tensor,
    ) -> None:
        self.last_step = step
        mask = out["completion_mask"].bool()
        with self.path.open("a", encoding="utf-8") as f:
            # Completions that carry credit (nonzero advantage) first: those are the
            # ones whose weights matter.
            rows = sorted(range(mask.size(0)), key=lambda i: float(adv[i]) == 0.0)
            for i in rows[: self.count]:
                ids = out["completion_ids"][i][mask[i]].tolist()
                prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
                rec = {
                    "step": step,
                    "index": i,
                    "prompt": tokenizer.decode(prompt, skip_special_tokens=True),
                    "advantage": float(adv[i]),
                    "tokens": [tokenizer.decode([t]) for t in ids],
                    "weights": {
                        k: [round(float(x), 6) for x in w[i][mask[i]]] for k, w in weights.items()
                    },
                }
                f.write(json.dumps(rec) + "\n")
            f.flush()
