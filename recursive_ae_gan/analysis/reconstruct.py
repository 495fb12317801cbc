"""Reconstruct your own images, step by step: ``python -m recursive_ae_gan.reconstruct ckpt_path=CKPT input=PATH``.

Rebuilds the model from the checkpoint alone (``run.trained``: its hyperparameters hold the network configs),
reads one image file or every image file under a folder, converts each to the
model's image shape exactly as training data is converted (``data.sources.FileItems``), and runs
``Trainer.predict`` on steps 0..depth (default: the trained ``recursion_depth`` + 3). For each input it
writes ``<stem>_steps.png``: the converted input, then its reconstruction at every step, in one row.
Sub-folders of the input are kept in the output. Files that cannot be decoded are skipped with a
warning naming each; a single input file that cannot be decoded is an error.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchvision.utils import save_image

from recursive_ae_gan.core import console
from recursive_ae_gan.core.atomic import atomic_open
from recursive_ae_gan.core.errors import UserError, first_line
from recursive_ae_gan.data.sources import IMAGE_EXTENSIONS, FileItems, image_files
from recursive_ae_gan.models import RecursiveAutoencoder
from recursive_ae_gan.run.trained import read_trained

log = logging.getLogger(__name__)


def load_model(ckpt: Path, depth: int | None) -> tuple[RecursiveAutoencoder, int]:
    """The checkpoint's model, ready to predict steps 0..depth (None: the default), and that depth."""
    trained = read_trained(ckpt)
    _, height, width = trained.image_shape
    if height != width:  # FileItems converts to squares, as data=folder does
        raise UserError(f"the model of {ckpt} was trained on {height}x{width} images; reconstruct makes square ones")
    depth = trained.default_depth if depth is None else depth
    return trained.model(depth), depth  # it evaluates at least the trained steps; the writer drops any past depth


def input_files(path: Path, output: Path) -> tuple[list[Path], Path]:
    """The image files to reconstruct, and the folder their output names are relative to.

    A folder's files under ``output`` (grids of an earlier run) are not inputs."""
    if path.is_file():
        return [path], path.parent
    if not path.is_dir():
        raise UserError(f"input not found: {path}; set input to an image file or a folder of images")
    try:
        paths = image_files(path)
    except UserError:  # its advice names data.root, the training override
        paths = []
    paths = [p for p in paths if output.resolve() not in p.resolve().parents]
    if not paths:
        raise UserError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under input={path}; give an image file or a folder of them"
        )
    return paths, path


def grid_names(paths: Sequence[Path], root: Path) -> list[Path]:
    """``<sub-folders>/<stem>_steps.png`` for each input; inputs that share a stem in one folder
    (``a.png``, ``a.jpg``) keep their extension in the name instead: ``a_png_steps.png``."""
    names = [p.relative_to(root).with_name(f"{p.stem}_steps.png") for p in paths]
    counts = Counter(names)
    return [
        name if counts[name] == 1 else name.with_name(f"{p.stem}_{p.suffix.lstrip('.')}_steps.png")
        for p, name in zip(paths, names, strict=True)
    ]


def read_images(
    paths: Sequence[Path], channels: int, size: int, max_pixels: int | None = None
) -> tuple[torch.Tensor, list[int]]:
    """The decoded, converted images uint8 ``(N, C, H, W)`` and the indices of ``paths`` they are; ``max_pixels``:
    the pixel limit (``None``: PIL's).

    With several files, each one that cannot be decoded is skipped with a warning; with one, it is an error."""
    items = FileItems(paths, "input", channels, size, max_pixels, setting="max_image_pixels")
    if len(items) == 1:
        return items[0].unsqueeze(0), [0]
    images, good = [], []
    for index in range(len(items)):
        try:
            images.append(items[index])
        except UserError as err:  # FileItems' one-line reason, naming the file
            log.warning("skipped: %s", err)
            continue
        good.append(index)
    if not images:
        raise UserError(f"none of the {len(items)} image files of input can be decoded; see the warnings above")
    return torch.stack(images), good


