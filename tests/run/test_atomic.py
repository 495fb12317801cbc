"""Crash-safe writes: a write that fails half-way leaves the previous version of the file whole, checkpoints
included (the run resumes from it), with the system temp directory on another filesystem where there is one; a
write the filesystem refuses (full, over quota, read-only, not permitted) ends the command in one line naming the
file, whoever writes it (the project, Lightning's TensorBoard writer, the log), on a real full filesystem too."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import ONE_EPOCH, RefusingFile, assert_one_line_error, ok, refuse_writes, run_cli_forked

from recursive_ae_gan.core.atomic import atomic_open, atomic_write
from recursive_ae_gan.core.console import MOVE_THE_RUN, LogFile
from recursive_ae_gan.core.errors import UserError, WriteFailed
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
    with pytest.raises(WriteFailed, match="no space left on device; its previous"), atomic_open(target, "w") as file:
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
    with pytest.raises(WriteFailed, match=f"^cannot write {last}: no space left on device; its previous version"):
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


REFUSED = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}


@pytest.mark.parametrize("error", REFUSED)
@pytest.mark.parametrize("room", [100, None], ids=["partway", "at_creation"])
def test_a_refused_write_is_one_line_naming_the_file_and_keeps_its_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, room: int | None
) -> None:
    kept, new = tmp_path / "metrics.json", tmp_path / "eval.json"
    atomic_write(kept, '{"status": "ok"}\n')
    refuse_writes(monkeypatch, lambda target: True, room=room, error=error)
    with pytest.raises(WriteFailed) as failed:
        atomic_write(kept, json_of_size(1000))
    assert str(failed.value) == f"cannot write {kept}: {REFUSED[error]}; its previous version is kept"
    with pytest.raises(WriteFailed) as failed:
        atomic_write(new, json_of_size(1000).encode())
    assert str(failed.value) == f"cannot write {new}: {REFUSED[error]}"
    assert kept.read_text() == '{"status": "ok"}\n' and list(tmp_path.iterdir()) == [kept]  # nothing half-written


def json_of_size(n: int) -> str:
    return '{"status": "ok", "padding": "' + "x" * n + '"}\n'


def test_a_full_disk_inside_torch_save_is_one_line_and_the_checkpoint_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save turns the OSError of its write into its zip writer's RuntimeError ("unexpected pos")."""
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.arange(10.0)}, last)
    refuse_writes(monkeypatch, lambda target: target.name == "last.ckpt", room=4096)
    with pytest.raises(WriteFailed) as failed:
        AtomicCheckpointIO().save_checkpoint({"weights": torch.arange(100_000.0)}, last)
    assert isinstance(failed.value.__cause__, RuntimeError)  # what the console used to print as a traceback
    assert str(failed.value) == f"cannot write {last}: no space left on device; its previous version is kept"
    assert torch.equal(torch.load(last, weights_only=True)["weights"], torch.arange(10.0))
    assert list(tmp_path.iterdir()) == [last]


def test_a_full_disk_at_a_checkpoint_ends_the_run_in_one_line_and_keeps_last_ckpt(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's run: the disk fills at the first checkpoint; then, with an earlier last.ckpt, at the next one."""
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    command = [*ONE_EPOCH, f"hydra.run.dir={run}", "ckpt_path=auto"]
    with monkeypatch.context() as full:
        refuse_writes(full, lambda target: target.suffix == ".ckpt", room=4096)
        first = run_cli_forked(data_root, tmp_path / "first", *command)
    assert_one_line_error(first)
    assert first.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {checkpoints / 'last.ckpt'}: no space left on device"
    )
    assert list(checkpoints.iterdir()) == []  # no checkpoint, not even a truncated one under a temporary name

    ok(run_cli_forked(data_root, tmp_path / "second", *command))  # room again: the same command trains the run
    last = checkpoints / "last.ckpt"
    before, files = last.read_bytes(), sorted(checkpoints.iterdir())
    refuse_writes(monkeypatch, lambda target: target.suffix == ".ckpt", room=4096)
    longer = run_cli_forked(data_root, tmp_path / "third", *command, "trainer.max_epochs=2")
    assert assert_one_line_error(longer) == (
        f"error: cannot write {last}: no space left on device; its previous version is kept"
    )
    assert last.read_bytes() == before and sorted(checkpoints.iterdir()) == files
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0


