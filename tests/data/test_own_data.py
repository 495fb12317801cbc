"""Your own data: a torchvision dataset added by a config file alone, and a folder of image files on both
paths (in memory and streamed from disk), through the real CLI; images over the pixel limit among them."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    ONE_EPOCH,
    _images,
    assert_one_line_error,
    run_cli_forked,
    write_image_folder,
    write_png_declaring,
)
from hydra.utils import instantiate

from recursive_ae_gan.networks import ConvAutoencoder
from recursive_ae_gan.run.train import train

FASHION_CONFIG = """\
# A dataset that no file of the package names: FashionMNIST, by this config file alone.
_target_: recursive_ae_gan.data.ImageDataModule
_convert_: all
dataset: torchvision.datasets.FashionMNIST
root: {root}
download: false
verify: true
train_split: {{train: true}}
test_split: {{train: false}}
batch_size: 16
train_size: 48
val_size: 16
test_size: 32
seed: ${{seed}}
"""


def write_fashion_mnist(root: Path, n_train: int = 80, n_test: int = 40) -> Path:
    """FashionMNIST's raw IDX files under ``root/FashionMNIST/raw`` (torchvision's layout)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        images = 255 - _images(rng, n, (28, 28))  # dark blobs on white: not MNIST's look
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def test_a_torchvision_dataset_from_a_config_file_alone(data_root: Path, tmp_path: Path) -> None:
    data = write_fashion_mnist(tmp_path / "data")
    configs = tmp_path / "my_configs" / "data"
    configs.mkdir(parents=True)
    (configs / "fashion.yaml").write_text(FASHION_CONFIG.format(root=data))
    process = run_cli_forked(
        data_root, tmp_path / "out", "data=fashion", f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]",
        "data.root=" + str(data), "data.train_size=48", "model=rae_gan", "model.warmup_epochs=0",
        "trainer.max_epochs=1", "collapse_threshold=0",
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    (run,) = (tmp_path / "out" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and "test/step_2/fool_rate" in metrics
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "torchvision.datasets.FashionMNIST" in config and "ConvAutoencoder" in config  # conv: not MNIST or CIFAR10


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


FOLDER = ("data=folder", "data.image_size=48", "data.val_size=8", "data.test_size=8", "data.train_size=null")


def test_a_folder_trains_every_model_on_both_paths(data_root: Path, folder: Path, tmp_path: Path) -> None:
    # One epoch: rae_gan's default warm-up (5 epochs) would keep its discriminator out; the game runs in
    # test_own_data's torchvision test and in tests/models/test_adversarial.py.
    sweep = ["model=ae,rae,rae_gan", "data.in_memory=true,false", "data.num_workers=0", "trainer.max_epochs=1"]
    process = run_cli_forked(data_root, tmp_path, *FOLDER, f"data.root={folder}", *sweep, "collapse_threshold=0", "-m")
    assert process.returncode == 0, process.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "multiruns").iterdir()
    jobs = sorted(sweep_dir.glob("[0-9]*"), key=lambda p: int(p.name))
    assert len(jobs) == 6
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "ok", job
        assert metrics["test/step_0/ssim"] > -1 and 0 < metrics["test/step_0/bce"] < 1
    log = (jobs[0] / "train.log").read_text()
    assert "skipped 2 unreadable image file(s) of 42" in log and "broken.png" in log and "truncated.png" in log


