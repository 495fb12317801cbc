"""The report's networks: shapes, code sizes and layer counts (section 4.2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recursive_ae_gan.networks import (
    Cifar10Autoencoder,
    MLPDiscriminator,
    MnistAutoencoder,
    autoencoder_for,
    discriminator_for,
)


def count(module: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize(
    ("dataset", "net_class", "code_shape"),
    [("mnist", MnistAutoencoder, (16,)), ("cifar10", Cifar10Autoencoder, (64, 4, 4))],
)
def test_autoencoder_shapes(dataset: str, net_class: type[nn.Module], code_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = autoencoder_for(dataset)
    assert type(net) is net_class
    x = torch.rand(4, *net_class.image_shape)
    assert net.encoder(x).shape == (4, *code_shape)
    assert net(x).shape == x.shape


def test_mnist_layer_counts_match_the_report() -> None:
    net = MnistAutoencoder()
    assert (count(net.encoder, nn.Conv2d), count(net.encoder, nn.MaxPool2d), count(net.encoder, nn.Linear)) == (3, 3, 3)
    assert (count(net.decoder, nn.Linear), count(net.decoder, nn.ConvTranspose2d)) == (3, 3)
    assert count(net.decoder, nn.Conv2d) == 0


def test_cifar10_has_seven_conv_layers_each_way() -> None:
    net = Cifar10Autoencoder()
    assert count(net.encoder, nn.Conv2d) == 7
    assert count(net.decoder, nn.Conv2d) + count(net.decoder, nn.ConvTranspose2d) == 7
    assert count(net, nn.Linear) == 0


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_discriminator_maps_images_to_one_logit(dataset: str) -> None:
    torch.manual_seed(0)
    d = discriminator_for(dataset, hidden=(64, 32, 16))
    assert count(d, nn.Linear) == 4
    x = torch.rand(5, *autoencoder_for(dataset).image_shape)
    assert d(x).shape == (5,)
    # No normalisation: one call on a concatenation equals separate calls (the module relies on it).
    torch.testing.assert_close(d(torch.cat([x, 1 - x])), torch.cat([d(x), d(1 - x)]))


def test_bad_network_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="3 hidden sizes"):
        MLPDiscriminator((1, 28, 28), hidden=(64, 32))
    with pytest.raises(ValueError, match="unknown dataset"):
        autoencoder_for("svhn")
    with pytest.raises(ValueError, match="unknown dataset"):
        discriminator_for("svhn")
