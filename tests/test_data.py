"""ImageDataModule on the fixture datasets: loading, splits, errors, and the two batch paths."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import DATASET_CLASSES, N_TEST, N_TRAIN, REPORT_NET, SHAPES
from hydra.utils import instantiate
from torch.utils.data import DataLoader
from torchvision.datasets import CIFAR10

from recursive_ae_gan.data import BatchIndexSampler, DeviceBatches, ImageDataModule
from recursive_ae_gan.data.sources import TorchvisionItems, open_dataset, read_all
from recursive_ae_gan.errors import UserError
from recursive_ae_gan.models import RecursiveAutoencoder
from recursive_ae_gan.run.config import check

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


def raw_pool(root: Path, dataset: str, train: bool) -> torch.Tensor:
    """The images as the fixture wrote them, decoded here without torchvision: ``(N, C, H, W)``."""
    if dataset == "mnist":
        data = (root / "MNIST" / "raw" / f"{'train' if train else 't10k'}-images-idx3-ubyte").read_bytes()
        return torch.from_numpy(np.frombuffer(data[16:], dtype=np.uint8).copy()).view(-1, 1, 28, 28)
    names = [name for name, _ in (CIFAR10.train_list if train else CIFAR10.test_list)]
    rows = [pickle.loads((root / CIFAR10.base_folder / name).read_bytes())["data"] for name in names]
    return torch.from_numpy(np.concatenate(rows)).view(-1, 3, 32, 32)


def image_keys(images: torch.Tensor) -> list[bytes]:
    return [image.numpy().tobytes() for image in images]


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_loaders_read_the_files_as_written(data_root: Path, dataset: str) -> None:
    """Both ways of reading a torchvision dataset: its whole array at once, and item by item (streaming)."""
    for train, n in [(True, N_TRAIN), (False, N_TEST)]:
        torchvision_dataset = open_dataset(DATASET_CLASSES[dataset], data_root, {"train": train}, False, False)
        items = TorchvisionItems(torchvision_dataset, dataset, channels=None, size=None)
        images, readable = read_all(items, num_workers=0, keep=True)
        assert images.dtype == torch.uint8 and images.shape == (n, *SHAPES[dataset]) and readable == list(range(n))
        assert torch.equal(images, raw_pool(data_root, dataset, train))
        assert torch.equal(torch.stack([items[i] for i in range(n)]), images)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_composed_datamodule_batches_scale_to_unit_range(compose_cfg, dataset: str) -> None:
    datamodule = instantiate(compose_cfg(f"data={dataset}").data)
    datamodule.setup("fit")
    sizes = {split: len(images) for split, images in datamodule.splits.items()}
    assert sizes == {"train": 64, "val": 16, "test": 32}
    assert all(images.shape[1:] == SHAPES[dataset] for images in datamodule.splits.values())
    assert datamodule.image_shape == SHAPES[dataset]
    assert torch.equal(datamodule.images("test", 5), datamodule.splits["test"][:5])
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.dtype == torch.uint8 and batch.shape == (16, *SHAPES[dataset])
    scaled = datamodule.on_after_batch_transfer(batch.clone(), 0)
    assert scaled.dtype == torch.float32
    assert 0 <= scaled.min() and scaled.max() <= 1 and scaled.max() > 0.5
    torch.testing.assert_close(scaled, batch.float() / 255)


def test_split_is_deterministic_disjoint_and_seeded(data_root: Path) -> None:
    pool = image_keys(raw_pool(data_root, "mnist", train=True))
    assert len(set(pool)) == len(pool)  # distinct images, so comparing contents compares indices
    first = make_datamodule(data_root, split_seed=3, train_size=None)
    again = make_datamodule(data_root, split_seed=3, train_size=None, seed=7)  # training seed: same split
    other = make_datamodule(data_root, split_seed=4, train_size=None)
    for split in ("train", "val", "test"):
        assert torch.equal(first.splits[split], again.splits[split])
    assert not torch.equal(first.splits["val"], other.splits["val"])
    train, val = set(image_keys(first.splits["train"])), set(image_keys(first.splits["val"]))
    assert not train & val
    assert train | val == set(pool)  # train_size=None takes all that validation leaves
    assert set(image_keys(first.splits["test"])) <= set(image_keys(raw_pool(data_root, "mnist", train=False)))


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [((10, 5, 7), (10, 5, 7)), ((None, 16, None), (N_TRAIN - 16, 16, N_TEST)), ((80, 16, N_TEST), (80, 16, N_TEST))],
)
def test_subset_sizes_are_honoured(data_root: Path, sizes: tuple, expected: tuple[int, int, int]) -> None:
    train_size, val_size, test_size = sizes
    datamodule = make_datamodule(data_root, train_size=train_size, val_size=val_size, test_size=test_size)
    assert tuple(len(datamodule.splits[s]) for s in ("train", "val", "test")) == expected


@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST/raw"), ("cifar10", CIFAR10.base_folder)])
def test_missing_data_without_download_names_path_and_overrides(tmp_path: Path, dataset: str, folder: str) -> None:
    root = tmp_path / "nothing"
    with pytest.raises(UserError) as err:
        make_datamodule(root, dataset)  # prepare_data must not try to download
    message = str(err.value)
    name = DATASET_CLASSES[dataset].rpartition(".")[2]
    assert message.startswith(f"{name} not found in {root.resolve()} (torchvision: ")
    assert "data.root" in message and "data.download" in message and "\n" not in message
    assert not (root / folder).exists()  # nothing was downloaded


def test_cifar_md5_mismatch_points_to_verify_false(data_root: Path) -> None:
    with pytest.raises(UserError, match=r"md5.*data\.verify=false"):
        make_datamodule(data_root, "cifar10", verify=True)
    assert len(make_datamodule(data_root, "mnist", verify=True).splits["train"]) == 64  # MNIST has no md5 check


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_size": 81, "val_size": 16}, r"data\.train_size=81 \+ data\.val_size=16 needs more than the 96"),
        ({"train_size": None, "val_size": N_TRAIN}, r"data\.train_size=None \+ data\.val_size=96"),
        ({"test_size": N_TEST + 1}, r"data\.test_size=49 exceeds the 48 test images"),
        ({"dataset": "torchvision.datasets.NoSuchSet"}, r"data\.dataset='torchvision\.datasets\.NoSuchSet' is not an"),
        ({"dataset": "svhn"}, r"data\.dataset='svhn' is not an importable dataset class"),
    ],
)
def test_bad_sizes_are_user_errors(data_root: Path, overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        make_datamodule(data_root, **overrides)
    assert "\n" not in str(err.value)  # printed as one error: line


@pytest.mark.parametrize(
    ("override", "message"),
    [("data.batch_size=0", "data.batch_size=0: expected >= 1"), ("data.val_size=0", "data.val_size=0: expected >= 1")],
)
def test_bad_sizes_are_rejected_before_loading(compose_cfg, override: str, message: str) -> None:
    """Ranges are the typed config check's, which train() runs before any data is read."""
    with pytest.raises(UserError) as err:
        check(compose_cfg(override))
    assert str(err.value) == message


