"""Where images come from: any torchvision image dataset class, or a folder of image files.

Both kinds are seen through one interface, a map-style dataset of uint8 images ``(C, H, W)``
(``ImageItems``), decoded and converted to the configured channels and size by ``data.decoding``. The
in-memory path stacks every item once; the streaming path reads items in DataLoader workers at batch time.
Since both call the same item function, they give the same images.
"""

from __future__ import annotations

import importlib
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, STL10, VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.mnist import read_image_file, read_label_file

from recursive_ae_gan.core.errors import UserError, first_line
from recursive_ae_gan.data.decoding import convert, to_uint8

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")  # torchvision's ImageFolder's, and GIFs (their first frame)
PIXELS_SETTING = "data.max_image_pixels"  # the option that raises the pixel limit, for messages
# PIL's refusal threshold: it decodes up to Image.MAX_IMAGE_PIXELS (89478485) pixels, warns up to twice that and
# refuses more as a possible decompression bomb. data.max_image_pixels=null keeps that threshold, without the warning.
PIL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS


@contextmanager
def pil_check_off() -> Iterator[None]:
    """PIL's own pixel check off for the block: ``FileItems`` checks its own limit, which may be above PIL's (and
    PIL warns below its refusal threshold). PIL's setting is global: set here, where items are read, so in every
    DataLoader worker too."""
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


class TooManyPixels(UserError):
    """An image file of more pixels than the limit (``FileItems``)."""


class ImageItems(Dataset):
    """A map-style dataset of converted uint8 images ``(C, H, W)``, whatever the source."""

    name: str

    def image_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of every item."""
        return tuple(self[0].shape)


class TorchvisionItems(ImageItems):
    """The images of a torchvision dataset object (labels dropped)."""

    def __init__(self, dataset: VisionDataset, name: str, channels: int | None, size: int | None) -> None:
        self.dataset, self.name, self.channels, self.size = dataset, name, channels, size

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.dataset[index][0]
        if isinstance(image, Image.Image):
            image = to_uint8(image)
        return convert(image, self.channels, self.size)

    def __len__(self) -> int:
        return len(self.dataset)

    def stacked(self) -> torch.Tensor | None:
        """All images at once from the dataset's in-memory array (``.data``), when it holds exactly
        the items: much faster than one item at a time. ``None`` when it does not."""
        data = getattr(self.dataset, "data", None)
        if data is None or len(data) != len(self) or len(self) == 0:
            return None
        data = torch.as_tensor(data)
        if data.dtype != torch.uint8:
            return None
        first = to_uint8(self.dataset[0][0])
        if data.dim() == 3:  # (N, H, W)
            layouts = [data.unsqueeze(1)]
        else:  # (N, C, H, W) or (N, H, W, C)
            layouts = [data, data.permute(0, 3, 1, 2)] if data.dim() == 4 else []
        for images in layouts:
            if images.shape[1:] == first.shape and torch.equal(images[0], first):
                return convert(images.contiguous(), self.channels, self.size)
        return None


class FileItems(ImageItems):
    """Image files opened with PIL, decoded by ``to_uint8`` and converted to ``channels`` and ``size``; a file of
    more than ``max_pixels`` pixels (``None``: PIL's threshold) is refused before it is decoded, and the message
    names ``setting``, the option that raises the limit."""

    def __init__(self, paths: Sequence[Path], name: str, channels: int, size: int, max_pixels: int | None = None,
                 setting: str = PIXELS_SETTING) -> None:  # fmt: skip
        self.paths, self.name, self.channels, self.size = list(paths), name, channels, size
        self.max_pixels, self.setting = PIL_LIMIT if max_pixels is None else max_pixels, setting

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            with pil_check_off(), Image.open(path) as file:  # the header only: its size, before anything is decoded
                pixels = file.width * file.height
                if pixels > self.max_pixels:
                    raise TooManyPixels(
                        f"cannot decode {path}: {file.width}x{file.height} = {pixels:,} pixels, more than "
                        f"{self.setting}={self.max_pixels} (raise it to read such images)"
                    )
                image = to_uint8(file)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # zero bytes, truncated, unreadable
            raise UserError(f"cannot decode {path}: {first_line(err)}") from None
        return convert(image, self.channels, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def image_shape(self) -> tuple[int, ...]:
        return self.channels, self.size, self.size  # known without decoding a file (the first may be corrupt)


def image_files(root: Path) -> list[Path]:
    """Every image file under ``root`` (ImageFolder's class sub-folders or flat), sorted."""
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}; set data.root=DIR to a folder of image files")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}; set data.root=DIR")
    return paths


class _Checked(Dataset):
    """``(index, image)``, or ``(index, error)`` for an item that cannot be read."""

    def __init__(self, items: ImageItems, keep: bool) -> None:
        self.items, self.keep = items, keep

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | UserError]:
        try:
            image = self.items[index]
        except UserError as err:
            return index, err
        return index, image if self.keep else torch.empty(0, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.items)


