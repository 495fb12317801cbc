"""The metrics of every recursion step on validation and test."""

from __future__ import annotations

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


def step_metrics() -> nn.ModuleDict:
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
