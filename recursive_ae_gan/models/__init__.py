"""The LightningModules and their parts: AE/RAE (``RecursiveAutoencoder``), AE+GAN/RAE+GAN
(``AdversarialAutoencoder``), the losses, the game's balance policies, the step metrics, the divergence guard.

Recursion, as in the report's section 4.3: step 0 is the plain reconstruction AE(x), step i feeds step i-1's image
back in, AE(...AE(x)) applied i+1 times. A model of ``recursion_depth`` k trains on steps 0..k; AE is k = 0. The
adversarial model's discriminator judges every step 0..k.

The modules load on first use (``__getattr__``), so that reading the registries here (``report``) does not import
Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

# The report's four variants: the `model=` configs (conf/model/<name>.yaml) and how tables name them.
VARIANTS = {"ae": "AE", "rae": "RAE", "ae_gan": "AE+GAN", "rae_gan": "RAE+GAN"}

_EXPORTS = {
    "RecursiveAutoencoder": "autoencoder",
    "AdversarialAutoencoder": "adversarial",
    "NetSpec": "autoencoder",
    "adam": "autoencoder",
    "build": "autoencoder",
}
__all__ = ["VARIANTS", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
