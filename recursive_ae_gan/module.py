"""The LightningModules: AE/RAE (``RecursiveAutoencoder``) and AE+GAN/RAE+GAN (``AdversarialAutoencoder``).

Recursion, as in the report's section 4.3: step 0 is the plain reconstruction AE(x), step i
feeds step i-1's image back in, AE(...AE(x)) applied i+1 times (the report's x'(i+1)).
A model of ``recursion_depth`` k trains on steps 0..k and its loss is the sum of their
reconstruction losses with equal weights; gradients flow through the whole chain.
AE is k = 0. The adversarial model's discriminator judges every step 0..k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MeanSquaredError, Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from recursive_ae_gan.errors import UserError
from recursive_ae_gan.losses import (
    ADVERSARIAL_LOSSES,
    BALANCE_POLICIES,
    RECONSTRUCTION_LOSSES,
    check_choice,
    discriminator_loss,
    fool_rates,
    generator_losses,
    real_accuracy,
    reconstruction_losses,
    report_freezes_discriminator,
    target_weights,
)

SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


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


class RecursiveAutoencoder(L.LightningModule):
    """AE (``recursion_depth=0``) and RAE (k > 0) trained on reconstruction alone.

    Args:
        net: the autoencoder; returns logits (see ``networks``).
        recursion_depth: k, the last recursion step trained.
        loss: ``mse`` or ``bce``; ``None`` takes the network's default (the report's: MNIST mse,
            CIFAR10 bce).
        lr / betas: Adam's, for the autoencoder (report: lr 0.005).
        scheduler: optional factory ``optimizer -> LRScheduler``, stepped once per epoch.
        eval_depth: last step evaluated on val/test (default k; ``evaluate`` looks further).
        compile: ``torch.compile`` the networks (in place, so checkpoint keys do not change).
        channels_last: run the convolutions in channels-last memory format.
    """

    def __init__(
        self,
        net: nn.Module,
        recursion_depth: int = 0,
        loss: str | None = None,
        lr: float = 5e-3,
        betas: Sequence[float] = (0.9, 0.999),
        scheduler: SchedulerFactory | None = None,
        eval_depth: int | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if recursion_depth < 0:
            raise UserError(f"model.recursion_depth must be >= 0, got {recursion_depth}")
        self.save_hyperparameters(ignore=["net", "discriminator", "scheduler"])
        self.net = net
        self.loss_name = check_choice("loss", loss or net.default_loss, RECONSTRUCTION_LOSSES)
        self.depth = recursion_depth
        self.eval_depth = recursion_depth if eval_depth is None else eval_depth
        if self.eval_depth < recursion_depth:
            raise UserError(f"eval_depth={eval_depth} must be >= model.recursion_depth={recursion_depth}")
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
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

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        per_step = reconstruction_losses(self.reconstruct(x), x, self.loss_name)
        loss = per_step.sum()
        self._log_reconstruction(per_step, loss)
        return loss

    def _log_reconstruction(self, per_step: torch.Tensor, loss: torch.Tensor) -> None:
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
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
        self.log(f"{split}/loss", per_step.sum(), prog_bar=split == "val", batch_size=len(x))
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

    def configure_optimizers(self):
        optimizer = adam(self.net.parameters(), self.hparams.lr, self.hparams.betas)
        if self.scheduler_factory is None:
            return optimizer
        return [optimizer], [self.scheduler_factory(optimizer)]


class AdversarialAutoencoder(RecursiveAutoencoder):
    """AE+GAN (k = 0) and the report's RAE+GAN (k > 0): the whole autoencoder against D.

    Each batch after ``warmup_epochs``: D learns real images against the detached
    reconstructions of every step 0..k (one D call on the concatenation), then the autoencoder
    learns reconstruction loss (sum over steps) plus the adversarial loss (mean over steps,
    weighted). Manual optimization, so ``global_step`` grows by 2 per batch (1 in warm-up or
    when the report's policy freezes D).

    Args (beyond ``RecursiveAutoencoder``'s):
        discriminator: maps images to one logit each.
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
        net: nn.Module,
        discriminator: nn.Module,
        recursion_depth: int = 0,
        loss: str | None = None,
        lr: float = 5e-3,
        betas: Sequence[float] = (0.9, 0.999),
        d_lr: float = 1e-3,
        d_betas: Sequence[float] = (0.9, 0.999),
        warmup_epochs: int = 5,
        adv_weight: float = 0.01,
        adv_loss: str = "minimax",
        balance: str = "target",
        target_gain: float = 0.002,
        adv_weight_bounds: Sequence[float] = (0.0, 0.1),
        scheduler: SchedulerFactory | None = None,
        eval_depth: int | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(net, recursion_depth, loss, lr, betas, scheduler, eval_depth, compile, channels_last)
        check_choice("adv_loss", adv_loss, ADVERSARIAL_LOSSES)
        check_choice("balance", balance, BALANCE_POLICIES)
        low, high = adv_weight_bounds
        if not 0 <= low <= adv_weight <= high:
            raise UserError(
                f"need 0 <= model.adv_weight_bounds[0] <= model.adv_weight <= model.adv_weight_bounds[1], "
                f"got {low}, {adv_weight}, {high}"
            )
        self.automatic_optimization = False
        self.discriminator = discriminator
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
        logits = self.reconstruct(x)  # (S, B, C, H, W)
        rec_per_step = reconstruction_losses(logits, x, self.loss_name)
        rec_loss = rec_per_step.sum()
        if self.in_warmup():
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
            rates = fool_rates(fake_logits.detach())
            frozen = self.hparams.balance == "report" and report_freezes_discriminator(fake_logits)
            if not frozen:
                self._step(opt_d, d_loss)

        # Autoencoder: reconstruction plus the weighted adversarial loss, D frozen by the toggle.
        with self.toggled_optimizer(opt_ae):
            fake_logits_for_ae = self.discriminator(fakes.flatten(0, 1)).view(steps, batch)
            g_per_step = generator_losses(fake_logits_for_ae, self.hparams.adv_loss)
            weights = self.adv_weights if self.hparams.balance == "target" else self.hparams.adv_weight
            g_loss = (weights * g_per_step).mean()
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
            means = self.game_stats_sum / self.game_batches
            self.log_dict(dict(zip(self.game_stat_names, means, strict=True)))
            self.game_stats_sum, self.game_batches = None, 0
        schedulers = self.lr_schedulers() or []  # None, one scheduler, or a list
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
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

    def configure_optimizers(self):
        optimizers = [
            adam(self.net.parameters(), self.hparams.lr, self.hparams.betas),
            adam(self.discriminator.parameters(), self.hparams.d_lr, self.hparams.d_betas),
        ]
        if self.scheduler_factory is None:
            return optimizers
        return optimizers, [self.scheduler_factory(opt) for opt in optimizers]
