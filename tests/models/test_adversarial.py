"""AdversarialAutoencoder in real (short) fits: which network each step moves, the policies, resuming.

The fixture's 64 training images in batches of 16 make 4 batches per epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import BATCHES, StepIsolation, all_moved, build, fit, none_moved, snapshot
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.stats import mannwhitneyu

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.models import AdversarialAutoencoder
from recursive_ae_gan.models.augment import random_translate
from recursive_ae_gan.run.config import check


def set_d_logits(model: AdversarialAutoencoder, logit: float) -> None:
    """Make D answer ``logit`` for every image: zero last-layer weights, bias ``logit``."""
    last = model.discriminator.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(logit)


class EpochSnapshots(L.Callback):
    """D's and the AE's parameters and global_step at the end of every training epoch."""

    def __init__(self) -> None:
        self.epochs: list[tuple[list[torch.Tensor], list[torch.Tensor], int]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: AdversarialAutoencoder) -> None:
        self.epochs.append((snapshot(pl_module.net), snapshot(pl_module.discriminator), trainer.global_step))


def test_warmup_trains_the_autoencoder_alone_then_both(compose_cfg) -> None:
    datamodule, model, trainer_cfg = build(compose_cfg, "model.warmup_epochs=1", "trainer.max_epochs=2")
    ae_start, d_start = snapshot(model.net), snapshot(model.discriminator)
    epochs = EpochSnapshots()
    fit(datamodule, model, trainer_cfg, [epochs])
    (ae_warm, d_warm, step_warm), (ae_game, d_game, step_game) = epochs.epochs
    # Warm-up: only the autoencoder moves, one optimizer step per batch.
    assert all_moved(ae_start, ae_warm) and none_moved(d_start, d_warm)
    assert step_warm == BATCHES
    # The game: both move, two optimizer steps per batch.
    assert all_moved(ae_warm, ae_game) and all_moved(d_warm, d_game)
    assert step_game == BATCHES + 2 * BATCHES


def test_each_optimizer_step_moves_only_its_network(compose_cfg) -> None:
    datamodule, model, trainer_cfg = build(
        compose_cfg, "model.warmup_epochs=0", "model.balance=alternate", "trainer.max_epochs=1"
    )
    isolation = StepIsolation()
    trainer = fit(datamodule, model, trainer_cfg, [isolation])
    names = [name for name, _, _ in isolation.events]
    assert names == ["d", "ae", "end"] * BATCHES  # D first, then the autoencoder, every batch
    for batch in range(BATCHES):
        (_, ae_0, d_0), (_, ae_1, d_1), (_, ae_2, d_2) = isolation.events[3 * batch : 3 * batch + 3]
        # D's step: D moves, the AE does not. The AE's step: the AE moves, D does not.
        assert none_moved(ae_0, ae_1) and all_moved(d_0, d_1)
        assert all_moved(ae_1, ae_2) and none_moved(d_1, d_2)
    assert trainer.global_step == 2 * BATCHES
    torch.testing.assert_close(model.adv_weights, torch.tensor([0.01]))  # only `target` moves them


@pytest.mark.parametrize(("logit", "frozen"), [(-50.0, True), (50.0, False)])
def test_report_policy_freezes_d_while_it_tells_fakes(compose_cfg, logit: float, frozen: bool) -> None:
    """D saying "fake" to everything is 100% accurate on fakes: frozen; saying "real": 0%, trained."""
    datamodule, model, trainer_cfg = build(
        compose_cfg, "model.warmup_epochs=0", "model.balance=report", "trainer.max_epochs=1"
    )
    set_d_logits(model, logit)
    ae_start, d_start = snapshot(model.net), snapshot(model.discriminator)
    trainer = fit(datamodule, model, trainer_cfg)
    assert all_moved(ae_start, snapshot(model.net))
    assert none_moved(d_start, snapshot(model.discriminator)) is frozen
    assert trainer.global_step == (1 if frozen else 2) * BATCHES
    assert trainer.callback_metrics["train/d_frozen"].item() == float(frozen)


@pytest.mark.parametrize(("logit", "rate"), [(-50.0, 0.0), (50.0, 1.0)])
def test_target_policy_moves_adv_weights(compose_cfg, logit: float, rate: float) -> None:
    """Fool rate 0: every step's weight rises by gain/2 per batch; fool rate 1: it falls as much."""
    datamodule, model, trainer_cfg = build(
        compose_cfg, "model=rae_gan", "model.warmup_epochs=0", "model.balance=target", "trainer.max_epochs=1"
    )
    set_d_logits(model, logit)  # D's 4 steps of lr 1e-3 cannot flip a logit of 50
    trainer = fit(datamodule, model, trainer_cfg)
    gain, start = model.hparams.target_gain, model.hparams.adv_weight
    expected = start + BATCHES * gain * (0.5 - rate)
    torch.testing.assert_close(model.adv_weights, torch.full((3,), expected))
    assert trainer.callback_metrics["train/step_2/fool_rate"].item() == rate


