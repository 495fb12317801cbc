"""Shared fixtures: tiny MNIST / CIFAR10 copies in torchvision's on-disk formats, and config composition.

The fixtures write real IDX files and pickled CIFAR batches, so that the tests drive the real
loading code (torchvision's readers) without the network or ``../shared``. The writers, the overrides
and the other helpers the test files share are in helpers.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR, fixture_overrides, write_cifar10, write_mnist
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

# The tests' tensors are tiny: one thread avoids oversubscribing CI's 2 cores, here and in every process the
# tests start (the CLI's subprocesses inherit the variable): two threads per tiny model run 2-5x slower there.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding both fixture datasets."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar10(root)
    return root


@pytest.fixture
def compose_cfg(data_root: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/<config_name>.yaml`` with the fixture overrides plus ``overrides``.

    ``paths.output_dir`` (Hydra's run dir at run time) is set to ``tmp_path``.
    """

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[*fixture_overrides(data_root, tmp_path), *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
        return cfg

    return _compose
