"""The real configs: every data x model combination composes and trains; the trainer group is complete."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import lightning as L
import pytest
from helpers import CONF_DIR, DATASET_CLASSES, data_and_model
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from recursive_ae_gan.models import AdversarialAutoencoder, RecursiveAutoencoder
from recursive_ae_gan.networks import Cifar10Autoencoder, MLPDiscriminator, MnistAutoencoder
from recursive_ae_gan.run.train import train

NETS = {"mnist": (MnistAutoencoder, "mse"), "cifar10": (Cifar10Autoencoder, "bce")}
DEPTHS = {"ae": 0, "rae": 2, "ae_gan": 0, "rae_gan": 2}


@pytest.mark.parametrize("model", list(DEPTHS))
@pytest.mark.parametrize("data", list(NETS))
def test_every_combination_composes_and_trains(compose_cfg, tmp_path: Path, data: str, model: str) -> None:
    adversarial = model.endswith("_gan")
    # One batch each way; 0: no warm-up, so the game itself runs. A one-step model is nearly
    # constant, which is not what this test is about: collapse_threshold=0.
    extra = ["model.warmup_epochs=0"] if adversarial else []
    cfg = compose_cfg(f"data={data}", f"model={model}", "trainer.fast_dev_run=true", "collapse_threshold=0", *extra)

    _, built = data_and_model(cfg)
    net_class, loss = NETS[data]
    assert cfg.data.dataset == DATASET_CLASSES[data] and cfg.model.net._target_.endswith(".report_autoencoder")
    assert type(built) is (AdversarialAutoencoder if adversarial else RecursiveAutoencoder)
    assert type(built.net) is net_class and built.loss_name == loss and built.depth == DEPTHS[model]
    assert isinstance(getattr(built, "discriminator", None), MLPDiscriminator) is adversarial

    result = train(cfg)
    depth = DEPTHS[model]
    assert result["status"] == "ok" and result["score_name"] == f"test/step_0/{loss}"
    assert result["score"] == result[f"test/step_0/{loss}"] > 0
    assert {f"test/step_{depth}/{m}" for m in ("mse", "bce", "psnr", "ssim", "variation")} <= result.keys()
    assert f"test/step_{depth + 1}/mse" not in result
    assert ("test/d_real_acc" in result and f"test/step_{depth}/fool_rate" in result) is adversarial
    assert json.loads((tmp_path / "metrics.json").read_text()) == result


def test_rae_on_cifar10_picks_its_network_and_loss(compose_cfg) -> None:
    cfg = compose_cfg("model=rae", "data=cifar10")
    # data=cifar10 selects the report's networks (model/net=report); the image shape picks the CIFAR10 one.
    assert cfg.model.net._target_ == "recursive_ae_gan.networks.report_autoencoder" and cfg.model.loss is None
    datamodule, model = data_and_model(cfg)
    assert datamodule.image_shape == (3, 32, 32) and model.hparams.image_shape == [3, 32, 32]
    assert type(model.net) is Cifar10Autoencoder and model.loss_name == "bce" and model.depth == 2


def test_trainer_config_lists_every_trainer_argument() -> None:
    """Any ``trainer.X=`` override works only if X is in the config (struct mode)."""
    trainer = OmegaConf.load(Path(CONF_DIR, "trainer", "default.yaml"))
    listed = set(trainer) - {"_target_", "defaults"}  # defaults: the trainer/strategy group
    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    passed_by_train = {"callbacks", "logger"}  # train() instantiates these from their own groups
    assert listed == arguments - passed_by_train


def test_unknown_override_keys_are_rejected(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose_cfg("trainer.max_epoch=1")


@pytest.mark.parametrize(
    ("overrides", "accelerator", "strategy", "devices", "precision"),
    [
        (["trainer=gpu", "trainer/strategy=ddp", "trainer.devices=4"], "gpu", "ddp", 4, "bf16-mixed"),
        (["trainer/strategy=ddp", "trainer=gpu"], "gpu", "ddp", 2, "bf16-mixed"),  # the order does not matter
        (["trainer=cpu", "trainer/strategy=ddp"], "cpu", "ddp", 2, "32-true"),
        (["trainer=ddp", "trainer.devices=3"], "auto", "ddp", 3, "32-true"),
        (["trainer=gpu"], "gpu", "auto", 1, "bf16-mixed"),
    ],
)
def test_accelerator_and_strategy_are_separate_choices(overrides, accelerator, strategy, devices, precision) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        trainer = compose("train", overrides).trainer
    assert (trainer.accelerator, trainer.strategy, trainer.devices, trainer.precision) == (
        accelerator, strategy, devices, precision
    )  # fmt: skip
