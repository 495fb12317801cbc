"""Callbacks: the per-epoch image grid of inputs above their reconstructions, TensorBoard's step dashboard, the
exponential moving average of the weights (``EMA``), a tile autoencoder's start from the principal components
(``InitPCA``), and the fit of a stochastic decoder's noise (``FitNoise``)."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torchvision.utils import make_grid

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models import AdversarialAutoencoder, RecursiveAutoencoder
from recursive_ae_gan.run.loggers import log_image


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

    def per_step(split: str, name: str) -> list[str]:
        return [step_key(split, i, name) for i in (train_steps if split == "train" else val_steps)]

    train: dict[str, list[str]] = {}
    val: dict[str, list[str]] = {}
    if game:
        train["fool rate (share of reconstructions D calls real)"] = per_step("train", "fool_rate")
        train["adversarial weight"] = per_step("train", "adv_weight")
        train["D's mean output on reconstructions"] = per_step("train", "d_fake_mean")
        val["fool rate (share of reconstructions D calls real)"] = per_step("val", "fool_rate")
        val["D's mean output on reconstructions"] = per_step("val", "d_fake_mean")
    if model.depth > 0:
        train["reconstruction loss"] = per_step("train", "rec_loss")
    elif game:
        train["reconstruction loss"] = ["train/rec_loss"]
    if game or model.eval_depth > 0:
        val[f"reconstruction loss ({model.loss_name})"] = per_step("val", model.loss_name)
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


class InitPCA(L.Callback):
    """Starts a fresh fit of a network with ``fit_pca`` (``PatchAutoencoder``) from the principal components of the
    training images' tiles; a continued fit keeps the weights of its checkpoint."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: RecursiveAutoencoder) -> None:
        fit_pca = getattr(pl_module.net, "fit_pca", None)
        if fit_pca is None:
            raise UserError(
                f"callbacks.pca_init starts a tile code from its principal components: {type(pl_module.net).__name__} "
                "has none (use model/net=patch)"
            )
        if trainer.ckpt_path is None:
            fit_pca(trainer.datamodule.images("train").to(pl_module.device).float().div_(255))


class FitNoise(L.Callback):
    """Fits a stochastic decoder's noise (a network with ``fit_noise``, e.g. ``PatchAutoencoder(noise=True)``) to the
    training images' residuals before every validation of a fit, so that validation, the checkpoint written after it
    and the final test all judge the fitted noise; and when a fit without validation ends."""

    def fit(self, trainer: L.Trainer, pl_module: RecursiveAutoencoder) -> None:
        fit_noise = getattr(pl_module.net, "fit_noise", None)
        if fit_noise is not None:
            fit_noise(trainer.datamodule.images("train").to(pl_module.device).float().div_(255))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: RecursiveAutoencoder) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.fit(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: RecursiveAutoencoder) -> None:
        if not trainer.num_val_batches or not sum(trainer.num_val_batches):
            self.fit(trainer, pl_module)


def _state(module: nn.Module) -> Iterator[torch.Tensor]:
    """Parameters, then buffers: the order of Lightning's ``WeightAveraging`` (and ``AveragedModel``)."""
    yield from module.parameters()
    yield from module.buffers()


class EMA(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights: validation, the final test and the ``state_dict``
    of every checkpoint hold the average (so ``evaluate`` and ``reconstruct`` use it); the trained weights go into
    the checkpoint's ``current_model_state``, which a resumed run continues from. The average is updated after
    every training batch (after both of the game's optimizer steps): ``avg = decay * avg + (1 - decay) * w``,
    and the first update copies ``w``, as ``AveragedModel`` does. Parameters and floating buffers (BatchNorm's
    running statistics) are averaged, integer buffers copied.

    Three changes to Lightning's callback, each for a requirement it misses:

    * the average lives on the training device: Lightning puts it where the model is at ``setup``, which is still
      the CPU (the strategy moves the model later), so a GPU run would copy its weights to the host every step;
    * the update is queued on the device: ``AveragedModel.update_parameters`` reads its update count on the
      host twice per update (a sync every step). A step that the divergence guard skipped (its flag is up) leaves
      the average as it was, so that non-finite BatchNorm statistics never enter it and the checkpoint a
      diverged run leaves stays finite;
    * a fit that trains no batch (resumed after its last epoch) also ends with the average in the model
      (``on_fit_end``), as one that trains does (``on_train_end``), so that ``train``'s final test scores it.

    ``update_every_n_steps`` and ``update_starting_at_step`` count optimizer steps (Lightning's ``global_step``):
    the game takes two per batch after its warm-up. Under DDP every rank keeps its own (identical) average.
    """

    def __init__(self, decay: float = 0.999, update_every_n_steps: int = 1, update_starting_at_step: int | None = None):
        super().__init__(
            decay=decay, update_every_n_steps=update_every_n_steps, update_starting_at_step=update_starting_at_step
        )
        self.decay = decay

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step_idx = trainer.global_step - 1  # zero-based, as Lightning's
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            self._update(pl_module)
            self._latest_update_step = trainer.global_step

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None:
            self._copy_average_to_current(pl_module)

    @torch.no_grad()
    def _update(self, pl_module: L.LightningModule) -> None:
        """One EMA update, queued on the device (no host sync)."""
        average = self._average_model
        pairs = list(zip(_state(average.module), _state(pl_module), strict=True))
        floats = [(a, w.detach()) for a, w in pairs if a.is_floating_point()]
        guard = getattr(pl_module, "divergence", None)
        if guard is not None:  # after a step the guard skipped, average in the average itself: no change, no NaN
            skipped = guard.flag > 0
            floats = [(a, torch.where(skipped, a, w)) for a, w in floats]
        averaged, current = [a for a, _ in floats], [w for _, w in floats]
        first = self._latest_update_step == 0  # nothing averaged yet (this run or the checkpoint it resumed): copy
        if averaged:  # torch's EMA update: one foreach lerp over all the tensors (decay 0 copies)
            get_ema_multi_avg_fn(0.0 if first else self.decay)(averaged, current, None)
        for a, w in pairs:
            if not a.is_floating_point():
                a.copy_(w)
        average.n_averaged += 1
