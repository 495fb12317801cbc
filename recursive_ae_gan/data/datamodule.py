"""``ImageDataModule``: any torchvision image dataset, or a folder of images, as seeded splits.

Small datasets are held in memory as one uint8 tensor ``(N, C, H, W)``, so a batch is one index
into that tensor, not ``batch_size`` calls to ``__getitem__``; with ``on_device`` the tensor lives
on the GPU and batches never cross the bus. Datasets past ``max_memory_gb`` (or with
``in_memory=false``) stream instead: DataLoader workers decode each batch from disk. Every path
draws its batches from the same seeded ``BatchIndexSampler``, so all give the same batches.
Batches travel as uint8 and become floats in [0, 1] (``ToTensor``'s scaling) on the device. With ``hflip``
the sampler also picks, per epoch and seed, which training images are mirrored (``loaders.epoch_flips``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.data.loaders import (
    BatchLoader,
    DeviceBatches,
    ImageBatches,
    StreamedBatches,
    batch_sampler,
)
from recursive_ae_gan.data.sources import FolderSource, ImageItems, TorchvisionSource, image_source, read_all

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class ImageDataModule(L.LightningDataModule):
    """A seeded train / val / test split of an image dataset.

    Args:
        dataset: import path of a torchvision image dataset class (e.g. ``torchvision.datasets.MNIST``),
            or ``folder``: the image files under ``root`` (ImageFolder's layout, or flat).
        root: the dataset's folder (torchvision's layout for a torchvision class).
        download: fetch a torchvision dataset that is missing (the class must support ``download``).
        verify: keep torchvision's md5 checks; ``False`` loads partial or re-packed copies.
        train_split / test_split: the class's arguments that select its training / test pool, e.g.
            ``{train: true}`` or ``{split: train}``. ``test_split: null`` (and every folder) draws the
            test images from the training pool too.
        channels / image_size: convert every image to 1 or 3 channels and to image_size x image_size
            (resize the short side, centre-crop); ``null`` keeps the data's own.
        in_memory: hold the images in memory (``None``: when they fit in ``max_memory_gb``), else
            stream them from disk with ``num_workers`` worker processes.
        batch_size: images per batch (all splits; per process under DDP).
        train_size / val_size / test_size: subset sizes (``None``: all that is left). With a separate test pool
            ``test_size=None`` is that whole pool; with one pool (a folder, ``test_split=None``) it is what
            ``val_size`` and ``train_size`` leave, so one of ``train_size`` and ``test_size`` must be given.
        split_seed: which images go to train / val / test; apart from ``seed`` so that runs with
            different training seeds see the same data.
        seed: seeds the per-epoch shuffling of the training set.
        num_workers: DataLoader workers: 0 is fastest in memory, streaming wants several.
        on_device: keep the in-memory data on the accelerator; ``None`` means yes on a GPU.
        hflip: mirror each training image left-right with probability 0.5, drawn anew each epoch from
            ``(seed, epoch)`` (a resumed epoch mirrors the same images); validation and test images never.
        max_image_pixels: image files (``data=folder``; a torchvision class decodes its own files and ignores it)
            of more pixels are skipped, named in the warning; ``None``: PIL's threshold (178956970, what it refuses
            as a possible decompression bomb). Raise it for very large images.
    """

    def __init__(
        self,
        dataset: str,
        root: str = "data",
        download: bool = False,
        verify: bool = True,
        train_split: dict | None = None,
        test_split: dict | None = None,
        channels: Literal[1, 3] | None = None,
        image_size: int | None = None,
        in_memory: bool | None = None,
        max_memory_gb: float = 4.0,
        batch_size: int = 128,
        train_size: int | None = None,
        val_size: int = 1000,
        test_size: int | None = None,
        split_seed: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        on_device: bool | None = None,
        hflip: bool = False,
        max_image_pixels: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.name = dataset.rpartition(".")[2]  # for messages: MNIST, CIFAR10, folder
        self.splits: dict[str, torch.Tensor] = {}  # in memory: uint8 (N, C, H, W) per split
        self.streamed: dict[str, StreamedBatches] = {}  # streaming: files per split
        self.prepared = False

    def _root(self) -> Path:
        return Path(self.hparams.root).expanduser().resolve()

    def _source(self) -> TorchvisionSource | FolderSource:
        hp = self.hparams
        return image_source(
            hp.dataset, root=self._root(), verify=hp.verify, train_split=hp.train_split,
            test_split=hp.test_split, channels=hp.channels, size=hp.image_size, max_pixels=hp.max_image_pixels,
        )  # fmt: skip

    def prepare_data(self) -> None:
        if self.prepared:  # train() prepares before the model is built, Lightning again in fit
            return
        self.prepared = True
        if self.hparams.download:
            self._source().download()

    def setup(self, stage: str | None = None) -> None:
        if self.splits or self.streamed:
            return
        hp = self.hparams
        pools = self._source().pools()
        in_memory = hp.in_memory if hp.in_memory is not None else self._fits(pools)
        if hp.on_device and not in_memory:
            raise UserError(
                "data.on_device=true needs the images in memory: set data.in_memory=true or on_device=false"
            )
        read = {name: read_all(items, hp.num_workers, keep=in_memory) for name, items in pools.items()}
        indices = self._split({name: len(good) for name, (_, good) in read.items()})
        for split, (pool, positions) in indices.items():
            images, good = read[pool]
            if in_memory:
                self.splits[split] = images[positions]
            else:
                self.streamed[split] = StreamedBatches(pools[pool], torch.tensor(good)[positions])
        if not in_memory:
            log.info("streaming %s from disk with %d workers", self.name, hp.num_workers)

    def _fits(self, pools: dict[str, ImageItems]) -> bool:
        image_bytes = math.prod(pools["train"].image_shape())  # uint8
        return sum(len(items) for items in pools.values()) * image_bytes <= self.hparams.max_memory_gb * 2**30

    def _split(self, pool_sizes: dict[str, int]) -> dict[str, tuple[str, torch.Tensor]]:
        """Each split's pool and positions in it: a seeded permutation of each pool, cut in order."""
        hp = self.hparams
        train_pool = pool_sizes["train"]
        separate_test = "test" in pool_sizes
        test_pool = pool_sizes["test"] if separate_test else train_pool
        test_size = test_pool if separate_test and hp.test_size is None else hp.test_size
        if test_size is None:  # one pool: the test images are what validation and training leave of it
            if hp.train_size is None:
                raise UserError(
                    f"data.train_size and data.test_size are both null (all that is left), but {self.name} has one "
                    f"pool of images for both: set one of them"
                )
            test_size = train_pool - hp.val_size - hp.train_size
            if test_size < 1:
                raise UserError(
                    f"data.train_size={hp.train_size} + data.val_size={hp.val_size} leave no test images of the "
                    f"{train_pool} of {self.name} in {self._root()} (test_size=null is what they leave); lower them"
                )
        if not separate_test and test_size == 0:
            raise UserError(f"{self.name} has no test split: set data.test_size=N to hold out N of its images")
        if test_size > test_pool:
            raise UserError(
                f"data.test_size={test_size} exceeds the {test_pool} test images of {self.name} in {self._root()}; "
                f"lower it"
            )
        held_out = hp.val_size + (0 if separate_test else test_size)
        train_size = hp.train_size if hp.train_size is not None else train_pool - held_out
        if train_size < 1 or train_size + held_out > train_pool:
            raise UserError(
                f"data.train_size={hp.train_size} + data.val_size={hp.val_size}"
                f"{'' if separate_test else f' + data.test_size={test_size}'} needs more than the {train_pool} "
                f"training images of {self.name} in {self._root()}; lower them"
            )
        if train_size == 1:  # BatchNorm cannot normalise a training batch of one image
            raise UserError(
                f"data.train_size=1 of {self.name}: training needs at least 2 images (BatchNorm cannot normalise a "
                f"batch of one); raise it, or lower data.val_size / data.test_size"
            )
        generator = torch.Generator().manual_seed(hp.split_seed)
        order = torch.randperm(train_pool, generator=generator)
        test_order = torch.randperm(test_pool, generator=generator) if separate_test else order[held_out - test_size :]
        return {
            "val": ("train", order[: hp.val_size]),
            "train": ("train", order[held_out : held_out + train_size]),
            "test": ("test" if separate_test else "train", test_order[:test_size]),
        }

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images, known after ``setup``."""
        return tuple(self.images("val", 1).shape[1:])

    def images(self, split: str, n: int | None = None) -> torch.Tensor:
        """The first ``n`` (all) images of ``split`` as uint8 ``(n, C, H, W)``, on either path."""
        data = self.splits.get(split)
        if data is None:
            data = self.streamed[split]
        return data[torch.arange(len(data) if n is None else min(n, len(data)))]

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _loader(self, split: str) -> BatchLoader | DeviceBatches:
        hp = self.hparams
        in_memory = split in self.splits
        data = self.splits[split] if in_memory else self.streamed[split]
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        # overfit_batches: Lightning trains on the first N training batches, so they must be the same every epoch
        overfit = self.trainer is not None and self.trainer.overfit_batches > 0
        train = split == "train"
        shuffle, hflip = train and not overfit, train and hp.hflip
        sampler = batch_sampler(len(data), hp.batch_size, train, shuffle, hp.seed, rank, world_size, hflip)
        device = self._device()
        on_device = hp.on_device if hp.on_device is not None else device.type == "cuda" and in_memory
        if on_device:
            return DeviceBatches(data.to(device), sampler)
        dataset = ImageBatches(data) if in_memory else data
        return BatchLoader(dataset, sampler, hp.num_workers, pin_memory=device.type == "cuda")

    def train_dataloader(self) -> BatchLoader | DeviceBatches:
        return self._loader("train")

    def val_dataloader(self) -> BatchLoader | DeviceBatches:
        return self._loader("val")

    def test_dataloader(self) -> BatchLoader | DeviceBatches:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        """uint8 -> float in [0, 1] on the device: ``ToTensor``'s scaling, 4x less to copy."""
        return batch.float().div_(255)
