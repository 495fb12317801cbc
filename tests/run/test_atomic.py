"""Crash-safe writes: a write that fails half-way leaves the previous version of the file whole, checkpoints
included (the run resumes from it), with the system temp directory on another filesystem where there is one."""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from recursive_ae_gan.errors import UserError
from recursive_ae_gan.run.atomic import atomic_open, atomic_write
from recursive_ae_gan.run.checkpoints import AtomicCheckpointIO, interrupts_after_the_write
from recursive_ae_gan.run.config import check
from recursive_ae_gan.run.train import train

DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def foreign_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path | None]:
    """The system temp directory moved to another filesystem than ``tmp_path`` (in /dev/shm), as on a cluster
    node with a local /tmp; ``None`` (the test runs without that aspect) where the machine has no such place."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev):
        yield None
        return
    foreign = Path(tempfile.mkdtemp(dir=shm))
    monkeypatch.setenv("TMPDIR", str(foreign))
    monkeypatch.setattr(tempfile, "tempdir", str(foreign))
    yield foreign
    shutil.rmtree(foreign)


def test_a_failed_write_keeps_the_old_content_and_leaves_nothing(tmp_path: Path, foreign_tmp: Path | None) -> None:
    target = tmp_path / "metrics.json"
    atomic_write(target, '{"status": "ok"}\n')
    with pytest.raises(OSError, match="No space left"), atomic_open(target, "w") as file:
        file.write('{"status": "fa')
        assert Path(file.name).parent == tmp_path  # beside the target, whatever the system temp directory is
        raise DISK_FULL
    assert target.read_text() == '{"status": "ok"}\n'
    assert list(tmp_path.iterdir()) == [target]
    assert foreign_tmp is None or list(foreign_tmp.iterdir()) == []

    atomic_write(target, b"new")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # a file made by a plain open: the permissions atomic files must have too
    assert target.read_bytes() == b"new" and target.stat().st_mode == plain.stat().st_mode
    assert sorted(tmp_path.iterdir()) == [target, plain]


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")  # the resumed run
def test_interrupted_checkpoint_write_keeps_last_ckpt_and_the_run_resumes(
    compose_cfg, tmp_path: Path, foreign_tmp: Path | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = ["~logger", "collapse_threshold=0", "trainer.num_sanity_val_steps=0", "data.num_workers=0"]
    train(compose_cfg(*tiny, "trainer.max_epochs=1"))
    checkpoints = tmp_path / "checkpoints"
    last = checkpoints / "last.ckpt"
    before, files = last.read_bytes(), sorted(checkpoints.iterdir())
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0

    real_save, written = torch.save, []

    def save_half_then_fail(obj: object, file: io.BufferedWriter) -> None:
        """The disk fills half-way through the checkpoint."""
        whole = io.BytesIO()
        real_save(obj, whole)
        file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        written.append(Path(getattr(file, "name", "<a buffer in memory>")))
        raise DISK_FULL

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    resume = compose_cfg(*tiny, "trainer.max_epochs=2", f"ckpt_path={last}")
    with pytest.raises(OSError, match="No space left"):
        train(resume)
    assert written and all(path.parent == checkpoints and path != last for path in written)
    assert last.read_bytes() == before and sorted(checkpoints.iterdir()) == files  # no truncated file, no leftovers
    assert foreign_tmp is None or list(foreign_tmp.iterdir()) == []
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0

    monkeypatch.setattr(torch, "save", real_save)
    assert train(resume)["status"] == "ok"  # resumes from the kept last.ckpt
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1


def test_trainer_plugins_are_checked_and_may_be_null(compose_cfg) -> None:
    check(compose_cfg("trainer.plugins=null"))  # Lightning's own checkpoint writer
    bad = "trainer.plugins=[{_target_: recursive_ae_gan.run.checkpoints.AtomicCheckpointIO, retries: 3}]"
    with pytest.raises(UserError, match=r"^trainer.plugins\[0\].retries is not an argument of .*AtomicCheckpointIO"):
        check(compose_cfg(bad))


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_write(tmp_path: Path) -> None:
    """A SIGINT inside torch.save would surface as the zip writer's RuntimeError; held, it is a KeyboardInterrupt
    once the checkpoint is whole."""
    path = tmp_path / "last.ckpt"
    written = []
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, whatever the test runner's
    with pytest.raises(KeyboardInterrupt):
        with interrupts_after_the_write():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs between bytecodes: certainly by now
            AtomicCheckpointIO().save_checkpoint({"weights": torch.arange(1000.0)}, path)
            written.append(True)
    assert written and torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(1000.0))
    assert signal.signal(signal.SIGINT, outside) is signal.default_int_handler  # put back after the block
