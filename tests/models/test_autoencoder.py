"""RecursiveAutoencoder: the recursive training loss and the val/test metrics, against hand computations."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import REPORT_NET, data_and_model

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.models import RecursiveAutoencoder
from recursive_ae_gan.networks import Cifar10Autoencoder, MnistAutoencoder
from recursive_ae_gan.run.config import check

HAND_LOSSES = {"mse": F.mse_loss, "bce": F.binary_cross_entropy}


@pytest.mark.parametrize(
    ("net_class", "loss"), [(MnistAutoencoder, "mse"), (MnistAutoencoder, "bce"), (Cifar10Autoencoder, "bce")]
)
def test_recursive_loss_is_the_sum_over_steps(net_class: type[torch.nn.Module], loss: str) -> None:
    torch.manual_seed(0)
    model = RecursiveAutoencoder(REPORT_NET, net_class.image_shape, recursion_depth=2, loss=loss)
    assert type(model.net) is net_class  # the image shape picks the report's network
    x = torch.rand(4, *net_class.image_shape)
    # training_step checks the loss is finite through the trainer's strategy: attach one.
    model.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trained = model.training_step(x, 0)
    torch.testing.assert_close(model.training_log.last["train/loss_step"], trained.detach())

    # By hand: the net applied 1, 2 and 3 times, each step fed the previous step's image.
    hand, image = torch.zeros(()), x
    for _ in range(3):
        image = torch.sigmoid(model.net(image))
        hand = hand + HAND_LOSSES[loss](image, x)
    torch.testing.assert_close(trained, hand)

    # Gradients flow through the whole chain, as in the hand computation (no detach between steps).
    # Compared as one vector: biases before BatchNorm have zero gradient up to float32 noise.
    params = list(model.net.parameters())
    g_trained = torch.cat([g.flatten() for g in torch.autograd.grad(trained, params)])
    g_hand = torch.cat([g.flatten() for g in torch.autograd.grad(hand, params)])
    assert (g_trained - g_hand).norm() <= 1e-4 * g_hand.norm()


def test_forward_returns_images_of_every_step() -> None:
    torch.manual_seed(0)
    model = RecursiveAutoencoder(REPORT_NET, MnistAutoencoder.image_shape, recursion_depth=1).eval()
    x = torch.rand(3, 1, 28, 28)
    logits = model.reconstruct(x, depth=3)
    assert logits.shape == (4, 3, 1, 28, 28)
    images = model(x)
    assert images.shape == (2, 3, 1, 28, 28)
    torch.testing.assert_close(images, torch.sigmoid(logits[:2]))
    torch.testing.assert_close(model.reconstruct(images[0], depth=0)[0], logits[1])  # step 1 = AE(step 0)


def test_loss_defaults_to_the_networks_choice() -> None:
    assert RecursiveAutoencoder(REPORT_NET, MnistAutoencoder.image_shape).loss_name == "mse"
    assert RecursiveAutoencoder(REPORT_NET, Cifar10Autoencoder.image_shape).loss_name == "bce"
    assert RecursiveAutoencoder(REPORT_NET, MnistAutoencoder.image_shape, loss="bce").loss_name == "bce"


def test_checkpoint_hparams_rebuild_the_model(tmp_path) -> None:
    """The networks are built from plain configs in hparams: a checkpoint rebuilds the model with no arguments."""
    torch.manual_seed(0)
    model = RecursiveAutoencoder(REPORT_NET, Cifar10Autoencoder.image_shape, recursion_depth=1)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = RecursiveAutoencoder.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert type(loaded.net) is Cifar10Autoencoder and loaded.depth == 1 and loaded.loss_name == "bce"
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.loss=l1"], "model.loss='l1': expected one of mse, bce or null"),
        (["model.recursion_depth=-1"], "model.recursion_depth=-1: expected >= 0"),
    ],
)
def test_bad_settings_are_user_errors(compose_cfg, overrides: list[str], message: str) -> None:
    """Choices and ranges are the typed config check's, which train() runs before building anything."""
    with pytest.raises(UserError) as err:
        check(compose_cfg("model=rae", *overrides))
    assert str(err.value) == message


def test_eval_depth_below_the_trained_depth_is_a_user_error() -> None:
    with pytest.raises(UserError, match="model.eval_depth=1 must be >= model.recursion_depth=2"):
        RecursiveAutoencoder(REPORT_NET, MnistAutoencoder.image_shape, recursion_depth=2, eval_depth=1)


def test_test_metrics_match_a_hand_computation(compose_cfg) -> None:
    """Per-step metrics over the whole test split; the loss sums the trained steps only."""
    cfg = compose_cfg("model=rae", "model.recursion_depth=1", "model.eval_depth=2")
    datamodule, model = data_and_model(cfg)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.test(model, datamodule=datamodule, verbose=False)[0]

    model.eval()
    with torch.no_grad():
        x = datamodule.on_after_batch_transfer(datamodule.splits["test"], 0)
        steps = model(x, 2)  # (3, N, 1, 28, 28)
        batches = x.split(cfg.data.batch_size)
        variation = [  # per batch, weighted by batch size, as logged
            (model(b, 2).std(1, unbiased=False).flatten(1).mean(1) / b.std(0, unbiased=False).mean(), len(b))
            for b in batches
        ]
    mse = [F.mse_loss(step, x).item() for step in steps]
    for i, step in enumerate(steps):
        assert logged[f"test/step_{i}/mse"] == pytest.approx(mse[i], rel=1e-4)
        assert logged[f"test/step_{i}/bce"] == pytest.approx(F.binary_cross_entropy(step, x).item(), rel=1e-4)
        assert logged[f"test/step_{i}/psnr"] == pytest.approx(10 * math.log10(1 / mse[i]), rel=1e-4)
        hand_variation = sum(v[i].item() * n for v, n in variation) / len(x)
        assert logged[f"test/step_{i}/variation"] == pytest.approx(hand_variation, rel=1e-4)
    assert logged["test/loss"] == pytest.approx(mse[0] + mse[1], rel=1e-4)
    assert "test/step_3/mse" not in logged