def test_in_memory_and_streaming_give_the_same_images(compose_cfg, folder: Path, caplog) -> None:
    loaded = {}
    for in_memory in (True, False):
        cfg = compose_cfg(*FOLDER, f"data.root={folder}", f"data.in_memory={in_memory}", "data.num_workers=1")
        datamodule = instantiate(cfg.data)
        with caplog.at_level(logging.WARNING):
            datamodule.setup("fit")
        assert "skipped 2 unreadable image file(s) of 42" in caplog.text
        assert bool(datamodule.splits) is in_memory and bool(datamodule.streamed) is not in_memory
        batches = list(datamodule.train_dataloader())
        loaded[in_memory] = {split: datamodule.images(split) for split in ("train", "val", "test")}, batches
    (memory, memory_batches), (streamed, streamed_batches) = loaded[True], loaded[False]
    assert {s: len(x) for s, x in memory.items()} == {"train": 24, "val": 8, "test": 8}  # 40 readable images
    for split in memory:
        assert memory[split].shape[1:] == (3, 48, 48) and torch.equal(memory[split], streamed[split])
    assert len(memory_batches) == len(streamed_batches) == 2  # 24 images in batches of 16
    for on_memory, on_disk in zip(memory_batches, streamed_batches, strict=True):
        assert torch.equal(on_memory, on_disk)
    gray = memory["train"][(memory["train"][:, 0] == memory["train"][:, 1]).flatten(1).all(1)]
    assert len(gray) > 0  # the grayscale files were converted to 3 equal channels


def test_a_folder_without_readable_images_is_one_line(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    process = run_cli_forked(data_root, tmp_path / "out", *FOLDER, f"data.root={tmp_path / 'empty'}")
    assert_one_line_error(process, "no image files", str(tmp_path / "empty"), "data.root")


def test_a_folder_image_over_the_pixel_limit_is_skipped_and_the_rest_trains(compose_cfg, tmp_path: Path, caplog):
    """A small PNG declaring 20000x20000 pixels (over PIL's threshold) and an empty file, among good images; read in
    a DataLoader worker, as on the streaming path."""
    folder = write_image_folder(tmp_path / "images", n=24, size=16, corrupt=False)
    huge = write_png_declaring(folder / "dogs" / "huge.png", 20000, 20000)
    (folder / "cats" / "empty.png").write_bytes(b"")
    small = ["data.image_size=16", "data.val_size=4", "data.test_size=4", "data.train_size=null"]
    cfg = compose_cfg("data=folder", f"data.root={folder}", *small, "data.num_workers=1", *ONE_EPOCH)
    with caplog.at_level(logging.WARNING):
        assert train(cfg)["status"] == "ok"
    over = f"cannot decode {huge}: 20000x20000 = 400,000,000 pixels, more than data.max_image_pixels=178956970"
    assert (
        f"skipped 2 unreadable image file(s) of 26 in {folder} (1 over the pixel limit): cannot decode "
        f"{folder / 'cats' / 'empty.png'}: cannot identify image file"
    ) in caplog.text
    assert f"; {over} (raise it to read such images)\n" in caplog.text


def test_a_folder_of_images_over_the_pixel_limit_only_is_one_line(data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "huge"
    folder.mkdir()
    huge = write_png_declaring(folder / "huge.png", 20000, 20000)
    (folder / "empty.png").write_bytes(b"")
    process = run_cli_forked(data_root, tmp_path / "out", *FOLDER, f"data.root={folder}")
    assert assert_one_line_error(process) == (
        f"error: none of the 2 image files in {folder} can be read (1 over the pixel limit: cannot decode {huge}: "
        "20000x20000 = 400,000,000 pixels, more than data.max_image_pixels=178956970 (raise it to read such images)); "
        "check data.root"
    )


def test_the_report_network_on_other_images_names_both_settings(data_root: Path, folder: Path, tmp_path: Path):
    process = run_cli_forked(data_root, tmp_path, *FOLDER, f"data.root={folder}", "model/net=report")
    assert_one_line_error(process, "model/net=report", "3x48x48", "model/net=conv")


def test_conv_network_is_the_default_for_a_folder(compose_cfg, folder: Path) -> None:
    cfg = compose_cfg(*FOLDER, f"data.root={folder}", "model=rae")
    model = instantiate(cfg.model, image_shape=[3, 48, 48])
    assert isinstance(model.net, ConvAutoencoder) and model.depth == 2
