"""Callbacks: the per-epoch image grid of inputs above their reconstructions, and TensorBoard's step dashboard."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid

from recursive_ae_gan.loggers import log_image
from recursive_ae_gan.module import AdversarialAutoencoder, RecursiveAutoencoder


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
    """Logs a grid of the first ``num_images`` validation images and their reconstructions, to every logger
    that takes images (TensorBoard, MLflow, W&B)."""

    def __init__(self, num_images: int = 8) -> None:
        self.num_images = num_images

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: RecursiveAutoencoder) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(pl_module, RecursiveAutoencoder):
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger | MLFlowLogger | WandbLogger)]
        if not loggers:
            return
        images = trainer.datamodule.images("val", self.num_images)  # uint8, fixed across epochs
        images = trainer.datamodule.on_after_batch_transfer(images.to(pl_module.device), 0)
        grid = reconstruction_grid(pl_module, images, pl_module.eval_depth)
        log_image(loggers, "val/reconstructions", grid, trainer.current_epoch, trainer.global_step)


def step_layout(model: RecursiveAutoencoder) -> dict[str, dict[str, list]]:
    """TensorBoard's custom-scalars layout of ``model``: one chart per statistic, holding every recursion step.

    Training: the fool rates, the adversarial weights, D's mean outputs and the reconstruction losses of steps
    0..k; validation: the fool rates, D's mean outputs and the reconstruction losses of steps 0..eval_depth.
    Only tags the modules log: a depth-0 model logs no per-step training loss (its ``train/rec_loss`` is the
    game's), an AE no game statistics.
    """
    train_steps, val_steps = range(model.depth + 1), range(model.eval_depth + 1)
    game = isinstance(model, AdversarialAutoencoder)
    train: dict[str, list[str]] = {}
    val: dict[str, list[str]] = {}
    if game:
        train["fool rate (share of reconstructions D calls real)"] = [f"train/step_{i}/fool_rate" for i in train_steps]
        train["adversarial weight"] = [f"train/step_{i}/adv_weight" for i in train_steps]
        train["D's mean output on reconstructions"] = [f"train/step_{i}/d_fake_mean" for i in train_steps]
        val["fool rate (share of reconstructions D calls real)"] = [f"val/step_{i}/fool_rate" for i in val_steps]
        val["D's mean output on reconstructions"] = [f"val/step_{i}/d_fake_mean" for i in val_steps]
    if model.depth > 0:
        train["reconstruction loss"] = [f"train/step_{i}/rec_loss" for i in train_steps]
    elif game:
        train["reconstruction loss"] = ["train/rec_loss"]
    if game or model.eval_depth > 0:
        val[f"reconstruction loss ({model.loss_name})"] = [f"val/step_{i}/{model.loss_name}" for i in val_steps]
    categories = {"per step: train": train, "per step: val": val}
    return {name: {title: ["Multiline", tags] for title, tags in charts.items()} for name, charts in categories.items()
            if charts}  # fmt: skip


class StepDashboard(L.Callback):
    """Writes TensorBoard's custom-scalars layout (:func:`step_layout`) once per run, when fit starts: the
    CUSTOM SCALARS tab then shows every step's fool rate in one chart, and so on, instead of one chart a step."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: RecursiveAutoencoder) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, RecursiveAutoencoder):
            return
        layout = step_layout(pl_module)
        if not layout:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(layout)
