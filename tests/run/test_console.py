"""The console every entry point shares: a group set to null on the command line (``logger=null``) means none."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ONE_EPOCH, ok, run_cli_forked

from recursive_ae_gan.core.console import null_groups_as_deletions


def test_null_groups_become_deletions() -> None:
    args = ["logger=null", "callbacks=null", "model/net=null", "ckpt_path=null", "model.loss=null", "+logger=null"]
    assert null_groups_as_deletions(args) == [
        "~logger", "~callbacks", "~model/net", "ckpt_path=null", "model.loss=null", "+logger=null"
    ]  # fmt: skip


def test_logger_and_callbacks_null_mean_none(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok(run_cli_forked(data_root, tmp_path, "logger=null", "callbacks=null", *ONE_EPOCH, f"hydra.run.dir={run}"))
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    assert not (run / "tensorboard").exists()  # no logger
    assert not list(run.glob("checkpoints/best-*.ckpt")) and not list(run.glob("checkpoints/last.ckpt"))  # no callbacks
