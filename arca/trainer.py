"""GRPO/RLOO with token-level credit weighting, on TRL's ``GRPOTrainer``.

This is the one module that touches TRL internals (pinned: trl 1.16). It
overrides ``_generate_and_score_completions``: after TRL has generated,
rewarded and computed each completion's scalar advantage ``A_i``, arca scores
the batch with the configured scheme and hands TRL per-token advantages
``A_i * T_i * w_it`` of shape ``(B, T)``, where ``T_i`` is the completion's
length. With ``loss_type="grpo"`` TRL averages each sequence's token losses
over ``T_i``, so the sequence's loss becomes ``sum_t w_it * loss_it``: the
paper's estimator (eq. 6). TRL's other token-level normalisers (``bnpo``,
``dr_grpo``, ``dapo``, ``cispo``, ``sapo``) sum token losses with a factor per
sequence, so the same advantages keep each sequence's share and redistribute it
over its tokens by ``w`` (:func:`arca.credit.weighted_pg_loss` is the reference
for each, tested); ``luspo``, ``vespo`` and sequence-level importance sampling
are refused (:data:`arca.credit.loss.REFUSED_LOSS_TYPES`). Weights are detached
and computed once per generated batch; when ``high_entropy`` is weighed (trained
or shadow), once per micro-batch: its threshold is TRL's, the top quantile of
the real tokens of the rows TRL trains in one forward, gathered from every
process, whichever path read the entropies.

Where the schemes' inputs come from. Policy-side inputs (log-probs, entropies,
the adapted hidden state, the LoRA layers' outputs) are read from the training
forward TRL runs anyway: arca defers the weighting to ``_compute_loss``,
whose forward it hooks, and sets the per-token advantages there before TRL
reads them. This holds when each generated batch is trained on once, under the
policy that generated it (TRL's own condition for skipping
``old_per_token_logps``); like TRL's ``per_token_logps.detach()`` they then
include the LoRA-dropout draw of that forward. Otherwise TRL runs a no-grad
old-log-prob pass of the policy at generation time (vLLM's importance-sampling
correction, ``num_iterations > 1``, misaligned ``steps_per_generation``), and
arca reads the same inputs from that pass (with its dropout, as TRL's old
log-probs). Only ``credit_from_training_forward=False`` adds a pass: one
no-grad, dropout-free pass at generation time.
Adapter-off inputs (reference log-probs, base hidden states) come from TRL's
own KL-reference pass when ``beta > 0``, or from one adapter-disabled pass. They
are the initial policy's: for a PeftModel given with a non-zero adapter, a frozen
copy of that adapter (:data:`REF_ADAPTER`, TRL's KL reference), never the bare
base model.

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
high_entropy   entropies                       0           0
oracle         the ground truth (error index)  0           0
ktae           the group's token ids, rewards  0           0
lambda_grpo    the group's token ids           0           0
oar_g          its input-gradient saliency     2 + 1 bwd   2 + 1 bwd
=============  ==============================  ==========  =================

``oar_g``'s are its own: one no-grad forward, one forward with a graph to the
input embeddings and one backward to them (no weight gradients), at generation
time (:meth:`CreditGRPOTrainer._oar_inputs`). The field's schemes (oracle,
ktae, lambda_grpo, oar_g; docs/credit-schemes.md) are handed to TRL through
:func:`arca.credit.token_credit`, as every scheme: ``A_i T_i w_it`` for the
redistributions (salience and weights kinds), the scheme's own ``(B, T)``
advantages for ``ktae`` and ``lambda_grpo``, which change the advantage mass
(KTAE can flip a token's sign) and are never renormalised. Those two need whole
groups: they are made at generation time from the generation batch gathered
over every process (a group may straddle two), before TRL shuffles and splits
it, and kept in the batch under :data:`TOKEN_ADVANTAGES`. ``oracle`` reads the
ground truth the trainer computes for the correctness metrics
(``out["arca_error_index"]``); it is refused without an ``error_locator``, and
with ``error_locator: mc`` trains uniform on the rows and steps Monte-Carlo did
not locate. A scheme of kind advantages is graded by the signed metrics
(:func:`arca.credit.signed_credit_correctness`) and also logs
``credit/sign_flip_share`` and ``credit/mass_ratio``.

The same with vLLM generation (against stock TRL with vLLM). Add one adapted
no-grad pass to the non-uniform rows with ``credit_from_training_forward=
False``. ``shadow_diagnostics=True`` gathers every scheme's
inputs, so every scheme's Gini and effective-token ratio are logged on the
same batch: the built-in ones, ``oracle`` where the batch has ground truth,
``ktae`` and ``lambda_grpo`` (no pass), ``oar_g`` only when it is trained.

Full fine-tuning (no peft adapter): the "base" side of divergence and ARCA is
the initial policy, from a frozen copy of the initial weights (TRL's own
``ref_model`` when ``beta > 0``, else a copy arca makes, as TRL would for a
KL term); the pass counts above hold with "adapter-disabled pass" read as
"reference-model pass". ``arca_local`` needs LoRA layers and is refused.

Ground truth. Given ``error_locator`` (a task's :data:`arca.tasks.base.ErrorLocator`),
each generated batch's completions are located (:func:`arca.tasks.locate.ground_truth`,
on the CPU, no forward: O(B*T) decoding where tokens decode alone, as character and
byte-level BPE vocabularies do; SentencePiece-style ones decode prefixes, O(B*T^2)) and ``credit/<metric>`` (prefix blame, error
lift, top-1/3 hit, result and template share; :mod:`arca.credit.correctness`)
is logged for the trained scheme and, with shadow diagnostics, for every
scheme as ``credit/<scheme>/<metric>``: means over the rows each applies to
(wrong completions with a located error and a negative advantage; correct
ones for the shares), exact across micro-batches.

Also logged: ``credit/effective_n`` and ``credit/length`` (EffN/T alone hides
the length), ``credit/drift_kl`` (mean per-token KL of the sampled tokens from
the initial policy, TRL's k3 estimator ``exp(r) - r - 1`` with ``r = log
pi_ref - log pi``) whenever reference log-probs are at hand, and
``credit/dropout``: the dropout probability of the forward the weights were
read from (the training forward's LoRA dropout on the in-forward path; 0 for
the dropout-free scoring pass).

Exact ARCA in low precision: the residual is the difference of two large,
nearly equal hidden states. Both are captured in the model's dtype and
subtracted in float32; ``credit/residual_below_noise`` logs the fraction
of tokens whose residual is below the rounding noise of the hidden states
(:func:`residual_noise_floor`), where the ranking is noise.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from torch import Tensor, nn
from transformers.trainer_utils import rotate_checkpoints
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import use_adapter

from arca.credit import (
    BUILTIN_SCHEMES,
    FIELD_SCHEMES,
    GROUND_TRUTH_SCHEMES,
    abs_share_weights,
    available_schemes,
    concentration_rows,
    credit_correctness,
    get_scheme,
    hidden_residual_norm,
    mass_ratio,
    normalize,
    residual_noise_floor,
    sign_flip_share,
    signed_credit_correctness,
    token_advantages,
    token_credit,
    token_weights,
)
from arca.credit.advantages import ESTIMATORS
from arca.credit.loss import LOSS_TYPES, REFUSED_LOSS_TYPES
from arca.credit.oracle import ORACLE_REST
from arca.io import atomic_write_text, replace_dir
from arca.models.vllm_heads import CPU_HEAD_DIMS, head_size
from arca.scoring import (
    capture_adapter_shift,
    capture_final_hidden,
    eval_mode,
    outcome_saliency,
    residual_writers,
    uses_lora_variant,
    writes_residual,
)
from arca.tasks.base import ErrorLocator, Located
from arca.tasks.locate import answer_starts, ground_truth, token_spans
from arca.tasks.mc import MCSchedule, MonteCarloLocator
from arca.tasks.mc import located as mc_located

BUILTIN = BUILTIN_SCHEMES
logger = logging.getLogger(__name__)
_POLICY_INPUTS = {"logps", "entropies", "h_adapted", "h_shift"}
_BASE_INPUTS = {"ref_logps", "h_base"}
#: Read from the whole group at generation time (ktae, lambda_grpo): the
#: group's completions and correctness, gathered from every process.
_GROUP_INPUTS = {"completion_ids", "correct", "group", "advantages"}
#: The ground truth (oracle): ``out["arca_error_index"]``, from the error locator.
_TRUTH_INPUTS = {"error_index"}
#: OAR-G's saliency, from its own passes at generation time.
_OAR_INPUTS = {"saliency", "answer_start"}
#: Where a generated batch holds a group scheme's ``(B, T)`` token advantages,
#: made at generation time and split with their rows by TRL.
TOKEN_ADVANTAGES = "arca_ta_"


@dataclass
class CreditGRPOConfig(GRPOConfig):
    """``trl.GRPOConfig`` plus token-credit options; ``loss_type`` defaults to
    ``"grpo"`` (the paper's) and may be any of :data:`arca.credit.loss.LOSS_TYPES`."""

    token_weighting: str = field(
        default="uniform",
        metadata={
            "help": "Token-credit scheme: "
            + ", ".join(BUILTIN)
            + "; the field's "
            + ", ".join(FIELD_SCHEMES)
            + " (oracle is a ceiling: it uses the ground truth); or a registered one."
        },
    )
    weight_eps: float = field(
        default=1e-8, metadata={"help": "Normalisation floor (paper eq. 8), >= 0."}
    )
    weight_eps_mode: str = field(
        default="absolute", metadata={"help": "'absolute' or 'relative' floor."}
    )
    advantage_estimator: str = field(default="grpo", metadata={"help": "'grpo' or 'rloo'."})
    high_entropy_quantile: float = field(
        default=0.2,
        metadata={
            "help": "high_entropy: the fraction of the batch's tokens, by predictive entropy, "
            "that get the credit (TRL's top_entropy_quantile; 'Beyond the 80/20 rule': 0.2)."
        },
    )
    oracle_share: float = field(
        default=0.2,
        metadata={
            "help": "oracle (a ceiling: uses ground truth): the weight on a wrong completion's "
            "first wrong token, in [0, 1]"
        },
    )
    oracle_rest: str = field(
        default="after",
        metadata={
            "help": "oracle: where the rest of the weight goes, 'uniform' (the row's other "
            "tokens) or 'after' (the tokens after the error; uniform if none follows)"
        },
    )
    ktae_alpha: float = field(
        default=1.0, metadata={"help": "ktae: weight of Fisher's exact test (official: 1)"}
    )
    ktae_beta: float = field(
        default=1.0,
        metadata={
            "help": "ktae: weight of the information gain (the released code trains with 1; "
            "its run scripts say 2, which its call site never reads)"
        },
    )
    ktae_gamma_tf: bool = field(
        default=True, metadata={"help": "ktae: add the BM25 term-frequency contrast (official: on)"}
    )
    ktae_top: float = field(
        default=1.0,
        metadata={"help": "ktae: the key-token values lie in (-top, top) (official: 1)"},
    )
    oar_quantile: float = field(
        default=0.5,
        metadata={
            "help": "oar_g: the quantile of a completion's normalised importances that splits "
            "suppressed from boosted tokens (arca's choice; the paper's could not be read)"
        },
    )
    oar_beta: float = field(
        default=1.0,
        metadata={"help": "oar_g: the boost above the threshold (arca's choice, as oar_quantile)"},
    )
    oar_noise_std: float = field(
        default=1e-3,
        metadata={"help": "oar_g: std of the noise on the reasoning embeddings (official: 1e-3)"},
    )
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
    # TRL's default is "dapo"; arca keeps the paper's "grpo" (per-sequence mean).
    loss_type: str = field(
        default="grpo",
        metadata={
            "help": "TRL's loss normaliser: " + ", ".join(LOSS_TYPES) + " (arca's default: grpo, "
            "the paper's; luspo and vespo are refused, see arca.credit.loss)."
        },
    )

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
        if not 0 < self.high_entropy_quantile <= 1:
            raise ValueError(
                f"high_entropy_quantile: must be in (0, 1], got {self.high_entropy_quantile}"
            )
        if not 0 <= self.oracle_share <= 1:
            raise ValueError(f"oracle_share: must be in [0, 1], got {self.oracle_share}")
        if self.oracle_rest not in ORACLE_REST:
            raise ValueError(
                f"oracle_rest: must be one of {', '.join(ORACLE_REST)}, got {self.oracle_rest!r}"
            )
        for name in ("ktae_alpha", "ktae_beta", "ktae_top", "oar_beta", "oar_noise_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
        if self.ktae_alpha + self.ktae_beta <= 0:
            raise ValueError("ktae_alpha, ktae_beta: at least one must be > 0")
        if not 0 <= self.oar_quantile <= 1:
            raise ValueError(f"oar_quantile: must be in [0, 1], got {self.oar_quantile}")
        if self.weight_eps_mode not in ("absolute", "relative"):
            raise ValueError(
                f"weight_eps_mode: must be 'absolute' or 'relative', got {self.weight_eps_mode!r}"
            )
        if self.advantage_estimator not in ESTIMATORS:
            raise ValueError(
                f"advantage_estimator: must be one of {', '.join(ESTIMATORS)}, got {self.advantage_estimator!r}"
            )
        if self.loss_type not in LOSS_TYPES:
            why = REFUSED_LOSS_TYPES.get(self.loss_type, "not a TRL loss type arca knows")
            raise ValueError(
                f"loss_type: {self.loss_type!r} is not supported ({why}); "
                f"use one of {', '.join(LOSS_TYPES)}"
            )
        if self.importance_sampling_level != "token" and self.token_weighting != "uniform":
            raise ValueError(
                f"importance_sampling_level: {self.importance_sampling_level!r} makes the "
                "importance ratio one number per sequence, so token weights cancel and "
                f"{self.token_weighting!r} would train exactly as uniform; use 'token'"
            )
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations: a group needs at least 2 completions, got {self.num_generations}"
            )
        if (
            self.advantage_estimator == "rloo"
            and self.multi_objective_aggregation == "normalize_then_sum"
        ):
            # TRL z-scores each reward in its group, sums them and z-scores the
            # sum over the batch: arca's K/(K-1) on that would be labelled RLOO
            # and be neither RLOO nor GRPO.
            raise ValueError(
                "multi_objective_aggregation: 'normalize_then_sum' standardises each reward "
                "and their sum, so advantage_estimator 'rloo' (unscaled rewards minus the "
                "leave-one-out mean) cannot hold; use multi_objective_aggregation: "
                "sum_then_normalize with rloo, or advantage_estimator: grpo"
            )
        if self.advantage_estimator == "rloo" and self.scale_rewards not in ("none", False):
            # RLOO's baseline: K/(K-1) * (R - mean), from TRL's unscaled advantage.
            if self.scale_rewards not in ("group", True):  # TRL's default, said below
                raise ValueError(
                    f"scale_rewards: advantage_estimator 'rloo' uses unscaled rewards, got "
                    f"{self.scale_rewards!r}; set scale_rewards: none"
                )
            logger.warning(
                "advantage_estimator rloo: scale_rewards set to 'none' (RLOO's baseline is "
                "K/(K-1) (R - mean) on unscaled rewards); config.yaml records it"
            )
            self.scale_rewards = "none"
        super().__post_init__()


def _refuse_before_loading(config: CreditGRPOConfig, error_locator: Any) -> None:
    """What a scheme cannot do with this config, said before TRL builds anything."""
    scheme = get_scheme(config.token_weighting)
    if set(scheme.requires) & _TRUTH_INPUTS and error_locator is None:
        raise ValueError(
            f"token_weighting: {scheme.name!r} is a ceiling that uses the ground truth (each "
            "wrong completion's first wrong token), and no error_locator was given; pass "
            "CreditGRPOTrainer(..., error_locator=<the task's locator or an MCSchedule>) (arca "
            "train: a task with a locator, or error_locator: mc or an import path)"
        )
    if set(scheme.requires) & _OAR_INPUTS and (config.fsdp or config.deepspeed):
        raise ValueError(
            f"token_weighting: {scheme.name!r} takes a gradient with respect to the input "
            "embeddings in its own backward, outside the training step, which FSDP and DeepSpeed "
            "(sharded parameters, gradient hooks) do not support here; train it with plain data "
            "parallelism"
        )


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


#: The prefix of the schemes' inputs held in a generated batch until TRL trains
#: each of its micro-batches (``CreditGRPOTrainer._weigh_or_hold``).
HELD = "arca_held_"

#: TRL's name for the frozen copy of a given PeftModel's adapter, its KL
#: reference with ``beta > 0``; arca makes the same copy with ``beta = 0``
#: (:func:`_keep_initial_adapter`), so the initial policy is one thing.
REF_ADAPTER = "ref"


def _keep_initial_adapter(model: Any, args: CreditGRPOConfig) -> None:
    """Divergence, ARCA and drift compare the policy with the initial policy.
    For a PeftModel given with an adapter that is already non-zero, that is the
    adapter as given, not the base model without it: keep a frozen copy of it
    as :data:`REF_ADAPTER`, as TRL does for its KL reference when ``beta > 0``
    (then TRL makes it). Nothing is done when no scheme needs the initial
    policy or the adapter starts at zero (then disabling it is the same)."""
    from peft import PeftModel

    scheme = get_scheme(args.token_weighting)
    needs = set(scheme.requires) | (_BASE_INPUTS if args.shadow_diagnostics else set())
    if not isinstance(model, PeftModel) or not needs & _BASE_INPUTS:
        return
    if REF_ADAPTER in model.peft_config or "default" not in model.peft_config:
        return
    if all(
        p.count_nonzero() == 0
        for n, p in model.named_parameters()
        if ".default." in n and "lora_B" in n
    ):
        return
    model.add_adapter(REF_ADAPTER, model.peft_config["default"])
    for name, param in model.named_parameters():
        if ".default." in name:
            ref = model.get_parameter(name.replace(".default.", f".{REF_ADAPTER}."))
            ref.data.copy_(param.data)
            ref.requires_grad_(False)
    logger.info(
        "the model's adapter is not zero: divergence, ARCA and credit/drift_kl compare with a "
        "frozen copy of it (adapter %r), the initial policy",
        REF_ADAPTER,
    )


#: What a changed TRL call order means (see ``CreditGRPOTrainer._compute_loss``).
CALL_ORDER_BROKEN = (
    "TRL's call order changed: arca's deferred weighting (credit_from_training_forward: "
    "true) needs GRPOTrainer._compute_loss to run the training forward through "
    "_get_per_token_logps_and_entropies before it reads inputs['advantages']; set "
    "credit_from_training_forward: false (one extra scoring pass) or pin trl<1.17"
)


class _NotYetWeighted:
    """``inputs["advantages"]`` of a deferred batch until the forward weighs it:
    any use (an attribute such as ``.dim()``, arithmetic, indexing) means TRL
    read the advantages first."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"{CALL_ORDER_BROKEN}: inputs['advantages'].{name} read first")

    def _refuse(self, *_: Any) -> Any:
        raise RuntimeError(f"{CALL_ORDER_BROKEN}: inputs['advantages'] used first")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __neg__ = __getitem__ = __iter__ = __len__ = __bool__ = _refuse

    def __repr__(self) -> str:
        return "<advantages not yet weighted>"


_NOT_YET_WEIGHTED = _NotYetWeighted()


# ------------------------------------------------------- vLLM's CPU build
# TRL 1.16 syncs the policy into a colocated vLLM by calling the vLLM model's
# load_weights for each (merged) parameter. vLLM's CPU build packs every linear
# layer's weight for its GEMM kernels once loading is done and replaces the
# parameter with one that has no weight_loader: the first sync stops with
# "'Parameter' object has no attribute 'weight_loader'" (stock GRPOTrainer
# too). vLLM's own in-place update, the worker's reload_weights, restores the
# parameters, loads the new values and packs them again.


def _on_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def sync_weights_reloading(generation: Any) -> None:
    """TRL's colocate ``sync_weights`` through vLLM's ``reload_weights``.

    The parameters come from TRL's own iterator (merge, read, unmerge); each is
    cloned because vLLM may hold a layer's tensors until the layer is complete,
    and the unmerge after the last one must not reach them."""
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    weights = ((name, p.detach().clone()) for name, p in generation._iter_named_params())
    runner.reload_weights(weights_iterator=weights)
    model = runner.get_model()
    lm_head = getattr(model, "lm_head", None)
    config = runner.model_config.hf_config.get_text_config()
    if lm_head is not None and getattr(config, "tie_word_embeddings", False):
        # A tied LM head shares the embedding's weight, but the reload packs it
        # for the GEMM only as the embedding: the head would keep the old
        # logits (full fine-tuning moves the embedding; measured 0.30 nats per
        # token off the policy on the tiny model, 0.011 once repacked).
        lm_head.quant_method.process_weights_after_loading(lm_head)
    generation.llm.reset_prefix_cache()


def patch_colocated_cpu_sync(generation: Any) -> bool:
    """Route a colocated vLLM's weight sync through ``reload_weights`` on the CPU
    platform; returns whether it did. Server mode and GPUs keep TRL's sync.

    Refuses, in one line, a model whose head size vLLM's CPU attention does not
    run: vLLM itself would fail only at the first generation, deep in a step."""
    if getattr(generation, "mode", None) != "colocate" or not _on_cpu_platform():
        return False
    config = generation.llm.llm_engine.model_config.hf_config
    d = head_size(config)
    if d not in CPU_HEAD_DIMS:
        name = getattr(generation.model, "name_or_path", "the model")
        raise ValueError(
            f"use_vllm: vLLM's CPU attention runs head sizes {', '.join(map(str, CPU_HEAD_DIMS))}, "
            f"and {name} has {d}; train the same function with its heads widened: "
            f"model_name_or_path: the folder arca.models.vllm_heads.vllm_ready({str(name)!r}) returns"
        )
    generation.sync_weights = lambda: sync_weights_reloading(generation)
    return True


class CreditGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` whose advantages are redistributed over tokens.

    Takes the same arguments as ``GRPOTrainer`` with ``args`` a
    :class:`CreditGRPOConfig`, plus ``error_locator``: the task's
    :data:`arca.tasks.base.ErrorLocator` (``(row, completion) -> Located``),
    which turns on the credit-correctness metrics. Logs ``credit/gini``,
    ``credit/effective_ratio``, ``credit/effective_n``, ``credit/length``, when
    both hidden states are at hand ``credit/residual_mean`` /
    ``credit/residual_max`` and ``credit/residual_below_noise`` (the fraction of
    tokens whose residual is under :func:`arca.credit.residual_noise_floor`),
    ``credit/drift_kl`` when reference log-probs are, and with
    ``shadow_diagnostics`` ``credit/<scheme>/<metric>`` for every built-in
    scheme and the field's whose inputs are at hand (see the module docstring).

    ``correct_reward``: a completion whose (weighted, summed) reward is at
    least this counts as correct for KTAE's statistics (``arca train`` passes
    the run's ``correct_reward``, as ``arca eval`` counts); ``None``: reward
    above 0, as the official KTAE code.
    """

    def __init__(
        self,
        model: Any,
        *args: Any,
        error_locator: ErrorLocator | MCSchedule | None = None,
        correct_reward: float | None = None,
        **kwargs: Any,
    ) -> None:
        _reject_frozen_peft(model)
        if len(args) < 2 and kwargs.get("args") is None:
            # As GRPOTrainer builds a GRPOConfig when given none.
            name = model if isinstance(model, str) else model.config._name_or_path or "model"
            kwargs["args"] = CreditGRPOConfig(f"{str(name).rstrip('/').split('/')[-1]}-GRPO")
        config = args[1] if len(args) >= 2 else kwargs["args"]
        if isinstance(config, CreditGRPOConfig):
            _refuse_before_loading(config, error_locator)
            if config.beta == 0.0:
                _keep_initial_adapter(model, config)
        super().__init__(model, *args, **kwargs)
        if not isinstance(self.args, CreditGRPOConfig):
            raise TypeError("CreditGRPOTrainer needs args=CreditGRPOConfig(...)")
        self.error_locator = error_locator
        self.correct_reward = correct_reward
        self.scheme = get_scheme(self.args.token_weighting)
        if self.scheme.name in GROUND_TRUTH_SCHEMES and isinstance(error_locator, MCSchedule):
            logger.warning(
                "token_weighting %s with error_locator: mc: Monte-Carlo ground truth exists only "
                "for the rows it locates (mc_completions per process, at step 1 and every "
                "mc_every steps); every other row, and every other step, trains uniform",
                self.scheme.name,
            )
        unwrapped = self.accelerator.unwrap_model(self.model)
        self._peft = hasattr(unwrapped, "disable_adapter")
        needs = set(self.scheme.requires)
        if self.args.shadow_diagnostics:
            needs |= _POLICY_INPUTS | _BASE_INPUTS
            if "h_shift" not in self.scheme.requires and not (
                self._peft and writes_residual(unwrapped) and not uses_lora_variant(unwrapped)
            ):
                needs.discard("h_shift")  # arca_local's shadow needs plain LoRA on o/down proj
        # The group schemes' token advantages, made at generation time: the
        # trained one's, and with shadow diagnostics both (no extra pass).
        self._group_schemes = tuple(
            s
            for s in FIELD_SCHEMES
            if set(get_scheme(s).requires) & {"group"}
            and (s == self.scheme.name or self.args.shadow_diagnostics)
        )
        unknown = (
            needs - _POLICY_INPUTS - _BASE_INPUTS - _GROUP_INPUTS - _TRUTH_INPUTS - _OAR_INPUTS
        )
        if unknown:
            raise ValueError(
                f"token_weighting: scheme {self.scheme.name!r} needs inputs the trainer does not "
                f"produce: {', '.join(sorted(unknown))}"
            )
        self._needs = needs
        # high_entropy's threshold is taken over each micro-batch TRL trains
        # (TRL's rule): weighed at generation time, a batch is held until then.
        self._per_micro_batch = self.scheme.name == "high_entropy" or self.args.shadow_diagnostics
        self._needs_policy = bool(needs & _POLICY_INPUTS)
        self._needs_base = bool(needs & _BASE_INPUTS)
        if "h_shift" in needs and not self._peft:
            raise ValueError(
                f"token_weighting: {self.scheme.name!r} reads the LoRA layers' output; with full "
                "fine-tuning (use_peft: false) use 'arca', which compares against the initial model"
            )
        if "h_shift" in needs:
            residual_writers(unwrapped)  # fails early, naming the adapter's targets
            if uses_lora_variant(unwrapped):
                raise ValueError(
                    f"token_weighting: {self.scheme.name!r} reads the LoRA layers' outputs, "
                    "which a LoRA variant (DoRA, use_dora: true) rescales; use plain LoRA"
                )
        # Full fine-tuning: the base side is a frozen copy of the initial policy.
        # TRL keeps one for beta > 0; otherwise arca makes it, as TRL would.
        self._frozen_ref: Any = None
        if self._needs_base and not self._peft:
            if self.ref_model is not None:
                self._frozen_ref = self.ref_model
            else:
                self._frozen_ref = self._make_reference(unwrapped)
        # The dropout of the training forward, which the in-forward path reads.
        self._dropout_p = max(
            (float(m.p) for m in unwrapped.modules() if isinstance(m, nn.Dropout)), default=0.0
        )
        # (inputs dict, hook captures) while _compute_loss runs a deferred batch.
        self._pending: tuple[dict[str, Any], dict[str, list[Tensor]]] | None = None
        self._warn_vllm_merge_rounding(unwrapped)
        if self.args.use_vllm:  # vLLM's CPU build cannot take TRL's in-place sync
            patch_colocated_cpu_sync(self.vllm_generation)
        # While TRL generates and scores: where its old-log-prob pass leaves arca's inputs.
        self._old_pass: dict[str, Tensor] | None = None
        # Token metrics of the logging window: [sum, tokens] and maxima, per mode.
        self._token_sums: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}
        self._token_max: dict[str, dict[str, float]] = {"train": {}, "eval": {}}

    def _warn_vllm_merge_rounding(self, policy: Any) -> None:
        """TRL's vLLM weight sync merges the adapter into the base weights and
        unmerges it, every step; in 16-bit the base weights do not come back
        exactly. Say so once when the adapter-off side is read."""
        if not (self.args.use_vllm and self._peft and self._needs_base):
            return
        dtypes = {p.dtype for n, p in policy.named_parameters() if "base_layer" in n}
        if dtypes & {torch.bfloat16, torch.float16}:
            logger.warning(
                "use_vllm with a 16-bit base model: TRL's weight sync merges and unmerges the "
                "adapter every step, and rounding moves the base weights (tiny model, bf16: the "
                "adapter-off hidden state by ~8% of the mean ARCA residual, the residual itself "
                "by ~3%, less than bf16's own error; benchmarks/vllm_sync_drift.py). Load the "
                "base model in float32 (dtype: float32, with bf16: true) to avoid it."
            )

    def _make_reference(self, policy: Any) -> Any:
        """A frozen copy of the initial policy, prepared as TRL prepares its
        ``ref_model`` (DeepSpeed, FSDP or plain). Under ZeRO-3 the policy's
        parameters are partitioned, so the copy is loaded from its path as
        TRL loads its reference; otherwise it is a deep copy (also of a model
        built in memory)."""
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
        from trl.models.utils import prepare_deepspeed, prepare_fsdp
        from trl.trainer.utils import add_fused_lm_head

        if is_deepspeed_zero3_enabled():
            from transformers import AutoModelForCausalLM

            ref = AutoModelForCausalLM.from_pretrained(
                policy.config._name_or_path, dtype=policy.dtype
            )
        else:
            ref = copy.deepcopy(policy)
            # TRL's patched forwards came along (the model's, and the LM head's
            # with cast_lm_head_to_fp32), and their closures would call the
            # policy's modules: drop every instance forward and patch afresh.
            for module in ref.modules():
                module.__dict__.pop("forward", None)
        add_fused_lm_head(
            ref,
            temperature=self.temperature,
            cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
            outputs=("log_probs", "entropy"),  # arca's scoring pass reads both
        )
        ref.eval().requires_grad_(False)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(ref, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(ref, self.accelerator)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

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

    @contextmanager
    def _reference_hooks(self, n_completion: int) -> Iterator[dict[str, list[Tensor]]]:
        """The frozen initial model's last hidden state, shaped as :meth:`_policy_hooks`."""
        with capture_final_hidden(
            self.accelerator.unwrap_model(self._frozen_ref), n_completion
        ) as hs:
            yield {"h_adapted": hs, "h_shift": []}

    def _scoring_pass(
        self, out: dict[str, Any], adapter: bool, logits: bool = True
    ) -> dict[str, Tensor]:
        """One no-grad, dropout-free pass over the batch in ``out``: ``logps``,
        ``entropies``, ``hidden`` and, adapted, ``h_shift`` when a scheme needs it.
        ``adapter=False`` scores the base side: the policy with its adapter
        disabled, or the frozen initial model under full fine-tuning.
        ``logits=False`` runs the body only (no LM head) and returns ``hidden``."""
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        C = out["completion_ids"].size(1)
        bs = self.args.per_device_train_batch_size
        if not adapter and self._frozen_ref is not None:
            model, off = self._frozen_ref, nullcontext()
            hooks = self._reference_hooks(C)
        else:
            model, hooks = self.model, self._policy_hooks(C, hidden=True)
            off = self._initial_adapter() if not adapter else nullcontext()
        unwrapped = self.accelerator.unwrap_model(model)
        # eval_mode: dropout off, so weights never depend on a dropout draw.
        with torch.no_grad(), eval_mode(unwrapped), off, hooks as cap:
            if logits:
                logps, ent, _ = self._get_per_token_logps_and_entropies(
                    model, ids, attn, C, batch_size=bs, compute_entropy=True
                )
            else:
                # Through the (possibly FSDP/DeepSpeed-wrapped) model, not its
                # body alone, so sharded parameters are gathered; the LM head
                # projects one position only.
                for i in range(0, ids.size(0), bs):
                    model(
                        input_ids=ids[i : i + bs],
                        attention_mask=attn[i : i + bs],
                        logits_to_keep=1,
                        use_cache=False,
                    )
        res = {"hidden": torch.cat(cap["h_adapted"], dim=0)}
        if logits:
            res |= {"logps": logps, "entropies": ent}
        if cap["h_shift"]:
            res["h_shift"] = torch.cat(cap["h_shift"], dim=0)
        return res

    def _base_inputs(self, out: dict[str, Any], reference: list[Tensor]) -> dict[str, Tensor]:
        """``ref_logps`` and ``h_base`` for the batch in ``out``. ``reference``: full
        last hidden states captured during TRL's own KL-reference pass (``beta >
        0``), which then replaces arca's base-side pass."""
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
        self,
        out: dict[str, Any],
        reference: list[Tensor] | None = None,
        policy: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Every input the schemes need for the batch in ``out`` (the path used
        when the training forward cannot be): the policy's from ``policy`` (read
        in TRL's old-log-prob pass) or one no-grad pass, the base side's from
        TRL's reference pass or one no-grad pass."""
        inputs: dict[str, Tensor] = {}
        if policy:
            inputs.update(policy)
        elif self._needs_policy:
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

    def _adapter_off(self) -> bool:
        """Is the policy's adapter off: disabled (``disable_adapter()``), or the
        initial policy's copy of it (:data:`REF_ADAPTER`) active in its place?"""
        probe = self._tuner_probe()
        return probe is not None and (
            bool(probe.disable_adapters) or REF_ADAPTER in probe.active_adapters
        )

    def _initial_adapter(self) -> Any:
        """A context in which the policy is the initial policy: its
        :data:`REF_ADAPTER` (the adapter as given, frozen) when it has one, as
        TRL's KL reference pass uses it, else the adapter disabled."""
        model = self.accelerator.unwrap_model(self.model)
        if REF_ADAPTER in getattr(model, "peft_config", {}):
            return use_adapter(model, adapter_name=REF_ADAPTER)
        return model.disable_adapter()

    def _tuner_probe(self) -> Any:
        """One of the policy's peft tuner layers (they share the adapter state), or None."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        model = self.accelerator.unwrap_model(self.model)
        return next((m for m in model.modules() if isinstance(m, BaseTunerLayer)), None)

    @contextmanager
    def _capture_reference(self) -> Iterator[list[Tensor]]:
        """Keep the backbone's output of TRL's KL-reference forward: the
        policy's with the adapter disabled or TRL's reference adapter active
        (a PeftModel given with its adapter), or TRL's reference model's."""
        if self._frozen_ref is not None:
            with capture_final_hidden(self.accelerator.unwrap_model(self._frozen_ref), None) as c:
                yield c
            return
        if self._tuner_probe() is None:
            yield []
            return
        model = self.accelerator.unwrap_model(self.model)
        with capture_final_hidden(model, None, keep=self._adapter_off) as chunks:
            yield chunks

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        # With beta > 0 TRL runs a reference pass for its KL term: capture the
        # base hidden states there instead of running another pass.
        reuse = self.beta != 0.0 and self._needs_base
        # TRL runs an old-log-prob pass of the policy when the batch will be
        # trained on later or more than once, or to correct vLLM's sampling:
        # arca's policy inputs are read there too (see the override below).
        if self._needs_policy and self.args.credit_from_training_forward:
            self._old_pass = {}
        try:
            with self._capture_reference() if reuse else nullcontext([]) as reference:
                out = super()._generate_and_score_completions(inputs)
            policy, self._old_pass = self._old_pass, None
        finally:
            self._old_pass = None
        if isinstance(self.error_locator, MCSchedule):
            gt = self._monte_carlo_truth(inputs, out)
        elif self.error_locator is not None:
            gt = ground_truth(
                self.error_locator,
                inputs,
                out["completion_ids"],
                out["completion_mask"],
                self.processing_class,
            )
        else:
            gt = None
        if gt is not None:
            # Tensors, so TRL's shuffle and split keep them with their rows.
            out |= {f"arca_{k}": v for k, v in gt.items()}
        if self._group_schemes:
            # Whole groups are at hand only now, before TRL shuffles and splits.
            out |= self._group_token_advantages(out)
        if set(self.scheme.requires) & _OAR_INPUTS:
            out |= self._oar_inputs(out)
        if policy and out.get("old_per_token_logps") is not None:
            # Read in TRL's old-log-prob pass: the model's mode, so its dropout.
            p = self._dropout_p if self.model.training else 0.0
            return self._weigh_or_hold(out, self._credit_inputs(out, reference, policy), p)
        if not self._defer(out):
            return self._weigh_or_hold(out, self._credit_inputs(out, reference), 0.0)
        # Deferred: TRL splits and shuffles `out` into micro-batches, these keys included.
        out["arca_advantage"] = out["advantages"]
        if self._needs_base:
            for k, v in self._base_inputs(out, reference).items():
                out[f"arca_{k}"] = v
        return out

    def _monte_carlo_truth(
        self, inputs: list[dict[str, Any]], out: dict[str, Any]
    ) -> dict[str, Tensor] | None:
        """Monte-Carlo ground truth (``error_locator: mc``) for up to
        ``count`` of this process's rows, negative advantages first, when the
        schedule says so; ``None`` otherwise. Values come from the base model
        (adapter disabled, or the initial model under full fine-tuning) or the
        current policy, in eval mode, without touching the training RNG."""
        sched = self.error_locator
        assert isinstance(sched, MCSchedule)
        ga = self.args.gradient_accumulation_steps
        span = -(-self.args.steps_per_generation * self.num_iterations // ga)
        if not sched.due(self.state.global_step + 1, span):
            return None
        adv = out["advantages"].detach().cpu()
        mask = out["completion_mask"].bool()
        pmask = out["prompt_mask"].bool()
        order = sorted(range(adv.numel()), key=lambda i: (float(adv[i]) >= 0, i))[: sched.count]
        policy = self.accelerator.unwrap_model(self.model)
        if sched.model == "policy":
            estimator, off = policy, nullcontext()
        elif self._peft:
            # The initial policy: the adapter as given (REF_ADAPTER) or none.
            estimator, off = policy, self._initial_adapter()
        else:
            if self._frozen_ref is None:
                self._frozen_ref = self._make_reference(policy)
            estimator, off = self.accelerator.unwrap_model(self._frozen_ref), nullcontext()
        finder = MonteCarloLocator(
            estimator,
            self.processing_class,
            sched.score,
            correct_reward=sched.correct_reward,
            settings=sched.settings,
            rule=sched.rule,
        )
        ids = [out["completion_ids"][i][mask[i]].tolist() for i in order]
        with torch.no_grad(), eval_mode(estimator), off:
            results = finder.locate(
                [out["prompt_ids"][i][pmask[i]].tolist() for i in order],
                ids,
                [inputs[i] for i in order],
            )
        located: list[Located | None] = [None] * adv.numel()
        for i, c, r in zip(order, ids, results, strict=True):
            located[i] = mc_located(r, *token_spans(self.processing_class, c))
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["credit/mc_seconds"].append(finder.seconds)
        self._metrics[mode]["credit/mc_continuations"].append(finder.continuations)
        return ground_truth(
            None,
            inputs,
            out["completion_ids"],
            out["completion_mask"],
            self.processing_class,
            located=located,
        )

    def _group_token_advantages(self, out: dict[str, Any]) -> dict[str, Tensor]:
        """The group schemes' ``(B, T)`` token advantages of this process's
        rows, under :data:`TOKEN_ADVANTAGES`.

        TRL splits a generation batch over processes in order (process ``r``
        holds global rows ``r * B .. (r + 1) * B``), and a group (``G``
        consecutive global rows) may straddle two processes. So every process
        gathers the completions, their masks and advantages of the whole batch,
        as TRL gathers the rewards, computes every group's statistics (the same
        on each process: deterministic) and keeps its own rows. Correctness is
        the task's reward, gathered by TRL already: at least ``correct_reward``
        (``arca train``: the run's, as ``arca eval`` counts), else above 0 (the
        official KTAE rule); never the error locator's ground truth, which a
        deployable method does not have.

        A tool's output (``tool_mask`` 0) gets no credit; ``lambda_grpo``
        reads it as context all the same (its prefixes run over the whole
        completion: completions whose tool outputs differ share no later token)."""
        real = out["completion_mask"]
        mask = real * out["tool_mask"] if "tool_mask" in out else real
        ids, adv = out["completion_ids"], self._rollout_advantages(out)
        B, T = ids.shape
        rank = self.accelerator.process_index
        if self.accelerator.num_processes > 1:
            pad = self.processing_class.pad_token_id or 0
            ids = self.accelerator.gather(self.accelerator.pad_across_processes(ids, 1, pad))
            real = self.accelerator.gather(self.accelerator.pad_across_processes(real, 1, 0))
            mask = self.accelerator.gather(self.accelerator.pad_across_processes(mask, 1, 0))
            adv = self.accelerator.gather(adv)
        k = self.num_generations if self.model.training else self.num_generations_eval
        group = torch.arange(ids.size(0), device=ids.device) // k
        rewards = (self._rewards_per_func * self.reward_weights.to(ids.device)).nansum(dim=1)
        unscored = torch.isnan(self._rewards_per_func).all(dim=1)
        ok = rewards >= self.correct_reward if self.correct_reward is not None else rewards > 0
        correct = (ok & ~unscored).to(ids.device)
        if correct.numel() != ids.size(0):
            raise RuntimeError(
                f"{correct.numel()} rewards for {ids.size(0)} completions: TRL's gathered "
                "rewards no longer match its generation batch (a TRL change?)"
            )
        given = {"completion_ids": ids, "group": group, "correct": correct}
        res = {}
        for name in self._group_schemes:
            a = token_advantages(
                name,
                mask=(real if name == "lambda_grpo" else mask).bool(),
                advantages=adv.float(),
                options=self._scheme_options(name),
                **{k: v for k, v in given.items() if k in get_scheme(name).requires},
            )
            a = torch.where(mask.bool(), a, 0.0)
            res[f"{TOKEN_ADVANTAGES}{name}"] = a[rank * B : (rank + 1) * B, :T]
        return res

    def _oar_inputs(self, out: dict[str, Any]) -> dict[str, Tensor]:
        """OAR-G's importances ``arca_saliency`` ``(B, T)`` and answer spans
        ``arca_answer_start`` ``(B,)`` for this process's rows: one no-grad
        forward, one forward with a graph to the input embeddings and one
        backward to them (:func:`arca.scoring.outcome_saliency`), in eval mode,
        the noise drawn from a generator of its own (seeded by the run's seed,
        the step and the process), so the training RNG is untouched."""
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        start = answer_starts(self.processing_class, out["completion_ids"], out["completion_mask"])
        step = self.state.global_step + 1
        seed = (self.args.seed * 1_000_003 + step * 1009 + self.accelerator.process_index) % 2**63
        sal = outcome_saliency(
            self.accelerator.unwrap_model(self.model),
            ids,
            attn,
            out["completion_mask"],
            start,
            noise_std=self.args.oar_noise_std,
            generator=torch.Generator().manual_seed(seed),
            batch_size=self.args.per_device_train_batch_size,
        )
        return {"arca_saliency": sal, "arca_answer_start": start}

    def _calculate_rewards(self, inputs: Any, prompts: Any, *args: Any, **kwargs: Any) -> Tensor:
        rewards = super()._calculate_rewards(inputs, prompts, *args, **kwargs)
        self._rewards_per_func = rewards  # every process's, as TRL gathered them (KTAE reads them)
        # Gathered from every process, so every process stops together. TRL
        # would zero every advantage, log no reward and train on, exit 0.
        if rewards.numel() and bool(torch.isnan(rewards).all()):
            names = ", ".join(getattr(self, "reward_func_names", []) or ["?"])
            raise ValueError(
                f"reward_funcs: every reward function ({names}) returned None or NaN for all "
                f"{rewards.shape[0]} completions of step {self.state.global_step + 1}, so there "
                "is nothing to learn from; check the rewards on a few completions (arca eval "
                "scores with them too)"
            )
        return rewards

    def _weigh_or_hold(
        self, out: dict[str, Any], credit: dict[str, Tensor], dropout: float
    ) -> dict[str, Any]:
        """Weigh a batch whose inputs were read at generation time, or, when
        ``high_entropy`` is among the weighted schemes, hold the inputs in
        ``out`` (under :data:`HELD`; TRL shuffles and splits them with their
        rows) and weigh each micro-batch when TRL trains it
        (:meth:`_compute_loss`): its threshold is one micro-batch's, as on the
        in-forward path and in TRL, and TRL splits the batch only after this
        returns."""
        if not self._per_micro_batch:
            return self._apply_credit(out, credit, dropout=dropout)
        rows = out["advantages"].size(0)
        out["arca_advantage"] = out["advantages"]
        out[f"{HELD}dropout"] = torch.full((rows,), dropout)
        # The step the batch was generated at, as samples.jsonl labels it.
        out[f"{HELD}step"] = torch.full((rows,), self.state.global_step + 1)
        for k, v in credit.items():
            out[f"{HELD}{k}"] = v
        return out

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Tensor:
        """TRL's loss; for a deferred batch, weighted inside TRL's own forward.

        **The one place arca depends on TRL's call order.** The deferred path
        (``credit_from_training_forward``) needs TRL's ``_compute_loss`` to
        (1) run the training forward through ``self._get_per_token_logps_and_entropies``,
        where arca reads the policy and writes the weighted advantages, and
        (2) read ``inputs["advantages"]`` only after that. TRL 1.16 does both.
        If an upgrade breaks either, training stops with :data:`CALL_ORDER_BROKEN`
        instead of silently training with unweighted (uniform) advantages:
        until the forward has weighed them, ``inputs["advantages"]`` is a
        placeholder that raises on any use, and a forward that never came is an
        error once TRL returns. tests/test_trainer.py breaks both on purpose.
        """
        if f"{HELD}dropout" in inputs:
            # A micro-batch read at generation time (:meth:`_weigh_or_hold`):
            # weighed once, at its first training forward; TRL reuses the dict
            # with num_iterations > 1, by then holding the weighted advantages.
            held = {k[len(HELD) :]: inputs.pop(k) for k in list(inputs) if k.startswith(HELD)}
            dropout, step = held.pop("dropout"), held.pop("step")
            self._apply_credit(
                inputs,
                held,
                dropout=float(dropout[0]) if dropout.numel() else 0.0,
                step=int(step[0]) if step.numel() else None,
            )
            del inputs["arca_advantage"]
            return super()._compute_loss(model, inputs)
        if "arca_advantage" not in inputs:
            return super()._compute_loss(model, inputs)
        inputs["advantages"] = _NOT_YET_WEIGHTED
        # Hooks live only for the forward: gradient checkpointing's recompute
        # during backward must not record again.
        with self._policy_hooks(inputs["completion_ids"].size(1)) as captured:
            self._pending = (inputs, captured)
            try:
                loss = super()._compute_loss(model, inputs)
            finally:
                never_weighed = self._pending is not None
                self._pending = None
                if inputs["advantages"] is _NOT_YET_WEIGHTED:
                    inputs["advantages"] = inputs["arca_advantage"]
        if never_weighed:
            raise RuntimeError(
                f"{CALL_ORDER_BROKEN}: GRPOTrainer._compute_loss returned without calling "
                "_get_per_token_logps_and_entropies"
            )
        return loss

    def _get_per_token_logps_and_entropies(
        self, model: Any, input_ids: Tensor, attention_mask: Tensor, logits_to_keep: int, **kw: Any
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        sink = self._old_pass
        if sink is not None and not sink and model is self.model and not self._adapter_off():
            # The policy's only pass while TRL generates and scores, adapter on:
            # its old-log-prob pass. Read every policy input the schemes need from it.
            self._old_pass = None
            if "entropies" in self._needs:
                kw["compute_entropy"] = True
            with self._policy_hooks(logits_to_keep) as captured:
                logps, ent, aux = super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, **kw
                )
            sink["logps"] = logps.detach()
            if ent is not None:
                sink["entropies"] = ent.detach()
            sink |= {k: torch.cat(v, dim=0) for k, v in captured.items() if v}
            self._old_pass = sink
            return logps, ent, aux
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
            self._apply_credit(inputs, credit, dropout=self._dropout_p if model.training else 0.0)
        return logps, ent, aux

    def _apply_credit(
        self,
        out: dict[str, Any],
        credit: dict[str, Tensor],
        dropout: float,
        step: int | None = None,
    ) -> dict[str, Any]:
        """Set ``out["advantages"]`` to ``A_i * T_i * w_it`` from TRL's ``(B,)``
        advantages and the schemes' inputs in ``credit`` (read from a forward
        whose dropout probability was ``dropout``; ``step``: the step the batch
        was generated at, if not this one)."""
        adv = self._rollout_advantages(out)
        mask = out["completion_mask"]
        if "tool_mask" in out:
            mask = mask * out["tool_mask"]
        mode = "train" if self.model.training else "eval"
        if self.scheme.name == "uniform":
            out["advantages"] = adv  # stock TRL, bit for bit
            w = normalize(torch.ones_like(mask, dtype=torch.float32), mask)
        else:
            a, w = self._scheme_credit(self.scheme.name, mask, credit, out, adv)
            out["advantages"] = a.detach()
        self._metrics[mode]["credit/dropout"].append(dropout)
        shadow = self._log_credit(mode, w, mask, credit, out, adv)
        writer = getattr(self, "sample_writer", None)
        # Numbered as metrics.jsonl numbers steps: global_step counts the steps done.
        step = self.state.global_step + 1 if step is None else step
        # A batch generated now is trained on for this many optimizer steps.
        ga = self.args.gradient_accumulation_steps
        span = -(-self.args.steps_per_generation * self.num_iterations // ga)
        if (
            mode == "train"
            and writer is not None
            and writer.due(step, last=self.state.max_steps, span=span)
        ):
            # Every process takes part (a collective); the main one writes.
            rows = writer.rows(
                step,
                self.processing_class,
                out,
                {self.scheme.name: w, **shadow},
                adv,
                rank=self.accelerator.process_index,
            )
            if self.accelerator.num_processes > 1:
                rows = gather_object(rows)
            if self.accelerator.is_main_process:
                writer.append(rows)
        return out

    def _rollout_advantages(self, out: dict[str, Any]) -> Tensor:
        """The ``(B,)`` advantages TRL computed (RLOO's from its unscaled ones)."""
        adv = out.get("arca_advantage", out["advantages"])
        if self.args.advantage_estimator == "rloo":
            k = self.num_generations
            adv = adv * (k / (k - 1))
        return adv

    def _scheme_options(self, scheme: str) -> dict[str, Any] | None:
        """The config's settings of ``scheme`` (``high_entropy``'s pool aside)."""
        a = self.args
        return {
            "high_entropy": {"quantile": a.high_entropy_quantile},
            "oracle": {"share": a.oracle_share, "rest": a.oracle_rest},
            # The end-of-sequence token carries no key-token value, as in the
            # official code (which zeroes Qwen2.5's <|endoftext|>, its EOS and pad).
            "ktae": {
                "alpha": a.ktae_alpha,
                "beta": a.ktae_beta,
                "gamma_tf": a.ktae_gamma_tf,
                "top": a.ktae_top,
                "zero_token_ids": tuple(
                    t
                    for t in {
                        self.processing_class.eos_token_id,
                        self.processing_class.pad_token_id,
                    }
                    if t is not None
                ),
            },
            "oar_g": {"quantile": a.oar_quantile, "beta": a.oar_beta},
        }.get(scheme)

    def _scheme_credit(
        self, scheme: str, mask: Tensor, credit: dict[str, Tensor], out: dict[str, Any], adv: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``scheme``'s ``(token advantages, weights)`` ``(B, T)`` for the rows in
        ``out`` (:func:`arca.credit.token_credit`): ``A_i T_i w_it`` and ``w`` for
        a salience or weights scheme, from the inputs in ``credit`` or ``out``
        (the ground truth, OAR-G's saliency); a group scheme's own token
        advantages, made at generation time, and their shares of the row's push
        magnitude as weights."""
        spec = get_scheme(scheme)
        if spec.kind == "advantages":
            a = out[f"{TOKEN_ADVANTAGES}{scheme}"]
            return a, abs_share_weights(a, mask)
        opts = self._scheme_options(scheme)
        inputs: dict[str, Tensor] = {k: credit[k] for k in spec.requires if k in credit}
        if "high_entropy" == scheme:
            opts = (opts or {}) | {"pool": self._entropy_pool(credit["entropies"], mask)}
        if "error_index" in spec.requires:
            # Without ground truth for these rows (Monte-Carlo, not due): none located.
            none = torch.full_like(adv, -1, dtype=torch.long)
            inputs["error_index"] = out.get("arca_error_index", none)
        if "saliency" in spec.requires:
            inputs |= {"saliency": out["arca_saliency"], "answer_start": out["arca_answer_start"]}
        return token_credit(
            scheme,
            mask=mask,
            advantages=adv.float(),
            eps=self.args.weight_eps,
            eps_mode=self.args.weight_eps_mode,
            options=opts,
            **inputs,
        )

    def _weights(self, scheme: str, mask: Tensor, credit: dict[str, Tensor]) -> Tensor:
        """``scheme``'s normalised weights from the inputs in ``credit``.

        ``high_entropy`` takes its threshold over the real tokens of the rows
        being weighed (one micro-batch: see :meth:`_weigh_or_hold`) on every
        process, as TRL's ``get_high_entropy_mask`` does: one rule on every
        path and for any number of processes. A collective then."""
        req = {k: credit[k] for k in get_scheme(scheme).requires}
        opts = None
        if scheme == "high_entropy":
            pool = self._entropy_pool(credit["entropies"], mask)
            opts = {"quantile": self.args.high_entropy_quantile, "pool": pool}
        return token_weights(
            scheme,
            mask=mask,
            eps=self.args.weight_eps,
            eps_mode=self.args.weight_eps_mode,
            options=opts,
            **req,
        )

    def _entropy_pool(self, entropies: Tensor, mask: Tensor) -> Tensor:
        """The entropies of the real tokens in ``mask`` on every process, in
        float32: the pool ``high_entropy``'s quantile is taken over, gathered as
        TRL's ``get_high_entropy_mask`` gathers it. A collective."""
        local = entropies[mask.bool()].float()
        if self.accelerator.num_processes == 1:
            return local
        pad = -1e9  # entropies are >= 0, so no real one is the padding
        padded = self.accelerator.pad_across_processes(local, dim=0, pad_index=pad)
        every = self.accelerator.gather(padded)
        return every[every != pad]

    def _log_credit(
        self,
        mode: str,
        w: Tensor,
        mask: Tensor,
        credit: dict[str, Tensor],
        out: dict[str, Any],
        adv: Tensor,
    ) -> dict[str, Tensor]:
        """Log concentration (and, with ground truth, correctness) metrics of the
        whole global batch, gathered from every process as TRL gathers its own;
        returns the shadow schemes' weights.

        Row metrics (Gini, EffN, correctness) are appended once per row they
        apply to, so TRL's mean over the logging window is the mean over those
        rows, whatever the processes and micro-batches. Token metrics (drift,
        residuals) are summed here and divided in :meth:`log`: the token mean
        (and maximum) over every token of the logging window.
        """
        rows: dict[str, Tensor] = {}  # (B,) per row; NaN where a metric does not apply
        sums: dict[str, Tensor] = {}  # (B,) per-row sums over tokens
        real = mask.bool()
        sums["tokens"] = real.sum(dim=1)
        # A scheme of kind advantages is graded on its token advantages themselves.
        signed = out["advantages"] if self.scheme.kind == "advantages" else None
        self._row_metrics(rows, "credit", w, mask, out, adv, signed)
        if "ref_logps" in credit and "logps" in credit:
            # TRL's k3 estimator of KL(pi || pi_ref), per sampled token.
            r = (credit["ref_logps"] - credit["logps"]).float()
            sums["credit/drift_kl"] = ((r.exp() - r - 1) * real).sum(dim=1)
        if "h_adapted" in credit and "h_base" in credit:
            res = hidden_residual_norm(credit["h_adapted"], credit["h_base"])
            # Under mixed precision the states are float32 but carry bf16/fp16 noise.
            amp = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
            floor = residual_noise_floor(
                credit["h_base"], self.args.residual_noise_factor, compute_dtype=amp
            )
            sums["credit/residual_mean"] = (res * real).sum(dim=1)
            sums["credit/residual_below_noise"] = ((res < floor) & real).sum(dim=1)
            rows["max/credit/residual_max"] = res.masked_fill(~real, -math.inf).amax(dim=1)
        shadow: dict[str, Tensor] = {}
        if self.args.shadow_diagnostics:
            for name in self._shadow_schemes(credit, out):
                # The trained scheme's weights exist already; the others are new.
                if name == self.scheme.name:
                    ws, ta = w, signed
                else:
                    ta, ws = self._scheme_credit(name, mask, credit, out, adv)
                kind = get_scheme(name).kind
                self._row_metrics(
                    rows, f"credit/{name}", ws, mask, out, adv, ta if kind == "advantages" else None
                )
                shadow[name] = ws
        every = self._gather_rows(rows | {f"sum/{k}": v for k, v in sums.items()})
        m = self._metrics[mode]
        tokens = float(every.pop("sum/tokens").sum())
        for key, v in every.items():
            if key.startswith("sum/"):
                # Summed over the logging window, divided in log(): the exact token mean.
                total = self._token_sums[mode].setdefault(key[4:], [0.0, 0.0])
                total[0] += float(v.sum())
                total[1] += tokens
            elif key.startswith("max/"):
                top = float(v.max()) if v.numel() else -math.inf
                self._token_max[mode][key[4:]] = max(top, self._token_max[mode].get(key[4:], top))
            else:
                vals = v[~torch.isnan(v)].tolist()
                # No row applies in this micro-batch: NaN, which TRL's log skips.
                m[key].extend(vals if vals else [math.nan])
        return shadow

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Token metrics: one value for the window, over all its tokens (TRL's
        # log averages each list, which for per-micro-batch means would weigh
        # micro-batches equally whatever their token counts).
        mode = "train" if self.model.training else "eval"
        for key, (total, count) in self._token_sums[mode].items():
            self._metrics[mode][key] = [total / count if count else math.nan]
        for key, top in self._token_max[mode].items():
            self._metrics[mode][key] = [top if top > -math.inf else math.nan]
        self._token_sums[mode].clear()
        self._token_max[mode].clear()
        super().log(logs, start_time)

    def _gather_rows(self, cols: dict[str, Tensor]) -> dict[str, Tensor]:
        """``cols`` (``(B,)`` each) concatenated over every process's rows.
        A collective: every process calls it with the same keys."""
        keys = list(cols)
        first = next(iter(cols.values()))
        t = torch.stack([cols[k].to(first.device, torch.float32) for k in keys], dim=1)
        t = torch.cat([t, torch.ones_like(t[:, :1])], dim=1)  # last column: a real row
        if self.accelerator.num_processes > 1:
            # Processes may hold different numbers of rows; padding rows have a 0 there.
            t = self.accelerator.pad_across_processes(t, dim=0, pad_index=0)
            t = self.accelerator.gather(t)
            t = t[t[:, -1] > 0]
        return {k: t[:, i] for i, k in enumerate(keys)}

    def _shadow_schemes(self, credit: dict[str, Tensor], out: dict[str, Any]) -> list[str]:
        """The schemes shadow diagnostics weigh on this batch: every built-in
        one whose inputs are in ``credit``; ``oracle`` where the batch carries
        ground truth; ``ktae`` and ``lambda_grpo`` (made at generation time, no
        pass); ``oar_g`` only when it is trained (its saliency costs passes)."""
        names = [n for n in BUILTIN if all(k in credit for k in get_scheme(n).requires)]
        for n in FIELD_SCHEMES:
            req = set(get_scheme(n).requires)
            if (
                (req & _TRUTH_INPUTS and "arca_error_index" in out)
                or f"{TOKEN_ADVANTAGES}{n}" in out
                or (req & _OAR_INPUTS and "arca_saliency" in out)
            ):
                names.append(n)
        return names

    @staticmethod
    def _row_metrics(
        rows: dict[str, Tensor],
        prefix: str,
        w: Tensor,
        mask: Tensor,
        out: dict[str, Any],
        adv: Tensor,
        signed: Tensor | None = None,
    ) -> None:
        """Per-row concentration of ``w`` and, where the batch carries ground
        truth, the correctness metrics, into ``rows`` under ``prefix``.
        ``signed``: a scheme's own ``(B, T)`` token advantages (kind
        ``"advantages"``), graded by the signed metrics
        (:func:`arca.credit.signed_credit_correctness`, which equal the others
        for a redistribution), with its sign-flip share and mass ratio."""
        for k, v in concentration_rows(w, mask).items():
            if prefix == "credit" or k != "length":  # T is the same for every scheme
                rows[f"{prefix}/{k}"] = v
        if signed is not None:
            rows[f"{prefix}/sign_flip_share"] = sign_flip_share(signed, mask, adv)
            rows[f"{prefix}/mass_ratio"] = mass_ratio(signed, mask, adv)
        if "arca_error_index" not in out:
            return
        grade = credit_correctness if signed is None else signed_credit_correctness
        per = grade(
            w if signed is None else signed,
            mask,
            out["arca_error_index"],
            advantages=adv,
            correct=out["arca_correct"],
            result_mask=out["arca_result_mask"],
            template_mask=out["arca_template_mask"],
        )
        for name, v in per.items():
            rows[f"{prefix}/{name}"] = v
        if prefix == "credit":
            # Over the rows the ground truth covered (all of them, but for
            # Monte-Carlo's capped sample): NaN elsewhere, which the mean skips.
            checked = out["arca_checked"]
            blamed = (~torch.isnan(per["prefix_blame"])).float()
            rows["credit/blamed_fraction"] = torch.where(checked, blamed, math.nan)
            rows["credit/correct_fraction"] = torch.where(
                checked, out["arca_correct"].float(), math.nan
            )

    # ------------------------------------------------------ checkpoints

    def _staged(
        self, stage: str | os.PathLike[str], write: Callable[[], None], publish: Callable[[], None]
    ) -> None:
        """Every rank runs ``write`` into the folder ``stage``, which the main
        process clears before and ``publish``es (renames into place) after,
        between barriers: readers see the old result or the whole new one, and
        no rank removes what another is writing."""
        main = self.args.should_save
        if main:
            shutil.rmtree(stage, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        write()
        self.accelerator.wait_for_everyone()
        if main:
            publish()
        self.accelerator.wait_for_everyone()

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write each checkpoint in a staging folder and rename it into place, so
        a run killed mid-save never leaves a half-written ``checkpoint-N`` that
        resume would pick up. Every rank writes into the staging folder (its
        RNG state; its optimizer shard under DeepSpeed/FSDP)."""
        run_dir = self._get_output_dir(trial=trial)
        stage = os.path.join(run_dir, ".checkpoint-staging")
        staged_best: str | None = None

        def write() -> None:
            nonlocal staged_best
            real = self._get_output_dir
            self._get_output_dir = lambda trial=None: stage  # type: ignore[method-assign]
            try:
                super(CreditGRPOTrainer, self)._save_checkpoint(model, trial)
            finally:
                self._get_output_dir = real  # type: ignore[method-assign]
            # transformers recorded the best checkpoint under the staging folder: on
            # every rank (each may load it at the end), and in the saved state.
            best = self.state.best_model_checkpoint
            if best and stage in best:
                staged_best = best
                self.state.best_model_checkpoint = best.replace(stage, run_dir)

        def publish() -> None:
            for name in os.listdir(stage):
                dst = os.path.join(run_dir, name)
                replace_dir(os.path.join(stage, name), dst)
                state_file = os.path.join(dst, "trainer_state.json")
                if staged_best and os.path.isfile(state_file):
                    saved = json.loads(Path(state_file).read_text())
                    saved["best_model_checkpoint"] = self.state.best_model_checkpoint
                    atomic_write_text(
                        state_file, json.dumps(saved, indent=2, sort_keys=True) + "\n"
                    )
            shutil.rmtree(stage, ignore_errors=True)
            # transformers rotated the staging folder; save_total_limit applies to the run's.
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )

        self._staged(stage, write, publish)

    #: How the model card names the base model (``arca train`` sets the name the
    #: config gave, e.g. ``tiny``); default: the model's own path or id.
    base_model_name: str | None = None

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        # TRL names a base model loaded from a local folder "[None](https://huggingface.co/None)".
        super().create_model_card(*args, **kwargs)
        card = Path(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not card.is_file():
            return
        local = self.accelerator.unwrap_model(self.model).config._name_or_path
        name = self.base_model_name or local
        text = card.read_text(encoding="utf-8")
        text = text.replace(
            "a fine-tuned version of [None](https://huggingface.co/None)",
            f"a fine-tuned version of `{name}` (loaded from `{local}`)",
        ).replace('model="None"', f'model="{local}"')
        atomic_write_text(card, text)

    def save_final(self, dest: str | os.PathLike[str]) -> Path:
        """Save the trained weights (``save_model``: adapter, or model and
        tokenizer) to ``dest`` so that it appears whole: every rank takes part
        (ZeRO-3/FSDP gather the weights), the main process writes a staging
        folder and renames it, between barriers."""
        dest = Path(dest)
        stage = dest.with_name(f".{dest.name}.staging")
        self._staged(stage, lambda: self.save_model(str(stage)), lambda: replace_dir(stage, dest))
        return dest
