"""Folders of image files for ``data=folder``: real PNGs written with torchvision, some corrupt on purpose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from conftest import _images
from torchvision.io import write_png


def write_image_folder(root: Path, n: int = 40, size: int = 48, seed: int = 0, corrupt: bool = True) -> Path:
    """``n`` PNGs of ``size`` x ``size`` in ImageFolder's layout (two class folders): RGB, every fifth one
    grayscale, every seventh one 40 pixels wider (to be centre-cropped); with ``corrupt``, also one file
    that is not an image (``broken.png``) and one truncated PNG."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        wide = size + 40 if i % 7 == 3 else size
        gray = i % 5 == 0
        pixels = _images(rng, 1, (size, wide) if gray else (size, wide, 3))[0]
        image = torch.from_numpy(pixels).unsqueeze(0) if gray else torch.from_numpy(pixels).permute(2, 0, 1)
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        write_png(image.contiguous(), str(folder / f"img_{i:03d}.png"))
    if corrupt:
        (root / "cats" / "broken.png").write_bytes(b"this is not a png")
        whole = (root / "dogs" / "img_000.png").read_bytes()
        (root / "dogs" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return root
