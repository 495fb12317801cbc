"""run.callbacks.FitNoise: a stochastic decoder's noise is fitted before every validation of a fit, so that the
checkpoint and the final test judge the noise of the weights they hold."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import data_and_model

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
