"""What more than one test file uses, other than fixtures (those are conftest.py's): the fixture datasets'
writers and the overrides that train on them, the commands run in a subprocess or a forked child and what their
output must show, folders of image files, and the adversarial fits, host-read counts and docs' data configs
that tests of several modules share.

``pythonpath = ["tests"]`` (pyproject.toml) makes ``import helpers`` (and ``recorders``) work in every folder.
"""

from __future__ import annotations

import errno
import io
import multiprocessing
import os
import pickle
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch import nn
from torchvision.datasets import CIFAR10
from torchvision.io import write_png

import recursive_ae_gan
from recursive_ae_gan.core import atomic
from recursive_ae_gan.core.console import CONF_DIR as CONF_DIR  # the installed package's configs, editable or not
from recursive_ae_gan.data import ImageDataModule
from recursive_ae_gan.models import AdversarialAutoencoder

REPO = Path(__file__).resolve().parents[1]

# The fixture datasets (conftest.py's ``data_root``)

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


def raw_pool(root: Path, dataset: str, train: bool) -> torch.Tensor:
    """The images as the fixture wrote them, decoded here without torchvision: ``(N, C, H, W)``."""
    if dataset == "mnist":
        data = (root / "MNIST" / "raw" / f"{'train' if train else 't10k'}-images-idx3-ubyte").read_bytes()
        return torch.from_numpy(np.frombuffer(data[16:], dtype=np.uint8).copy()).view(-1, 1, 28, 28)
    names = [name for name, _ in (CIFAR10.train_list if train else CIFAR10.test_list)]
    rows = [pickle.loads((root / CIFAR10.base_folder / name).read_bytes())["data"] for name in names]
    return torch.from_numpy(np.concatenate(rows)).view(-1, 3, 32, 32)


# The package's configs' pools: torchvision's training set, and its test set.
SPLITS = {"train_split": {"train": True}, "test_split": {"train": False}}


def make_datamodule(root: Path, dataset: str = "mnist", **overrides) -> ImageDataModule:
    """A set-up datamodule on the fixtures (CIFAR's fixture md5 sums do not match: verify off)."""
    path = DATASET_CLASSES.get(dataset, dataset)  # a short name, or an import path as given
    kwargs = {"dataset": path, **SPLITS, "root": str(root), "download": False, "verify": False, "batch_size": 16}
    sizes = {"train_size": 64, "val_size": 16, "test_size": 32}
    datamodule = ImageDataModule(**{**kwargs, **sizes, **overrides})
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


# Folders of image files for ``data=folder``: real PNGs written with torchvision, some corrupt on purpose.


def write_image_folder(root: Path, n: int = 40, size: int = 48, seed: int = 0, corrupt: bool = True) -> Path:
    """``n`` PNGs of ``size`` x ``size`` in ImageFolder's layout (two class folders): RGB, every fifth one
    grayscale, every seventh one 40 pixels wider (to be centre-cropped); with ``corrupt``, also one file
    that is not an image (``broken.png``) and one truncated PNG."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        wide = size + 40 if i % 7 == 3 else size
        gray = i % 5 == 0
        pixels = _images(rng, 1, (size, wide) if gray else (size, wide, 3))[0]
        image = torch.from_numpy(pixels).unsqueeze(0) if gray else torch.from_numpy(pixels).permute(2, 0, 1)
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        write_png(image.contiguous(), str(folder / f"img_{i:03d}.png"))
    if corrupt:
        (root / "cats" / "broken.png").write_bytes(b"this is not a png")
        whole = (root / "dogs" / "img_000.png").read_bytes()
        (root / "dogs" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return root


def write_png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG of a few bytes whose header declares ``width`` x ``height`` grayscale pixels (its data would not fill
    them): what PIL's decompression-bomb check, and the pixel limit, judge an image by before decoding it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits, colour type 0 (grayscale)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 9)) + chunk(b"IEND", b"")
    )
    return path


# A filesystem that refuses writes, for the files the project writes itself (core.atomic): the lowest write it owns.


class RefusingFile(io.FileIO):
    """A file on a filesystem with ``room`` bytes left for it: the write that would pass them writes what fits,
    then raises ``OSError(error)``, as a full disk (ENOSPC) or one over quota (EDQUOT) does."""

    room = 0
    error = errno.ENOSPC

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) <= self.room:
            self.room -= len(data)
            return super().write(data)
        if self.room:
            super().write(data[: self.room])
            self.room = 0
        raise OSError(self.error, os.strerror(self.error))


def refuse_writes(
    monkeypatch: pytest.MonkeyPatch, refused: Callable[[Path], bool], room: int | None = 0, error: int = errno.ENOSPC
) -> None:
    """``atomic_open`` writes every file whose target ``refused(target)`` holds on a filesystem with ``room`` bytes
    left (each file on its own: a failed one is removed, which frees its bytes; ``None``: not even creating it,
    as a read-only filesystem does); other files as usual. A forked child (``run_cli_forked``) inherits it."""
    real_open = open

    def refusing_open(path, mode="r", *args, encoding=None, newline=None, **kwargs):
        temporary = Path(path)
        target = temporary.with_name(temporary.name[1:].rsplit(".", 2)[0])  # atomic_open's .<name>.<random>.tmp
        if not refused(target):
            return real_open(path, mode, *args, encoding=encoding, newline=newline, **kwargs)
        if room is None:
            raise OSError(error, os.strerror(error), str(path))
        raw = RefusingFile(path, mode.replace("b", ""))
        raw.room, raw.error = room, error
        buffered = io.BufferedWriter(raw)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding=encoding, newline=newline)

    monkeypatch.setattr(atomic, "open", refusing_open, raising=False)


# Configs composed on the fixtures


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


def data_and_model(cfg: DictConfig) -> tuple[ImageDataModule, L.LightningModule]:
    """The datamodule and model of a composed config, built as ``train`` builds them: the data set up,
    then the seed, then the model sized by the data's image shape (so it starts from train's weights)."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    L.seed_everything(cfg.seed, workers=True)
    return datamodule, instantiate(cfg.model, image_shape=list(datamodule.image_shape))