class CaptureStart(L.Callback):
    """What the trainer holds when training (re)starts: optimizer states, adv_weights, step."""

    def on_train_start(self, trainer: L.Trainer, pl_module: AdversarialAutoencoder) -> None:
        self.optimizer_states = [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]
        self.adv_weights = pl_module.adv_weights.clone()
        self.global_step = trainer.global_step


def assert_same_state(restored: dict, saved: dict) -> None:
    assert restored["param_groups"] == saved["param_groups"]
    assert restored["state"].keys() == saved["state"].keys() and saved["state"]
    for key, state in saved["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(restored["state"][key][name], value, rtol=0, atol=0)


RESUME_OVERRIDES = ("model.warmup_epochs=1", "model.balance=target", "trainer.max_epochs=2")


def train_then_resume(
    compose_cfg, tmp_path: Path, callbacks: Sequence[L.Callback] = ()
) -> tuple[dict, AdversarialAutoencoder, L.Trainer]:
    """Two epochs (warm-up, then the game) saved to last.ckpt, then resumed to a third."""
    datamodule, model, trainer_cfg = build(compose_cfg, *RESUME_OVERRIDES)
    fit(datamodule, model, trainer_cfg, [ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)])
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    datamodule, resumed, trainer_cfg = build(compose_cfg, *RESUME_OVERRIDES)
    trainer = fit(datamodule, resumed, trainer_cfg, callbacks, ckpt_path=last, max_epochs=3)
    return saved, resumed, trainer


def test_resume_restores_both_optimizers_and_adv_weights(compose_cfg, tmp_path: Path) -> None:
    start = CaptureStart()
    saved, _, trainer = train_then_resume(compose_cfg, tmp_path, [start])
    assert saved["epoch"] == 1 and saved["global_step"] == 3 * BATCHES
    assert not torch.equal(saved["state_dict"]["adv_weights"], torch.tensor([0.01]))  # the game moved them
    assert len(start.optimizer_states) == len(saved["optimizer_states"]) == 2
    for restored, state in zip(start.optimizer_states, saved["optimizer_states"], strict=True):
        assert_same_state(restored, state)
    assert torch.equal(start.adv_weights, saved["state_dict"]["adv_weights"])
    assert start.global_step == saved["global_step"]
    assert trainer.global_step == saved["global_step"] + 2 * BATCHES