def to_unit_range(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """A batch of uint8 images as floats in [0, 1]: the datamodule's scaling (``ToTensor``'s)."""
    return torch.stack(list(images)).float().div_(255)


class GridWriter(BasePredictionWriter):
    """Writes each input's row of tiles (the input, then steps 0..depth) as it is predicted."""

    def __init__(self, out: Path, names: Sequence[Path], depth: int) -> None:
        super().__init__(write_interval="batch")
        self.out, self.names, self.depth = out, names, depth

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        steps = prediction[: self.depth + 1].float().cpu()  # (S, B, C, H, W)
        rows = torch.cat([batch.float().cpu().unsqueeze(0), steps]).transpose(0, 1)  # (B, S + 1, C, H, W)
        for index, row in zip(batch_indices, rows, strict=True):
            path = self.out / self.names[index]
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as file:  # a full disk leaves no half grid under the name
                save_image(row, file, format="png", nrow=len(row), padding=2, pad_value=1.0)


def default_output(ckpt: Path) -> Path:
    """``<run dir>/reconstructions`` for a checkpoint in a run's ``checkpoints/``, else beside the checkpoint."""
    folder = ckpt.resolve().parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "reconstructions"


def whole_number(cfg: DictConfig, key: str, low: int, none_ok: bool = False) -> int | None:
    value = cfg[key]
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{key}={value} must be a whole number >= {low}{' (or null)' if none_ok else ''}")
    return value


def reconstruct(cfg: DictConfig) -> tuple[Path, list[Path]]:
    """Write one grid per readable input image; returns the output folder and the grids, in input order."""
    for key, example in [("ckpt_path", "outputs/runs/X/checkpoints/last.ckpt"), ("input", "an image or a folder")]:
        if OmegaConf.is_missing(cfg, key):
            raise UserError(f"no {key} given: add {key}=... ({example})")
    depth = whole_number(cfg, "depth", 0, none_ok=True)
    batch_size = whole_number(cfg, "batch_size", 1)
    max_pixels = whole_number(cfg, "max_image_pixels", 1, none_ok=True)
    seed = whole_number(cfg, "seed", 0)
    ckpt = Path(cfg.ckpt_path).expanduser()
    model, depth = load_model(ckpt, depth)
    out = Path(cfg.output).expanduser() if cfg.output is not None else default_output(ckpt)
    paths, root = input_files(Path(cfg.input).expanduser(), out)

    channels, size, _ = model.hparams.image_shape
    images, good = read_images(paths, channels, size, max_pixels)  # (N, C, H, W) uint8
    names = grid_names([paths[i] for i in good], root)
    try:
        trainer = L.Trainer(
            accelerator=cfg.accelerator,
            devices=1,
            precision=cfg.precision,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=cfg.progress_bar,
            callbacks=[GridWriter(out, names, depth)],
        )
    except (ValueError, MisconfigurationException) as err:  # an unknown or unavailable accelerator or precision
        raise UserError(f"accelerator={cfg.accelerator} precision={cfg.precision}: {first_line(err)}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output={out}: {err.strerror or err}; set output to a writable folder") from None
    loader = DataLoader(images, batch_size=batch_size, collate_fn=to_unit_range)
    L.seed_everything(seed, verbose=False)  # a stochastic decoder's draws
    trainer.predict(model, dataloaders=loader, return_predictions=False)  # the writer saves every batch
    return out, [out / name for name in names]


@hydra.main(version_base="1.3", config_path=console.CONF_DIR, config_name="reconstruct")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra's task: reconstruct, then say where the grids went."""
    with console.one_line_errors():  # here, not only around Hydra, which would add a line of its own
        out, written = reconstruct(cfg)
    print(f"wrote {len(written)} reconstruction grid(s) to {out} (<name>_steps.png: the input, then steps 0..depth)")


def main() -> None:
    """``python -m recursive_ae_gan.reconstruct``: bad input ends as one ``error:`` line."""
    console.run(hydra_main)
