"""DiffAugment (Zhao et al. 2020) for the game: differentiable augmentations of every image the discriminator
judges in training, real and reconstructed alike, so that D trained on few images judges unseen ones as it judges
its training images."""

from __future__ import annotations

import torch
from torch import nn


def random_translate(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image shifted by its own random (dy, dx) in [-max_shift, max_shift], the vacated border zero.

    An indexing, so the generator's gradient flows through it."""
    n, _, h, w = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (2, n, 1, 1), device=images.device)
    rows = (torch.arange(h, device=images.device).view(1, h, 1) - shifts[0]).clamp(-1, h) + 1  # (n, h, 1)
    cols = (torch.arange(w, device=images.device).view(1, 1, w) - shifts[1]).clamp(-1, w) + 1  # (n, 1, w)
    padded = nn.functional.pad(images, (1, 1, 1, 1))  # index 0 and h + 1 (w + 1) read the zero border
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (n, h, w, C) -> (n, C, h, w)
