"""A non-finite training loss stops the run, with one line, status "diverged" and a finite last.ckpt.

On the CPU the device's flag is read every batch (the run stops at the failing step); with
``model.divergence_check_every=N`` it is read every N batches, and no update is applied in between.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import HostReads, assert_one_line_error, data_and_model, run_cli_forked, run_dir
from hydra.utils import instantiate
from torch.nn.utils import parameters_to_vector
from torch.utils._pytree import tree_flatten

from recursive_ae_gan.core.errors import DivergedError
from recursive_ae_gan.models.divergence import DivergenceGuard


@pytest.mark.parametrize(
    ("overrides", "loss"),
    [
        (["model.lr=1e30"], "training loss"),
        # D's first step (lr 1e30) throws its logits to infinity: the autoencoder's adversarial loss is the first
        # to become non-finite, in the same batch, before the autoencoder's step.
        (["model=ae_gan", "model.warmup_epochs=0", "model.d_lr=1e30"], "autoencoder loss"),
    ],
)
def test_divergence_stops_at_once_and_keeps_the_last_finite_state(
    data_root: Path, tmp_path: Path, overrides: list[str], loss: str
) -> None:
    process = run_cli_forked(data_root, tmp_path, *overrides, "trainer.max_epochs=5")
    line = assert_one_line_error(process, "training diverged", loss, "epoch 0", "lower model.lr")
    assert "is nan" in line or "is inf" in line
    run = run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["error"] == line.removeprefix("error: ")
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0  # stopped within the first epoch, where the loss became non-finite
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())


class WeightsAndReads(HostReads):
    """Also the weights after each training batch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.weights = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.weights.append(parameters_to_vector(pl_module.parameters()).detach().clone())


@pytest.mark.parametrize(
    ("overrides", "first_failure"),
    [
        # lr 1e30: batch 0's step throws the weights to ~1e30, so batch 1's loss is the first non-finite one.
        (["model.lr=1e30"], "the training loss is nan at epoch 0, batch 1 (global step 1)"),
        # The game: D's first step (d_lr 1e30) makes the autoencoder's loss of the same batch non-finite.
        (
            ["model=ae_gan", "model.warmup_epochs=0", "model.d_lr=1e30"],
            "the autoencoder loss is nan at epoch 0, batch 0 (global step 1)",
        ),
    ],
)
def test_the_device_flag_skips_every_update_and_is_read_every_n_batches(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], first_failure: str
) -> None:
    every = 3
    cfg = compose_cfg(*overrides, f"model.divergence_check_every={every}", "trainer.max_epochs=5")
    datamodule, model = data_and_model(cfg)
    record = WeightsAndReads(monkeypatch)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[instantiate(cfg.callbacks.last_checkpoint), record])

    with pytest.raises(DivergedError) as err:
        trainer.fit(model, datamodule=datamodule)

    assert first_failure in str(err.value) and str(err.value).startswith("training diverged: ")
    assert len(record.weights) == every  # stopped at the first read of the flag, batch every - 1
    # The host read the flag once, there; nothing of the package read a tensor before.
    assert {(phase, batch) for phase, batch, _ in record.reads} == {("after", every - 1)}
    assert {function for *_, function in record.reads} == {"first_failure"}
    # The update of the failed step and every later one were skipped on the device: the weights stay those
    # after batch 0 (its steps before the failure included), and finite.
    assert all(torch.equal(w, record.weights[0]) for w in record.weights)
    assert torch.isfinite(record.weights[0]).all()
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = parameters_to_vector(last["state_dict"][k] for k, _ in model.named_parameters())
    torch.testing.assert_close(weights, record.weights[0])
    tensors = [*last["state_dict"].values(), *tree_flatten(last["optimizer_states"])[0]]
    assert all(torch.isfinite(t).all() for t in tensors if torch.is_tensor(t) and t.is_floating_point())


class PoisonRunningVariance(L.Callback):
    """Sets a BatchNorm's running variance to inf after batch 1, as an overflow in the forward pass could."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == 1:
            next(m for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(float("inf"))


def test_a_non_finite_buffer_with_finite_losses_also_stops_the_run(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("trainer.max_epochs=5")
    datamodule, model = data_and_model(cfg)
    callbacks = [instantiate(cfg.callbacks.last_checkpoint), PoisonRunningVariance()]
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks)

    with pytest.raises(DivergedError) as err:
        trainer.fit(model, datamodule=datamodule)

    assert "a floating buffer (BatchNorm's running statistics) is not finite at epoch 0, batch 1" in str(err.value)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2  # the flag is read every batch on the CPU: it stopped at once
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_gradient_raises_the_flag_that_adam_reads_without_a_host_read(
    bad: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``guard_step``: one non-finite gradient raises the flag (its sum is not finite, nor the sum of the step's
    loss and every gradient's sum), which becomes the optimizer's ``found_inf``; nothing, torch's own code included,
    reads a tensor on the host. The read names the gradients."""
    net = torch.nn.Linear(3, 2)
    guard = DivergenceGuard(net, torch.device("cpu"))
    optimizer = torch.optim.Adam(net.parameters())
    net.weight.grad, net.bias.grad = torch.ones(2, 3), torch.tensor([1.0, 2.0 if bad is None else bad])
    guard.check_loss(torch.tensor(0.5), "training loss", epoch=0, batch=0, global_step=0)

    def refuse(*args: object) -> None:
        raise AssertionError("a host read")

    with monkeypatch.context() as reads:
        for name in HostReads.READS:
            reads.setattr(torch.Tensor, name, refuse)
        guard.guard_step(optimizer)
    assert optimizer.found_inf is guard.flag and float(guard.flag) == (bad is not None)
    failure = guard.first_failure()
    assert (failure is None) == (bad is None)
    if bad is not None:
        assert (
            failure == "the gradients of the training loss are not finite (the loss is 0.5) at epoch 0, batch 0 "
            "(global step 0)"
        )
