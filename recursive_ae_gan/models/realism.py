"""Can a fresh judge tell? Realism per recursion step, by the classifier two-sample test (Lopez-Paz & Oquab, 2017).

After the autoencoder is fixed, a judge (``realism.judge``: images -> one logit) is trained from scratch, for each
step i, to tell real images from step-i reconstructions. It trains on the training split and is scored on the test
split, so it never trains on an image it is scored on. Each test image is shown once, as itself or as its
reconstruction (a seeded 50/50 draw), so the scored examples are independent; in training each image is likewise
shown once per epoch, as itself or as its reconstruction, drawn anew each epoch. Reconstructions are quantized to
8 bits, as the real images are, so that the judge cannot win on off-grid pixel values.

Per step: the accuracy with its 95% Wilson interval, the ROC AUC, and the one-sided binomial p-value of the accuracy
against chance (0.5). A judge at chance cannot tell the reconstructions from real images. ``evaluate`` runs it by
default, a training run with ``realism=default``. Docs: docs/evaluation.md, "Realism".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from scipy.stats import binomtest
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import binary_auroc

from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models.autoencoder import NetSpec, adam, build

CONFIDENCE = 0.95


@dataclass(frozen=True)
class RealismTest:
    """The ``realism`` config: the judge's network config and how it trains (``conf/realism/``)."""

    judge: NetSpec
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class Verdict:
    """How well a judge told one step's reconstructions from real test images."""

    accuracy: float
    low: float  # the accuracy's 95% Wilson interval
    high: float
    auc: float
    p_value: float  # one-sided: the judge does better than chance
    n: int  # test examples scored

    def metrics(self, step: int) -> dict[str, float]:
        """``test/step_i/judge_*``, as metrics.json and eval.json key them."""
        values = {"acc": self.accuracy, "acc_low": self.low, "acc_high": self.high, "auc": self.auc, "p": self.p_value}
        return {step_key("test", step, f"judge_{name}"): value for name, value in values.items()}


def verdict(logits: torch.Tensor, fake: torch.Tensor) -> Verdict:
    """A judge's test logits ``(N,)`` (above 0: real) against which examples were reconstructions ``(N,)``."""
    n = len(fake)
    correct = int(((logits <= 0) == fake).sum())
    low, high = binomtest(correct, n).proportion_ci(CONFIDENCE, method="wilson")
    p_value = binomtest(correct, n, 0.5, alternative="greater").pvalue
    auc = float(binary_auroc(logits.float(), (~fake).long()))  # reals are the positives
    return Verdict(correct / n, float(low), float(high), auc, float(p_value), n)


def shown_as_fake(n: int, seed: int) -> torch.Tensor:
    """Which of ``n`` images are shown as their reconstruction ``(n,)`` bool: half of them (rounded down), seeded."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fake = torch.zeros(n, dtype=torch.bool)
    fake[order[: n // 2]] = True
    return fake


def pick(real: torch.Tensor, fake_version: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Each image as itself or as its reconstruction: ``fake_version[j]`` where ``fake[j]``, else ``real[j]``."""
    return torch.where(fake.view(-1, 1, 1, 1), fake_version, real)


@torch.no_grad()
def quantized_steps(model: nn.Module, images: torch.Tensor, depth: int, batch_size: int = 256) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` images -> their reconstructions at steps 0..depth, quantized to 8 bits like real images:
    uint8 ``(depth + 1, N, C, H, W)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    steps = []
    for batch in images.split(batch_size):
        x = batch.to(device).float().div_(255)
        steps.append(model(x, depth).float().mul(255).round().clamp(0, 255).to(torch.uint8).cpu())
    model.train(was_training)
    return torch.cat(steps, dim=1)


class JudgeModule(L.LightningModule):
    """A fresh judge learning real (1) against reconstructed (0) images with BCE; Adam, no schedule."""

    def __init__(self, judge: NetSpec, image_shape: Sequence[int], lr: float) -> None:
        super().__init__()
        self.judge = build(judge, image_shape)
        self.lr = lr

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.judge(images.float().div(255))  # (B,) logits

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, real, _ = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self(images), real.float())
        self.log("judge_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.judge.parameters(), self.lr, (0.9, 0.999))


class EpochDraws(L.LightningDataModule):
    """The judge's training examples: each training image once per epoch, as itself or as its reconstruction,
    drawn anew each epoch from ``(seed, epoch)`` (``reload_dataloaders_every_n_epochs=1``)."""

    def __init__(self, real: torch.Tensor, fake_version: torch.Tensor, batch_size: int, seed: int) -> None:
        super().__init__()
        self.real, self.fake_version, self.batch_size, self.seed = real, fake_version, batch_size, seed

    def epoch_examples(self, epoch: int) -> TensorDataset:
        """``(image, shown as itself, its index in the training images)`` for every training image, for ``epoch``."""
        fake = shown_as_fake(len(self.real), self.seed * 1_000_003 + epoch + 1)
        return TensorDataset(pick(self.real, self.fake_version, fake), ~fake, torch.arange(len(self.real)))

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return DataLoader(self.epoch_examples(epoch), batch_size=self.batch_size, shuffle=True, generator=generator)


def judge_step(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], test_cfg: RealismTest,
               accelerator: str = "cpu", progress: bool = True) -> Verdict:  # fmt: skip
    """Train a fresh judge on ``train`` = (real, reconstructed) training images, score it on ``test`` = (real,
    reconstructed) test images, each test image shown once as one or the other."""
    L.seed_everything(test_cfg.seed, workers=True, verbose=False)
    module = JudgeModule(test_cfg.judge, list(train[0].shape[1:]), test_cfg.lr)
    trainer = L.Trainer(
        max_epochs=test_cfg.epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=progress, reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=EpochDraws(*train, test_cfg.batch_size, test_cfg.seed))
    fake = shown_as_fake(len(test[0]), test_cfg.seed)
    shown = pick(*test, fake)
    module.eval()
    with torch.no_grad():
        logits = torch.cat([module(batch.to(module.device)).cpu() for batch in shown.split(256)])
    return verdict(logits, fake)


def realism(
    model: nn.Module, train_images: torch.Tensor, test_images: torch.Tensor, depth: int, test_cfg: RealismTest,
    accelerator: str = "cpu", progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The two-sample test of steps 0..depth on uint8 images ``(N, C, H, W)``: the metrics
    ``test/step_i/judge_{acc,acc_low,acc_high,auc,p}`` of each step."""
    with torch.random.fork_rng(devices=[]):  # a stochastic decoder's draws: seeded, the caller's stream untouched
        torch.manual_seed(test_cfg.seed)
        train_steps = quantized_steps(model, train_images, depth)
        test_steps = quantized_steps(model, test_images, depth)
    metrics: dict[str, Any] = {}
    for step in range(depth + 1):
        found = judge_step((train_images, train_steps[step]), (test_images, test_steps[step]), test_cfg,
                           accelerator, progress)  # fmt: skip
        metrics |= found.metrics(step)
    return metrics
