"""Callbacks that tests add to CLI runs (``+callbacks.record._target_=tests.recorders.RecordBatches``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch


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
