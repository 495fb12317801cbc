"""The LightningModules: AE/RAE (``RecursiveAutoencoder``) and AE+GAN/RAE+GAN (``AdversarialAutoencoder``).

Recursion, as in the report's section 4.3: step 0 is the plain reconstruction AE(x), step i
feeds step i-1's image back in, AE(...AE(x)) applied i+1 times (the report's x'(i+1)).
A model of ``recursion_depth`` k trains on steps 0..k and its loss is the sum of their
reconstruction losses with equal weights; gradients flow through the whole chain.
AE is k = 0. The adversarial model's discriminator judges every step 0..k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torchmetrics import MeanMetric, MeanSquaredError, Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from recursive_ae_gan.errors import DivergedError, UserError
from recursive_ae_gan.losses import (
    cycle_depths,
    discriminator_loss,
    fool_rates,
    generator_losses,
    real_accuracy,
    reconstruction_losses,
    report_freezes_discriminator,
    target_weights,
)

NetSpec = dict[str, Any]  # a network's Hydra config: {_target_: ..., **its arguments but image_shape}


class PixelBCE(Metric):
    """Mean per-pixel binary cross-entropy of images in [0, 1], from logits (torchmetrics has none)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum")
        self.total += loss.double()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


def _step_metrics() -> nn.ModuleDict:
    """The metrics of one recursion step on one split."""
    return nn.ModuleDict(
        {
            "mse": MeanSquaredError(),
            "bce": PixelBCE(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            # Output spread across images over the input's: ~0 means the net collapsed
            # into one constant image, whatever the loss says.
            "variation": MeanMetric(),
        }
    )


def adam(params, lr: float, betas: Sequence[float]) -> torch.optim.Adam:
    """Adam, fused into one kernel per step (CPU and CUDA)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True)


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
        depth_schedule: ``sum``: every image trains steps 0..k, losses summed with equal weights;
            ``cycle``: the report's section 4.3, each image trains one step, cycling 0, 1, ..,
            k through the batch (see ``losses.cycle_depths``).
        loss: ``mse`` or ``bce``; ``None`` takes the network's default (the report's: MNIST mse,
            CIFAR10 bce; the ``conv`` network: bce).
        lr / betas: Adam's, for the autoencoder (report: lr 0.005).
        scheduler: optional LR scheduler config (its optimizer argument left out), stepped once per epoch.
        eval_depth: last step evaluated on val/test (default k; ``evaluate`` looks further).
        compile: ``torch.compile`` the networks (in place, so checkpoint keys do not change).
        channels_last: run the convolutions in channels-last memory format.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build(net, image_shape)
        self.loss_name = loss or getattr(self.net, "default_loss", "bce")
        self.depth = recursion_depth
        self.eval_depth = recursion_depth if eval_depth is None else eval_depth
        if self.eval_depth < recursion_depth:
            raise UserError(f"model.eval_depth={eval_depth} must be >= model.recursion_depth={recursion_depth}")
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        # Epoch means as metrics: under DDP they are summed over every rank's batches, not averaged per rank.
        self.epoch_losses = nn.ModuleDict({f"{split}_loss": MeanMetric() for split in ("train", "val", "test")})
        self.metrics = nn.ModuleDict(
            {split: nn.ModuleList(_step_metrics() for _ in range(self.eval_depth + 1)) for split in ("val", "test")}
        )

    def reconstruct(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Logits of steps 0..depth: ``(B, C, H, W)`` -> ``(depth + 1, B, C, H, W)``."""
        depth = self.depth if depth is None else depth
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        steps = []
        for _ in range(depth + 1):
            logits = self.net(x)
            steps.append(logits)
            x = torch.sigmoid(logits)
        return torch.stack(steps)

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Images of steps 0..depth in [0, 1]: ``(depth + 1, B, C, H, W)``."""
        return torch.sigmoid(self.reconstruct(x, depth))

    def training_losses(self, logits: torch.Tensor, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The reconstruction loss of each trained step ``(S,)``, under the depth schedule."""
        if self.hparams.depth_schedule == "cycle":
            depths = cycle_depths(len(x), self.depth, batch_idx).to(x.device)
            return reconstruction_losses(logits, x, self.loss_name, depths)
        return reconstruction_losses(logits, x, self.loss_name)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        buffers = self.buffer_snapshot()
        per_step = self.training_losses(self.reconstruct(x), x, batch_idx)
        loss = per_step.sum()
        self.check_finite(loss, "training loss", batch_idx, buffers)
        self._log_reconstruction(per_step, loss)
        return loss

    def buffer_snapshot(self) -> torch.Tensor:
        """The floating buffers (BatchNorm's running statistics, ...) as one vector: a forward pass updates
        them before its loss can be checked, so a diverged step puts them back."""
        return parameters_to_vector(b for b in self.buffers() if b.is_floating_point())

    def check_finite(self, loss: torch.Tensor, what: str, batch_idx: int, buffers: torch.Tensor) -> None:
        """Stop the run at the step where ``loss`` stops being finite, before it reaches the weights, with
        the buffers as they were before the step (``buffers``): last.ckpt keeps the last finite state.

        One host sync per step; under DDP the ranks agree first, so that none waits on another.
        """
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)
        if not finite:
            vector_to_parameters(buffers, [b for b in self.buffers() if b.is_floating_point()])
            raise DivergedError(
                f"training diverged: the {what} is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} "
                f"(global step {self.global_step}); lower {self.lr_settings()}"
            )

    def lr_settings(self) -> str:
        return f"model.lr (now {self.hparams.lr})"

    def _log_reconstruction(self, per_step: torch.Tensor, loss: torch.Tensor) -> None:
        self.log("train/loss_step", loss, prog_bar=True)  # this rank's, every step (no sync)
        self.epoch_losses["train_loss"].update(loss.detach())
        self.log("train/loss_epoch", self.epoch_losses["train_loss"], on_step=False, on_epoch=True)
        if self.depth > 0:
            self.log_dict({f"train/step_{i}/rec_loss": v for i, v in enumerate(per_step)})

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x, "val")

    def test_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x, "test")

    def _evaluate(self, x: torch.Tensor, split: str) -> torch.Tensor:
        """Update and log the split's per-step metrics; returns the step images ``(S, B, C, H, W)``."""
        logits = self.reconstruct(x, self.eval_depth)
        per_step = reconstruction_losses(logits[: self.depth + 1], x, self.loss_name)
        self.epoch_losses[f"{split}_loss"].update(per_step.sum(), len(x))
        self.log(f"{split}/loss", self.epoch_losses[f"{split}_loss"], prog_bar=split == "val", batch_size=len(x))
        images = torch.sigmoid(logits.float())
        input_spread = x.std(0, unbiased=False).mean().clamp_min(1e-8)
        for step, (step_logits, step_images, metrics) in enumerate(
            zip(logits, images, self.metrics[split], strict=True)
        ):
            metrics["mse"].update(step_images, x)
            metrics["bce"].update(step_logits, x)
            metrics["psnr"].update(step_images, x)
            metrics["ssim"].update(step_images, x)
            metrics["variation"].update(step_images.std(0, unbiased=False).mean() / input_spread, len(x))
            for name, metric in metrics.items():
                self.log(f"{split}/step_{step}/{name}", metric, batch_size=len(x))
        return images

    def predict_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Images of steps 0..eval_depth ``(S, B, C, H, W)``: ``Trainer.predict`` (``reconstruct`` command)."""
        return self(x, self.eval_depth)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return instantiate(self.hparams.scheduler, _partial_=True)(optimizer)

    def configure_optimizers(self):
        optimizer = adam(self.net.parameters(), self.hparams.lr, self.hparams.betas)
        if self.hparams.scheduler is None:
            return optimizer
        return [optimizer], [self.make_scheduler(optimizer)]


class AdversarialAutoencoder(RecursiveAutoencoder):
    """AE+GAN (k = 0) and the report's RAE+GAN (k > 0): the whole autoencoder against D.

    Each batch after ``warmup_epochs``: D learns real images against the detached
    reconstructions of every step 0..k (one D call on the concatenation), then the autoencoder
    learns reconstruction loss (sum over steps) plus the adversarial loss (mean over steps,
    weighted). Manual optimization, so ``global_step`` grows by 2 per batch (1 in warm-up or
    when the report's policy freezes D).

    Under DDP the ranks agree on the game's data-dependent decisions (the fool rates that steer the
    ``target`` weights, the ``report`` policy's freeze) by averaging them first, so that every rank
    takes the same steps.

    Args (beyond ``RecursiveAutoencoder``'s):
        discriminator: the discriminator's config (``conf/model/discriminator/``): images -> one logit each.
        d_lr / d_betas: Adam's, for the discriminator (report: lr 0.001).
        warmup_epochs: epochs of reconstruction-only training before the game starts.
        adv_weight: weight of the adversarial loss (initial weight under ``target``).
        adv_loss: ``minimax`` (the report's ``log(1 - D(x'))``) or ``non_saturating``.
        balance: ``alternate`` (both every batch), ``report`` (freeze D while it tells fakes
            with more than 50% accuracy) or ``target`` (per-step weights steered to a 50%
            fool rate).
        target_gain / adv_weight_bounds: the ``target`` controller's gain and weight range.
    """

    def __init__(
        self,
        net: NetSpec,
        discriminator: NetSpec,
        image_shape: Sequence[int],
        recursion_depth: int = 0,
        depth_schedule: Literal["sum", "cycle"] = "sum",
        loss: Literal["mse", "bce"] | None = None,
        lr: float = 5e-3,
        betas: Sequence[float] = (0.9, 0.999),
        d_lr: float = 1e-3,
        d_betas: Sequence[float] = (0.9, 0.999),
        warmup_epochs: int = 5,
        adv_weight: float = 0.01,
        adv_loss: Literal["minimax", "non_saturating"] = "minimax",
        balance: Literal["alternate", "report", "target"] = "target",
        target_gain: float = 0.002,
        adv_weight_bounds: Sequence[float] = (0.0, 0.1),
        scheduler: dict | None = None,
        eval_depth: int | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(
            net, image_shape, recursion_depth, depth_schedule, loss, lr, betas, scheduler, eval_depth, compile,
            channels_last,
        )  # fmt: skip
        low, high = adv_weight_bounds
        if not 0 <= low <= adv_weight <= high:
            raise UserError(
                f"need 0 <= model.adv_weight_bounds[0] <= model.adv_weight <= model.adv_weight_bounds[1], "
                f"got {low}, {adv_weight}, {high}"
            )
        self.automatic_optimization = False
        self.discriminator = build(discriminator, image_shape)
        if compile:
            self.discriminator.compile()
        # One adversarial weight per judged step; a buffer, so checkpoints carry the controller's state.
        self.register_buffer("adv_weights", torch.full((recursion_depth + 1,), float(adv_weight)))
        steps = range(recursion_depth + 1)
        self.game_stat_names = [
            "train/rec_loss", "train/g_loss", "train/d_loss", "train/d_real_acc", "train/d_frozen",
            *(f"train/step_{i}/fool_rate" for i in steps),
            *(f"train/step_{i}/d_fake_mean" for i in steps),
            *(f"train/step_{i}/adv_weight" for i in steps),
        ]  # fmt: skip
        self.game_stats_sum: torch.Tensor | None = None  # this epoch's sums, in game_stat_names' order
        self.game_batches = 0
        self.game_metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict(
                    {"d_real_acc": MeanMetric()}
                    | {
                        f"step_{i}/{name}": MeanMetric()
                        for i in range(self.eval_depth + 1)
                        for name in ("d_fake_mean", "fool_rate")
                    }
                )
                for split in ("val", "test")
            }
        )

    def in_warmup(self) -> bool:
        return self.current_epoch < self.hparams.warmup_epochs

    def training_step(self, x: torch.Tensor, batch_idx: int) -> None:
        opt_ae, opt_d = self.optimizers()
        buffers = self.buffer_snapshot()
        logits = self.reconstruct(x)  # (S, B, C, H, W)
        rec_per_step = self.training_losses(logits, x, batch_idx)
        rec_loss = rec_per_step.sum()
        if self.in_warmup():
            self.check_finite(rec_loss, "reconstruction loss", batch_idx, buffers)
            with self.toggled_optimizer(opt_ae):
                self._step(opt_ae, rec_loss)
            self._log_reconstruction(rec_per_step, rec_loss)
            return
        fakes = torch.sigmoid(logits)
        steps, batch = fakes.shape[:2]

        # Discriminator: real images against every step's detached reconstructions, one call.
        with self.toggled_optimizer(opt_d):
            d_logits = self.discriminator(torch.cat([x, fakes.detach().flatten(0, 1)]))
            real_logits, fake_logits = d_logits[:batch], d_logits[batch:].view(steps, batch)
            d_loss = discriminator_loss(real_logits, fake_logits)
            self.check_finite(d_loss, "discriminator loss", batch_idx, buffers)
            rates = self.trainer.strategy.reduce(fool_rates(fake_logits.detach()), reduce_op="mean")
            frozen = self.hparams.balance == "report" and report_freezes_discriminator(rates)
            if not frozen:
                self._step(opt_d, d_loss)

        # Autoencoder: reconstruction plus the weighted adversarial loss, D frozen by the toggle.
        with self.toggled_optimizer(opt_ae):
            fake_logits_for_ae = self.discriminator(fakes.flatten(0, 1)).view(steps, batch)
            g_per_step = generator_losses(fake_logits_for_ae, self.hparams.adv_loss)
            weights = self.adv_weights if self.hparams.balance == "target" else self.hparams.adv_weight
            g_loss = (weights * g_per_step).mean()
            self.check_finite(rec_loss + g_loss, "autoencoder loss", batch_idx, buffers)
            self._step(opt_ae, rec_loss + g_loss)
        if self.hparams.balance == "target":
            low, high = self.hparams.adv_weight_bounds
            self.adv_weights.copy_(target_weights(self.adv_weights, rates, self.hparams.target_gain, low, high))

        self._log_reconstruction(rec_per_step, rec_loss + g_loss)
        # The game's statistics are summed on the device and logged as epoch means: ~20 self.log calls
        # per batch would cost more than a whole training step of a small model.
        d_fake_mean = torch.sigmoid(fake_logits.detach().float()).mean(1)
        batch_stats = torch.cat(
            [
                torch.stack([rec_loss.detach(), g_loss.detach(), d_loss.detach(), real_accuracy(real_logits.detach())]),
                rates.new_full((1,), float(frozen)),  # a fill on the device, not a host-to-device copy
                rates,
                d_fake_mean,
                weights if torch.is_tensor(weights) else rates.new_full((steps,), weights),
            ]
        )
        self.game_stats_sum = batch_stats if self.game_stats_sum is None else self.game_stats_sum + batch_stats
        self.game_batches += 1

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        """One manual optimizer step; the caller has toggled ``optimizer`` (freezing the other net)."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def on_train_epoch_end(self) -> None:
        """Log the game's epoch means; step the schedulers (manual optimization steps none by itself)."""
        if self.game_batches:
            means = self.game_stats_sum / self.game_batches  # every rank has as many batches: mean of means
            self.log_dict(dict(zip(self.game_stat_names, means, strict=True)), sync_dist=True)
            self.game_stats_sum, self.game_batches = None, 0
        schedulers = self.lr_schedulers() or []  # None, or one per optimizer: [autoencoder, discriminator]
        # D does not step in warm-up: its schedule starts with the game (no step before its optimizer's).
        for scheduler in schedulers[:1] if self.in_warmup() else schedulers:
            scheduler.step()

    def _evaluate(self, x: torch.Tensor, split: str) -> torch.Tensor:
        images = super()._evaluate(x, split)
        steps, batch = images.shape[:2]
        d_logits = self.discriminator(torch.cat([x, images.flatten(0, 1)]))
        real_logits, fake_logits = d_logits[:batch], d_logits[batch:].view(steps, batch)
        metrics = self.game_metrics[split]
        metrics["d_real_acc"].update(real_accuracy(real_logits), batch)
        rates, d_fake_mean = fool_rates(fake_logits), torch.sigmoid(fake_logits.float()).mean(1)
        for i in range(steps):
            metrics[f"step_{i}/fool_rate"].update(rates[i], batch)
            metrics[f"step_{i}/d_fake_mean"].update(d_fake_mean[i], batch)
        for name, metric in metrics.items():
            self.log(f"{split}/{name}", metric, batch_size=batch)
        return images

    def lr_settings(self) -> str:
        return f"model.lr (now {self.hparams.lr}) or model.d_lr (now {self.hparams.d_lr})"

    def configure_optimizers(self):
        optimizers = [
            adam(self.net.parameters(), self.hparams.lr, self.hparams.betas),
            adam(self.discriminator.parameters(), self.hparams.d_lr, self.hparams.d_betas),
        ]
        if self.hparams.scheduler is None:
            return optimizers
        return optimizers, [self.make_scheduler(opt) for opt in optimizers]
