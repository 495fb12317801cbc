"""A tile autoencoder: ``model/net=patch``, the tuned CIFAR10 recipes' network.

Why it exists: on the CIFAR10 subset here, a *linear* code of each 8x8 tile (the PCA of the training
tiles, 64 numbers per tile, 64x4x4 = the report's 1,024-number code) reconstructs the test images to BCE
0.5494, better than the report's deep conv net after 200 epochs (0.5538, docs/results.md). With so mild
a compression (3,072 pixels to 1,024 numbers) a reconstruction needs every pixel's detail, which a
linear tile code keeps and stride-2 conv stages trade for features. This net is that transform, learnt:

* Encoder: a ``patch``x``patch``/stride-``patch`` conv, one code cell of ``code_channels`` numbers per tile.
* Decoder: a transposed conv that pastes every tile back, as *pixel values*. A sigmoid on a linear
  decoder cannot reach the many pixels near 0 and 1 without huge logits (trained that way, the same
  net stalls at BCE 0.5531); so the pixels are clamped to [eps, 1 - eps] and returned as their logits,
  the contract every autoencoder keeps (``torch.sigmoid`` of the output gives the clamped pixels back).
* No normalisation and no activation: the code of one image never depends on the rest of the batch,
  and every recursive step (the decoder's output fed back in) sees the same function.
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
