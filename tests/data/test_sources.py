"""Images as people have them: every kind of file, written here, decodes to what an independent decode of the
same file gives, on both data paths (in memory, streamed) and in ``reconstruct``; the torchvision datasets read
the files as written, whole and item by item.

The independent decode is numpy arithmetic on the pixels the test wrote (lossless files), or torchvision's
libjpeg decoder plus numpy (JPEGs, lossy): never PIL, which the package decodes with.
"""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import DATASET_CLASSES, N_TEST, N_TRAIN, SHAPES, _images, raw_pool
from hydra.utils import instantiate
from PIL import Image
from torchvision.datasets import CIFAR10, MNIST, SVHN
from torchvision.io import ImageReadMode, decode_jpeg

from recursive_ae_gan.analysis.reconstruct import read_images
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.data.datamodule import SPLITS
from recursive_ae_gan.data.sources import (
    FileItems,
    TooManyPixels,
    TorchvisionItems,
    UnverifiedCIFAR10,
    damaged_file,
    open_dataset,
    read_all,
    unverified,
)

SIZE = 24  # every file is SIZE x SIZE, so that convert() keeps its pixels (a multiple of JPEG's 8x8 blocks)
TOLERANCE = 2  # mean absolute error, in 1/255


def _gray(rng: np.random.Generator) -> np.ndarray:
    return _images(rng, 1, (SIZE, SIZE))[0]  # (H, W) uint8, a blob off centre: rotations change it


def _rgb(rng: np.random.Generator) -> np.ndarray:
    return _images(rng, 1, (SIZE, SIZE, 3))[0]  # (H, W, 3) uint8


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255
    return colour * a + 255 * (1 - a)


def _jpeg(data: bytes, mode: ImageReadMode = ImageReadMode.UNCHANGED) -> np.ndarray:
    """libjpeg's decode (torchvision, EXIF ignored) as (H, W, C)."""
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode).permute(1, 2, 0).numpy()


