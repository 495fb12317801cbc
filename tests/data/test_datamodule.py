"""ImageDataModule on the fixture datasets: splits, errors, and the two batch paths; a folder's splits."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import (
    DATASET_CLASSES,
    N_TEST,
    N_TRAIN,
    ONE_EPOCH,
    REPORT_NET,
    SHAPES,
    make_datamodule,
    ok,
    raw_pool,
    run_cli_forked,
    write_image_folder,
)
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.data import DataLoader
from torchvision.datasets import CIFAR10

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.data import DeviceBatches
from recursive_ae_gan.models import RecursiveAutoencoder
from recursive_ae_gan.run.config import check


def image_keys(images: torch.Tensor) -> list[bytes]:
    return [image.numpy().tobytes() for image in images]


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


SPLITS = ("train", "val", "test")
FOLDER = ("data=folder", "data.image_size=16", "data.val_size=8", "data.train_size=24", "data.batch_size=8")


def test_a_folders_test_size_null_is_what_training_and_validation_leave(
    compose_cfg, data_root: Path, tmp_path: Path
) -> None:
    folder = write_image_folder(tmp_path / "images", n=40, size=16, corrupt=False)
    ok(run_cli_forked(data_root, tmp_path / "out", *FOLDER, f"data.root={folder}", "data.test_size=null", *ONE_EPOCH))

    datamodule = instantiate(compose_cfg(*FOLDER, f"data.root={folder}", "data.test_size=null").data)
    datamodule.setup("fit")
    splits = {name: {tuple(image.flatten().tolist()) for image in datamodule.images(name)} for name in SPLITS}
    assert {name: len(images) for name, images in splits.items()} == {"train": 24, "val": 8, "test": 8}
    assert len(set.union(*splits.values())) == 40  # disjoint: every image in one split
    both_null = compose_cfg(*FOLDER, f"data.root={folder}", "data.test_size=null", "data.train_size=null")
    with pytest.raises(UserError, match="data.train_size and data.test_size are both null"):
        instantiate(both_null.data).setup("fit")


def test_a_training_split_of_one_image_is_refused(compose_cfg) -> None:
    cfg = compose_cfg("data.train_size=1")
    with open_dict(cfg):
        cfg.data.val_size = 16
    datamodule = instantiate(cfg.data)
    with pytest.raises(UserError, match="data.train_size=1 .* at least 2 images"):
        datamodule.setup("fit")