def read_all(items: ImageItems, num_workers: int, keep: bool) -> tuple[torch.Tensor | None, list[int]]:
    """Read every item once (in ``num_workers`` processes): the stacked images when ``keep``, and the
    indices of the readable items. Unreadable ones are skipped and named in one warning."""
    if keep and isinstance(items, TorchvisionItems) and (stacked := items.stacked()) is not None:
        return stacked, list(range(len(items)))
    loader = DataLoader(_Checked(items, keep), batch_size=None, num_workers=num_workers)
    good, images, bad = [], [], []
    for index, result in loader:
        if isinstance(result, UserError):
            bad.append(result)
        else:
            good.append(index)
            images.append(result)
    over = [err for err in bad if isinstance(err, TooManyPixels)]
    if bad:
        shown = bad[:3] + [err for err in over[:1] if err not in bad[:3]]  # the first few, one over the limit
        counted = f" ({len(over)} over the pixel limit)" if over else ""
        listed = "; ".join(map(str, shown)) + ("; ..." if len(bad) > len(shown) else "")
        log.warning(
            "skipped %d unreadable image file(s) of %d in %s%s: %s", len(bad), len(items), items.name, counted, listed
        )
    if not good:
        why = f" ({len(over)} over the pixel limit: {over[0]})" if over else ""
        raise UserError(f"none of the {len(items)} image files in {items.name} can be read{why}; check data.root")
    return (torch.stack(images) if keep else None), good


def dataset_class(path: str) -> type[VisionDataset]:
    """The torchvision dataset class named by ``data.dataset`` (an import path)."""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise UserError(
            f"data.dataset={path!r} is not an importable dataset class: give an import path such as "
            f"torchvision.datasets.FashionMNIST, or 'folder' for a folder of image files"
        )
    return cls


def without_md5(files: list[list[str]]) -> list[list[str | None]]:
    """A torchvision class's ``[filename, md5]`` list with no md5 sums: its check then tests that each file exists."""
    return [[filename, None] for filename, _ in files]


# data.verify=false: torchvision has no switch for its md5 checks, but its classes take the sums from class
# attributes, which a subclass overrides; their own checks then test that the files exist (and still fetch a
# missing one, whose archive download checks its md5).
class UnverifiedCIFAR10(CIFAR10):
    """CIFAR10 from a partial or re-packed copy of its files."""

    train_list, test_list = without_md5(CIFAR10.train_list), without_md5(CIFAR10.test_list)
    meta = {**CIFAR10.meta, "md5": None}


class UnverifiedCIFAR100(CIFAR100):
    train_list, test_list = without_md5(CIFAR100.train_list), without_md5(CIFAR100.test_list)
    meta = {**CIFAR100.meta, "md5": None}


class UnverifiedSTL10(STL10):
    train_list, test_list = without_md5(STL10.train_list), without_md5(STL10.test_list)


UNVERIFIED = {CIFAR10: UnverifiedCIFAR10, CIFAR100: UnverifiedCIFAR100, STL10: UnverifiedSTL10}


def unverified(cls: type[VisionDataset]) -> type[VisionDataset]:
    """``cls`` reading its files without checking their md5 sums (``data.verify=false``): the classes that check
    none (MNIST's family: only that the files exist) as they are."""
    if cls in UNVERIFIED:
        return UNVERIFIED[cls]
    if hasattr(cls, "_check_integrity"):
        raise UserError(
            f"data.verify=false is for the torchvision classes whose md5 check it can skip (CIFAR10, CIFAR100, "
            f"STL10); {cls.__name__} checks its files its own way: set data.verify=true"
        )
    return cls


