"""The console every entry point shares: Hydra's ``~GROUP`` on the command line means no config of that group, and the
old spelling ``GROUP=null`` still does, with a DeprecationWarning (``compat.null_group_overrides``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ONE_EPOCH, ok, run_cli_forked

from recursive_ae_gan.compat import null_group_overrides
from recursive_ae_gan.core.console import CONF_DIR


def test_null_groups_become_deletions_with_a_warning_each() -> None:
    args = ["logger=null", "callbacks=null", "model/net=null", "ckpt_path=null", "model.loss=null", "+logger=null"]
    with pytest.warns(DeprecationWarning) as caught:
        current = null_group_overrides(args, CONF_DIR)
    assert current == ["~logger", "~callbacks", "~model/net", "ckpt_path=null", "model.loss=null", "+logger=null"]
    assert [str(w.message) for w in caught] == [
        f"{old}=null is deprecated: write ~{old} (Hydra's removal of a config group)"
        for old in ("logger", "callbacks", "model/net")
    ]


def test_no_logger_and_no_callbacks(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok(run_cli_forked(data_root, tmp_path, "~logger", "~callbacks", *ONE_EPOCH, f"hydra.run.dir={run}"))
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    assert not (run / "tensorboard").exists()  # no logger
    assert not list(run.glob("checkpoints/best-*.ckpt")) and not list(run.glob("checkpoints/last.ckpt"))  # no callbacks


def test_the_old_spelling_composes_as_the_new_and_says_so(tmp_path: Path) -> None:
    """In a fresh interpreter, as a user runs the command: the warning reaches stderr (Python hides a
    DeprecationWarning outside ``__main__`` unless told otherwise), and the config is the one ``~logger`` gives."""

    def job_config(*overrides: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "recursive_ae_gan.train", *overrides, "--cfg", "job"]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)

    old, new = job_config("logger=null"), job_config("~logger")
    assert old.returncode == new.returncode == 0, old.stderr + new.stderr
    assert old.stdout == new.stdout and "\nlogger:" not in old.stdout
    assert "DeprecationWarning: logger=null is deprecated: write ~logger" in old.stderr
    assert "DeprecationWarning" not in new.stderr
