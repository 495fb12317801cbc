"""run.callbacks.FitNoise: a stochastic decoder's noise is fitted before every validation of a fit, so that the
checkpoint and the final test judge the noise of the weights they hold; run.callbacks.InitPCA: a fresh fit of the
tile autoencoder starts from its tiles' principal components."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import data_and_model, fit
from lightning.pytorch.callbacks import ModelCheckpoint

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks import PatchAutoencoder
from recursive_ae_gan.run.callbacks import InitPCA
from recursive_ae_gan.run.train import train
from recursive_ae_gan.run.trained import read_trained

NOISY_PATCH = ["data=cifar10", "model/net=patch", "model.net.noise=true", "callbacks=noise", "collapse_threshold=0"]


def test_the_noise_is_fitted_to_the_final_weights_before_the_checkpoint(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*NOISY_PATCH, "trainer.max_epochs=2")
    train(cfg)
    model = read_trained(tmp_path / "checkpoints" / "last.ckpt").model(0)
    fitted = model.net.noise_basis.clone()
    assert fitted.abs().sum() > 0  # noise, where a plain patch net has none
    datamodule, _ = data_and_model(cfg)
    model.net.fit_noise(datamodule.images("train").float() / 255)  # again, on the checkpoint's own weights
    torch.testing.assert_close(model.net.noise_basis, fitted)


class EncoderAtStart(L.Callback):
    """The encoder's weights as each fit's training starts (after every ``on_fit_start``)."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights.append(pl_module.net.encoder.weight.detach().clone())


def test_a_fresh_fit_starts_from_the_principal_components_and_a_continued_one_from_its_checkpoint(
    compose_cfg, tmp_path: Path
) -> None:
    cfg = compose_cfg("data=cifar10", "model/net=patch", "collapse_threshold=0", "trainer.max_epochs=1")
    datamodule, model = data_and_model(cfg)
    expected = PatchAutoencoder(datamodule.image_shape)
    expected.fit_pca(datamodule.images("train").float() / 255)
    starts, last = EncoderAtStart(), ModelCheckpoint(dirpath=tmp_path, filename="last")
    fit(datamodule, model, cfg.trainer, callbacks=[InitPCA(), starts, last])
    torch.testing.assert_close(starts.weights[0], expected.encoder.weight.detach())
    trained = model.net.encoder.weight.detach().clone()
    assert not torch.equal(trained, starts.weights[0])  # one epoch moved it

    datamodule, model = data_and_model(cfg)
    fit(datamodule, model, cfg.trainer, callbacks=[InitPCA(), starts], ckpt_path=tmp_path / "last.ckpt", max_epochs=2)
    torch.testing.assert_close(starts.weights[1], trained)  # the checkpoint's, not the components again


def test_a_pca_start_on_a_net_without_one_is_a_one_line_error(compose_cfg) -> None:
    cfg = compose_cfg("+callbacks.pca_init._target_=recursive_ae_gan.run.callbacks.InitPCA", "trainer.max_epochs=1")
    message = r"^callbacks.pca_init .*: MnistAutoencoder has none \(use model/net=patch\)$"
    with pytest.raises(UserError, match=message):
        train(cfg)