def _not_found(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and "not found" in str(err).lower()


def _unpickle(path: Path) -> object:
    with path.open("rb") as file:
        return pickle.load(file, encoding="latin1")  # as CIFAR10 reads its batches


def _reads(cls: type[VisionDataset], root: Path, split: dict) -> list[tuple[Path, Callable[[Path], object]]]:
    """The files ``cls`` reads under ``root`` for ``split``, each with the torchvision reader it reads it with: for
    MNIST's family and CIFAR's, whose readers raise without the path (an ``EOFError``, a shape mismatch)."""
    train = split.get("train", True)
    if issubclass(cls, MNIST) and cls._load_data is MNIST._load_data:  # QMNIST and EMNIST read other files
        raw, prefix = root / cls.__name__ / "raw", "train" if train else "t10k"
        return [
            (raw / f"{prefix}-images-idx3-ubyte", read_image_file),
            (raw / f"{prefix}-labels-idx1-ubyte", read_label_file),
        ]
    if issubclass(cls, CIFAR10):
        return [(root / cls.base_folder / name, _unpickle) for name, _ in (cls.train_list if train else cls.test_list)]
    return []


def damaged_file(cls: type[VisionDataset], root: Path, split: dict) -> Path | None:
    """The first of the files ``cls`` reads for ``split`` that its torchvision reader fails on, read again here to name
    it: torchvision's own failure does not."""
    for path, read in _reads(cls, root, split):
        try:
            read(path)
        except Exception:  # whatever the reader raises, this is the file it cannot read
            return path
    return None


def _construct(cls: type[VisionDataset], root: Path, split: dict, download: bool) -> VisionDataset:
    return cls(str(root), download=download, **split) if download else cls(str(root), **split)


def open_dataset(path: str, root: Path, split: dict, verify: bool, download: bool) -> VisionDataset:
    """Construct a torchvision dataset; every failure becomes one line that says what to change."""
    cls = dataset_class(path)
    name, read = cls.__name__, cls if verify else unverified(cls)
    try:
        return _construct(read, root, split, download=False)
    except Exception as err:  # torchvision readers raise many kinds; each is classified below
        if not _not_found(err):
            where = getattr(err, "filename", None) or damaged_file(cls, root, split) or root
            raise UserError(
                f"cannot read {name} from {where}: {first_line(err)} (a truncated or corrupt file?); delete the "
                f"damaged files and set data.download=true, or point data.root to a good copy"
            ) from None
        if verify and _loads(cls, root, split):
            raise UserError(
                f"{name} files in {root} fail torchvision's md5 check (a partial or re-packed copy?); set "
                f"data.verify=false to load them unverified"
            ) from None
        if not download:
            raise UserError(
                f"{name} not found in {root} (torchvision: {first_line(err)}); set data.root=DIR to the folder "
                f"holding it, or data.download=true to fetch it"
            ) from None
    try:
        return _construct(read, root, split, download=True)
    except Exception as err:  # network errors are OSErrors, torchvision's own are RuntimeErrors
        raise UserError(
            f"downloading {name} into {root} failed ({first_line(err)}); without network, set data.root=DIR to a "
            f"folder that already holds it (torchvision's layout) and data.download=false"
        ) from None


def _loads(cls: type[VisionDataset], root: Path, split: dict) -> bool:
    """Whether ``cls`` reads the files in ``root`` without checking their md5 sums."""
    try:
        _construct(unverified(cls), root, split, download=False)
    except Exception:  # any failure: the files are not merely unverified
        return False
    return True


class TorchvisionSource:
    """A torchvision image dataset class (``data.dataset`` is its import path): its training pool, and its test
    pool unless ``test_split`` is None (then the test images are held out of the training pool). ``max_pixels`` is
    for image files: a torchvision class decodes its own, under PIL's threshold."""

    def __init__(self, dataset: str, root: Path, verify: bool, train_split: dict | None, test_split: dict | None,
                 channels: int | None, size: int | None, max_pixels: int | None) -> None:  # fmt: skip
        self.dataset, self.root, self.verify, self.channels, self.size = dataset, root, verify, channels, size
        self.splits = {"train": train_split or {}} | ({"test": test_split} if test_split is not None else {})
        self.name = dataset.rpartition(".")[2]

    def download(self) -> None:
        """Fetch what is missing (torchvision's download)."""
        for split in self.splits.values():
            open_dataset(self.dataset, self.root, split, self.verify, download=True)

    def pools(self) -> dict[str, ImageItems]:
        """``{"train": items, "test": items}`` (no ``test`` without a test split)."""
        return {
            pool: TorchvisionItems(open_dataset(self.dataset, self.root, split, self.verify, download=False),
                                   self.name, self.channels, self.size)
            for pool, split in self.splits.items()
        }  # fmt: skip


class FolderSource:
    """``data.dataset=folder``: every image file under ``root`` (ImageFolder's layout, or flat), one pool."""

    def __init__(self, dataset: str, root: Path, verify: bool, train_split: dict | None, test_split: dict | None,
                 channels: int | None, size: int | None, max_pixels: int | None) -> None:  # fmt: skip
        if size is None or channels is None:
            raise UserError("data=folder needs data.image_size and data.channels (1 or 3)")
        self.root, self.channels, self.size, self.max_pixels = root, channels, size, max_pixels

    def download(self) -> None:
        """A folder is what it is: nothing to fetch."""

    def pools(self) -> dict[str, ImageItems]:
        return {"train": FileItems(image_files(self.root), str(self.root), self.channels, self.size, self.max_pixels)}


# data.dataset's special names; any other value is a torchvision dataset class's import path.
DATASET_KINDS: dict[str, type[TorchvisionSource] | type[FolderSource]] = {"folder": FolderSource}


def image_source(dataset: str, **settings: object) -> TorchvisionSource | FolderSource:
    """The source of ``data.dataset`` (``DATASET_KINDS``, else a torchvision class), with the data's settings."""
    return DATASET_KINDS.get(dataset, TorchvisionSource)(dataset, **settings)