def test_sampler_batches() -> None:
    sampler = BatchIndexSampler(10, 4, shuffle=False)
    assert [b.tolist() for b in sampler] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(sampler) == 3
    # Training keeps the short last batch (no drop_last): every image once per epoch, in a seeded order.
    shuffled = BatchIndexSampler(10, 4, shuffle=True, seed=1)
    assert [len(b) for b in shuffled] == [4, 4, 2] and len(shuffled) == 3
    assert sorted(torch.cat(list(shuffled)).tolist()) == list(range(10))
    assert torch.equal(torch.cat(list(shuffled)), torch.cat(list(BatchIndexSampler(10, 4, shuffle=True, seed=1))))
    assert not torch.equal(torch.cat(list(shuffled)), torch.cat(list(BatchIndexSampler(10, 4, shuffle=True, seed=2))))


def test_device_batches_equal_dataloader_batches(data_root: Path) -> None:
    """Same seed and epoch: the same batches on both paths; another epoch: another order."""
    loaders = {
        on_device: make_datamodule(data_root, seed=5, on_device=on_device).train_dataloader()
        for on_device in (False, True)
    }
    assert isinstance(loaders[False], DataLoader) and isinstance(loaders[True], DeviceBatches)
    train_keys = sorted(image_keys(make_datamodule(data_root, seed=5).splits["train"]))
    epochs = []
    for epoch in (0, 1):
        batches = {}
        for on_device, loader in loaders.items():
            loader.sampler.set_epoch(epoch)
            batches[on_device] = list(loader)
        assert len(batches[False]) == len(batches[True]) == len(loaders[True]) == 4
        for on_host, on_device in zip(batches[False], batches[True], strict=True):
            assert torch.equal(on_host, on_device)
        epoch_images = torch.cat(batches[False])
        assert sorted(image_keys(epoch_images)) == train_keys  # every training image once
        epochs.append(epoch_images)
    assert not torch.equal(epochs[0], epochs[1])