def _png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (which PIL cannot write), chunk by chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 (RGB)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def _exif_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def write_kinds(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """One file of each kind under ``root``, and its independent decode as float ``(H, W, C)`` in 0..255."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    expected = {}

    def ramp16(shape: tuple[int, ...] = (SIZE, SIZE)) -> np.ndarray:  # all 16 bits used: clipping at 255 would show
        blob = _gray(rng) if len(shape) == 2 else _rgb(rng)
        return np.clip(blob * 257.0 + rng.integers(-128, 128, size=shape), 0, 65535).astype(np.uint16)

    v = ramp16()
    Image.fromarray(v).save(root / "gray16.png")  # mode I;16
    expected["gray16.png"] = v * (255 / 65535)
    v = ramp16()
    Image.fromarray(v.astype(">u2")).save(root / "gray16_big_endian.tif")  # mode I;16B
    expected["gray16_big_endian.tif"] = v * (255 / 65535)
    v = ramp16()
    Image.fromarray(v).save(root / "gray16.pgm")  # maxval 65535: PIL opens it as mode I
    expected["gray16.pgm"] = v * (255 / 65535)
    v32 = ((ramp16().astype(np.int64) << 15) + rng.integers(0, 2**15, size=(SIZE, SIZE))).astype(np.int32)  # 31 bits
    Image.fromarray(v32).save(root / "gray32.tif")  # mode I, BitsPerSample 32
    expected["gray32.tif"] = v32 * (255 / (2**31 - 1))
    v = ramp16((SIZE, SIZE, 3))
    _png16_rgb(root / "rgb16.png", v)
    expected["rgb16.png"] = v * (255 / 65535)

    colour, alpha = _rgb(rng), _gray(rng)
    Image.fromarray(np.dstack([colour, alpha])).save(root / "rgba.png")
    expected["rgba.png"] = _over_white(colour, alpha)
    gray, alpha = _gray(rng), _gray(rng)
    Image.fromarray(np.dstack([gray, alpha])).save(root / "gray_alpha.png")  # mode LA
    expected["gray_alpha.png"] = _over_white(gray[..., None], alpha)
    palette = rng.integers(0, 256, size=(16, 3), dtype=np.uint8)
    palette_alpha = np.linspace(0, 255, 16).astype(np.uint8)
    index = (_gray(rng) // 16).astype(np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.tobytes())
    image.save(root / "palette_transparent.png", transparency=palette_alpha.tobytes())  # tRNS: alpha per entry
    expected["palette_transparent.png"] = _over_white(palette[index], palette_alpha[index])
    index = (_gray(rng) // 16).astype(np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.tobytes())
    image.save(root / "palette.png")
    expected["palette.png"] = palette[index].astype(np.float64)

    def from_cmyk(cmyk: np.ndarray) -> np.ndarray:
        cmy, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
        return (255 - cmy) * (255 - k) / 255

    cmyk = np.dstack([_rgb(rng), _gray(rng)])
    Image.fromarray(cmyk, mode="CMYK").save(root / "cmyk.tif")
    expected["cmyk.tif"] = from_cmyk(cmyk)
    out = io.BytesIO()
    Image.fromarray(np.dstack([_rgb(rng), _gray(rng)]), mode="CMYK").save(out, "JPEG", quality=95)
    (root / "cmyk.jpg").write_bytes(out.getvalue())
    expected["cmyk.jpg"] = _jpeg(out.getvalue(), ImageReadMode.RGB).astype(np.float64)  # torchvision's conversion

    bits = _gray(rng) > 128
    Image.fromarray(bits).save(root / "bilevel.png")  # mode 1
    expected["bilevel.png"] = bits * 255.0
    frames = [_gray(rng) for _ in range(3)]
    Image.fromarray(frames[0]).save(
        root / "animated.gif", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]]
    )
    expected["animated.gif"] = frames[0].astype(np.float64)
    frames = [_rgb(rng) for _ in range(3)]
    Image.fromarray(frames[0]).save(
        root / "animated.png", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]]
    )
    expected["animated.png"] = frames[0].astype(np.float64)  # APNG

    for orientation, turns in [(6, -1), (3, 2), (8, 1)]:  # 6: rotate 90 degrees clockwise to show; 3: 180; 8: 90 ccw
        data = _exif_jpeg(_rgb(rng), orientation)
        (root / f"exif_{orientation}.jpg").write_bytes(data)
        expected[f"exif_{orientation}.jpg"] = np.rot90(_jpeg(data), k=turns).astype(np.float64)
    return {name: pixels if pixels.ndim == 3 else pixels[..., None] for name, pixels in expected.items()}


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("kinds")
    return root, write_kinds(root)


def errors_per_kind(decoded: torch.Tensor, expected: dict[str, np.ndarray]) -> dict[str, float]:
    """Each kind's mean absolute error (in 1/255) against the decoded image that matches it best; the
    decoded images (RGB, in any order) must match the kinds one to one."""
    wanted = torch.stack([torch.from_numpy(np.broadcast_to(e, (SIZE, SIZE, 3)).copy()) for e in expected.values()])
    got = decoded.permute(0, 2, 3, 1).double()  # (N, H, W, 3)
    assert got.shape == wanted.shape
    distance = (wanted[:, None] - got[None]).abs().mean(dim=(2, 3, 4))  # (kinds, decoded)
    best = distance.argmin(dim=1)
    assert sorted(best.tolist()) == list(range(len(expected))), "two kinds decode to the same image"
    return dict(zip(expected, distance.min(dim=1).values.tolist(), strict=True))


@pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "streamed"])
def test_every_kind_decodes_as_an_independent_decode_on_both_data_paths(
    kinds: tuple[Path, dict[str, np.ndarray]], compose_cfg: Callable, in_memory: bool
) -> None:
    root, expected = kinds
    cfg = compose_cfg(
        "data=folder",
        f"data.root={root}",
        "data.channels=3",
        f"data.image_size={SIZE}",
        f"data.in_memory={str(in_memory).lower()}",
        "data.num_workers=0",
        "data.train_size=null",
        "data.val_size=1",
        "data.test_size=1",
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert bool(datamodule.splits) is in_memory and bool(datamodule.streamed) is not in_memory
    decoded = torch.cat([datamodule.images(split) for split in SPLITS])
    errors = errors_per_kind(decoded, expected)
    assert max(errors.values()) < TOLERANCE, errors


def test_every_kind_decodes_as_an_independent_decode_in_reconstruct(kinds: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, expected = kinds
    images, good = read_images([root / name for name in expected], 3, SIZE)
    assert good == list(range(len(expected)))
    for (name, wanted), image in zip(expected.items(), images, strict=True):
        error = (image.permute(1, 2, 0).double() - torch.from_numpy(wanted)).abs().mean().item()
        assert error < TOLERANCE, (name, error)


def test_sixteen_bits_are_scaled_not_clipped(kinds: tuple[Path, dict[str, np.ndarray]]) -> None:
    """The issue's case: a 16-bit grayscale PNG once loaded almost white (values clipped at 255)."""
    root, expected = kinds
    (image,), _ = read_images([root / "gray16.png"], 1, SIZE)
    assert image.min() < 20 and image.max() > 235  # the blob's dark surround and bright centre
    torch.testing.assert_close(
        image[0].double(), torch.from_numpy(expected["gray16.png"][..., 0]).round(), atol=0, rtol=0
    )


def test_the_pixel_limit_is_exact_and_pils_own_setting_is_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "image.png"
    Image.fromarray(_rgb(np.random.default_rng(0))).save(path)  # SIZE x SIZE = 576 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a process that lowered PIL's own threshold: not ours
    assert FileItems([path], "image", 3, SIZE)[0].shape == (3, SIZE, SIZE)  # PIL's default limit
    assert FileItems([path], "image", 3, SIZE, max_pixels=576)[0].shape == (3, SIZE, SIZE)
    with pytest.raises(TooManyPixels) as refused:
        FileItems([path], "image", 3, SIZE, max_pixels=575)[0]
    assert str(refused.value) == (
        f"cannot decode {path}: 24x24 = 576 pixels, more than data.max_image_pixels=575 (raise it to read such images)"
    )
    with pytest.raises(UserError, match=r"576 pixels, more than max_image_pixels=575 \(raise"):  # reconstruct's
        read_images([path], 3, SIZE, max_pixels=575)
    assert Image.MAX_IMAGE_PIXELS == 100


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


def test_verify_false_reads_cifar10_through_a_subclass_without_md5_sums(data_root: Path) -> None:
    """data.verify=false: torchvision's own checks run (the files must exist) with no md5 sums to compare, and no
    global of torchvision's is touched; the subclass pickles by name, as spawned DataLoader workers and DDP need."""
    with pytest.raises(UserError, match=r"md5.*data\.verify=false"):
        open_dataset(DATASET_CLASSES["cifar10"], data_root, {"train": True}, verify=True, download=False)
    check_md5 = torchvision.datasets.utils.check_md5
    dataset = open_dataset(DATASET_CLASSES["cifar10"], data_root, {"train": True}, verify=False, download=False)
    assert type(dataset) is UnverifiedCIFAR10 and len(dataset) == N_TRAIN  # the training batches
    assert torchvision.datasets.utils.check_md5 is check_md5
    assert pickle.loads(pickle.dumps(dataset)).data.tobytes() == dataset.data.tobytes()
    empty = data_root.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(UserError, match=r"CIFAR10 not found in .*data\.download=true"):  # a missing file is missing
        open_dataset(DATASET_CLASSES["cifar10"], empty, {"train": True}, verify=False, download=False)


def test_verify_false_leaves_classes_without_md5_sums_as_they_are_and_refuses_others() -> None:
    assert unverified(MNIST) is MNIST and unverified(CIFAR10) is UnverifiedCIFAR10
    with pytest.raises(UserError, match=r"SVHN checks its files its own way: set data.verify=true"):
        unverified(SVHN)


@pytest.mark.parametrize(
    ("cls", "split", "damaged"),
    [
        (MNIST, {"train": False}, "MNIST/raw/t10k-labels-idx1-ubyte"),
        (MNIST, {"train": True}, "MNIST/raw/train-images-idx3-ubyte"),
        (CIFAR10, {"train": False}, "cifar-10-batches-py/test_batch"),
        (CIFAR10, {"train": True}, "cifar-10-batches-py/data_batch_1"),
    ],
)
def test_a_damaged_file_is_named_by_reading_it_again(
    data_root: Path, tmp_path: Path, cls: type, split: dict, damaged: str
) -> None:
    """torchvision's readers fail without the path; the file is found by reading the split's files again."""
    root = tmp_path / "copy"
    shutil.copytree(data_root, root)
    assert damaged_file(cls, root, split) is None
    file = root / damaged
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    assert damaged_file(cls, root, split) == file
    with pytest.raises(UserError, match=f"cannot read {cls.__name__} from {file}: "):
        open_dataset(f"torchvision.datasets.{cls.__name__}", root, split, verify=False, download=False)
