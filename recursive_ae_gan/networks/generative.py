"""A generative tile decoder: ``model/net=generative``, the tile code of ``model/net=patch`` whose decoder also makes
detail the code cannot carry, as generative compression does (Agustsson et al., ICCV 2019; HiFiC, Mentzer et al.,
NeurIPS 2020).

The encoder and the linear tile decoder are ``PatchAutoencoder``'s (so ``fit_pca`` starts them from the tiles'
principal components). On top, a small nonlinear detail network at full resolution reads the linear decoder's mean
image and ``noise_channels`` channels of fresh per-pixel Gaussian noise (drawn in training and evaluation alike, for
every image and every recursive step) and adds its output to the mean's logits. Its last conv starts at zero, so a
fresh network decodes exactly the linear code: training starts at the principal components' PSNR, and only a loss
that rewards detail (the game's) makes the network use its noise; under the reconstruction loss alone the best use
is none (the conditional mean). Measured: docs/results.md, "Realism".
"""

from collections.abc import Sequence

import torch
from torch import nn

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks.patch import PatchAutoencoder


class ResidualBlock(nn.Module):
    """``x + conv(act(conv(act(x))))``, 3x3 size-keeping convs; no normalisation, so that batches never mix."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GenerativeAutoencoder(PatchAutoencoder):
    """A tile code of (code_channels, H/p, W/p) whose decoder is the linear tile decode plus a detail network fed the
    decoded mean and per-pixel noise: a stochastic, nonlinear decoder."""

    def __init__(
        self, image_shape: Sequence[int], patch: int = 8, code_channels: int = 64, eps: float = 1e-3,
        noise_channels: int = 4, width: int = 24, blocks: int = 2,
    ) -> None:  # fmt: skip
        super().__init__(image_shape, patch=patch, code_channels=code_channels, eps=eps)
        if noise_channels < 0:
            raise UserError(f"model.net.noise_channels={noise_channels} must be >= 0 (0: a deterministic decoder)")
        if width < 1 or blocks < 0:
            raise UserError(f"model.net.width={width} must be >= 1 and model.net.blocks={blocks} >= 0")
        channels = self.image_shape[0]
        self.noise_channels = noise_channels
        self.detail = nn.Sequential(
            nn.Conv2d(channels + noise_channels, width, 3, padding=1),  # (B, width, H, W)
            *(ResidualBlock(width) for _ in range(blocks)),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),  # (B, C, H, W): added to the mean's logits
        )
        last = self.detail[-1]
        nn.init.zeros_(last.weight)  # a fresh network decodes the linear code exactly
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = self.mean(x)  # (B, C, H, W) in [eps, 1 - eps]
        b, _, h, w = pixels.shape
        noise = torch.randn(b, self.noise_channels, h, w, device=pixels.device, dtype=pixels.dtype)
        detail = self.detail(torch.cat([pixels * 2 - 1, noise], dim=1))
        return torch.logit(pixels) + detail  # logits: sigmoid keeps the images in (0, 1) whatever the detail
