"""Local stand-ins for the Hub repositories TRL's GRPO tests load.

TRL's tests name tiny models under ``trl-internal-testing/`` (random weights,
hidden size 8, a real model's tokenizer) and the ``zen`` dataset (prompts cut
from the Zen of Python). Neither can be downloaded here, so:

* models: :func:`build_hub_cache` builds each one from a config, with the same
  architecture class and tiny sizes, and writes it into a Hugging Face hub
  cache folder (``models--org--name/refs/main`` + ``snapshots/<rev>/``). With
  ``HF_HUB_CACHE`` pointing there and ``HF_HUB_OFFLINE=1`` every loader
  (``AutoConfig``, ``AutoModel*``, ``AutoTokenizer``, peft, remote code) finds
  them exactly as it finds a downloaded repository, so nothing in TRL or the
  tests is patched for models. All use SmolLM2-135M-Instruct's tokenizer
  (arca's ``resolve("smollm2")``; it has a chat template) with a pad token
  distinct from EOS, as Qwen2.5's has.
* datasets: :func:`zen` returns the ``standard_prompt_only`` and
  ``conversational_prompt_only`` configurations (19 prompts, 17 train / 2
  test, as ``train_test_split(test_size=0.1, shuffle=False)`` cuts them),
  built from the Zen of Python in the standard library's ``this`` module.

Vision-language models are not stood in (their processors need image
preprocessor configs and chat templates that exist only on the Hub); the
runner deselects those tests.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORG = "trl-internal-testing"
#: Bumped when a spec changes, so a stale cache is rebuilt instead of reused.
STANDIN_VERSION = "2"

#: Where the hub cache is built unless ARCA_TRL_PARITY_CACHE says otherwise.
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "arca-trl-parity" / "hub"

_TEXT = dict(hidden_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)
_CLS = dict(
    hidden_size=16, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2, num_labels=1
)


@dataclass(frozen=True)
class Spec:
    """One stand-in: the transformers config and model class names and the
    config's keyword arguments (sizes as TRL's own tiny models have them)."""

    config: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    extra_tokens: tuple[str, ...] = ()
    remote_code: bool = False
    #: Qwen's special-token ids (see QWEN_SPECIALS), as the Qwen stand-ins' tokenizers have.
    qwen_ids: bool = False


SPECS: dict[str, Spec] = {
    "tiny-Qwen2ForCausalLM-2.5": Spec(
        "Qwen2Config", "Qwen2ForCausalLM", {**_TEXT, "intermediate_size": 32}, qwen_ids=True
    ),
    "tiny-Qwen2ForSequenceClassification-2.5": Spec(
        "Qwen2Config",
        "Qwen2ForSequenceClassification",
        {**_CLS, "intermediate_size": 32},
        qwen_ids=True,
    ),
    "tiny-Qwen3ForCausalLM": Spec(
        "Qwen3Config", "Qwen3ForCausalLM", {**_TEXT, "intermediate_size": 32}, qwen_ids=True
    ),
    "tiny-Qwen3ForSequenceClassification": Spec(
        "Qwen3Config",
        "Qwen3ForSequenceClassification",
        {**_CLS, "intermediate_size": 32},
        qwen_ids=True,
    ),
    "tiny-Qwen3MoeForCausalLM": Spec(
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {
            **_TEXT,
            "intermediate_size": 32,
            "moe_intermediate_size": 32,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "norm_topk_prob": True,
        },
        qwen_ids=True,
    ),
    "tiny-LlamaForCausalLM-3.2": Spec(
        "LlamaConfig", "LlamaForCausalLM", {**_TEXT, "intermediate_size": 32}
    ),
    # TRL's test pads this reward model with Llama 3's "<|finetune_right_pad_id|>".
    "tiny-LlamaForSequenceClassification-3.2": Spec(
        "LlamaConfig",
        "LlamaForSequenceClassification",
        {**_CLS, "intermediate_size": 32},
        extra_tokens=("<|finetune_right_pad_id|>",),
    ),
    "tiny-MistralForCausalLM-0.2": Spec(
        "MistralConfig", "MistralForCausalLM", {**_TEXT, "intermediate_size": 32}
    ),
    "tiny-Gemma2ForCausalLM": Spec(
        "Gemma2Config", "Gemma2ForCausalLM", {**_TEXT, "intermediate_size": 32, "head_dim": 2}
    ),
    "tiny-Cohere2ForCausalLM": Spec(
        "Cohere2Config",
        "Cohere2ForCausalLM",
        {**_TEXT, "intermediate_size": 32, "logit_scale": 1.0},
    ),
    "tiny-Glm4MoeForCausalLM": Spec(
        "Glm4MoeConfig",
        "Glm4MoeForCausalLM",
        {
            **_TEXT,
            "intermediate_size": 32,
            "moe_intermediate_size": 32,
            "head_dim": 2,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
        },
    ),
    "tiny-GptOssForCausalLM": Spec(
        "GptOssConfig",
        "GptOssForCausalLM",
        {**_TEXT, "intermediate_size": 32, "num_local_experts": 4, "num_experts_per_tok": 2},
    ),
    "tiny-NemotronHForCausalLM-nano": Spec(
        "NemotronHConfig",
        "NemotronHForCausalLM",
        {
            "hidden_size": 16,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 32,
            "layers_block_type": ["mamba", "attention", "moe"],
            "mamba_num_heads": 8,
            "mamba_head_dim": 4,
            "mamba_n_groups": 1,
            "ssm_state_size": 16,
            "mamba_d_conv": 4,
            "mamba_expand": 2,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "moe_shared_expert_intermediate_size": 32,
        },
    ),
    # A Llama whose classes live in the repository (auto_map), for trust_remote_code.
    "tiny-RemoteForCausalLM": Spec(
        "LlamaConfig", "LlamaForCausalLM", {**_TEXT, "intermediate_size": 32}, remote_code=True
    ),
}

# The remote-code stand-in: its own config and model classes, importable only
# through the repository's auto_map (what trust_remote_code gates).
_REMOTE_CONFIG = """from transformers import LlamaConfig


