"""Convolutional networks for any image size: ``model/net=conv``, ``model/discriminator=conv`` and the realism judge
``realism/judge@realism.judges.conv=conv``, each built from the data's ``image_shape``.

``ConvAutoencoder`` generalises the report's CIFAR10 net: per stage a size-keeping 3x3 conv and a halving 4x4/2
conv, the norm and LeakyReLU(0.2) after every hidden layer, a conv or Linear code, and an exact mirror whose
``output_padding`` restores any H, W >= 2**stages. ``ConvDiscriminator`` is taming-transformers' PatchGAN without
BatchNorm (spectral norm instead, so that batches never mix), its patch logits averaged to one per image.
``ConvClassifier`` is a plain small classifier: strided convs, then a Linear layer to one logit.
"""

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn
from torch.nn.utils import parametrizations

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks.shapes import chw, override, shape_str

Norm = Literal["batch", "instance", "group", "none"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = math.gcd(32, channels)
        if groups == channels > 1:
            groups //= 2  # two channels per group at least: one per group is instance norm
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def classifier_widths(widths: Sequence[int]) -> list[int]:
    """A classifier's channel widths, at least one and each positive; its widths are set where it judges realism in
    the panel or plays the game's discriminator, and the error names both."""
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise UserError(
            f"widths={override(widths)} must list at least one positive width (realism.judges.NAME.widths, or "
            "model.discriminator.widths)"
        )
    return widths


class ConvAutoencoder(nn.Module):
    """The report's CIFAR10 design for any image size: ``stages`` halvings, one width per stage."""

    default_loss = "bce"

    def __init__(
        self,
        image_shape: Sequence[int],
        stages: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        code_size: int | None = None,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        shape = chw(image_shape)
        widths = [int(w) for w in widths]
        sizes = _check_autoencoder(shape, stages, widths, code_size, norm)  # (H, W) before each stage, then the code's
        self.image_shape = shape

        def block(layer: nn.Module, channels: int) -> list[nn.Module]:
            return [layer, _norm(norm, channels), nn.LeakyReLU(0.2)]

        encoder: list[nn.Module] = []
        c_in = shape[0]
        for width in widths:
            encoder += block(nn.Conv2d(c_in, width, 3, padding=1), width)
            encoder += block(nn.Conv2d(width, width, 4, stride=2, padding=1), width)  # (B, width, H // 2, W // 2)
            c_in = width
        h_code, w_code = sizes[-1]
        decoder: list[nn.Module] = []
        if code_size is None:
            encoder.append(nn.Conv2d(c_in, c_in, 3, padding=1))  # (B, widths[-1], h_code, w_code): the code
            decoder += block(nn.Conv2d(c_in, c_in, 3, padding=1), c_in)
            self.code_size = c_in * h_code * w_code
        else:
            encoder += [nn.Flatten(), nn.Linear(c_in * h_code * w_code, code_size)]  # (B, code_size): the code
            decoder += [nn.Linear(code_size, c_in * h_code * w_code), nn.Unflatten(1, (c_in, h_code, w_code))]
            decoder += [_norm(norm, c_in), nn.LeakyReLU(0.2)]  # (B, widths[-1], h_code, w_code)
            self.code_size = code_size
        for i in reversed(range(stages)):
            (h, w), (h_half, w_half) = sizes[i], sizes[i + 1]
            up = nn.ConvTranspose2d(
                widths[i], widths[i], 4, stride=2, padding=1, output_padding=(h - 2 * h_half, w - 2 * w_half)
            )
            decoder += block(up, widths[i])  # (B, widths[i], h, w)
            if i:
                decoder += block(nn.Conv2d(widths[i], widths[i - 1], 3, padding=1), widths[i - 1])
        decoder.append(nn.Conv2d(widths[0], shape[0], 3, padding=1))  # (B, C, H, W) logits
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _check_autoencoder(
    shape: tuple[int, int, int], stages: int, widths: list[int], code_size: int | None, norm: str
) -> list[tuple[int, int]]:
    """One-line errors for overrides that cannot build; returns the (H, W) of every stage's input and of the code."""
    if stages < 1:
        raise UserError(f"model.net.stages={stages} must be at least 1")
    if len(widths) != stages:
        raise UserError(
            f"model.net.widths={override(widths)} gives {len(widths)} widths but model.net.stages={stages}: "
            "give one width per stage"
        )
    if min(widths) < 1:
        raise UserError(f"model.net.widths={override(widths)} must be positive channel counts")
    if code_size is not None and code_size < 1:
        raise UserError(f"model.net.code_size={code_size} must be at least 1, or null to keep the conv feature map")
    if norm not in get_args(Norm):
        raise UserError(f"model.net.norm={norm} is not one of: {', '.join(get_args(Norm))}")
    if min(shape[1:]) < 2**stages:
        raise UserError(
            f"model.net.stages={stages} halves the image {stages} times, but the data gives {shape_str(shape)} images "
            f"(at least {2**stages}x{2**stages} needed); lower model.net.stages"
        )
    sizes = [shape[1:]]
    for _ in range(stages):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    if norm == "instance" and math.prod(sizes[-1]) == 1:
        raise UserError(
            f"model.net.norm=instance cannot train on the 1x1 maps that model.net.stages={stages} leaves of the "
            f"data's {shape_str(shape)} images; lower model.net.stages or pick another model.net.norm"
        )
    return sizes


class ConvDiscriminator(nn.Module):
    """A PatchGAN discriminator: one logit per patch, averaged to one logit per image."""

    def __init__(
        self, image_shape: Sequence[int], widths: Sequence[int] = (64, 128, 256), spectral_norm: bool = True
    ) -> None:
        super().__init__()
        shape = chw(image_shape)
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise UserError(
                f"model.discriminator.widths={override(widths)} must list at least one positive width "
                f"(one conv layer each) for the data's {shape_str(shape)} images"
            )

        def conv(*args: int, **kwargs: int) -> nn.Module:
            layer = nn.Conv2d(*args, **kwargs)
            return parametrizations.spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = []
        c_in, h, w = shape
        for width in widths:
            if min(h, w) >= 2:
                layers.append(conv(c_in, width, 4, stride=2, padding=1))
                h, w = h // 2, w // 2  # (B, width, h, w)
            else:
                layers.append(conv(c_in, width, 3, padding=1))  # a 1-pixel side cannot halve: keep the map
            layers.append(nn.LeakyReLU(0.2))
            c_in = width
        layers.append(conv(c_in, 1, 3, padding=1))  # (B, 1, h, w): one logit per patch
        self.net = nn.Sequential(*layers)
        self.patches = (h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))  # (B,) logits


class ConvClassifier(nn.Module):
    """A small image classifier: 4x4/stride-2 convs (a layer halves only while the map is at least 2x2) with
    LeakyReLU(0.2), then a Linear layer on the flattened map to one logit per image; images in [0, 1] are centred
    to [-1, 1] first. The realism panel's conv judge (``realism.judges.conv``)."""

    def __init__(self, image_shape: Sequence[int], widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        shape = chw(image_shape)
        widths = classifier_widths(widths)
        layers: list[nn.Module] = []
        c_in, h, w = shape
        for width in widths:
            stride = 2 if min(h, w) >= 2 else 1
            layers += [nn.Conv2d(c_in, width, 4 if stride == 2 else 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
            c_in, h, w = width, h // stride, w // stride  # (B, width, h, w)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c_in * h * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * 2 - 1)).squeeze(1)  # (B,) logits


class HighPassClassifier(nn.Module):
    """A deeper judge that also sees the image's high frequencies: the centred image and its high-pass residual (the
    image minus its 3x3 box blur, scaled up: the grain and the seams a smooth or blocky reconstruction gets wrong)
    enter a size-keeping 3x3 conv, then 4x4/stride-2 convs (halving while the map is at least 2x2) and a 3x3 conv,
    each with LeakyReLU(0.2), then global average pooling (a tell anywhere in the image counts alike) and a Linear
    layer to one logit. The realism panel's strongest trained judge (``realism.judges.highpass``)."""

    HIGH_PASS_GAIN = 8.0  # the residual of 8-bit images is a few hundredths: brought to the image's scale

    def __init__(self, image_shape: Sequence[int], widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        shape = chw(image_shape)
        widths = classifier_widths(widths)
        layers: list[nn.Module] = [nn.Conv2d(2 * shape[0], widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        c_in, h, w = widths[0], *shape[1:]
        for width in widths:
            stride = 2 if min(h, w) >= 2 else 1
            layers += [nn.Conv2d(c_in, width, 4 if stride == 2 else 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
            c_in, h, w = width, h // stride, w // stride  # (B, width, h, w)
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([x * 2 - 1, (x - box_blur(x)) * self.HIGH_PASS_GAIN], dim=1)  # (B, 2C, H, W)
        return self.head(self.features(inputs).mean(dim=(2, 3))).squeeze(1)  # (B,) logits


def box_blur(x: torch.Tensor) -> torch.Tensor:
    """The 3x3 box blur of images ``(B, C, H, W)``, edges replicated, as two separable 3-tap sums: ``avg_pool2d``
    gives the same values but is 4x slower on the judges' channels-last images of 3 channels (a tenth of the
    high-pass judge's training time), and a conv would be autocast to bfloat16, too coarse for the residual."""
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    rows = padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]  # (B, C, H + 2, W)
    return (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]) / 9
