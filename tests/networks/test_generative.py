"""The generative tile decoder (``model/net=generative``): the autoencoder contract, its noise, its start at the linear
code, its one-line errors; and the experiment that plays it against the high-pass discriminator, which composes
and fits on the fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks import GenerativeAutoencoder, HighPassClassifier, PatchAutoencoder
from recursive_ae_gan.run.train import train

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


def test_the_config_builds_the_reports_code_and_returns_logits() -> None:
    torch.manual_seed(0)
    net = instantiate(OmegaConf.load(CONF / "net" / "generative.yaml"), image_shape=[3, 32, 32])
    assert type(net) is GenerativeAutoencoder and net.default_loss == "bce"
    x = torch.rand(5, 3, 32, 32)
    assert net.encoder(x).shape == (5, 64, 4, 4) and net.code_size == 1024  # the report's 64x4x4
    logits = net(x)
    assert logits.shape == (5, 3, 32, 32) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    discriminator = instantiate(OmegaConf.load(CONF / "discriminator" / "highpass.yaml"), image_shape=[3, 32, 32])
    assert type(discriminator) is HighPassClassifier and discriminator(torch.sigmoid(logits)).shape == (5,)


def test_a_fresh_detail_network_decodes_the_linear_code_exactly() -> None:
    """The PCA start: with the detail network's last conv at zero, the decoder is ``PatchAutoencoder``'s linear code
    fitted the same way, at every call and whatever the noise."""
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    generative = GenerativeAutoencoder((3, 16, 16), patch=4, code_channels=8, eps=1e-6, width=4, blocks=1)
    linear = PatchAutoencoder((3, 16, 16), patch=4, code_channels=8, eps=1e-6)
    generative.fit_pca(images)
    linear.fit_pca(images)
    with torch.no_grad():
        for net in (generative.train(), generative.eval()):
            torch.testing.assert_close(net(images), linear(images), atol=1e-6, rtol=0)
            torch.testing.assert_close(net(images), torch.logit(net.mean(images)), atol=0, rtol=0)


def test_the_noise_is_drawn_anew_in_training_and_evaluation_and_makes_the_detail() -> None:
    torch.manual_seed(0)
    net = GenerativeAutoencoder((3, 16, 16), patch=4, code_channels=8, width=8, blocks=1)
    nn.init.normal_(net.detail[-1].weight, std=0.1)  # a trained detail network: its output is not zero
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        for mode in (net.train(), net.eval()):
            first, second = mode(x), mode(x)
            assert (first - second).abs().mean() > 1e-3  # two draws of the same code differ
        torch.manual_seed(1)
        seeded = net(x)
        torch.manual_seed(1)
        torch.testing.assert_close(net(x), seeded, atol=0, rtol=0)  # the draws follow torch's seed

        deterministic = GenerativeAutoencoder((3, 16, 16), patch=4, code_channels=8, noise_channels=0, width=8)
        nn.init.normal_(deterministic.detail[-1].weight, std=0.1)
        assert torch.equal(deterministic(x), deterministic(x))  # no noise channel: one image per code
        assert (deterministic(x) - torch.logit(deterministic.mean(x))).abs().mean() > 1e-3  # still nonlinear


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: GenerativeAutoencoder((3, 32, 32), noise_channels=-1), "model.net.noise_channels=-1"),
        (lambda: GenerativeAutoencoder((3, 32, 32), width=0), "model.net.width=0"),
        (lambda: GenerativeAutoencoder((3, 32, 32), blocks=-1), "model.net.blocks=-1"),
        (lambda: GenerativeAutoencoder((1, 28, 28)), "model.net.patch=8"),  # the tile code's own check
    ],
)
def test_bad_settings_are_one_line_errors(make, says: str) -> None:
    with pytest.raises(UserError, match=says):
        make()


def test_the_generative_experiment_composes_and_fits_on_the_fixtures(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "experiment=cifar10_rae_gan_generative_tuned", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "collapse_threshold=0", "logger=csv",
    )  # fmt: skip
    assert cfg.model.net._target_.endswith("GenerativeAutoencoder")
    assert cfg.model.discriminator._target_.endswith("HighPassClassifier") and cfg.model.r1_gamma > 0
    assert cfg.model.recursion_depth == 2 and cfg.model.adv_weight > 0 and cfg.model.warmup_epochs == 0
    result = train(cfg)
    assert result["status"] == "ok" and torch.isfinite(torch.tensor(result["score"]))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4  # two batches of the game, two optimizer steps each
    detail = last["state_dict"]["net.detail.4.weight"]
    assert detail.abs().sum() > 0  # the game moved the detail network off its zero start