class RemoteConfig(LlamaConfig):
    model_type = "remote"
"""
_REMOTE_MODELING = """from transformers import LlamaForCausalLM

from .configuration_remote import RemoteConfig


class RemoteForCausalLM(LlamaForCausalLM):
    config_class = RemoteConfig
"""


def cache_dir() -> Path:
    """The hub cache folder the stand-ins live in."""
    return Path(os.environ.get("ARCA_TRL_PARITY_CACHE", DEFAULT_CACHE))


def repo_ids() -> list[str]:
    """Every stood-in model id, as the tests spell them."""
    return [f"{ORG}/{name}" for name in SPECS]


def _revision(name: str, spec: Spec) -> str:
    """A 40-hex commit id that changes with the spec, as the cache layout wants."""
    text = json.dumps([STANDIN_VERSION, name, repr(spec)], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


#: Qwen2.5/Qwen3's special-token ids, which some TRL tests hard-code
#: (test_train_with_mask_truncated_completions fakes completions with them).
QWEN_SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def _qwen_tokenizer_json(smol: dict[str, Any]) -> dict[str, Any]:
    """SmolLM2's tokenizer.json with Qwen's special-token ids: the BPE vocabulary
    is padded with unreachable filler entries up to 151,643 and the three chat
    specials move there (their old ids 0-2 become reserved entries)."""
    tj = json.loads(json.dumps(smol))
    vocab: dict[str, int] = tj["model"]["vocab"]
    moved = {}
    for name in QWEN_SPECIALS:
        old = vocab.pop(name)
        vocab[f"<|reserved_{old}|>"] = old
        moved[old] = name
    # No merge builds these strings, so the BPE never emits them; they only fill ids.
    vocab.update({f"<|filler_{i}|>": i for i in range(len(vocab), min(QWEN_SPECIALS.values()))})
    vocab.update(QWEN_SPECIALS)
    for tok in tj["added_tokens"]:
        if tok["id"] in moved:
            tok["id"] = QWEN_SPECIALS[moved[tok["id"]]]
    tj["added_tokens"].sort(key=lambda t: t["id"])
    return tj


def _tokenizer(spec: Spec) -> Any:
    from transformers import AutoTokenizer

    from arca.models import resolve

    src = Path(resolve("smollm2"))
    if spec.qwen_ids:
        tmp = Path(tempfile.mkdtemp())
        try:
            for f in src.iterdir():
                if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
                    shutil.copy(f, tmp / f.name)
            smol = json.loads((src / "tokenizer.json").read_text())
            (tmp / "tokenizer.json").write_text(json.dumps(_qwen_tokenizer_json(smol)))
            tok = AutoTokenizer.from_pretrained(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        tok = AutoTokenizer.from_pretrained(src)
    # Qwen2.5's tokenizer pads with <|endoftext|>, not EOS; SmolLM2's has it too.
    tok.pad_token = "<|endoftext|>"
    if spec.extra_tokens:
        tok.add_tokens(list(spec.extra_tokens), special_tokens=True)
    return tok


def _build(name: str, spec: Spec, dest: Path) -> None:
    import torch
    import transformers
    from transformers import GenerationConfig

    tok = _tokenizer(spec)
    config = getattr(transformers, spec.config)(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **spec.kwargs,
    )
    torch.manual_seed(int(hashlib.sha1(name.encode()).hexdigest()[:8], 16))
    model = getattr(transformers, spec.model)(config).to(dtype=torch.bfloat16)
    if spec.model.startswith("NemotronH"):
        # As in NVIDIA's checkpoints: the SSM decay and skip parameters stay float32.
        for layer in model.model.layers:
            mixer = getattr(layer, "mixer", None)
            if hasattr(mixer, "A_log"):
                mixer.A_log.data = mixer.A_log.data.float()
                mixer.D.data = mixer.D.data.float()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    if spec.remote_code:
        (dest / "configuration_remote.py").write_text(_REMOTE_CONFIG)
        (dest / "modeling_remote.py").write_text(_REMOTE_MODELING)
        cfg = json.loads((dest / "config.json").read_text())
        cfg.update(
            model_type="remote",
            architectures=["RemoteForCausalLM"],
            auto_map={
                "AutoConfig": "configuration_remote.RemoteConfig",
                "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
            },
        )
        (dest / "config.json").write_text(json.dumps(cfg, indent=2))


def build_hub_cache(root: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Build every missing or stale stand-in under ``root`` (default :func:`cache_dir`);
    return ``root``. Safe to call again: a repository whose ``refs/main``
    already names the current revision is left alone."""
    root = Path(root) if root is not None else cache_dir()
    for name, spec in SPECS.items():
        repo = root / f"models--{ORG}--{name}"
        rev = _revision(name, spec)
        ref = repo / "refs" / "main"
        if ref.exists() and ref.read_text().strip() == rev and (repo / "snapshots" / rev).is_dir():
            continue
        log(f"building stand-in {ORG}/{name}")
        tmp = Path(tempfile.mkdtemp(dir=root.parent if root.parent.exists() else None))
        try:
            _build(name, spec, tmp)
            snap = repo / "snapshots" / rev
            if repo.exists():
                shutil.rmtree(repo)
            snap.parent.mkdir(parents=True)
            shutil.move(str(tmp), snap)
            ref.parent.mkdir(parents=True)
            ref.write_text(rev)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ------------------------------------------------------------------ datasets

