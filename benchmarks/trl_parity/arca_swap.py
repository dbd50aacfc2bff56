"""pytest plugin: TRL's ``GRPOTrainer``/``GRPOConfig`` become arca's.

Load it with ``-p arca_swap`` (after ``-p parity_plugin``). At import, before
any test file is collected, ``trl.GRPOTrainer`` and ``trl.GRPOConfig`` (and
the same names in ``trl.trainer`` and ``trl.trainer.grpo_trainer``) are
replaced by :class:`arca.trainer.CreditGRPOTrainer` and
:class:`arca.trainer.CreditGRPOConfig`, so ``from trl import GRPOConfig,
GRPOTrainer`` in TRL's tests binds arca's classes. ``CreditGRPOTrainer``
needs a ``CreditGRPOConfig``, hence the config swap too.

The config keeps arca's defaults: ``token_weighting="uniform"`` and
``loss_type="grpo"`` (TRL's default is ``"dapo"``); a test that sets
``loss_type`` gets the one it asks for. ``ARCA_PARITY_DEFAULTS`` (JSON)
changes defaults, e.g. ``{"token_weighting": "arca", "shadow_diagnostics":
true}`` to run TRL's tests through arca's scoring paths.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import field, fields, make_dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import trl  # noqa: E402
import trl.trainer  # noqa: E402
import trl.trainer.grpo_trainer as grpo_module  # noqa: E402

from arca.trainer import CreditGRPOConfig, CreditGRPOTrainer  # noqa: E402


def _config_class() -> type[CreditGRPOConfig]:
    """``CreditGRPOConfig``, or a subclass whose defaults are ``$ARCA_PARITY_DEFAULTS``
    (a JSON object of field values, e.g. ``{"token_weighting": "arca"}``): TRL's
    tests build their configs themselves, so a default is the only way in."""
    raw = os.environ.get("ARCA_PARITY_DEFAULTS", "").strip()
    defaults = json.loads(raw) if raw else {}
    if not defaults:
        return CreditGRPOConfig
    known = {f.name for f in fields(CreditGRPOConfig)}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ValueError(f"ARCA_PARITY_DEFAULTS: not CreditGRPOConfig fields: {unknown}")
    spec = [(k, type(v), field(default=v)) for k, v in defaults.items()]
    cls = make_dataclass("ParityConfig", spec, bases=(CreditGRPOConfig,))
    # Bound below as a module attribute, so pickle (dataloader workers, checkpoints) finds it.
    cls.__module__ = __name__
    return cls


CONFIG = ParityConfig = _config_class()
for _module in (trl, trl.trainer, grpo_module):
    _module.GRPOTrainer = CreditGRPOTrainer
    _module.GRPOConfig = CONFIG
