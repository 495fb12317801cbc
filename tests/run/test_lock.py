"""One process at a time trains a run directory (``run.lock``): a second one is refused in one line while the first
lives, and the kernel frees the directory when the first dies, SIGKILL included; forked children (DataLoader
workers) do not keep it. Two sweeps on one directory, through the real CLI: ``tests/sweeps/test_summary.py``."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from recursive_ae_gan.run.lock import RunningElsewhere, owned, running

FORK = multiprocessing.get_context("fork")


def _hold(run_dir: Path, holding: multiprocessing.synchronize.Event) -> None:
    with owned(run_dir):
        holding.set()
        time.sleep(60)  # until killed


def test_a_run_directory_held_by_a_live_process_is_left_to_it_until_it_dies(tmp_path: Path) -> None:
    for folder, text in ((".hydra", "this attempt's\n"), ("trained_config", "the trained run's\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.yaml").write_text(text)
    holding = FORK.Event()
    owner = FORK.Process(target=_hold, args=(tmp_path, holding))
    owner.start()
    try:
        assert holding.wait(30)
        assert running(tmp_path)
        with pytest.raises(RunningElsewhere) as refused, owned(tmp_path):
            pytest.fail("a second owner")
        assert str(refused.value) == (
            f"{tmp_path} is being trained by another process (pid {owner.pid} on {socket.gethostname()}): left to it"
        )
        assert (tmp_path / ".hydra" / "config.yaml").read_text() == "the trained run's\n"  # put back, as refused
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.join()
    assert not running(tmp_path)  # no stale lock: the kernel dropped it with its process
    with owned(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"


def _work(started: multiprocessing.synchronize.Event) -> None:
    started.set()  # after the fork's handlers: the child is as it will stay
    time.sleep(60)


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path: Path) -> None:
    """A DataLoader worker outliving its killed parent for a moment must not hold the run meanwhile."""
    started = FORK.Event()
    with owned(tmp_path):
        worker = FORK.Process(target=_work, args=(started,))
        worker.start()
        assert started.wait(30)
    try:
        assert not running(tmp_path)
    finally:
        worker.kill()
        worker.join()
