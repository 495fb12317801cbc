"""A tile autoencoder: ``model/net=patch``, the tuned CIFAR10 recipes' network (why: docs/results.md, "Tuned recipes").

The encoder is a ``patch``x``patch``/stride-``patch`` conv (one code cell of ``code_channels`` numbers per tile);
the decoder, a transposed conv that pastes every tile back as pixel values, clamped to [eps, 1 - eps] and returned
as their logits (the contract of every autoencoder). No normalisation, no activation: an image's code never
depends on the rest of the batch, and every recursive step sees the same function.

``noise=true`` makes the evaluated decoder stochastic: it adds Gaussian tiles whose second moments are those of
the residuals the code cannot carry (``fit_noise``, called by the ``FitNoise`` callback), so a reconstruction has
the detail a real image has, drawn rather than recalled. Training fits the mean alone: a recursion trained on its
own noise learns to remove it, its residuals grow and the noise fitted to them with it (docs/results.md, "Realism").
"""

from collections.abc import Sequence

import torch
from torch import nn

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks.shapes import chw, shape_str


class PatchAutoencoder(nn.Module):
    """Codes each ``patch``x``patch`` tile with ``code_channels`` numbers: a code of (code_channels, H/p, W/p)."""

    default_loss = "bce"

    def __init__(
        self, image_shape: Sequence[int], patch: int = 8, code_channels: int = 64, eps: float = 1e-3,
        noise: bool = False,
    ) -> None:  # fmt: skip
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
        # The noise's basis, one (C, p, p) tile pattern per Gaussian coefficient: fitted (fit_noise), not trained.
        tile = channels * patch * patch
        self.register_buffer("noise_basis", torch.zeros(tile, channels, patch, patch) if noise else None)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded pixels of ``x``'s code, clamped to [eps, 1 - eps]: the reconstruction without its noise."""
        return self.decoder(self.encoder(x)).clamp(self.eps, 1 - self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = self.mean(x)
        if self.noise_basis is not None and not self.training:  # what the code cannot carry, drawn for every image
            b, _, h, w = x.shape
            p = self.noise_basis.shape[-1]
            coefficients = torch.randn(b, len(self.noise_basis), h // p, w // p, device=x.device, dtype=pixels.dtype)
            pixels = pixels + nn.functional.conv_transpose2d(coefficients, self.noise_basis, stride=p)
            pixels = pixels.clamp(self.eps, 1 - self.eps)
        return torch.logit(pixels)

    def tiles(self, images: torch.Tensor) -> torch.Tensor:
        """``images``' tiles as rows of C*p*p numbers, in the (C, p, p) layout of the conv weights."""
        c, p = self.image_shape[0], self.encoder.kernel_size[0]
        return nn.functional.unfold(images, p, stride=p).transpose(1, 2).reshape(-1, c * p * p)

    def tile_moments(self, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and the second moments ``E[t t^T]`` (float64) of ``images``' tiles, ``batch_size`` images at a
        time."""
        size = self.tiles(images[:1]).shape[1]
        total = torch.zeros(size, dtype=torch.float64, device=images.device)
        moments = torch.zeros(size, size, dtype=torch.float64, device=images.device)
        count = 0
        for batch in images.split(batch_size):
            flat = self.tiles(batch).double()
            total, moments, count = total + flat.sum(0), moments + flat.T @ flat, count + len(flat)
        return total / count, moments / count

    @torch.no_grad()
    def fit_pca(self, images: torch.Tensor, batch_size: int = 512) -> None:
        """Start from the best linear code of ``images``' tiles under MSE, which Adam otherwise approaches over many
        epochs: the encoder projects a centred tile on its ``code_channels`` leading principal directions, the
        decoder pastes them back onto the tiles' mean (per channel: the decoder's bias is one number a channel)."""
        mean, moments = self.tile_moments(images, batch_size)
        _, vectors = torch.linalg.eigh(moments - torch.outer(mean, mean))
        leading = vectors[:, -self.encoder.out_channels :].T  # (code_channels, C*p*p), one direction a row
        self.encoder.weight.copy_(leading.reshape_as(self.encoder.weight))
        self.encoder.bias.copy_(-(leading @ mean))
        self.decoder.weight.copy_(leading.reshape_as(self.decoder.weight))
        self.decoder.bias.copy_(mean.reshape(len(self.decoder.bias), -1).mean(1))

    @torch.no_grad()
    def fit_noise(self, images: torch.Tensor, batch_size: int = 512) -> None:
        """Fit the noise to the residuals of ``images`` (float in [0, 1], (N, C, H, W)): its tiles become Gaussian with
        the residual tiles' second moments, ``E[r r^T] = B^T B`` for the basis ``B`` (the eigenvectors, scaled)."""
        if self.noise_basis is None:
            return
        residuals = torch.cat([batch - self.mean(batch) for batch in images.split(batch_size)])
        _, moments = self.tile_moments(residuals, batch_size)
        eigenvalues, eigenvectors = torch.linalg.eigh(moments)
        basis = eigenvectors * eigenvalues.clamp_min(0).sqrt()  # columns: sqrt(lambda_j) u_j
        self.noise_basis.copy_(basis.T.reshape_as(self.noise_basis).to(self.noise_basis.dtype))
