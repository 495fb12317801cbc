"""Checkpoints: written crash-safe (``AtomicCheckpointIO``), and read with one-line errors for a missing,
unreadable or mismatched checkpoint."""

from __future__ import annotations

import pickle
import re
import signal
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from recursive_ae_gan.compat import unpickle_in_full
from recursive_ae_gan.core.atomic import atomic_open, fsync_directory
from recursive_ae_gan.core.errors import UserError, first_line


def check_exists(ckpt: Path) -> None:
    """A one-line error for a checkpoint path that holds no file."""
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}; set ckpt_path to a run's checkpoints/*.ckpt file")


def read_checkpoint(ckpt: Path, trusted: bool = False) -> dict:
    """A Lightning checkpoint's contents on the CPU, loaded with ``weights_only=True``.

    ``trusted``: the checkpoint lies in a run directory of this project, so one from before
    ``model._convert_=all`` (OmegaConf objects in its hyperparameters, which weights_only refuses) may
    be unpickled in full.
    """
    check_exists(ckpt)
    try:
        try:
            checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            if not trusted:
                raise
            checkpoint = unpickle_in_full(ckpt)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise UserError(f"ckpt_path={ckpt} is not a readable checkpoint: {unloadable(ckpt, err)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"ckpt_path={ckpt} holds no state_dict: not a Lightning checkpoint")
    return checkpoint


def unloadable(ckpt: Path, err: BaseException) -> str:
    """Why ``torch.load(ckpt, weights_only=True)`` failed, in a few words instead of torch's paragraph."""
    if not zipfile.is_zipfile(ckpt):
        return "not a file written by torch.save"
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err)):
        return f"it holds {found[1]} objects, which weights_only=True refuses (written before model._convert_=all?)"
    return first_line(err)


def check_fits(checkpoint: dict, model: L.LightningModule, ckpt: Path) -> None:
    """A one-line error unless ``checkpoint``'s weights are those of ``model`` (same networks and image shape)."""
    saved, expected = checkpoint["state_dict"], model.state_dict()
    if saved.keys() != expected.keys() or any(saved[k].shape != expected[k].shape for k in saved):
        theirs = checkpoint.get("hyper_parameters", {})
        raise UserError(
            f"ckpt_path={ckpt} holds another model or image shape ({describe(theirs)}) than this run "
            f"({describe(model.hparams)}); use the overrides of the run that wrote it"
        )


def describe(hparams: dict) -> str:
    """A model's identity in a few words, from its hyperparameters."""
    net = hparams.get("net")
    return ", ".join(
        [
            f"net {net.get('_target_', '?').rpartition('.')[2] if isinstance(net, dict) else '?'}",
            f"discriminator {'yes' if 'discriminator' in hparams else 'no'}",
            f"recursion_depth {hparams.get('recursion_depth', '?')}",
            f"images {'x'.join(map(str, hparams.get('image_shape', ['?'])))}",
        ]
    )


@contextmanager
def interrupts_after_the_write() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until it ends: raised inside ``torch.save``, the
    KeyboardInterrupt turns into the zip writer's ``RuntimeError`` (a crash with a traceback, not Lightning's
    graceful stop); raised after it, Lightning stops and the ``last.ckpt`` of the interrupt is written."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoints, each written with ``atomic_open`` into its own directory.

    Remote paths (``s3://...``: object stores replace whole objects anyway) keep Lightning's writer. Under
    DDP only rank 0 writes (the strategy calls the plugin there).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)  # refuses storage_options, as Lightning does
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with interrupts_after_the_write(), atomic_open(path, "wb") as file:
            torch.save(checkpoint, file)

    def remove_checkpoint(self, path: _PATH) -> None:
        """Remove a checkpoint (a replaced top-k one) durably: its directory is ``fsync``'ed too."""
        if not isinstance(get_filesystem(path), LocalFileSystem) or Path(path).is_dir():  # remote, or sharded
            super().remove_checkpoint(path)
            return
        path = Path(path)
        path.unlink(missing_ok=True)
        fsync_directory(path.parent)
