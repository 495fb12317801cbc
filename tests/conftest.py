"""Shared fixtures: tiny MNIST / CIFAR10 copies in torchvision's on-disk formats, and config composition.

The fixtures write real IDX files and pickled CIFAR batches, so that the tests drive the real
loading code (torchvision's readers) without the network or ``../shared``.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torchvision.datasets import CIFAR10

from recursive_ae_gan.data import ImageDataModule
from recursive_ae_gan.run.console import CONF_DIR  # the configs of the installed package, editable or not

# The tests' tensors are tiny: one thread avoids oversubscribing CI's 2 cores, here and in every process the
# tests start (the CLI's subprocesses inherit the variable): two threads per tiny model run 2-5x slower there.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


# Sizes of the fixture datasets: big enough for a train/val split and a few batches.
N_TRAIN, N_TEST = 96, 48

# The package's datasets: data.dataset (a torchvision class) and the image shape (C, H, W) that sizes the networks.
DATASET_CLASSES = {"mnist": "torchvision.datasets.MNIST", "cifar10": "torchvision.datasets.CIFAR10"}
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
REPORT_NET = {"_target_": "recursive_ae_gan.networks.report_autoencoder"}  # conf/model/net/report.yaml
MLP_DISCRIMINATOR = {"_target_": "recursive_ae_gan.networks.MLPDiscriminator", "hidden": [512, 256, 128]}


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random blobs, so that an autoencoder has structure to learn."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    centres = rng.uniform(0.25, 0.75, size=(n, 2)) * np.array([h, w])
    radius = rng.uniform(0.15, 0.3, size=(n, 1, 1)) * h
    dist = np.hypot(yy[None] - centres[:, 0, None, None], xx[None] - centres[:, 1, None, None])
    blob = np.clip(1.2 - dist / radius, 0, 1)  # (n, h, w)
    if len(shape) == 3:  # colour: a random tint per image and channel
        blob = blob[..., None] * rng.uniform(0.3, 1.0, size=(n, 1, 1, shape[2]))
    return (blob * 255).astype(np.uint8)


def write_mnist(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> Path:
    """MNIST's raw IDX files (uncompressed, as torchvision leaves them) under ``root/MNIST/raw``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        images = _images(rng, n, (28, 28))
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def write_cifar10(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> Path:
    """CIFAR10's pickled batches under ``root/cifar-10-batches-py`` (their md5 sums will not match)."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = np.array_split(np.arange(n_train), len(CIFAR10.train_list))
    batches = [(name, len(rows)) for (name, _), rows in zip(CIFAR10.train_list, per_batch, strict=True)]
    for name, n in batches + [(CIFAR10.test_list[0][0], n_test)]:
        images = _images(rng, n, (32, 32, 3)).transpose(0, 3, 1, 2).reshape(n, -1)  # CIFAR's row layout
        entry = {"data": images, "labels": rng.integers(0, 10, size=n).tolist()}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / CIFAR10.meta["filename"]).write_bytes(pickle.dumps(meta))
    return root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding both fixture datasets."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar10(root)
    return root


# The overrides that make any config train on the fixtures, quickly, on the CPU.
def fixture_overrides(data_root: Path, out: Path) -> list[str]:
    return [
        f"data.root={data_root}",
        "data.download=false",
        "data.verify=false",
        "data.train_size=64",
        "data.val_size=16",
        "data.test_size=32",
        "data.batch_size=16",
        f"paths.log_dir={out}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


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


def data_and_model(cfg: DictConfig) -> tuple[ImageDataModule, L.LightningModule]:
    """The datamodule and model of a composed config, built as ``train`` builds them: the data set up,
    then the seed, then the model sized by the data's image shape (so it starts from train's weights)."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    L.seed_everything(cfg.seed, workers=True)
    return datamodule, instantiate(cfg.model, image_shape=list(datamodule.image_shape))


def _cli_child(argv: list[str], stdout: str, stderr: str) -> None:
    """The child's body: the command line, stdout and stderr of ``python -m recursive_ae_gan.train ARGV``."""
    for path, fd in ((stdout, 1), (stderr, 2)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # not pytest's capture
    sys.argv = ["recursive_ae_gan.train", *argv]
    from recursive_ae_gan.run.train import main

    main()  # SystemExit("error: ...") prints its message and exits 1, as in the interpreter


def run_cli_forked(data_root: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m recursive_ae_gan.train`` on the fixtures, as a child forked from the test process: the real
    entry point (``main()`` with the command line in ``sys.argv``) in a process of its own, exit status and
    output included, without importing torch and Lightning again. For commands that end before training."""
    out.mkdir(parents=True, exist_ok=True)
    stdout, stderr = out / "stdout.txt", out / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(
        target=_cli_child, args=([*fixture_overrides(data_root, out), *overrides], str(stdout), str(stderr))
    )
    child.start()
    child.join(timeout=120)
    return subprocess.CompletedProcess(overrides, child.exitcode, stdout.read_text(), stderr.read_text())
