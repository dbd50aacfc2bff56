"""Loading a policy: a model (arca's tiny one, SmolLM2, a folder or a Hub id),
optionally with a LoRA adapter folder on top, with every way that can fail
(a folder without weights, damaged safetensors, an adapter of another base
model) reported in one line naming the file."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from arca.models import resolve

#: The files a peft adapter folder keeps its weights in, preferred first.
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter(adapter: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a LoRA adapter folder, after checking that
    the folder holds what peft needs: a valid config and a weights file. Raises
    ``FileNotFoundError``/``ValueError`` naming the folder or file."""

    from peft import PeftConfig

    folder = Path(adapter)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(
            f"{cfg_path}: not valid JSON ({e}); copy it again from the training run's adapter/"
        ) from None
    missing = [
        k for k in ("peft_type", "r", "target_modules") if not isinstance(cfg, dict) or k not in cfg
    ]
    if missing:
        raise ValueError(
            f"{cfg_path}: not a LoRA adapter config (missing {', '.join(missing)}); "
            "copy it again from the training run's adapter/"
        )
    try:
        PeftConfig.from_pretrained(str(folder))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: not a valid peft adapter config ({e})") from None
    if not any((folder / w).is_file() for w in ADAPTER_WEIGHTS):
        raise FileNotFoundError(
            f"{adapter}: the adapter folder has no weights ({' or '.join(ADAPTER_WEIGHTS)}); "
            "copy them from the training run's adapter/ folder"
        )
    return cfg


def _bad_safetensors(folder: Path, names: Sequence[str] | None = None) -> tuple[Path, str] | None:
    """The first ``*.safetensors`` file in ``folder`` (or of ``names``) that
    safetensors cannot open, with its error; None if all open."""
    from safetensors import SafetensorError, safe_open

    files = (
        [folder / n for n in names] if names is not None else sorted(folder.glob("*.safetensors"))
    )
    for f in files:
        if not f.is_file():
            continue
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            return f, str(e)
    return None


@contextmanager
def adapter_errors(adapter: str, cfg: dict[str, Any], base: str) -> Iterator[None]:
    """Turn peft's errors on loading ``adapter`` onto ``base`` into one-line
    ``ValueError``s: damaged weights, or an adapter of another base model."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:
        bad = _bad_safetensors(Path(adapter), ADAPTER_WEIGHTS[:1])
        f = bad[0] if bad else Path(adapter, ADAPTER_WEIGHTS[0])
        raise ValueError(
            f"{f}: not a readable safetensors file ({e}); the file is damaged or cut short: "
            "copy it again from the training run's adapter/ folder"
        ) from None
    except RuntimeError as e:
        msg = str(e)
        if "size mismatch" not in msg:
            raise
        m = re.search(
            r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) "
            r"from checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)",
            msg,
        )
        first = (
            f"{m[1].removeprefix('base_model.model.')} is {m[2]} in the adapter, {m[3]} in the model"
            if m
            else msg.strip().splitlines()[-1].strip()
        )
        trained = cfg.get("base_model_name_or_path") or "another base model"
        raise ValueError(
            f"{adapter}: adapter was trained for {trained}, not {base} (shapes differ: {first}); "
            "give the adapter's base model with --model"
        ) from None


def same_model(trained: str, model: str, path: str) -> bool:
    """Is the model an adapter records as its base (``trained``, its
    ``base_model_name_or_path``) the one named ``model``, found at ``path``?
    A folder here must be the same folder; a folder of another machine, one
    of the same name (arca's cache keys its models by their build); a Hub id,
    the same id, unless ``model`` is a local folder (which may hold it)."""
    rec = Path(os.path.expanduser(trained))
    here = Path(os.path.expanduser(path))
    if rec.is_dir():
        return here.is_dir() and os.path.samefile(rec, here)
    if rec.is_absolute():
        return rec.name == here.name
    return trained in (model, path) or here.is_dir()


def load_policy(
    model: str, adapter: str | None = None, *, dtype: str = "auto", device: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from ``"tiny"`` (the embedded model), ``"smollm2"``,
    a local folder or a Hub id, optionally with a LoRA adapter folder on top. ``device``
    defaults to CUDA when available. Damaged weights, a broken adapter folder or an
    adapter of another base model raise ``ValueError``/``FileNotFoundError`` naming
    the file."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = check_adapter(adapter) if adapter is not None else None
    path = resolve(model)
    trained = (cfg or {}).get("base_model_name_or_path")
    if (
        adapter is not None
        and trained
        and isinstance(trained, str)
        and not same_model(trained, model, path)
    ):
        # Same shapes load without complaint, so compare the names before loading.
        raise ValueError(
            f"{adapter}: adapter was trained for {trained}, not {model} ({path}); give the "
            "adapter's base model with --model"
        )
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    try:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except SafetensorError as e:
        bad = _bad_safetensors(Path(path)) if Path(path).is_dir() else None
        where = bad[0] if bad else model
        raise ValueError(
            f"{where}: not a readable safetensors file ({e}); the file is damaged or cut short: "
            "save or download the model again"
        ) from None
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        # Batched generation pads; as arca train does, the end-of-sequence token pads.
        tok.pad_token = tok.eos_token
    if adapter is not None:
        from peft import PeftModel

        with adapter_errors(adapter, cfg or {}, model):
            m = PeftModel.from_pretrained(m, adapter)
    if device is None and torch.cuda.is_available():
        device = "cuda"
    if device is not None:
        m = m.to(device)
    return m, tok
