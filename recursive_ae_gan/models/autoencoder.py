"""AE and RAE: ``RecursiveAutoencoder``, trained on reconstruction alone (the report's sections 3.1, 4.2, 4.3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric

from recursive_ae_gan.core.errors import DivergedError, UserError
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models.divergence import DivergenceGuard
from recursive_ae_gan.models.losses import cycle_depths, reconstruction_losses
from recursive_ae_gan.models.metrics import step_metrics, update_step_metrics
from recursive_ae_gan.models.training_log import TrainingLog, Values

NetSpec = dict[str, Any]  # a network's Hydra config: {_target_: ..., **its arguments but image_shape}
# divergence_check_every=null: read the divergence flag every batch on the CPU (a sync costs nothing there),
# every 100 on a GPU, where each read stops the host from queueing ahead (models/divergence.py).
CHECK_EVERY = {"cpu": 1, "gpu": 100}


def adam(params, lr: float, betas: Sequence[float]) -> torch.optim.Adam:
    """Adam, fused into one kernel per step (CPU and CUDA)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True)


def make_scheduler(config: dict, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """A learning-rate scheduler from its config, which leaves the optimizer out (``model.scheduler``)."""
    return instantiate(config, _partial_=True)(optimizer)


def build(spec: NetSpec, image_shape: Sequence[int]) -> nn.Module:
    """A network from its config, sized for ``image_shape`` (the data's ``(C, H, W)``)."""
    return instantiate(spec, image_shape=list(image_shape), _convert_="all")


class RecursiveAutoencoder(L.LightningModule):
    """AE (``recursion_depth=0``) and RAE (k > 0) trained on reconstruction alone.

    The networks are given as configs and built here, so that the checkpoint's hyperparameters
    (plain dicts and lists) rebuild the model anywhere: ``RecursiveAutoencoder.load_from_checkpoint(path)``.

    Args:
        net: the autoencoder's config (``conf/model/net/``); it returns logits (see ``networks``).
        image_shape: ``(C, H, W)`` of the data, which sizes the networks.
        recursion_depth: k, the last recursion step trained.
        depth_schedule: ``sum``: every image trains steps 0..k, losses summed (``step_weights``: weighted);
            ``cycle``: the report's section 4.3, each image trains one step, cycling 0, 1, ..,
            k through the batch (see ``losses.cycle_depths``).
        loss: ``mse`` or ``bce``; ``None`` takes the network's default (the report's: MNIST mse,
            CIFAR10 bce; the ``conv`` network: bce).
        lr / betas: Adam's, for the autoencoder (report: lr 0.005).
        scheduler: optional LR scheduler config (its optimizer argument left out), stepped once per epoch.
        eval_depth: last step evaluated on val/test (default k; ``evaluate`` looks further).
        compile: ``torch.compile`` the networks (in place, so checkpoint keys do not change).
        channels_last: run the convolutions in channels-last memory format.
        divergence_check_every: read the device's divergence flag every this many training batches (and
            before validation and at each epoch end); ``None``: 1 on the CPU, 100 on a GPU. A non-finite
            loss or gradient skips its update on the device at once; the run stops when the flag is read.
        step_weights: the training loss's weight of each step 0..k (k + 1 numbers >= 0), under either schedule;
            ``None``: 1 each, the plain sum. The logged ``train/loss_*`` is the weighted loss that is trained;
            ``val/loss`` and ``test/loss`` stay the plain sums, so that runs with other weights compare.
        recursion_warmup_epochs: epochs that train step 0 alone (the plain AE) before steps 0..k: a recursion
            trained from random weights learns every step more slowly than an AE learns step 0 (measured on the
            tuned CIFAR10 net, docs/results.md), so it starts from a trained AE. Validation scores 0..k always.
    """

    def __init__(
        self,
        net: NetSpec,
        image_shape: Sequence[int],
        recursion_depth: int = 0,
        depth_schedule: Literal["sum", "cycle"] = "sum",
        loss: Literal["mse", "bce"] | None = None,
        lr: float = 5e-3,
        betas: Sequence[float] = (0.9, 0.999),
        scheduler: dict | None = None,
        eval_depth: int | None = None,
        compile: bool = False,
        channels_last: bool = False,
        divergence_check_every: int | None = None,
        step_weights: Sequence[float] | None = None,
        recursion_warmup_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build(net, image_shape)
        self.loss_name = loss or getattr(self.net, "default_loss", "bce")
        self.depth = recursion_depth
        self.eval_depth = recursion_depth if eval_depth is None else eval_depth
        if self.eval_depth < recursion_depth:
            raise UserError(f"model.eval_depth={eval_depth} must be >= model.recursion_depth={recursion_depth}")
        if step_weights is not None and len(step_weights) != recursion_depth + 1:
            raise UserError(
                f"model.step_weights={list(step_weights)} has {len(step_weights)} weights, but model.recursion_depth="
                f"{recursion_depth} trains {recursion_depth + 1} steps (0..{recursion_depth}): give one per step"
            )
        # A buffer, so it moves to the device with the model (no copy per step); not saved: it follows the
        # config, and checkpoints keep their keys.
        weights = None if step_weights is None else torch.tensor(step_weights, dtype=torch.float32)
        self.register_buffer("step_weights", weights, persistent=False)
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        # Validation's and test's losses as metrics: under DDP they are summed over every rank's batches.
        self.epoch_losses = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in ("val", "test")})
        self.training_log = TrainingLog()
        self.divergence: DivergenceGuard | None = None  # made on the device at each fit's start
        self.check_every = CHECK_EVERY["cpu"]  # batches between reads of its flag: set for the device there too
        self.metrics = nn.ModuleDict(
            {split: nn.ModuleList(step_metrics() for _ in range(self.eval_depth + 1)) for split in ("val", "test")}
        )

    def reconstruct(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Logits of steps 0..depth: ``(B, C, H, W)`` -> ``(depth + 1, B, C, H, W)``."""
        depth = self.depth if depth is None else depth
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        steps = [self.net(x)]
        for _ in range(depth):  # each step fed the previous one's image; no image made of the last
            steps.append(self.net(torch.sigmoid(steps[-1])))
        return torch.stack(steps) if depth else steps[0].unsqueeze(0)  # one step: a view, not a copy

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Images of steps 0..depth in [0, 1]: ``(depth + 1, B, C, H, W)``."""
        return torch.sigmoid(self.reconstruct(x, depth))

    def trained_depth(self) -> int:
        """The last step trained this epoch: 0 during ``recursion_warmup_epochs``, k after."""
        return 0 if self.current_epoch < self.hparams.recursion_warmup_epochs else self.depth

    def training_losses(self, logits: torch.Tensor, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The reconstruction loss of each trained step ``(S,)``, under the depth schedule."""
        if self.hparams.depth_schedule == "cycle" and len(logits) > 1:
            depths = cycle_depths(len(x), self.depth, batch_idx, x.device)
            return reconstruction_losses(logits, x, self.loss_name, depths)
        return reconstruction_losses(logits, x, self.loss_name)

    def training_loss(self, per_step: torch.Tensor) -> torch.Tensor:
        """The trained reconstruction loss: the steps' losses summed, weighted by ``step_weights`` if given."""
        if self.step_weights is None:
            return per_step.sum()
        return (self.step_weights[: len(per_step)] * per_step).sum()

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        per_step = self.training_losses(self.reconstruct(x, self.trained_depth()), x, batch_idx)
        loss = self.training_loss(per_step)
        self.check_finite(loss, "training loss", batch_idx)
        self.record(per_step, loss)
        return loss

    def record(self, per_step: torch.Tensor, loss: torch.Tensor, means: Values | None = None) -> None:
        """Keep this batch's logged values on the device (``training_log``): the trained loss and, for a recursion,
        each step's reconstruction loss as curves, the loss's epoch mean, and ``means``' epoch means."""
        curves = {"train/loss_step": loss} | ({"train/rec_loss": per_step} if self.depth > 0 else {})
        self.training_log.record(curves, {"train/loss_epoch": loss} | (means or {}))

    def on_fit_start(self) -> None:
        self.divergence = DivergenceGuard(self, self.device)  # on the device, with the restored buffers
        self.check_every = (
            self.hparams.divergence_check_every or CHECK_EVERY["cpu" if self.device.type == "cpu" else "gpu"]
        )

    def check_finite(self, loss: torch.Tensor, what: str, batch_idx: int) -> None:
        """Note ``loss`` for the divergence check: the next optimizer step checks it with its gradients on the device
        (``on_before_optimizer_step``); if it is not finite, that step and every later one is skipped, and the run
        stops when the flag is next read."""
        if self.divergence is None:  # a training step called outside fit
            self.divergence = DivergenceGuard(self, self.device)
        self.divergence.check_loss(loss, what, self.current_epoch, batch_idx, self.global_step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.divergence.guard_step(optimizer)  # the step's losses and gradients, checked on the device

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % self.check_every == 0:
            self.stop_if_diverged()
        # Lightning's own test of its cadence (log_every_n_steps, a stopping fit): its loggers take the step's
        # values exactly then. No public API says it; tests/models/test_logged_values.py pins the points.
        if self.trainer._logger_connector.should_update_logs or self.trainer.fast_dev_run:
            curves = self.training_log.curves()
            self.log("train/loss_step", curves.pop("train/loss_step"), prog_bar=True, on_step=True, on_epoch=False)
            if curves:
                self.log_dict(curves, on_step=True, on_epoch=False)

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "fit":  # validation within fit would score a diverged model
            self.stop_if_diverged()

    def on_train_epoch_end(self) -> None:
        """Read the divergence flag, then log the epoch's means (a diverged epoch logs none)."""
        self.stop_if_diverged()  # a fit stopped within its epoch (max_steps, should_stop) is read here
        means = self.training_log.epoch_means()
        if means:  # every rank has as many batches: the mean of the ranks' means is the epoch's
            self.log_dict(means, sync_dist=True)

    def stop_if_diverged(self) -> None:
        """Read the divergence flag (one host sync); if it is up (or a buffer is not finite), put back the last
        finite buffers and stop the run with one line. The weights took no update since the failed check, so
        last.ckpt is finite."""
        failure = self.divergence.first_failure()
        if failure is not None:
            raise DivergedError(f"training diverged: {failure}; lower {self.lr_settings()}")

    def lr_settings(self) -> str:
        return f"model.lr (now {self.hparams.lr})"

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x, "val")

    def test_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x, "test")

    def _evaluate(self, x: torch.Tensor, split: str) -> torch.Tensor:
        """Update the split's per-step metrics; returns the step images ``(S, B, C, H, W)``."""
        # Contiguous: channels_last outputs would break the metrics, which view their inputs flat.
        logits = self.reconstruct(x, self.eval_depth).contiguous()
        per_step = reconstruction_losses(logits[: self.depth + 1], x, self.loss_name)
        self.epoch_losses[f"{split}_loss"].update(per_step.sum(), len(x))
        images = torch.sigmoid(logits.float())
        for step, metrics in enumerate(self.metrics[split]):
            update_step_metrics(metrics, logits[step], images[step], x)
        return images

    def on_validation_epoch_end(self) -> None:
        self.log_split("val")

    def on_test_epoch_end(self) -> None:
        self.log_split("test")

    def log_split(self, split: str) -> None:
        """Log the split's metrics once, at its end: each is a torchmetrics ``Metric`` over the whole split, which
        Lightning computes and resets there whenever it was logged (a log per batch only cost time)."""
        self.log(f"{split}/loss", self.epoch_losses[f"{split}_loss"], prog_bar=split == "val")
        for step, metrics in enumerate(self.metrics[split]):
            for name, metric in metrics.items():
                self.log(step_key(split, step, name), metric)

    def predict_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Images of steps 0..eval_depth ``(S, B, C, H, W)``: ``Trainer.predict`` (``reconstruct`` command)."""
        return self(x, self.eval_depth)

    def configure_optimizers(self):
        optimizer = adam(self.net.parameters(), self.hparams.lr, self.hparams.betas)
        if self.hparams.scheduler is None:
            return optimizer
        return [optimizer], [make_scheduler(self.hparams.scheduler, optimizer)]
