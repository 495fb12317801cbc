"""The metrics of every recursion step on validation and test: one registry, ``STEP_METRICS``.

The LightningModules build and log them (``val/step_i/<name>``, ``test/step_i/<name>``), ``evaluate`` prints them
per step, ``report`` tabulates those marked ``reported``. A new metric is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchmetrics import MeanMetric, MeanSquaredError, Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


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


class OutputVariation(MeanMetric):
    """The outputs' spread across images over the inputs': ~0 means the net collapsed into one constant image,
    whatever the loss says (``collapse_threshold`` fails such a run). A batch's ratio, weighted by its size."""

    def update(self, images: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        spread = target.std(0, unbiased=False).mean().clamp_min(1e-8)
        super().update(images.std(0, unbiased=False).mean() / spread, len(target))


@dataclass(frozen=True)
class StepMetric:
    """How to build one step metric, what it compares with the inputs, and whether ``report`` shows it."""

    make: Callable[[], Metric]
    takes: Literal["images", "logits"]  # the step's images in [0, 1], or the network's logits
    reported: bool = True


STEP_METRICS: dict[str, StepMetric] = {
    "mse": StepMetric(MeanSquaredError, "images"),
    "bce": StepMetric(PixelBCE, "logits"),
    "psnr": StepMetric(lambda: PeakSignalNoiseRatio(data_range=1.0), "images"),
    "ssim": StepMetric(lambda: StructuralSimilarityIndexMeasure(data_range=1.0), "images"),
    "variation": StepMetric(OutputVariation, "images", reported=False),
}


def reported_metrics() -> tuple[str, ...]:
    """The metrics ``evaluate`` prints and ``report`` tabulates, read from ``STEP_METRICS`` when asked: an entry
    added after import counts."""
    return tuple(name for name, metric in STEP_METRICS.items() if metric.reported)


def step_metrics() -> nn.ModuleDict:
    """The metrics of one recursion step on one split, fresh."""
    return nn.ModuleDict({name: metric.make() for name, metric in STEP_METRICS.items()})


def update_step_metrics(metrics: nn.ModuleDict, logits: torch.Tensor, images: torch.Tensor, x: torch.Tensor) -> None:
    """Update one step's metrics with its ``logits`` and ``images`` (B, C, H, W) against the inputs ``x``."""
    for name, metric in metrics.items():
        metric.update(logits if STEP_METRICS[name].takes == "logits" else images, x)
