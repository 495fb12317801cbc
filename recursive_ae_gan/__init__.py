"""Recursive autoencoders, alone and against a discriminator (PyTorch Lightning + Hydra).

The map of the package is docs/architecture.md; the commands are the modules beside this file.
"""

from recursive_ae_gan import compat

compat.install()  # modules that moved stay importable by their old names (recursive_ae_gan.module, ...)