def test_validation_batches_keep_their_order(data_root: Path) -> None:
    for on_device in (False, True):
        datamodule = make_datamodule(data_root, val_size=20, on_device=on_device)
        assert torch.equal(torch.cat(list(datamodule.val_dataloader())), datamodule.splits["val"])


class RecordBatches(L.Callback):
    def __init__(self) -> None:
        self.batches: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.batches.append((trainer.current_epoch, batch.clone()))


def test_trainer_sees_the_same_batches_on_both_paths(data_root: Path) -> None:
    """Lightning sets the epoch on DeviceBatches' sampler too, so the paths agree in a real fit."""
    seen = {}
    for on_device in (False, True):
        torch.manual_seed(0)
        recorder = RecordBatches()
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=2,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[recorder],
        )
        model = RecursiveAutoencoder(REPORT_NET, SHAPES["mnist"])
        trainer.fit(model, datamodule=make_datamodule(data_root, on_device=on_device))
        seen[on_device] = recorder.batches
    assert [e for e, _ in seen[True]] == [0] * 4 + [1] * 4
    for (_, on_host), (_, on_device) in zip(seen[False], seen[True], strict=True):
        assert on_host.dtype == torch.float32 and torch.equal(on_host, on_device)
    assert not torch.equal(torch.cat([b for _, b in seen[True][:4]]), torch.cat([b for _, b in seen[True][4:]]))


@pytest.mark.parametrize("on_device", [False, True])
def test_epoch_set_after_iter_decides_the_order(data_root: Path, on_device: bool) -> None:
    """Resuming, Lightning creates the train iterator before it sets the epoch (FitLoop.setup_data
    calls ``iter`` first): the epoch's order must be drawn at the first batch, not at ``iter``."""
    reference = make_datamodule(data_root, on_device=on_device).train_dataloader()
    reference.sampler.set_epoch(3)
    expected = list(reference)
    loader = make_datamodule(data_root, on_device=on_device).train_dataloader()
    iterator = iter(loader)
    loader.sampler.set_epoch(3)
    for batch, expected_batch in zip(iterator, expected, strict=True):
        assert torch.equal(batch, expected_batch)


def test_ranks_share_training_batches_round_robin_and_wrap_when_uneven() -> None:
    """7 batches over 3 ranks: 3 each, the last round wraps to the epoch's first batches (DDP steps evenly)."""
    single = [b.tolist() for b in BatchIndexSampler(26, 4, shuffle=True, seed=2)]  # 7 batches, the last of 2
    shares = [
        [b.tolist() for b in BatchIndexSampler(26, 4, shuffle=True, seed=2, rank=r, world_size=3)] for r in range(3)
    ]
    assert [len(s) for s in shares] == [3, 3, 3]
    padded = single + single[:2]
    assert shares == [padded[r::3] for r in range(3)]
    assert len(BatchIndexSampler(26, 4, shuffle=True, rank=1, world_size=3)) == 3


def test_ranks_split_evaluation_images_once_without_padding() -> None:
    shares = [torch.cat(list(BatchIndexSampler(11, 2, shuffle=False, rank=r, world_size=3))).tolist() for r in range(3)]
    assert sum(shares, []) == list(range(11))  # every image exactly once, in order
    assert [len(BatchIndexSampler(11, 2, shuffle=False, rank=r, world_size=3)) for r in range(3)] == [2, 2, 2]


def test_loader_state_resumes_within_its_epoch_only(data_root: Path) -> None:
    loader = make_datamodule(data_root, seed=5).train_dataloader()
    loader.sampler.set_epoch(2)
    full = list(loader)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_done": 2}
    resumed = make_datamodule(data_root, seed=5).train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:], strict=True))
    end_of_epoch = resumed.state_dict()
    assert end_of_epoch == {"epoch": 2, "batches_done": len(full)}
    after_end = make_datamodule(data_root, seed=5).train_dataloader()
    after_end.load_state_dict(end_of_epoch)
    after_end.sampler.set_epoch(3)  # a state saved at an epoch's end does not skip any of the next epoch
    assert len(list(after_end)) == len(full)
