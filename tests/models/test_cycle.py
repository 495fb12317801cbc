"""The report's depth cycling (section 4.3, ``model.depth_schedule=cycle``) against an independent count."""

from __future__ import annotations

from collections import Counter

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from recursive_ae_gan.models.losses import cycle_depths, reconstruction_losses


@pytest.mark.parametrize(("depth", "batch_size"), [(1, 4), (2, 16), (2, 7), (3, 5)])
def test_one_cycle_of_batches_trains_each_depth_on_an_equal_share(depth: int, batch_size: int) -> None:
    """Over depth + 1 consecutive batches, every step trains exactly batch_size images: 1 / (depth + 1)."""
    for first_batch in (0, 5):
        counts = Counter()
        for batch_idx in range(first_batch, first_batch + depth + 1):
            counts.update(cycle_depths(batch_size, depth, batch_idx).tolist())
        assert counts == {step: batch_size for step in range(depth + 1)}
    # The report's order: image after image the depth goes 0, 1, 2, 0, ...; the next batch starts one later.
    assert cycle_depths(5, 2, 0).tolist() == [0, 1, 2, 0, 1] and cycle_depths(5, 2, 1).tolist() == [1, 2, 0, 1, 2]


def test_cycle_loss_averages_each_step_over_its_own_images() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(3, 7, 1, 4, 4), torch.rand(7, 1, 4, 4)
    depths = cycle_depths(7, 2, batch_idx=4)
    losses = reconstruction_losses(logits, target, "bce", depths)
    for step in range(3):  # an independent computation, image by image
        mine = [j for j in range(7) if (4 + j) % 3 == step]
        per_image = [torch.nn.functional.binary_cross_entropy_with_logits(logits[step, j], target[j]) for j in mine]
        torch.testing.assert_close(losses[step], torch.stack(per_image).mean())


@pytest.mark.parametrize("model", ["rae", "rae_gan"])
def test_cycle_schedule_trains_rae_and_rae_gan(compose_cfg, model: str) -> None:
    cfg = compose_cfg(f"model={model}", "model.depth_schedule=cycle", "trainer.max_epochs=2",
                      *(["model.warmup_epochs=1"] if model == "rae_gan" else []))  # fmt: skip
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    L.seed_everything(0)
    net = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    before = [p.detach().clone() for p in net.net.parameters()]
    seen, schedule = [], net.training_losses

    def spy(logits: torch.Tensor, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        seen.append(batch_idx)
        return schedule(logits, x, batch_idx)

    net.training_losses = spy
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.fit(net, datamodule=datamodule)
    assert seen == [0, 1, 2, 3] * 2  # the cycle's phase follows the batch index
    assert all(not torch.equal(b, a) for b, a in zip(before, net.net.parameters(), strict=True))
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
