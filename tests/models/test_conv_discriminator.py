"""The convolutional discriminator in the game: each optimizer step moves only its own network, every balance
policy and recursion depth runs, and the fool rates mean what they mean with the report's MLP."""

from __future__ import annotations

import pytest
import torch
from helpers import BATCHES, StepIsolation, all_moved, build, fit, none_moved

from recursive_ae_gan.networks import ConvDiscriminator

CONV = (
    "model/discriminator=conv",
    "model.discriminator.widths=[8,16]",
    "model.warmup_epochs=0",
    "trainer.max_epochs=1",
)


def test_each_optimizer_step_moves_only_its_network_with_the_conv_discriminator(compose_cfg) -> None:
    datamodule, model, trainer_cfg = build(compose_cfg, *CONV, "model.balance=alternate")
    assert isinstance(model.discriminator, ConvDiscriminator)
    isolation = StepIsolation()
    trainer = fit(datamodule, model, trainer_cfg, [isolation])
    assert [name for name, _, _ in isolation.events] == ["d", "ae", "end"] * BATCHES
    for batch in range(BATCHES):
        (_, ae_0, d_0), (_, ae_1, d_1), (_, ae_2, d_2) = isolation.events[3 * batch : 3 * batch + 3]
        assert none_moved(ae_0, ae_1) and all_moved(d_0, d_1)  # D's step
        assert all_moved(ae_1, ae_2) and none_moved(d_1, d_2)  # the autoencoder's step
    assert trainer.global_step == 2 * BATCHES


@pytest.mark.parametrize("balance", ["alternate", "report", "target"])
def test_every_policy_and_depth_plays_with_the_conv_discriminator(compose_cfg, balance: str) -> None:
    datamodule, model, trainer_cfg = build(compose_cfg, *CONV, "model=rae_gan", f"model.balance={balance}")
    trainer = fit(datamodule, model, trainer_cfg)
    assert {f"train/step_{s}/fool_rate" for s in range(3)} <= trainer.callback_metrics.keys()
    (tested,) = trainer.test(model, datamodule=datamodule, verbose=False)
    # The fool rate is the share of a step's reconstructions that D calls real, one logit per image.
    images = datamodule.on_after_batch_transfer(datamodule.images("test"), 0)
    model.eval()
    with torch.no_grad():
        steps = model(images, 2)  # (S, B, C, H, W)
        for step in range(3):
            called_real = (torch.sigmoid(model.discriminator(steps[step])) > 0.5).float().mean()
            assert tested[f"test/step_{step}/fool_rate"] == pytest.approx(called_real.item(), abs=1e-6)
