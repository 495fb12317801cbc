"""MNIST and CIFAR10 as one LightningDataModule over torchvision's on-disk datasets.

The images are small enough to hold in memory as one uint8 tensor ``(N, C, H, W)``, so a
batch is one index into that tensor, not ``batch_size`` calls to ``__getitem__``. Batches
travel as uint8 and become floats in [0, 1] (``ToTensor``'s scaling) only after they reach
the device. With ``on_device`` the whole tensor lives on the GPU and batches never cross
the bus; both paths draw their batches from the same seeded sampler, so they are equal.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets import CIFAR10, MNIST
from torchvision.datasets.utils import check_integrity

from recursive_ae_gan.errors import UserError

# The data lives in memory and a batch is one tensor index: worker processes only add IPC.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*", module="lightning")


class UnverifiedCIFAR10(CIFAR10):
    """CIFAR10 that loads batch files without torchvision's md5 check (``data.verify=false``).

    For partial or re-packed copies whose batches hold only some of the rows.
    """

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


DATASETS = ("mnist", "cifar10")


def _files_present(dataset: str, root: Path) -> bool:
    if dataset == "mnist":
        raw = root / "MNIST" / "raw"
        return all((raw / name.removesuffix(".gz")).is_file() for name, _ in MNIST.resources)
    folder = root / CIFAR10.base_folder
    names = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    return all((folder / n).is_file() for n in names)


def _cifar_verified(root: Path) -> bool:
    folder = root / CIFAR10.base_folder
    return all(check_integrity(str(folder / n), md5) for n, md5 in CIFAR10.train_list + CIFAR10.test_list)


def download(dataset: str, root: str | os.PathLike) -> None:
    """Fetch ``dataset`` into ``root`` with torchvision, as one clear error if that fails."""
    root = Path(root).expanduser().resolve()
    cls = MNIST if dataset == "mnist" else CIFAR10
    try:
        cls(str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"downloading {dataset} into {root} failed ({reason}); without network, set "
            f"data.root=DIR to a folder that already holds it (torchvision's layout) and data.download=false"
        ) from None


def load_images(dataset: str, root: str | os.PathLike, train: bool, verify: bool = True) -> torch.Tensor:
    """All images of one split as a uint8 tensor ``(N, C, H, W)``, from torchvision's layout."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: data.dataset must be one of {', '.join(DATASETS)}")
    root = Path(root).expanduser().resolve()
    if not _files_present(dataset, root):
        where = root / ("MNIST/raw" if dataset == "mnist" else CIFAR10.base_folder)
        raise UserError(
            f"{dataset} not found: looked in {where}; set data.root=DIR to the folder holding it, "
            f"or data.download=true to fetch it"
        )
    if dataset == "mnist":
        return MNIST(str(root), train=train).data.unsqueeze(1)  # (N, 1, 28, 28)
    if verify and not _cifar_verified(root):
        raise UserError(
            f"cifar10 files in {root / CIFAR10.base_folder} fail torchvision's md5 check (a partial or "
            f"re-packed copy?); set data.verify=false to load them unverified"
        )
    cls = CIFAR10 if verify else UnverifiedCIFAR10
    data = cls(str(root), train=train).data  # (N, 32, 32, 3) numpy uint8
    return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: a function of (seed, epoch) only, so resumable."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class BatchIndexSampler(Sampler[torch.Tensor]):
    """Yields one index tensor per batch: shuffled per epoch (seeded) or in order."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the order is drawn at the first batch, after Lightning's set_epoch (which on
        # resume comes after iter()), so a resumed run replays the right epoch's order.
        order = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else torch.arange(self.n)
        batches = order.split(self.batch_size)
        if self.drop_last and len(batches) and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        yield from batches

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest > 0 and not self.drop_last)


class IndexedImages(Dataset):
    """``images[indices]`` for a whole batch of indices at once."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]

    def __len__(self) -> int:
        return len(self.images)


class DeviceBatches:
    """The on-device loader: the images stay on the GPU and are indexed there."""

    def __init__(self, images: torch.Tensor, sampler: BatchIndexSampler) -> None:
        self.images, self.sampler = images, sampler

    def __iter__(self) -> Iterator[torch.Tensor]:
        batches = list(self.sampler)  # drawn lazily, at the first batch (after set_epoch)
        if not batches:
            return
        order = torch.cat(batches).to(self.images.device)  # one host-to-device copy per epoch
        for indices in order.split([len(b) for b in batches]):
            yield self.images[indices]

    def __len__(self) -> int:
        return len(self.sampler)


