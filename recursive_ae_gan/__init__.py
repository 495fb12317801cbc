"""Recursive autoencoders, alone and against a discriminator (PyTorch Lightning + Hydra).

The map of the package is docs/architecture.md; the commands are the modules beside this file.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Modules that moved (old name -> today's, under this package). Configs written before the move name classes by
# the old paths (``_target_: recursive_ae_gan.module.AdversarialAutoencoder`` in a run's .hydra/config.yaml, or in
# a user's own config), and Hydra finds them through ``__getattr__`` below; run identity (``run.identity``) reads
# old and new paths as the same setting.
MOVED_MODULES = {
    "module": "models",
    "losses": "models.losses",
    "callbacks": "run.callbacks",
    "checkpoints": "run.checkpoints",
    "requeue": "sweeps.requeue",
}


def __getattr__(name: str) -> ModuleType:
    """``recursive_ae_gan.<old name>`` as the module it moved to (Hydra's ``_locate`` looks attributes up)."""
    if name in MOVED_MODULES:
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
