"""Old runs and old code: everything the package keeps only so that what was written before a change still works.

- Old import paths: a module that moved is importable by its old name (``MOVED_MODULES``), with a
  ``DeprecationWarning`` naming its new path. Configs name classes by such paths too (``_target_:
  recursive_ae_gan.module.AdversarialAutoencoder`` in a run's ``.hydra/config.yaml``): Hydra imports them the same
  way, and run identity (``run.identity``) reads an old and a new path as the same setting (``current_target``).
- Old run configs: runs from before the data package and shape-built networks named their dataset and networks
  by name (``upgrade_old_run_config``).
- Old command lines: ``GROUP=null`` (``logger=null``, ``realism=null``) for "no config of this group", a spelling
  Hydra itself refused from 1.1 on, is read as Hydra's ``~GROUP`` (``null_group_overrides``).
- Old checkpoints: those from before ``model._convert_=all`` hold OmegaConf objects in their hyperparameters, which
  ``torch.load(weights_only=True)`` refuses; a run directory of this package's models is trusted to unpickle in
  full (``unpickle_in_full``).

The bottom layer with ``core/``: the package root imports it (``install``), so only the standard library and
OmegaConf here; torch where an old checkpoint is read.
"""

from __future__ import annotations

import copy
import importlib
import sys
import warnings
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_loader
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, open_dict

PACKAGE = "recursive_ae_gan"
# Modules that moved: old name -> today's, both under the package.
MOVED_MODULES = {
    "module": "models",
    "losses": "models.losses",
    "callbacks": "run.callbacks",
    "checkpoints": "run.checkpoints",
    "requeue": "sweeps.requeue",
    "errors": "core.errors",
    "run.console": "core.console",
    "run.atomic": "core.atomic",
    "run.records": "core.records",
}
# What runs from before the data package and shape-built networks wrote into their config.
OLD_DATASETS = {"mnist": "torchvision.datasets.MNIST", "cifar10": "torchvision.datasets.CIFAR10"}
OLD_AUTOENCODER = f"{PACKAGE}.networks.autoencoder_for"


class MovedModules(MetaPathFinder, Loader):
    """Imports ``recursive_ae_gan.<old name>`` as the module it moved to (the same module object), warning once.

    Consulted after the ordinary finders (which no longer find the old file): the loader puts today's module in
    ``sys.modules`` under the old name, which the import system then returns (the language reference's "the
    module may replace itself in sys.modules")."""

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        old = fullname.removeprefix(f"{PACKAGE}.")
        return spec_from_loader(fullname, self) if fullname != old and old in MOVED_MODULES else None

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module, replaced by today's in exec_module

    def exec_module(self, module: ModuleType) -> None:
        new = f"{PACKAGE}.{MOVED_MODULES[module.__name__.removeprefix(f'{PACKAGE}.')]}"
        # stacklevel 2: the frame of the import statement (the warnings module skips the import system's frames).
        warnings.warn(f"{module.__name__} is deprecated: it moved to {new}", DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """Make the old module names importable (once per interpreter)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())


def null_group_overrides(args: list[str], conf_dir: str) -> list[str]:
    """``args`` with each ``GROUP=null`` (a config group of ``conf_dir`` set to null: no config of that group) as
    Hydra's ``~GROUP``, with a ``DeprecationWarning`` naming it. Hydra refuses null as a group's choice ("Config
    group override must be a string or a list") and reads its command line only from ``sys.argv``, so the command
    reads the old spelling before Hydra does; nothing else on the command line changes."""

    current = []
    for arg in args:
        key, _, value = arg.partition("=")
        if value == "null" and Path(conf_dir, key).is_dir():
            warnings.warn(f"{arg} is deprecated: write ~{key} (Hydra's removal of a config group)",
                          DeprecationWarning, stacklevel=2)  # fmt: skip
            arg = f"~{key}"
        current.append(arg)
    return current


def current_target(path: str) -> str:
    """``path`` as today's import path: ``recursive_ae_gan.module.X`` is ``recursive_ae_gan.models.X``."""
    for old, new in MOVED_MODULES.items():
        if path.startswith(f"{PACKAGE}.{old}."):
            return f"{PACKAGE}.{new}.{path.removeprefix(f'{PACKAGE}.{old}.')}"
    return path


def current_targets(value: Any) -> Any:
    """``value`` (a plain config container) with every ``_target_`` inside it as today's import path."""
    if isinstance(value, dict):
        return {k: current_target(v) if k == "_target_" and isinstance(v, str) else current_targets(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [current_targets(v) for v in value]
    return value


def upgrade_old_run_config(run_cfg: DictConfig) -> DictConfig:
    """An old run's config in today's form; today's configs come back as they are.

    Old runs named their dataset (``data.dataset: mnist | cifar10``) and built the report's networks from
    that name (``networks.autoencoder_for`` / ``networks.discriminator_for``, which the model received
    built). Today ``data.dataset`` is a torchvision class with its training and test pools, and the model
    builds its networks from their configs and the data's image shape. The report's networks, and so the
    checkpoints' state_dict keys, are the same. A model named by its path before a move is named by today's (the
    same class, without the old name's warning).
    """
    data, model = run_cfg.data, run_cfg.model
    old_data, old_model = data.get("dataset") in OLD_DATASETS, model.net.get("_target_") == OLD_AUTOENCODER
    target = model.get("_target_")
    moved = isinstance(target, str) and current_target(target) != target
    if not (old_data or old_model or moved):
        return run_cfg
    cfg = copy.deepcopy(run_cfg)
    with open_dict(cfg):
        if moved:
            cfg.model._target_ = current_target(target)
        if old_data:
            cfg.data.dataset = OLD_DATASETS[data.dataset]
            cfg.data.train_split, cfg.data.test_split = {"train": True}, {"train": False}
        if old_model:
            cfg.model.net = {"_target_": "recursive_ae_gan.networks.report_autoencoder"}
            if "discriminator" in model:
                hidden = {"hidden": model.discriminator.hidden} if "hidden" in model.discriminator else {}
                cfg.model.discriminator = {"_target_": "recursive_ae_gan.networks.MLPDiscriminator", **hidden}
            cfg.model._recursive_, cfg.model._convert_ = False, "all"  # the model builds its networks
    return cfg


def trusted(run_cfg: DictConfig | None) -> bool:
    """Whether a checkpoint may be unpickled in full: its run's config (``None``: no run) names a model of this
    package, so the checkpoint is one this package wrote, not a file from elsewhere."""
    return run_cfg is not None and str(run_cfg.model.get("_target_")).startswith(f"{PACKAGE}.")


def unpickle_in_full(ckpt: Path) -> Any:
    """A checkpoint from before ``model._convert_=all``, whose OmegaConf hyperparameters ``weights_only`` refuses;
    only for a ``trusted`` one."""
    import torch  # here, not at the top: the package root imports this module, and torch is a second's import

    return torch.load(ckpt, map_location="cpu", weights_only=False)
