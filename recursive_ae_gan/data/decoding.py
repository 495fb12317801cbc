"""Decoding: every image file (``data=folder``, ``reconstruct``'s inputs) and every PIL image a torchvision dataset
returns becomes uint8 ``(C, H, W)`` through ``to_uint8``, as a viewer shows it:

- EXIF orientation applied (a phone's portrait JPEG stands upright);
- 16-bit grayscale (modes ``I;16``, ``I;16B``, ...) scaled, not clipped: ``round(v * 255 / 65535)``.
  PIL's 32-bit mode ``I`` is scaled from the range of the file's samples: 32-bit (``2**31 - 1``, PIL's
  signed range) when a TIFF says so (BitsPerSample), else 16-bit (16-bit PGM / PPM open as ``I``);
  negative values become 0. PIL itself reduces 16-bit RGB(A) PNGs to 8 bits (the high byte: within 1/255);
- transparency (``RGBA``, ``LA``, ``PA``, a palette or a grayscale or RGB image with a transparent
  colour) composited over white (``BACKGROUND``): a transparent pixel becomes white;
- palette (``P``) and CMYK (``(255 - c) * (255 - k) / 255``) become RGB, bilevel (``1``) grayscale 0 or 255;
  every other mode is converted by PIL: grayscale ones (``L``, ``LA``, floats ``F`` taken as 0..255) stay
  one channel, the rest (``YCbCr``, ``LAB``, ``HSV``, ...) become RGB;
- animated files (GIF, APNG, WebP): the first frame;
- no colour management: ICC profiles are not applied.

``convert`` then makes the result ``data.channels`` and ``data.image_size``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

BACKGROUND = 255  # what transparent pixels show: white


def convert(images: torch.Tensor, channels: int | None, size: int | None) -> torch.Tensor:
    """uint8 ``(..., C, H, W)`` to ``channels`` (1 or 3) and ``size`` x ``size`` (resize the short side,
    centre-crop); ``None`` keeps what the data has."""
    if channels == 1 and images.shape[-3] == 3:
        images = F.rgb_to_grayscale(images)
    elif channels == 3 and images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, *images.shape[-2:]).contiguous()
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        images = F.center_crop(F.resize(images, size, antialias=True), [size, size])
    return images


def _integer_max(image: Image.Image) -> int:
    """The value that becomes 255 in an integer image: 16-bit samples unless a TIFF says 32."""
    if image.mode.startswith("I;16"):
        return 2**16 - 1
    bits = getattr(image, "tag_v2", {}).get(258, (16,))  # TIFF's BitsPerSample
    return 2**31 - 1 if bits[0] > 16 else 2**16 - 1


def _over_background(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(C + 1, H, W)``, alpha last, composited over ``BACKGROUND``: uint8 ``(C, H, W)``."""
    colour, alpha = pixels[:-1].float(), pixels[-1:].float() / 255
    return (colour * alpha + BACKGROUND * (1 - alpha)).round_().to(torch.uint8)


def to_uint8(image: Image.Image) -> torch.Tensor:
    """A PIL image as uint8 ``(C, H, W)``, as a viewer shows it (the module docstring says how): grayscale
    stays 1 channel, everything else becomes RGB. Loads the image: a truncated file fails here."""
    integer_max = _integer_max(image) if image.mode == "I" or image.mode.startswith("I;16") else None
    image = ImageOps.exif_transpose(image)  # a copy, without the orientation tag; frame 0 of an animation
    if integer_max is not None:
        values = torch.from_numpy(np.asarray(image).astype(np.float64))  # any byte order, exact
        return (values * (255 / integer_max)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(0)
    gray = image.mode in ("1", "L", "LA", "La", "F")
    if image.has_transparency_data:
        return _over_background(F.pil_to_tensor(image.convert("LA" if gray else "RGBA")))
    target = "L" if gray else "RGB"
    return F.pil_to_tensor(image if image.mode == target else image.convert(target))
