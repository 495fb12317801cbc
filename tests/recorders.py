"""Callbacks that tests add to CLI runs (``+callbacks.record._target_=tests.recorders.RecordBatches``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig


def image_keys(batch: torch.Tensor) -> list[str]:
    """One short hash per image of a float batch in [0, 1] (the fixture images are all distinct)."""
    pixels = (batch.detach().cpu() * 255).round().to(torch.uint8)
    return [hashlib.sha1(image.numpy().tobytes()).hexdigest()[:12] for image in pixels]


class RecordBatches(L.Callback):
    """Writes ``<path>/rank<R>.json``: [epoch, batch_idx, image keys] of every training batch of this rank."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = Path(path), []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch: torch.Tensor, batch_idx: int) -> None:
        self.seen.append([trainer.current_epoch, batch_idx, image_keys(batch)])

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


class _OnceAt(L.Callback):
    """Acts once, as batch ``batch`` of epoch ``epoch`` starts (in sweep job ``job`` only, if given): it leaves
    ``marker`` first, so that the same command run again goes past that batch."""

    def __init__(self, epoch: int, batch: int, marker: str, job: int | None = None) -> None:
        self.epoch, self.batch, self.marker, self.job = epoch, batch, Path(marker), job

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch: torch.Tensor, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch) or self.marker.exists():
            return
        if self.job is not None and HydraConfig.get().job.num != self.job:
            return
        self.marker.touch()
        self.act()

    def act(self) -> None:
        raise NotImplementedError


class KillAt(_OnceAt):
    """SIGKILLs its own process there."""

    def act(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class HoldAt(_OnceAt):
    """Holds its process there, mid-training, until the test kills it (``marker`` says it holds)."""

    def act(self) -> None:
        time.sleep(300)


class SignalAt(L.Callback):
    """Sends its own process ``signum`` (SIGUSR2, ...) as batch ``batch`` of epoch ``epoch`` ends, after its
    optimizer step, once: it leaves ``marker`` first, so that the requeued job goes past that batch."""

    def __init__(self, signum: str, epoch: int, batch: int, marker: str) -> None:
        self.signum, self.epoch, self.batch, self.marker = signal.Signals[signum], epoch, batch, Path(marker)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch: torch.Tensor, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch) or self.marker.exists():
            return
        self.marker.touch()
        os.kill(os.getpid(), self.signum)


class CopyAt(L.Callback):
    """Copies ``source`` to ``target`` as epoch ``epoch`` starts: what a kill during that epoch leaves of it."""

    def __init__(self, epoch: int, source: str, target: str) -> None:
        self.epoch, self.source, self.target = epoch, source, target

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            shutil.copyfile(self.source, self.target)
