"""A tile autoencoder: ``model/net=patch``, the tuned CIFAR10 recipes' network (why: docs/results.md, "Tuned recipes").

The encoder is a ``patch``x``patch``/stride-``patch`` conv (one code cell of ``code_channels`` numbers per tile);
the decoder, a transposed conv that pastes every tile back as pixel values, clamped to [eps, 1 - eps] and returned
as their logits (the contract of every autoencoder). No normalisation, no activation: an image's code never
depends on the rest of the batch, and every recursive step sees the same function.
"""

from collections.abc import Sequence

import torch
from torch import nn

from recursive_ae_gan.errors import UserError
from recursive_ae_gan.networks.shapes import chw, shape_str


class PatchAutoencoder(nn.Module):
    """Codes each ``patch``x``patch`` tile with ``code_channels`` numbers: a code of (code_channels, H/p, W/p)."""

    default_loss = "bce"

    def __init__(self, image_shape: Sequence[int], patch: int = 8, code_channels: int = 64, eps: float = 1e-3) -> None:
        super().__init__()
        shape = chw(image_shape)
        channels, height, width = shape
        if patch < 1 or height % patch or width % patch:
            raise UserError(
                f"model.net.patch={patch} must cut the data's {shape_str(shape)} images into whole tiles "
                "(a positive divisor of H and W)"
            )
        if code_channels < 1:
            raise UserError(f"model.net.code_channels={code_channels} must be at least 1")
        if not 0 < eps < 0.5:
            raise UserError(f"model.net.eps={eps} must lie in (0, 0.5): the pixels are clamped to [eps, 1 - eps]")
        self.image_shape = shape
        self.code_size = code_channels * (height // patch) * (width // patch)
        self.eps = eps
        self.encoder = nn.Conv2d(channels, code_channels, patch, stride=patch)  # (B, code_channels, H/p, W/p)
        self.decoder = nn.ConvTranspose2d(code_channels, channels, patch, stride=patch)  # (B, C, H, W) pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.decoder(self.encoder(x)).clamp(self.eps, 1 - self.eps))
