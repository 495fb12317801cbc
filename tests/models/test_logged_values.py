"""What the models hand to the loggers in a short fit: the per-step curves' points at the logging cadence
(``trainer.log_every_n_steps``), the epoch means equal to the mean of the steps' values, and validation's and
test's keys and losses, for the AE, the RAE and the game. Every logger (TensorBoard, CSV, MLflow, W&B) receives
what ``Logger.log_metrics`` receives here."""

from __future__ import annotations

import copy
from collections.abc import Callable
from statistics import fmean

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import data_and_model
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from recursive_ae_gan.models.training_log import TrainingLog

EPOCHS, BATCHES = 2, 4  # the fixture's 64 training images in batches of 16
MODELS = {
    "ae": ["model=ae"],
    "rae": ["model=rae", "model.recursion_depth=2"],
    "ae_gan": ["model=ae_gan", "model.warmup_epochs=1"],  # epoch 0 reconstructs, epoch 1 plays the game
    "rae_gan": ["model=rae_gan", "model.recursion_depth=1", "model.warmup_epochs=1"],
}
GAME_KEYS = ["train/rec_loss", "train/g_loss", "train/d_loss", "train/d_real_acc", "train/d_frozen"]
GAME_STEP_KEYS = ["fool_rate", "d_fake_mean", "adv_weight"]


class Recorder(Logger):
    """Keeps every ``log_metrics`` call: ``(step, {key: value})``."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """Not what this test reads."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def with_key(self, key: str) -> list[tuple[int, dict[str, float]]]:
        return [(step, metrics) for step, metrics in self.records if key in metrics]


class ValidatedNets(L.Callback):
    """The autoencoder as each validation of the fit (not the sanity check) sees it."""

    def __init__(self) -> None:
        self.nets: list[torch.nn.Module] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.nets.append(copy.deepcopy(pl_module.net))


