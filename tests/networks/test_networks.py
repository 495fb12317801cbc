"""The networks: the report's shapes, code sizes and layer counts (section 4.2), the conv networks for any
image size, the one-line errors for shapes they cannot take, and the config files that build them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import parametrize

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks import (
    Cifar10Autoencoder,
    ConvAutoencoder,
    ConvClassifier,
    ConvDiscriminator,
    HighPassClassifier,
    MLPDiscriminator,
    MnistAutoencoder,
    PatchAutoencoder,
    report_autoencoder,
)
from recursive_ae_gan.networks.conv import box_blur

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 96, 96), (1, 48, 48), (3, 40, 56)]


def count(module: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def build(group: str, name: str, image_shape: tuple[int, ...], **overrides: object) -> nn.Module:
    """A network from its real config file, as the LightningModule builds it."""
    cfg = OmegaConf.merge(OmegaConf.load(CONF / group / f"{name}.yaml"), overrides)
    return instantiate(cfg, image_shape=image_shape)


# The report's networks


@pytest.mark.parametrize(
    ("net_class", "code_shape", "n_keys", "last_layer"),
    [
        (MnistAutoencoder, (16,), 74, ("decoder.16.weight", (16, 1, 4, 4))),
        (Cifar10Autoencoder, (64, 4, 4), 88, ("decoder.18.weight", (3, 8, 3, 3))),
    ],
)
def test_report_autoencoder_shapes(
    net_class: type[nn.Module], code_shape: tuple[int, ...], n_keys: int, last_layer: tuple[str, tuple[int, ...]]
) -> None:
    torch.manual_seed(0)
    net = build("net", "report", net_class.image_shape)
    assert type(net) is net_class
    # Old checkpoints still load: the same keys and shapes as the class itself, and as before the shape
    # (not the dataset name) picked the network (n_keys and last_layer are the earlier layout's).
    state = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert state == {k: tuple(v.shape) for k, v in net_class().state_dict().items()}
    assert len(state) == n_keys and state[last_layer[0]] == last_layer[1]
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


def test_default_losses() -> None:
    assert (MnistAutoencoder.default_loss, Cifar10Autoencoder.default_loss, ConvAutoencoder.default_loss) == (
        "mse",
        "bce",
        "bce",
    )


# ConvAutoencoder


@pytest.mark.parametrize("image_shape", SHAPES)
@pytest.mark.parametrize(
    "settings",
    [
        {},  # the config file as it is: 3 stages, the conv feature map as the code, BatchNorm
        {"stages": 2, "widths": [8, 16], "code_size": 32, "norm": "instance"},
        {"stages": 4, "widths": [4, 8, 8, 16], "norm": "group"},  # 28x28 shrinks to a 1x1 code map
        {"stages": 1, "widths": [8], "code_size": 8, "norm": "none"},
    ],
)
def test_conv_autoencoder_maps_any_image_back_to_its_shape(image_shape: tuple[int, ...], settings: dict) -> None:
    torch.manual_seed(0)
    net = build("net", "conv", image_shape, **settings)
    assert isinstance(net, ConvAutoencoder)
    x = torch.rand(2, *image_shape)
    logits = net(x)
    assert logits.shape == x.shape
    if settings.get("code_size"):
        assert net.encoder(x).shape == (2, settings["code_size"]) and net.code_size == settings["code_size"]
    else:
        assert net.encoder(x)[0].numel() == net.code_size
    # Gradients reach the first layer: no layer cuts the graph or dies at initialisation.
    nn.functional.binary_cross_entropy_with_logits(logits, x).backward()
    first = net.encoder[0]
    assert isinstance(first, nn.Conv2d) and first.in_channels == image_shape[0]
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_conv_autoencoder_layers_follow_the_stages() -> None:
    net = ConvAutoencoder((3, 32, 32), stages=2, widths=(8, 16), norm="batch")
    downs = [m for m in net.encoder if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    ups = [m for m in net.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.out_channels, m.kernel_size) for m in downs] == [(8, (4, 4)), (16, (4, 4))]
    assert [m.in_channels for m in ups] == [16, 8]
    assert count(net, nn.BatchNorm2d) == 2 * 2 + 1 + 2 * 2 - 1  # every hidden layer, none on the code or the logits
    assert net.encoder(torch.rand(2, 3, 32, 32)).shape == (2, 16, 8, 8)
    assert count(ConvAutoencoder((3, 32, 32), norm="none"), nn.BatchNorm2d) == 0


def test_conv_autoencoder_restores_odd_sizes_through_output_padding() -> None:
    # 28 -> 14 -> 7 -> 3 loses a row at 7 -> 3; the transposed conv growing 3 -> 7 adds it back.
    net = ConvAutoencoder((1, 28, 27), stages=3, widths=(4, 4, 4))
    assert [m.output_padding for m in net.decoder if isinstance(m, nn.ConvTranspose2d)] == [(1, 0), (0, 1), (0, 1)]
    assert net(torch.rand(2, 1, 28, 27)).shape == (2, 1, 28, 27)


# Bad pairs: one line, naming the setting and the shape


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: ConvAutoencoder((1, 12, 12), stages=4, widths=[8] * 4), ["model.net.stages=4", "1x12x12"]),
        (lambda: ConvAutoencoder((3, 64, 7)), ["model.net.stages=3", "3x64x7"]),
        (lambda: ConvAutoencoder((3, 32, 32), stages=2), ["model.net.widths=[32,64,128]", "model.net.stages=2"]),
        (lambda: ConvAutoencoder((3, 16, 16), stages=4, widths=[4] * 4, norm="instance"), ["norm", "3x16x16"]),
        (lambda: ConvAutoencoder((3, 32, 32), norm="layer"), ["model.net.norm=layer"]),
        (lambda: report_autoencoder((3, 48, 48)), ["model/net=report", "3x48x48", "model/net=conv"]),
        (lambda: ConvDiscriminator((1, 28, 28), widths=[]), ["model.discriminator.widths=[]", "1x28x28"]),
        (lambda: MLPDiscriminator((1, 28, 28), hidden=[64, 32]), ["model.discriminator.hidden=[64,32]"]),
        (lambda: PatchAutoencoder((1, 28, 28)), ["model.net.patch=8", "1x28x28"]),
        (lambda: PatchAutoencoder((3, 32, 32), code_channels=0), ["model.net.code_channels=0"]),
        (lambda: PatchAutoencoder((3, 32, 32), eps=0.5), ["model.net.eps=0.5"]),
        # A judge's or the game's discriminator: the message names both places its widths come from.
        (lambda: ConvClassifier((3, 32, 32), widths=[]), ["widths=[]", "realism.judges.NAME", "model.discriminator"]),
        (lambda: HighPassClassifier((3, 32, 32), widths=[0]), ["widths=[0]", "model.discriminator.widths"]),
    ],
)
def test_settings_that_cannot_build_raise_one_line(make, names: list[str]) -> None:
    with pytest.raises(UserError) as error:
        make()
    message = str(error.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_instantiate_wraps_the_user_error() -> None:
    # Hydra re-raises anything a target raises as InstantiationException (a multi-line message);
    # the UserError is its cause, for the caller to unwrap and print as one line.
    with pytest.raises(InstantiationException) as error:
        build("net", "report", (3, 48, 48))
    assert isinstance(error.value.__cause__, UserError)


# The tile autoencoder (model/net=patch)


def test_patch_autoencoder_codes_each_tile_alone_and_returns_the_clamped_pixels_as_logits() -> None:
    torch.manual_seed(0)
    net = build("net", "patch", (3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    assert net.encoder(x).shape == (2, 64, 4, 4) and net.code_size == 64 * 4 * 4  # the report's CIFAR10 code
    # Each tile's code is a linear map of that tile's 192 pixels alone: one matrix product per tile.
    weight, bias = net.encoder.weight.reshape(64, -1), net.encoder.bias
    tile = x[:, :, 8:16, 16:24].reshape(2, -1)  # tile (row 1, column 2)
    torch.testing.assert_close(net.encoder(x)[:, :, 1, 2], tile @ weight.T + bias)
    # The decoder pastes each code cell back as a tile of pixels; sigmoid(output) is those pixels, clamped.
    code = net.encoder(x)
    pixels = torch.einsum("bc,cp->bp", code[:, :, 1, 2], net.decoder.weight.reshape(64, -1))
    pixels = pixels.reshape(2, 3, 8, 8) + net.decoder.bias.view(1, 3, 1, 1)
    out = torch.sigmoid(net(x))
    torch.testing.assert_close(out[:, :, 8:16, 16:24], pixels.clamp(1e-3, 1 - 1e-3))
    assert out.min() >= 1e-3 - 1e-6 and out.max() <= 1 - 1e-3 + 1e-6


def test_patch_autoencoder_tiles_any_divisible_size() -> None:
    net = PatchAutoencoder((1, 28, 28), patch=7, code_channels=4)
    x = torch.rand(1, 1, 28, 28)
    assert net.encoder(x).shape == (1, 4, 4, 4) and net(x).shape == x.shape


# Discriminators


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32)])
def test_mlp_discriminator_maps_images_to_one_logit(image_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    d = build("discriminator", "mlp", image_shape, hidden=[64, 32, 16])
    assert isinstance(d, MLPDiscriminator)
    assert count(d, nn.Linear) == 4
    x = torch.rand(5, *image_shape)
    assert d(x).shape == (5,)
    # No normalisation: one call on a concatenation equals separate calls (the module relies on it).
    torch.testing.assert_close(d(torch.cat([x, 1 - x])), torch.cat([d(x), d(1 - x)]))


@pytest.mark.parametrize(
    ("image_shape", "patches"), [((1, 28, 28), (3, 3)), ((3, 32, 32), (4, 4)), ((3, 64, 64), (8, 8))]
)
def test_conv_discriminator_maps_images_to_one_logit(image_shape: tuple[int, ...], patches: tuple[int, int]) -> None:
    torch.manual_seed(0)
    d = build("discriminator", "conv", image_shape, widths=[8, 16, 32])
    assert isinstance(d, ConvDiscriminator)
    assert d.patches == patches
    assert count(d, nn.BatchNorm2d) == count(d, nn.GroupNorm) == count(d, nn.InstanceNorm2d) == 0
    x = torch.rand(5, *image_shape)
    assert d(x).shape == (5,)
    # Eval mode: in train mode spectral norm runs one power iteration per call, updating its vectors, so two
    # calls use slightly different weights. In eval mode the weights are fixed and, with no normalisation
    # across the batch, one call on a concatenation equals separate calls.
    d.eval()
    torch.testing.assert_close(d(torch.cat([x, 1 - x])), torch.cat([d(x), d(1 - x)]))
    # The image's logit is the mean of its patches' logits.
    torch.testing.assert_close(d(x), d.net(x).mean(dim=(1, 2, 3)))


def test_conv_discriminator_stops_halving_on_small_images() -> None:
    torch.manual_seed(0)
    d = ConvDiscriminator((1, 6, 6), widths=(4, 4, 4, 4))  # 6 -> 3 -> 1, then 3x3/stride-1 convs keep 1x1
    strides = [m.stride for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert strides == [(2, 2), (2, 2), (1, 1), (1, 1), (1, 1)]
    assert d.patches == (1, 1) and d(torch.rand(3, 1, 6, 6)).shape == (3,)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_conv_discriminator_spectral_norm_on_every_conv_when_asked(spectral_norm: bool) -> None:
    torch.manual_seed(0)
    d = build("discriminator", "conv", (3, 32, 32), widths=[8, 16], spectral_norm=spectral_norm)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert [parametrize.is_parametrized(m, "weight") for m in convs] == [spectral_norm] * 3
    if spectral_norm:
        for _ in range(5):  # a few power iterations (train mode) on top of the 15 at construction
            d(torch.rand(2, 3, 32, 32))
        sigmas = torch.stack([torch.linalg.matrix_norm(m.weight.flatten(1), ord=2) for m in convs])
        torch.testing.assert_close(sigmas, torch.ones(3), atol=0.03, rtol=0)
    else:
        # No normalisation at all: in train mode too, one call on a concatenation equals separate calls.
        x = torch.rand(4, 3, 32, 32)
        torch.testing.assert_close(d(torch.cat([x, 1 - x])), torch.cat([d(x), d(1 - x)]))


def test_every_config_file_builds() -> None:
    files = {(p.parent.name, p.stem) for p in CONF.glob("*/*.yaml") if p.parent.name in ("net", "discriminator")}
    # patch, mnist_tuned, generative: experiment=*_tuned
    nets = {("net", n) for n in ("report", "conv", "patch", "mnist_tuned", "generative")}
    discriminators = {("discriminator", n) for n in ("mlp", "conv", "classifier", "highpass")}
    assert files == nets | discriminators
    for group, name in sorted(files):
        assert "image_shape" not in OmegaConf.load(CONF / group / f"{name}.yaml")  # the data gives it
        out = build(group, name, (3, 32, 32))(torch.rand(2, 3, 32, 32))
        assert out.shape == ((2, 3, 32, 32) if group == "net" else (2,))


def test_the_patch_codes_start_is_the_tiles_principal_components() -> None:
    """``fit_pca``: images whose tiles are a per-channel mean plus a point of a 6-dimensional subspace come back
    exactly; on any images the code spans the 6 leading right singular vectors of the centred tiles (numpy's SVD)."""
    torch.manual_seed(0)
    net = PatchAutoencoder((3, 16, 16), patch=4, code_channels=6, eps=1e-6)
    coefficients = torch.randn(10 * 16, 6)
    coefficients -= coefficients.mean(0)
    tiles = torch.tensor([0.3, 0.5, 0.7]).repeat_interleave(16) + coefficients @ (0.02 * torch.randn(6, 48))
    images = nn.functional.fold(tiles.reshape(10, 16, 48).transpose(1, 2), (16, 16), 4, stride=4)
    net.fit_pca(images, batch_size=3)
    with torch.no_grad():
        torch.testing.assert_close(net.mean(images), images, atol=2e-5, rtol=0)

    images = torch.rand(8, 3, 16, 16)
    net.fit_pca(images)
    flat = nn.functional.unfold(images, 4, stride=4).transpose(1, 2).reshape(-1, 48).double().numpy()
    leading = torch.from_numpy(np.linalg.svd(flat - flat.mean(0))[2][:6])  # (6, 48), orthonormal rows
    rows = net.encoder.weight.detach().reshape(6, 48).double()
    torch.testing.assert_close(rows.T @ rows, leading.T @ leading, atol=1e-5, rtol=0)  # the same subspace
    torch.testing.assert_close(net.decoder.weight.detach().reshape(6, 48).double(), rows)  # pasted back by it


def test_the_patch_decoders_noise_has_the_second_moments_of_the_residual_tiles() -> None:
    """``fit_noise``: the basis ``B`` (one row per Gaussian coefficient) gives tiles of covariance ``B^T B``, which
    must equal the residual tiles' second moments, counted here tile by tile."""
    torch.manual_seed(0)
    net = PatchAutoencoder((3, 16, 16), patch=4, code_channels=8, noise=True).eval()
    images = (0.5 + 0.1 * torch.randn(10, 3, 16, 16)).clamp(0, 1)
    with torch.no_grad():
        net.decoder.weight.mul_(0.1), net.decoder.bias.fill_(0.5)  # pixels near 0.5: residuals of mean 0
        assert torch.equal(net(images), torch.logit(net.mean(images)))  # before a fit: no noise
        net.fit_noise(images, batch_size=3)
        residual = images - net.mean(images)
    tiles = [residual[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].reshape(-1) for i in range(10) for r in range(4)
             for c in range(4)]  # fmt: skip
    moments = sum(torch.outer(t, t).double() for t in tiles) / len(tiles)
    basis = net.noise_basis.reshape(48, 48).double()
    torch.testing.assert_close(basis.T @ basis, moments, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        draws = torch.stack([torch.sigmoid(net(images)) - net.mean(images) for _ in range(400)])  # (400, N, C, H, W)
    assert draws.std() > 0.05 and draws.mean().abs() < 0.005  # zero-mean noise, drawn anew each call
    assert torch.equal(net.train()(images), torch.logit(net.mean(images)))  # training fits the mean alone
    plain = PatchAutoencoder((3, 16, 16), patch=4, code_channels=8)
    assert "noise_basis" not in plain.state_dict() and "noise_basis" in net.state_dict()  # old checkpoints load


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32), (3, 5, 7)])
def test_the_high_pass_judge_maps_images_to_one_logit_and_sees_the_residual(image_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    judge = HighPassClassifier(image_shape, widths=[4, 8])
    x = torch.rand(5, *image_shape)
    assert judge(x).shape == (5,)
    torch.testing.assert_close(judge(torch.cat([x, 1 - x])), torch.cat([judge(x), judge(1 - x)]))  # mixes no images
    flat = torch.full((1, *image_shape), 0.5)
    seen = []
    judge.features[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    judge(flat)
    assert seen[0].shape[1] == 2 * image_shape[0] and not seen[0].any()  # a flat grey image: no residual, centred
    with pytest.raises(
        UserError, match=r"widths=\[0\] must list at least one positive width \(realism\.judges\.NAME\.widths"
    ):
        HighPassClassifier(image_shape, widths=[0])


def test_the_high_pass_judges_box_blur_is_the_3x3_mean_with_replicated_edges() -> None:
    """Against torch's 3x3 average pooling of the edge-replicated images, in both memory layouts, and by hand at a
    corner: the mean of (the corner 4 times, its two neighbours twice each, the diagonal once)."""
    images = torch.rand(4, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    expected = nn.functional.avg_pool2d(nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.testing.assert_close(box_blur(images.contiguous(memory_format=layout)), expected)
    x = images[0, 0]
    corner = (4 * x[0, 0] + 2 * x[0, 1] + 2 * x[1, 0] + x[1, 1]) / 9
    torch.testing.assert_close(box_blur(images)[0, 0, 0, 0], corner)
