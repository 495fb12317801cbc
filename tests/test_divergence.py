"""A non-finite training loss stops the run at that step, with one line, status "diverged" and a finite last.ckpt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import assert_one_line_error, run_cli, run_dir


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
    process = run_cli(data_root, tmp_path, *overrides, "trainer.max_epochs=5")
    line = assert_one_line_error(process, "training diverged", loss, "epoch 0", "lower model.lr")
    assert "is nan" in line or "is inf" in line
    run = run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["error"] == line.removeprefix("error: ")
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0  # stopped within the first epoch, where the loss became non-finite
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