# The commands, run as a user runs them

ONE_EPOCH = ("trainer.max_epochs=1", "collapse_threshold=0")


def run_cli(data_root: Path, out: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    """``python -m recursive_ae_gan.train`` on the fixtures; one thread suits the tiny models."""
    flags = ["--multirun"] if multirun else []
    return subprocess.run(
        [sys.executable, "-m", "recursive_ae_gan.train", *flags, *fixture_overrides(data_root, out), *overrides],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cli_child(argv: list[str], stdout: str, stderr: str) -> None:
    """The child's body: the command line, stdout and stderr of ``python -m recursive_ae_gan.train ARGV``."""
    for path, fd in ((stdout, 1), (stderr, 2)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # not pytest's capture
    sys.argv = ["recursive_ae_gan.train", *argv]
    from recursive_ae_gan.run.train import main

    main()  # SystemExit("error: ...") prints its message and exits 1, as in the interpreter


def _join(child: multiprocessing.process.BaseProcess, timeout: float) -> int | None:
    """The child's exit status; a child still running after ``timeout`` seconds is killed (status ``None``)."""
    child.join(timeout=timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        return None
    return child.exitcode


def run_cli_forked(data_root: Path, out: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m recursive_ae_gan.train`` on the fixtures, as a child forked from the test process: the real
    entry point (``main()`` with the command line in ``sys.argv``) in a process of its own, exit status and
    output included, without importing torch and Lightning again (conftest's one torch thread makes training
    in the child safe). Its stdout and stderr are ``out/stdout.txt`` and ``out/stderr.txt``.

    Not for what needs a fresh interpreter: a console free of warnings (under pytest the child's warnings may go
    to the test's record of them, not to stderr), signals sent by another process, DDP's or submitit's processes."""
    out.mkdir(parents=True, exist_ok=True)
    stdout, stderr = out / "stdout.txt", out / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(
        target=_cli_child, args=([*fixture_overrides(data_root, out), *overrides], str(stdout), str(stderr))
    )
    child.start()
    status = _join(child, timeout)
    return subprocess.CompletedProcess(overrides, status, stdout.read_text(), stderr.read_text())


def _entry_child(entry: str, argv: list[str], stdout: str, stderr: str, cwd: str | None) -> None:
    for path, fd in ((stdout, 1), (stderr, 2)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    if cwd is not None:
        os.chdir(cwd)
    sys.argv = [f"recursive_ae_gan.{entry}", *argv]
    module = __import__(f"recursive_ae_gan.{entry}", fromlist=["main"])
    module.main()


def run_entry_forked(
    entry: str, out: Path, *argv: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m recursive_ae_gan.<entry> ARGV`` in a child forked from the test process (as run_cli_forked),
    in the working folder ``cwd`` if given (``out``, which holds its stdout and stderr, should lie outside it)."""
    out.mkdir(parents=True, exist_ok=True)
    stdout, stderr = out / "stdout.txt", out / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(
        target=_entry_child, args=(entry, list(argv), str(stdout), str(stderr), None if cwd is None else str(cwd))
    )
    child.start()
    status = _join(child, timeout)
    return subprocess.CompletedProcess(argv, status, stdout.read_text(), stderr.read_text())


def ok(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    return process


def assert_one_line_error(process: subprocess.CompletedProcess, *fragments: str) -> str:
    assert process.returncode == 1, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


def run_dir(out: Path) -> Path:
    (path,) = (out / "runs").iterdir()
    return path


def sweep_dir(out: Path) -> Path:
    (path,) = (out / "multiruns").iterdir()
    return path


# The game in real (short) fits. The fixture's 64 training images in batches of 16 make 4 batches per epoch.

BATCHES = 4


def build(compose_cfg, *overrides: str) -> tuple[ImageDataModule, AdversarialAutoencoder, DictConfig]:
    """Datamodule, model and the trainer config from the composed real config (seeded, as train() builds them)."""
    cfg = compose_cfg("model=ae_gan", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", *overrides)
    return *data_and_model(cfg), cfg.trainer


def fit(
    datamodule: ImageDataModule,
    model: AdversarialAutoencoder,
    trainer_cfg: DictConfig,
    callbacks: Sequence[L.Callback] = (),
    ckpt_path: Path | None = None,
    **trainer_kwargs,
) -> L.Trainer:
    """A fit without logger; checkpoints only when a ModelCheckpoint is among ``callbacks``."""
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    trainer = instantiate(
        trainer_cfg, callbacks=list(callbacks), logger=False, enable_checkpointing=checkpointing, **trainer_kwargs
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def all_moved(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def none_moved(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return all(torch.equal(b, a) for b, a in zip(before, after, strict=True))


class StepIsolation(L.Callback):
    """Snapshots both networks before every optimizer step and at the end of every batch."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[torch.Tensor], list[torch.Tensor]]] = []

    def _record(self, name: str, pl_module: AdversarialAutoencoder) -> None:
        self.events.append((name, snapshot(pl_module.net), snapshot(pl_module.discriminator)))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module, optimizer: torch.optim.Optimizer) -> None:
        ae_optimizer, d_optimizer = trainer.optimizers
        assert optimizer is ae_optimizer or optimizer is d_optimizer
        self._record("ae" if optimizer is ae_optimizer else "d", pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._record("end", pl_module)


# Host reads of the package's own code during a fit

PACKAGE = Path(recursive_ae_gan.__file__).parent


class HostReads(L.Callback):
    """Every host read of a tensor (``item``, ``bool``, ...) that the package's own code makes during fit, as
    ``(phase, batch, function)``: phase ``step`` from a batch's start to the callbacks' end of it (the training
    step and its optimizer steps), ``after`` from there to the next batch (the module's own batch-end hook)."""

    READS = ("item", "__bool__", "__float__", "__int__", "tolist")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.phase: tuple[str, int] = ("before", -1)
        self.reads: list[tuple[str, int, str]] = []
        for name in self.READS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))

    def _counted(self, read):
        def counted(tensor: torch.Tensor, *args):
            caller = sys._getframe(1).f_code
            if PACKAGE in Path(caller.co_filename).parents:
                self.reads.append((*self.phase, caller.co_name))
            return read(tensor, *args)

        return counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.phase = ("step", batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.phase = ("after", batch_idx)  # callbacks run before the module's own on_train_batch_end


# The docs' data configs (README.md and docs/*.md)

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """``(text before the block, block)`` for every fenced code block of a Markdown file."""
    parts = re.split(r"^```[^\n]*\n", path.read_text(), flags=re.M)
    return [(parts[i - 1], parts[i]) for i in range(1, len(parts), 2)]


def data_configs() -> dict[str, str]:
    """The data config files the docs show: ``{name: yaml}``, named by the ``conf/data/<name>.yaml`` before them."""
    configs = {}
    for path in DOCS:
        for before, block in code_blocks(path):
            names = re.findall(r"conf/data/(\w+)\.yaml", before)
            if "_target_: recursive_ae_gan.data.ImageDataModule" in block and names:
                configs[names[-1]] = block
    return configs


def compose_hydra(*overrides: str) -> DictConfig:
    """``conf/train.yaml`` composed with Hydra's own config (``cfg.hydra``)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


class PixelProjection(nn.Module):
    """Features in place of Inception for KID and FID (no download): a fixed random projection of the pixels of
    uint8 ``(B, 3, H, W)`` images to ``dim`` features."""

    def __init__(self, pixels: int = 3 * 28 * 28, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(pixels, dim, generator=generator) / pixels**0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).float().div(255) @ self.weight
