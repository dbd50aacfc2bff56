"""The models arca runs on, by name.

- :mod:`arca.models.qwen`: small Qwen3-architecture models built from a config
  (``tiny_qwen3``) and LoRA wrapping (``add_lora``, ``LORA_TARGETS``);
- :mod:`arca.models.tiny`: the embedded tiny model, trained locally and cached;
- :mod:`arca.models.smollm2`: SmolLM2-135M-Instruct from PyPI, converted once;
- :mod:`arca.models.load`: a policy (a model, optionally with a LoRA adapter) loaded
  with its errors named;
- :func:`resolve`: the folder a name stands for; :func:`identity`: what a model
  is by content, as a run records it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from arca.io import atomic_write_json
from arca.models import smollm2, tiny
from arca.models.qwen import LORA_TARGETS, add_lora, tiny_qwen3

__all__ = ["LORA_TARGETS", "add_lora", "identity", "resolve", "tiny_qwen3"]


def resolve(name: str) -> str:
    """A model folder for ``name``: ``"tiny"`` (arca's embedded model, built on
    first use; ``"tiny-l1"`` its one-step predecessor), ``"smollm2"``
    (SmolLM2-135M-Instruct from PyPI, converted on first use), or ``name`` itself
    (a local folder or a Hub id). A name that looks like a path (starts with
    ``/``, ``.`` or ``~``, or has more than one ``/``) must be a folder."""
    if name in tiny.SPECS:
        return str(tiny.ensure_built(tiny.SPECS[name]))
    if name == "smollm2":
        return str(smollm2.convert())
    local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if local and not Path(os.path.expanduser(name)).exists():
        raise FileNotFoundError(
            f"{name}: no such model folder (give a folder saved by save_pretrained, "
            f"a Hub id, or one of: {', '.join([*tiny.SPECS, 'smollm2'])})"
        )
    return os.path.expanduser(name) if local else name


#: Weight files whose bytes make a model's identity.
_WEIGHTS = (".safetensors", ".bin")


def identity(path: str, config: Any = None) -> str:
    """What a model is by content, as a run records it (``model_identity``):
    ``sha256:<16 hex>`` of the weight files of a local folder (for arca's tiny
    models, the weights its build produced: another build of the same name is
    another model), or ``hub:<id>@<commit>`` for a Hub model (``config``: its
    loaded config, whose ``_commit_hash`` names the revision; ``@unknown``
    without it). Hashes are cached by file path, size and modification time
    in ``$ARCA_CACHE/identities.json``, so a large model is read once."""
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        commit = getattr(config, "_commit_hash", None) if config is not None else None
        if commit is None:
            # The snapshot the Hub cache holds is named by its commit.
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(path, "config.json")
            commit = Path(cached).parent.name if isinstance(cached, str) else None
        return f"hub:{path}@{commit or 'unknown'}"
    files = sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and f.suffix in _WEIGHTS and f.name != "training_args.bin"
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files (.safetensors or .bin) to identify")
    stamp = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    cache_file = tiny.cache_root() / "identities.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if stamp not in cache:
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        cache[stamp] = f"sha256:{h.hexdigest()[:16]}"
        try:
            atomic_write_json(cache_file, cache)
        except OSError:  # a read-only cache: hash again next time
            pass
    return cache[stamp]
