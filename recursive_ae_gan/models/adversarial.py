"""AE+GAN and RAE+GAN: ``AdversarialAutoencoder``, the whole autoencoder against a discriminator (sections 3.3, 4.4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models.augment import random_translate
from recursive_ae_gan.models.autoencoder import NetSpec, RecursiveAutoencoder, adam, build, make_scheduler
from recursive_ae_gan.models.balance import ADV_WEIGHT_BOUNDS, BALANCE_POLICIES, BalanceName, BalanceSettings
from recursive_ae_gan.models.divergence import mean_over_ranks
from recursive_ae_gan.models.losses import GAME_LOSSES, GameLossName, fool_rates, r1_penalty, real_accuracy
from recursive_ae_gan.models.training_log import Values


class AdversarialAutoencoder(RecursiveAutoencoder):
    """AE+GAN (k = 0) and the report's RAE+GAN (k > 0): the whole autoencoder against D.

    Each batch after ``warmup_epochs``: D learns real images against the detached
    reconstructions of every step 0..k (one D call on the concatenation), then the autoencoder
    learns reconstruction loss (sum over steps, weighted by ``step_weights`` if given) plus the
    adversarial loss (mean over steps, weighted). Manual optimization, so ``global_step`` grows by 2
    per batch (1 in warm-up or when the report's policy freezes D).

    Under DDP the ranks agree on the game's data-dependent decisions (the fool rates that steer the
    ``target`` weights, the ``report`` policy's freeze) by averaging them first (an all-reduce queued on
    the device), so that every rank takes the same steps.

    Args (``RecursiveAutoencoder``'s, passed on as keywords, and):
        discriminator: the discriminator's config (``conf/model/discriminator/``): images -> one logit each.
        d_lr / d_betas: Adam's, for the discriminator (report: lr 0.001).
        warmup_epochs: epochs of reconstruction-only training before the game starts.
        adv_weight: weight of the adversarial loss (initial weight under ``target``).
        adv_loss: the game's losses (``models.losses.GAME_LOSSES``): ``minimax`` (the report's: D's BCE, the
            autoencoder minimises ``log(1 - D(x'))``), ``non_saturating`` (``-log D(x')``) or ``hinge``.
        balance: a policy of ``models.balance``: ``alternate`` (both every batch), ``report`` (freeze D while
            it tells fakes with more than 50% accuracy) or ``target`` (per-step weights steered to a 50% fool rate).
        target_gain / adv_weight_bounds: the ``target`` controller's gain and weight range; bounds ``None``
            take the loss's measured range (``ADV_WEIGHT_BOUNDS``).
        d_translate: in training, D sees every image shifted by up to this many pixels (``random_translate``);
            0: as they are. Validation and test judge the images as they are.
        r1_gamma: the weight of the R1 penalty on D's gradient at real images (``losses.r1_penalty``); 0: none.
        d_scheduler: D's learning-rate schedule (its optimizer argument left out), stepped once per epoch of the
            game; ``None``: the autoencoder's ``scheduler``.
    """

    def __init__(
        self,
        discriminator: NetSpec,
        d_lr: float = 1e-3,
        d_betas: Sequence[float] = (0.9, 0.999),
        warmup_epochs: int = 5,
        adv_weight: float = 0.01,
        adv_loss: GameLossName = "minimax",
        balance: BalanceName = "target",
        target_gain: float = 0.002,
        adv_weight_bounds: Sequence[float] | None = None,
        d_translate: int = 0,
        r1_gamma: float = 0.0,
        d_scheduler: dict | None = None,
        **autoencoder: Any,
    ) -> None:
        super().__init__(**autoencoder)
        recursion_warmup_epochs, depth = self.hparams.recursion_warmup_epochs, self.depth
        if recursion_warmup_epochs > warmup_epochs:
            raise UserError(
                f"model.recursion_warmup_epochs={recursion_warmup_epochs} must be <= model.warmup_epochs="
                f"{warmup_epochs}: the game judges every step 0..k, so the recursion must train before it starts"
            )
        low, high = adv_weight_bounds if adv_weight_bounds is not None else ADV_WEIGHT_BOUNDS[self.loss_name]
        if not 0 <= low <= adv_weight <= high:
            raise UserError(
                f"need 0 <= model.adv_weight_bounds[0] <= model.adv_weight <= model.adv_weight_bounds[1], "
                f"got {low}, {adv_weight}, {high}"
            )
        self.balance = BALANCE_POLICIES[balance](BalanceSettings(target_gain, low, high))
        self.automatic_optimization = False
        self.discriminator = build(discriminator, self.hparams.image_shape)
        if self.hparams.compile:
            self.discriminator.compile()
        # One adversarial weight per judged step; a buffer, so checkpoints carry the policy's state.
        self.register_buffer("adv_weights", torch.full((depth + 1,), float(adv_weight)))
        self.game_loss = GAME_LOSSES[adv_loss]
        self.game_metrics = nn.ModuleDict(
            {split: discriminator_metrics(split, self.eval_depth) for split in ("val", "test")}
        )

    @property
    def adv_weight_bounds(self) -> tuple[float, float]:
        """The range the balance policy keeps the adversarial weights in."""
        return self.balance.settings.low, self.balance.settings.high

    def in_warmup(self) -> bool:
        return self.current_epoch < self.hparams.warmup_epochs

    def training_step(self, x: torch.Tensor, batch_idx: int) -> None:
        opt_ae, opt_d = self.optimizers()
        logits = self.reconstruct(x, self.trained_depth())  # (S, B, C, H, W)
        rec_per_step = self.training_losses(logits, x, batch_idx)
        rec_loss = self.training_loss(rec_per_step)
        if self.in_warmup():
            loss, _ = self.autoencoder_step(opt_ae, rec_loss, None, batch_idx)
            self.record(rec_per_step, loss)
            return
        fakes = torch.sigmoid(logits)
        d_stats = self.discriminator_step(opt_d, x, fakes, batch_idx)
        loss, g_loss = self.autoencoder_step(opt_ae, rec_loss, fakes, batch_idx)
        self.balance.update(self.adv_weights, d_stats["train/fool_rate"])
        # A copy of the weights: the policy moves the buffer in place next batch, before this one's are summed.
        game = {"train/rec_loss": rec_loss, "train/g_loss": g_loss, "train/adv_weight": self.adv_weights.clone()}
        self.record(rec_per_step, loss, game | d_stats)

    def discriminator_step(self, opt_d, x: torch.Tensor, fakes: torch.Tensor, batch_idx: int) -> Values:
        """D learns real images against every step's detached reconstructions (one call), unless the balance
        policy freezes it this batch; its loss, R1 penalty and verdicts as the game's statistics (named as logged)."""
        steps, batch = fakes.shape[:2]
        r1_gamma = self.hparams.r1_gamma
        # No toggle: D's inputs are detached, so its loss reaches no autoencoder weight (the toggle costs a pass
        # over every parameter twice a step; under DDP the game runs with find_unused_parameters anyway).
        reals = x.detach().requires_grad_() if r1_gamma else x
        d_logits = self.discriminate(torch.cat([reals, fakes.detach().flatten(0, 1)]))
        real_logits, fake_logits = d_logits[:batch], d_logits[batch:].view(steps, batch)
        verdicts = fake_logits.detach()
        rates = mean_over_ranks(fool_rates(verdicts))  # every rank decides alike
        steps_now = self.balance.discriminator_steps(verdicts)
        if not steps_now:  # D's loss only as a statistic: no graph, no R1
            real_logits, fake_logits = real_logits.detach(), verdicts
        d_loss = self.game_loss.discriminator(real_logits, fake_logits)
        self.check_finite(d_loss, "discriminator loss", batch_idx)
        stats = {"train/d_loss": d_loss}
        if steps_now:
            if r1_gamma:
                stats["train/r1"] = r1_penalty(real_logits, reals, r1_gamma)
            self._step(opt_d, d_loss + stats["train/r1"] if r1_gamma else d_loss)
        return stats | {
            "train/d_real_acc": real_accuracy(real_logits.detach()),
            "train/d_frozen": rates.new_full((), float(not steps_now)),  # a fill on the device, not a copy to it
            "train/fool_rate": rates,
            "train/d_fake_mean": torch.sigmoid(verdicts.float()).mean(1),
        }

    def autoencoder_step(
        self, opt_ae, rec_loss: torch.Tensor, fakes: torch.Tensor | None, batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The autoencoder learns the reconstruction loss plus, given the step images ``fakes`` (the game), the
        weighted adversarial loss, D frozen by the toggle. Returns the loss learnt and its adversarial part."""
        with self.toggled_optimizer(opt_ae):
            if fakes is None:
                loss, g_loss, what = rec_loss, None, "reconstruction loss"
            else:
                steps, batch = fakes.shape[:2]
                g_per_step = self.game_loss.generator(self.discriminate(fakes.flatten(0, 1)).view(steps, batch))
                g_loss = (self.adv_weights * g_per_step).mean()
                loss, what = rec_loss + g_loss, "autoencoder loss"
            self.check_finite(loss, what, batch_idx)
            self._step(opt_ae, loss)
        return loss, g_loss

    def discriminate(self, images: torch.Tensor) -> torch.Tensor:
        """D's logits in training: through ``random_translate`` when ``d_translate`` asks for it."""
        shift = self.hparams.d_translate
        return self.discriminator(random_translate(images, shift) if shift else images)

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        """One manual optimizer step of ``loss``, which reaches only ``optimizer``'s net's weights."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's means (the game's statistics among them); step the schedulers (manual optimization
        steps none by itself)."""
        super().on_train_epoch_end()  # the divergence check first: a diverged epoch logs nothing more
        schedulers = self.lr_schedulers() or []
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        _, opt_d = self.optimizers()
        for scheduler in schedulers:  # D's starts with the game: no step before its optimizer's first
            if not (self.in_warmup() and scheduler.optimizer is opt_d.optimizer):
                scheduler.step()

    def _evaluate(self, x: torch.Tensor, split: str) -> torch.Tensor:
        images = super()._evaluate(x, split)
        steps, batch = images.shape[:2]
        d_logits = self.discriminator(torch.cat([x, images.flatten(0, 1)]))
        real_logits, fake_logits = d_logits[:batch], d_logits[batch:].view(steps, batch)
        metrics = self.game_metrics[split]
        metrics[f"{split}/d_real_acc"].update(real_accuracy(real_logits), batch)
        rates, d_fake_mean = fool_rates(fake_logits), torch.sigmoid(fake_logits.float()).mean(1)
        real = torch.cat(
            [torch.ones_like(real_logits, dtype=torch.long), torch.zeros_like(real_logits, dtype=torch.long)]
        )
        for i in range(steps):
            metrics[step_key(split, i, "fool_rate")].update(rates[i], batch)
            metrics[step_key(split, i, "d_fake_mean")].update(d_fake_mean[i], batch)
            step_logits = torch.cat([real_logits, fake_logits[i]]).float()
            metrics[step_key(split, i, "d_auc")].update(step_logits, real)
            metrics[step_key(split, i, "d_balanced_acc")].update((step_logits > 0).long(), real)
        return images

    def log_split(self, split: str) -> None:
        super().log_split(split)
        for key, metric in self.game_metrics[split].items():
            self.log(key, metric)

    def lr_settings(self) -> str:
        return f"model.lr (now {self.hparams.lr}) or model.d_lr (now {self.hparams.d_lr})"

    def configure_optimizers(self):
        opt_ae = adam(self.net.parameters(), self.hparams.lr, self.hparams.betas)
        opt_d = adam(self.discriminator.parameters(), self.hparams.d_lr, self.hparams.d_betas)
        hp = self.hparams
        d_schedule = hp.d_scheduler if hp.d_scheduler is not None else hp.scheduler
        schedules = [
            (opt, config) for opt, config in ((opt_ae, hp.scheduler), (opt_d, d_schedule)) if config is not None
        ]
        if not schedules:
            return [opt_ae, opt_d]
        return [opt_ae, opt_d], [make_scheduler(config, opt) for opt, config in schedules]


def discriminator_metrics(split: str, depth: int) -> nn.ModuleDict:
    """D's verdicts on one split, keyed as logged: its accuracy on real images, and per step 0..depth its mean
    output, fool rate, and its threshold-free view: the ROC AUC and balanced accuracy of real images against that
    step's reconstructions (its skill, apart from the bias a fool rate also measures)."""
    per_step = {}
    for i in range(depth + 1):
        per_step |= {step_key(split, i, "d_fake_mean"): MeanMetric(), step_key(split, i, "fool_rate"): MeanMetric()}
        per_step |= {
            step_key(split, i, "d_auc"): BinaryAUROC(),
            step_key(split, i, "d_balanced_acc"): MulticlassAccuracy(2, average="macro"),
        }
    return nn.ModuleDict({f"{split}/d_real_acc": MeanMetric()} | per_step)