@contextmanager
def small_filesystem(path: Path, size: int) -> Iterator[Path]:
    """A real filesystem of ``size`` bytes at ``path`` (a tmpfs): where the machine lets a test mount one (root,
    Linux); the test is skipped elsewhere."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root on Linux")
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_real_full_filesystem_ends_the_run_in_one_line_and_keeps_last_ckpt(data_root: Path, tmp_path: Path) -> None:
    """A run of one epoch, on a filesystem with room for half a checkpoint more, continued to a second epoch."""
    command = [*ONE_EPOCH, "ckpt_path=auto"]
    trained = tmp_path / "trained"
    ok(run_cli_forked(data_root, tmp_path / "first", *command, f"hydra.run.dir={trained}"))
    used = sum(path.stat().st_size for path in trained.rglob("*") if path.is_file())
    room = (trained / "checkpoints" / "last.ckpt").stat().st_size // 2
    with small_filesystem(tmp_path / "small", used + room) as small:
        run = shutil.copytree(trained, small / "run")
        last = run / "checkpoints" / "last.ckpt"
        longer = run_cli_forked(data_root, tmp_path / "again", *command, f"hydra.run.dir={run}", "trainer.max_epochs=2")
        assert assert_one_line_error(longer) == (
            f"error: cannot write {last}: no space left on device; its previous version is kept"
        )
        assert last.read_bytes() == (trained / "checkpoints" / "last.ckpt").read_bytes()
        assert sorted(p.name for p in last.parent.iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
        assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0


def test_a_refused_tensorboard_write_is_one_line_naming_its_event_file(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's TensorBoard writer writes in a thread of its own, with no file name in its error: the console
    finds the file it was writing."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    def refusing_open(filename: str, mode: str, encoding: str | None = None) -> io.BufferedWriter:
        return io.BufferedWriter(RefusingFile(filename, mode.replace("b", "")))  # no room at all

    monkeypatch.setattr(gfile, "io", SimpleNamespace(open=refusing_open))
    run = tmp_path / "run"
    process = run_cli_forked(data_root, tmp_path, *ONE_EPOCH, f"hydra.run.dir={run}")
    error = assert_one_line_error(process)
    (events,) = run.glob("tensorboard/*/events.out.tfevents.*")
    assert error == f"error: cannot write {events}: no space left on device; {MOVE_THE_RUN}"


def test_a_run_folder_that_cannot_be_made_is_one_line_with_the_setting_that_moves_it(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hydra makes the run's folder; where that is refused (a folder of someone else's, a read-only mount), the
    line says which setting moves the run."""
    run, real_mkdir = tmp_path / "run", Path.mkdir

    def refusing_mkdir(self: Path, *args, **kwargs) -> None:
        if self == run:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refusing_mkdir)
    process = run_cli_forked(data_root, tmp_path, *ONE_EPOCH, f"hydra.run.dir={run}")
    assert assert_one_line_error(process) == (
        f"error: cannot write {run}: permission denied; set paths.log_dir (or hydra.run.dir) to a writable folder"
    )
    assert not run.exists()


def test_a_refused_write_to_the_log_file_is_one_line_once(tmp_path: Path) -> None:
    """Hydra's log file (train.log): logging's own handler would print a traceback and go on."""
    path = tmp_path / "train.log"
    logger = logging.getLogger("test_a_refused_write_to_the_log_file")
    handler = LogFile(path)
    logger.addHandler(handler)
    try:
        logger.warning("written")
        handler.stream.close()
        handler.stream = io.TextIOWrapper(io.BufferedWriter(RefusingFile(path, "a")))
        with pytest.raises(WriteFailed) as failed:
            logger.warning("no room for this")
        assert str(failed.value) == f"cannot write {path}: no space left on device"
        logger.warning("nor for this, which is not written")  # the one line has been said
    finally:
        logger.removeHandler(handler)
    assert path.read_text().splitlines() == ["written"]