def test_resume_continues_exactly_like_an_uninterrupted_run(compose_cfg, tmp_path: Path) -> None:
    """Nothing in training is random but the data order, a function of (seed, epoch): resuming
    at an epoch end must give bit-identical weights."""
    _, resumed, _ = train_then_resume(compose_cfg, tmp_path)
    datamodule, straight, trainer_cfg = build(compose_cfg, *RESUME_OVERRIDES)
    fit(datamodule, straight, trainer_cfg, max_epochs=3)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_configured_schedulers_are_stepped_by_hand_once_per_epoch(compose_cfg) -> None:
    """Manual optimization steps no scheduler by itself: the module steps both, once per epoch.

    D's schedule starts with the game: in the warm-up epoch only the autoencoder's scheduler steps."""
    scheduler = "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:1,gamma:0.5}"
    datamodule, model, trainer_cfg = build(compose_cfg, scheduler, "model.warmup_epochs=1")
    trainer = fit(datamodule, model, trainer_cfg, max_epochs=2)
    ae_lr, d_lr = (opt.param_groups[0]["lr"] for opt in trainer.optimizers)
    assert ae_lr == pytest.approx(model.hparams.lr / 4)  # stepped after both epochs
    assert d_lr == pytest.approx(model.hparams.d_lr / 2)  # stepped after the game's epoch only
    assert [s.scheduler.last_epoch for s in trainer.lr_scheduler_configs] == [2, 1]


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (C, H, W) moved down ``dy`` and right ``dx`` pixels, zeros where nothing moved in: pixel by pixel."""
    out = torch.zeros_like(image)
    _, h, w = image.shape
    for row in range(h):
        for col in range(w):
            if 0 <= row - dy < h and 0 <= col - dx < w:
                out[:, row, col] = image[:, row - dy, col - dx]
    return out


def test_random_translate_shifts_each_image_by_its_own_offset_with_a_zero_border() -> None:
    x = torch.rand(6, 3, 5, 7, requires_grad=True)
    torch.manual_seed(1)
    out = random_translate(x, 2)
    torch.manual_seed(1)
    offsets = torch.randint(-2, 3, (2, 6)).T.tolist()  # the draw random_translate makes: dy, then dx, per image
    assert len({tuple(o) for o in offsets}) > 1  # the images do move differently
    for image, result, (dy, dx) in zip(x.detach(), out.detach(), offsets, strict=True):
        torch.testing.assert_close(result, shifted(image, dy, dx), rtol=0, atol=0)
    out.sum().backward()  # differentiable: each kept pixel passes its gradient back to where it came from
    kept = torch.stack([shifted(torch.ones(3, 5, 7), -dy, -dx) for dy, dx in offsets])
    torch.testing.assert_close(x.grad, kept)


class DiscriminatorInputs(L.Callback):
    """The batch of every training and validation step, and every image batch D was called on."""

    def __init__(self, model: AdversarialAutoencoder) -> None:
        self.batches: dict[str, torch.Tensor] = {}
        self.d_inputs: list[tuple[str, torch.Tensor]] = []
        self.stage = ""
        model.discriminator.register_forward_pre_hook(lambda _, args: self.d_inputs.append((self.stage, args[0])))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.stage, self.batches["train"] = "train", batch

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.stage, self.batches["val"] = "val", batch


def test_d_translate_moves_what_d_sees_in_training_only(compose_cfg) -> None:
    datamodule, model, trainer_cfg = build(
        compose_cfg, "model.warmup_epochs=0", "model.d_translate=3", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
    )  # fmt: skip
    seen = DiscriminatorInputs(model)
    fit(datamodule, model, trainer_cfg, [seen])
    train_d, val_d = ([x for stage, x in seen.d_inputs if stage == s] for s in ("train", "val"))
    real, val_real = seen.batches["train"], seen.batches["val"]
    # Training: D's first call judges the real batch, each image shifted by at most 3 pixels, not all alike.
    offsets = []
    for image, judged in zip(real, train_d[0][: len(real)], strict=True):
        matches = [
            (dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if torch.equal(shifted(image, dy, dx), judged)
        ]
        assert matches, "D saw an image that is no shift of the real one"
        offsets.append(matches[0])
    assert len(set(offsets)) > 1
    # Validation: D judges the images as they are.
    torch.testing.assert_close(val_d[0][: len(val_real)], val_real, rtol=0, atol=0)


def test_the_game_settings_are_checked_in_one_line(compose_cfg) -> None:
    with pytest.raises(UserError, match=r"^model.d_translate=-1: expected >= 0$"):
        check(compose_cfg("model=rae_gan", "model.d_translate=-1"))
    with pytest.raises(InstantiationException) as error:  # Hydra wraps it; train() prints the cause, one line
        build(compose_cfg, "model=rae_gan", "model.warmup_epochs=1", "model.recursion_warmup_epochs=2")
    assert str(error.value.__cause__) == (
        "model.recursion_warmup_epochs=2 must be <= model.warmup_epochs=1: the game judges every step 0..k, so the "
        "recursion must train before it starts"
    )


def test_d_threshold_free_view_at_test_matches_an_independent_computation(compose_cfg) -> None:
    """``test/step_i/d_auc`` and ``d_balanced_acc``: the final D's ROC AUC and balanced accuracy of real test images
    against step i's reconstructions, recomputed here from D's logits with scipy."""
    datamodule, model, trainer_cfg = build(
        compose_cfg, "model=rae_gan", "model.warmup_epochs=0", "trainer.max_epochs=1"
    )
    trainer = fit(datamodule, model, trainer_cfg)
    trainer.test(model, datamodule=datamodule, verbose=False)
    x = datamodule.images("test").float() / 255
    model.eval()
    with torch.no_grad():
        steps = model(x, model.eval_depth)
        real = model.discriminator(x)
        for i, images in enumerate(steps):
            fake = model.discriminator(images)
            auc = mannwhitneyu(real.numpy(), fake.numpy()).statistic / (len(real) * len(fake))
            balanced = ((real > 0).float().mean() + (fake <= 0).float().mean()) / 2
            assert float(trainer.callback_metrics[f"test/step_{i}/d_auc"]) == pytest.approx(auc, abs=1e-6)
            assert float(trainer.callback_metrics[f"test/step_{i}/d_balanced_acc"]) == pytest.approx(float(balanced))


OWN_D_SCHEDULE = "{_target_:torch.optim.lr_scheduler.StepLR,step_size:1,gamma:0.1}"


@pytest.mark.parametrize(("d_scheduler", "d_lr_factor"), [(None, 0.5**2), (OWN_D_SCHEDULE, 0.1**2)])
def test_d_follows_its_own_schedule_or_the_autoencoders_from_the_game_on(compose_cfg, d_scheduler, d_lr_factor) -> None:
    """Warm-up 1 of 3 epochs, the autoencoder halving its rate every epoch: D's schedule (its own, or the
    autoencoder's when model.d_scheduler is null) steps in the game's 2 epochs only."""
    overrides = ["model.warmup_epochs=1", "trainer.max_epochs=3", "model.lr=0.004", "model.d_lr=0.002"]
    overrides.append("model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:1,gamma:0.5}")
    if d_scheduler is not None:
        overrides.append(f"model.d_scheduler={d_scheduler}")
    datamodule, model, trainer_cfg = build(compose_cfg, *overrides)
    trainer = fit(datamodule, model, trainer_cfg)
    opt_ae, opt_d = trainer.optimizers
    assert opt_ae.param_groups[0]["lr"] == pytest.approx(0.004 * 0.5**3)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.002 * d_lr_factor)


def test_r1_penalises_ds_gradient_at_real_images(compose_cfg) -> None:
    """The same first game step with and without R1: D moves differently, the autoencoder's step does not see it,
    and the penalty is logged."""
    game = ["model.warmup_epochs=0", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "model.d_lr=0.01"]
    results = {}
    for gamma in (0.0, 10.0):
        datamodule, model, trainer_cfg = build(compose_cfg, *game, f"model.r1_gamma={gamma}")
        trainer = fit(datamodule, model, trainer_cfg)
        results[gamma] = (snapshot(model.discriminator), trainer.callback_metrics)
    (d_plain, plain_metrics), (d_r1, r1_metrics) = results[0.0], results[10.0]
    assert not none_moved(d_plain, d_r1)  # a different D update (R1 does not depend on the biases)
    assert "train/r1" not in plain_metrics and float(r1_metrics["train/r1"]) > 0
    assert float(r1_metrics["train/d_loss"]) == pytest.approx(
        float(plain_metrics["train/d_loss"])
    )  # same batch, same D