#: How many words of each Zen line make its prompt (TRL's zen prompts are line
#: prefixes; the first 12 are checked verbatim by test_prepare_input_called_with_correct_data).
_PROMPT_WORDS = (4, 2, 3, 1, 4, 3, 1, 4, 3, 3, 2, 6, 6, 11, 2, 4, 7, 5, 5)


def _zen_lines() -> list[str]:
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this

    text = codecs.decode(this.s, "rot13")
    return [line for line in text.splitlines()[2:] if line.strip()]


def _prompts() -> list[str]:
    lines = _zen_lines()
    if len(lines) != len(_PROMPT_WORDS):
        raise RuntimeError(f"the Zen of Python has {len(lines)} lines, expected 19")
    return [
        " ".join(line.split()[:n]).rstrip(".") for line, n in zip(lines, _PROMPT_WORDS, strict=True)
    ]


def _questions() -> list[str]:
    """One user turn per Zen line: "What is better than ugly?" where the line
    says "X is better than Y.", else a request to complete the line's prompt."""
    out = []
    for line, prompt in zip(_zen_lines(), _prompts(), strict=True):
        m = re.fullmatch(r"\w+ is better than (\w+)\.", line)
        out.append(f"What is better than {m.group(1)}?" if m else f"Complete the line: {prompt}")
    return out


def zen(name: str, split: str | None = None, streaming: bool = False) -> Any:
    """``load_dataset("trl-internal-testing/zen", name, split=..., streaming=...)``
    for the two prompt-only configurations."""
    from datasets import Dataset, DatasetDict, IterableDatasetDict

    if name == "standard_prompt_only":
        rows: list[Any] = _prompts()
    elif name == "conversational_prompt_only":
        rows = [[{"role": "user", "content": q}] for q in _questions()]
    else:
        raise ValueError(f"no stand-in for trl-internal-testing/zen configuration {name!r}")
    splits = Dataset.from_dict({"prompt": rows}).train_test_split(test_size=0.1, shuffle=False)
    if streaming:
        it = IterableDatasetDict({k: v.to_iterable_dataset() for k, v in splits.items()})
        return it if split is None else it[split]
    return DatasetDict(splits) if split is None else splits[split]