class AdvWeights(L.Callback):
    """The game's adversarial weights after each training batch (the policy moves them in place every batch)."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, *args) -> None:
        if hasattr(pl_module, "adv_weights"):
            self.weights.append(pl_module.adv_weights.clone())


def logged_fit(compose_cfg: Callable[..., DictConfig], model: str, every: int):
    """A seeded fit of ``EPOCHS`` epochs with validation, then a test, logging every ``every`` batches."""
    cfg = compose_cfg(*MODELS[model], f"trainer.max_epochs={EPOCHS}", f"trainer.log_every_n_steps={every}")
    datamodule, module = data_and_model(cfg)
    recorder, validated, weights = Recorder(), ValidatedNets(), AdvWeights()
    trainer = instantiate(cfg.trainer, logger=recorder, callbacks=[validated, weights], enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    progress_bar = dict(trainer.progress_bar_metrics)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return recorder, validated.nets, module, datamodule, progress_bar, weights.weights


def hand_loss(net: torch.nn.Module, images: torch.Tensor, depth: int) -> float:
    """The MNIST report net's (mse) loss summed over steps 0..depth, each step fed the previous one's image,
    in eval mode, over the whole split at once (its batches are of one size: the mean of their means)."""
    x = images.float() / 255
    total, image = 0.0, x
    with torch.no_grad():
        net.eval()
        for _ in range(depth + 1):
            image = torch.sigmoid(net(image))
            total += F.mse_loss(image, x).item()
    return total


@pytest.mark.parametrize("model", MODELS)
def test_logged_points_and_epoch_means(compose_cfg, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    every_step, _, module, datamodule, _, adv_weights = logged_fit(compose_cfg, model, every=1)
    # The cadenced fit also folds its batches' values into the epoch's sums within the epoch (after batch 3 of 4),
    # not only at its end: its means must not change.
    monkeypatch.setattr(TrainingLog, "FOLD_EVERY", 3)
    cadenced, validated_nets, cadenced_module, _, progress_bar, _ = logged_fit(compose_cfg, model, every=3)
    depth, game = module.depth, model.endswith("gan")
    per_step_keys = {"train/loss_step", *(f"train/step_{i}/rec_loss" for i in range(depth + 1) if depth)}

    # Per-step points: every batch at log_every_n_steps=1, every third batch at 3, each the batch's own values.
    points = dict(every_step.with_key("train/loss_step"))
    assert sorted(points) == list(range(EPOCHS * BATCHES))
    assert all(set(values) == per_step_keys | {"epoch"} for values in points.values())
    assert all(values["epoch"] == step // BATCHES for step, values in points.items())
    cadenced_points = dict(cadenced.with_key("train/loss_step"))
    assert sorted(cadenced_points) == [step for step in range(EPOCHS * BATCHES) if (step + 1) % 3 == 0]
    for step, values in cadenced_points.items():
        assert values == pytest.approx(points[step], rel=1e-6), step
    # The progress bar shows the last point's loss, a number read from host memory.
    last = cadenced_points[max(cadenced_points)]["train/loss_step"]
    assert progress_bar["train/loss_step"] == pytest.approx(last, rel=1e-6)
    if depth:  # the reconstruction's loss is the sum of its steps' (the game's adds the adversarial loss)
        for values in (values for values in points.values() if not (game and values["epoch"] >= 1)):
            total = sum(values[f"train/step_{i}/rec_loss"] for i in range(depth + 1))
            assert values["train/loss_step"] == pytest.approx(total, rel=1e-5)

    # Epoch means: one record per epoch, equal to the mean of that epoch's points.
    for recorder in (every_step, cadenced):
        epochs = [values for _, values in recorder.with_key("train/loss_epoch")]
        assert [values["epoch"] for values in epochs] == list(range(EPOCHS))
        for epoch, values in enumerate(epochs):
            losses = [points[step]["train/loss_step"] for step in range(epoch * BATCHES, (epoch + 1) * BATCHES)]
            assert values["train/loss_epoch"] == pytest.approx(fmean(losses), rel=1e-6)
            game_keys = set()
            if game and epoch >= 1:
                steps = range(depth + 1)
                game_keys = {*GAME_KEYS, *(f"train/step_{i}/{name}" for i in steps for name in GAME_STEP_KEYS)}
                # The game's loss is the reconstruction's plus the adversarial one: so are their means.
                total = values["train/rec_loss"] + values["train/g_loss"]
                assert values["train/loss_epoch"] == pytest.approx(total, rel=1e-5)
                assert 0 <= values["train/d_real_acc"] <= 1 and values["train/d_frozen"] in (0.0, 1.0)
                # Each batch's weights as the policy left them then, though it moves them in place every batch.
                batches = torch.stack(adv_weights[epoch * BATCHES : (epoch + 1) * BATCHES])
                for i, weight in enumerate(batches.mean(0).tolist()):
                    assert values[f"train/step_{i}/adv_weight"] == pytest.approx(weight, rel=1e-6)
            assert set(values) == {"train/loss_epoch", "epoch"} | game_keys

    # Validation after every epoch and the test: every metric's key once, the loss as computed by hand.
    metric_names = list(module.metrics["val"][0])
    for split, expected_nets in (("val", validated_nets), ("test", [cadenced_module.net])):
        expected_keys = {
            f"{split}/loss",
            *(f"{split}/step_{i}/{name}" for i in range(depth + 1) for name in metric_names),
        }
        expected_keys |= set(module.game_metrics[split]) if game else set()  # keyed as logged
        records = [values for _, values in cadenced.with_key(f"{split}/loss")]
        assert len(records) == len(expected_nets) == (EPOCHS if split == "val" else 1)
        for values, net in zip(records, expected_nets, strict=True):
            assert set(values) - {"epoch"} == expected_keys
            hand = hand_loss(net, datamodule.images(split), depth)
            assert values[f"{split}/loss"] == pytest.approx(hand, rel=1e-5)
