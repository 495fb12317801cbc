"""Callbacks: the per-epoch image grid of inputs above their reconstructions."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from recursive_ae_gan.module import RecursiveAutoencoder


@torch.no_grad()
def reconstruction_grid(model: RecursiveAutoencoder, images: torch.Tensor, depth: int | None = None) -> torch.Tensor:
    """A ``(C, H, W)`` grid: the inputs in the first row, then one row per recursion step."""
    was_training = model.training
    model.eval()
    steps = model(images, depth).float()  # (S, B, C, H, W)
    model.train(was_training)
    rows = torch.cat([images.unsqueeze(0).float(), steps])  # (S + 1, B, C, H, W)
    return make_grid(rows.flatten(0, 1), nrow=len(images), padding=2, pad_value=1.0)


class ReconstructionGrid(L.Callback):
    """Logs a grid of the first ``num_images`` validation images and their reconstructions."""

    def __init__(self, num_images: int = 8) -> None:
        self.num_images = num_images

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: RecursiveAutoencoder) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(pl_module, RecursiveAutoencoder):
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        images = trainer.datamodule.images("val", self.num_images)  # uint8, fixed across epochs
        images = trainer.datamodule.on_after_batch_transfer(images.to(pl_module.device), 0)
        grid = reconstruction_grid(pl_module, images, pl_module.eval_depth)
        for logger in loggers:
            logger.experiment.add_image("val/reconstructions", grid, global_step=trainer.current_epoch)
