"""The report's networks: the MNIST and CIFAR10 autoencoders (``model/net=report``, the image shape picks one) and
the MLP discriminator (``model/discriminator=mlp``).

Where the report is ambiguous (section 4.2), the choices: every hidden layer is followed by BatchNorm and
LeakyReLU(0.2) (the report names no activation; with plain ReLU its lr 0.005 kills the networks, docs/results.md);
the CIFAR10 net's halving convs use padding 1 (the report's "padding 2" would give 17x17); its channels double at
every halving, 8 -> 16 -> 32 -> 64, to a 64x4x4 code; the discriminator has no normalisation, so that one call on
a concatenation of batches equals separate calls.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks.shapes import chw, override, shape_str


def _conv_block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2)]


def _linear_block(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.LeakyReLU(0.2)]


class MnistAutoencoder(nn.Module):
    """The report's MNIST autoencoder: 1x28x28 image -> 16-d code -> 1x28x28 logits."""

    image_shape = (1, 28, 28)
    code_size = 16
    default_loss = "mse"

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            *_conv_block(nn.Conv2d(1, 16, 3, padding=1), 16),
            nn.MaxPool2d(2),  # (B, 16, 14, 14)
            *_conv_block(nn.Conv2d(16, 32, 3, padding=1), 32),
            nn.MaxPool2d(2),  # (B, 32, 7, 7)
            *_conv_block(nn.Conv2d(32, 64, 3, padding=1), 64),
            nn.MaxPool2d(2),  # (B, 64, 3, 3)
            nn.Flatten(),  # (B, 576)
            *_linear_block(576, 128),
            *_linear_block(128, 64),
            nn.Linear(64, self.code_size),  # (B, 16)
        )
        self.decoder = nn.Sequential(
            *_linear_block(self.code_size, 64),
            *_linear_block(64, 128),
            *_linear_block(128, 576),
            nn.Unflatten(1, (64, 3, 3)),
            *_conv_block(nn.ConvTranspose2d(64, 32, 3, stride=2), 32),  # (B, 32, 7, 7)
            *_conv_block(nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), 16),  # (B, 16, 14, 14)
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),  # (B, 1, 28, 28)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Cifar10Autoencoder(nn.Module):
    """The report's CIFAR10 autoencoder: 3x32x32 image -> 64x4x4 code -> 3x32x32 logits."""

    image_shape = (3, 32, 32)
    code_size = 64 * 4 * 4
    default_loss = "bce"

    def __init__(self) -> None:
        super().__init__()

        def keep(c_in: int, c_out: int) -> list[nn.Module]:
            return _conv_block(nn.Conv2d(c_in, c_out, 3, padding=1), c_out)

        def down(c_in: int, c_out: int) -> list[nn.Module]:
            return _conv_block(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), c_out)

        def up(c_in: int, c_out: int) -> list[nn.Module]:
            return _conv_block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), c_out)

        self.encoder = nn.Sequential(
            *keep(3, 8),  # (B, 8, 32, 32)
            *down(8, 16),
            *keep(16, 16),  # (B, 16, 16, 16)
            *down(16, 32),
            *keep(32, 32),  # (B, 32, 8, 8)
            *down(32, 64),  # (B, 64, 4, 4)
            nn.Conv2d(64, 64, 3, padding=1),  # (B, 64, 4, 4): the code
        )
        self.decoder = nn.Sequential(
            *keep(64, 64),
            *up(64, 32),
            *keep(32, 32),  # (B, 32, 8, 8)
            *up(32, 16),
            *keep(16, 16),  # (B, 16, 16, 16)
            *up(16, 8),  # (B, 8, 32, 32)
            nn.Conv2d(8, 3, 3, padding=1),  # (B, 3, 32, 32)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def report_autoencoder(image_shape: Sequence[int]) -> MnistAutoencoder | Cifar10Autoencoder:
    """The report's autoencoder for the data's image shape: the shape, not a dataset name, picks it."""
    shape = chw(image_shape)
    for net_class in (MnistAutoencoder, Cifar10Autoencoder):
        if shape == net_class.image_shape:
            return net_class()
    raise UserError(
        "model/net=report is the report's network for 1x28x28 (MNIST) or 3x32x32 (CIFAR10) images, "
        f"but the data gives {shape_str(shape)} images; use model/net=conv"
    )


class MLPDiscriminator(nn.Module):
    """The report's discriminator: 4 fully connected layers, flattened image -> one logit."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (512, 256, 128)) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        if len(hidden) != 3:
            raise UserError(
                f"model.discriminator.hidden={override(hidden)} must list 3 hidden sizes: "
                "the report's discriminator has 4 layers"
            )
        sizes = [math.prod(chw(image_shape)), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # (B,) logits