class ImageDataModule(L.LightningDataModule):
    """MNIST or CIFAR10: a seeded train/val split of the train set and a test subset.

    Args:
        dataset: ``mnist`` or ``cifar10``.
        root: folder in torchvision's layout (``MNIST/raw``, ``cifar-10-batches-py``).
        download: fetch the data with torchvision when it is missing.
        verify: check CIFAR10's md5 sums; ``False`` loads partial or re-packed copies.
        batch_size: images per batch (all splits).
        train_size / val_size / test_size: subset sizes (``None``: all that is left).
        split_seed: seeds which images go to train / val / test; fixed apart from ``seed``
            so that runs with different training seeds see the same data.
        seed: seeds the per-epoch shuffling of the training set.
        num_workers: DataLoader workers; 0 is fastest for in-memory tensors.
        on_device: keep the data on the accelerator; ``None`` means yes on a GPU.
    """

    def __init__(
        self,
        dataset: str,
        root: str = "data",
        download: bool = True,
        verify: bool = True,
        batch_size: int = 128,
        train_size: int | None = None,
        val_size: int = 1000,
        test_size: int | None = None,
        split_seed: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        on_device: bool | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise UserError(f"unknown dataset {dataset!r}: data.dataset must be one of {', '.join(DATASETS)}")
        for name, value in [("batch_size", batch_size), ("train_size", train_size), ("test_size", test_size)]:
            if value is not None and value < 1:
                raise UserError(f"data.{name} must be at least 1, got {value}")
        if val_size < 1:
            raise UserError(f"data.val_size must be at least 1 (validation drives checkpoints), got {val_size}")
        self.save_hyperparameters()
        self.splits: dict[str, torch.Tensor] = {}

    def prepare_data(self) -> None:
        root = Path(self.hparams.root)
        if self.hparams.download and not _files_present(self.hparams.dataset, root.expanduser().resolve()):
            download(self.hparams.dataset, root)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        train_pool = load_images(hp.dataset, hp.root, train=True, verify=hp.verify)
        test_pool = load_images(hp.dataset, hp.root, train=False, verify=hp.verify)
        train_size = hp.train_size if hp.train_size is not None else len(train_pool) - hp.val_size
        if train_size < 1 or train_size + hp.val_size > len(train_pool):
            raise UserError(
                f"data.train_size={hp.train_size} + data.val_size={hp.val_size} needs more than the "
                f"{len(train_pool)} training images found in {Path(hp.root).resolve()}; lower them"
            )
        test_size = hp.test_size if hp.test_size is not None else len(test_pool)
        if test_size > len(test_pool):
            raise UserError(
                f"data.test_size={test_size} exceeds the {len(test_pool)} test images found in "
                f"{Path(hp.root).resolve()}; lower it"
            )
        generator = torch.Generator().manual_seed(hp.split_seed)
        order = torch.randperm(len(train_pool), generator=generator)
        test_order = torch.randperm(len(test_pool), generator=generator)
        self.splits = {
            "val": train_pool[order[: hp.val_size]],
            "train": train_pool[order[hp.val_size : hp.val_size + train_size]],
            "test": test_pool[test_order[:test_size]],
        }

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _loader(self, split: str) -> DataLoader | DeviceBatches:
        images = self.splits[split]
        train = split == "train"
        sampler = BatchIndexSampler(
            len(images), self.hparams.batch_size, shuffle=train, drop_last=False, seed=self.hparams.seed
        )
        device = self._device()
        on_device = self.hparams.on_device if self.hparams.on_device is not None else device.type == "cuda"
        if on_device:
            return DeviceBatches(images.to(device), sampler)
        return DataLoader(
            IndexedImages(images),
            sampler=sampler,
            batch_size=None,  # the sampler already yields whole batches
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            pin_memory=device.type == "cuda",
        )

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        """uint8 -> float in [0, 1] on the device: ``ToTensor``'s scaling, 4x less to copy."""
        return batch.float().div_(255)
