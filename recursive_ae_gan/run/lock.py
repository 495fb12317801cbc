"""One process at a time trains a run directory: the same sweep started twice, or ``ckpt_path=auto`` run while
another process trains that directory, must not train one job twice into the same files.

An attempt holds an exclusive ``flock`` on ``<run dir>/.lock`` from before it reads the directory until it has
written its result; a second process finds it taken and leaves that run to its owner (``RunningElsewhere``).
The kernel drops the lock when its process ends, however it ends (SIGKILL, the OOM killer, a lost node's lease),
so no lock outlives its owner and there is no stale marker to clean up: the file itself stays, and only names its
last owner, for messages. Forked children (DataLoader workers) close their copy at once, so
that the lock ends with its owner, not with its last worker. Under DDP rank 0 holds it for all ranks.
A filesystem without ``flock`` (some network filesystems) gets a warning, and no lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from recursive_ae_gan.core.errors import refused_write, write_failed
from recursive_ae_gan.run.continuation import NotContinued, leave_as_found

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
# A probe (``running``: the sweep summary of another process) holds the lock for a moment; an attempt that finds it
# taken looks again for this long before it leaves the run to another process.
PATIENCE_S, PAUSE_S = 0.5, 0.05


class RunningElsewhere(NotContinued):
    """Another live process is training this run directory: this attempt leaves it to that one."""


_held: list[int] = []  # the descriptors of the locks this process holds


def _close_inherited() -> None:
    """In a forked child: close the inherited lock descriptors, leaving the parent's locks to the parent."""
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited)


def _take(fd: int) -> bool:
    """Take the lock on ``fd`` if no other process holds it (looking again for ``PATIENCE_S``)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(PAUSE_S)


def _unsupported(err: OSError) -> bool:
    return err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextmanager
def owned(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process for the block; ``RunningElsewhere`` if another process holds it, after
    putting back the ``.hydra/`` files of the attempt that trained it (Hydra has just replaced them)."""
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)  # Hydra's run directory; train() called directly makes its own
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if refusal := refused_write(err):
            raise write_failed(path, refusal) from err
        raise
    _held.append(fd)
    try:
        try:
            if not _take(fd):
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "starting"
                leave_as_found(run_dir)
                raise RunningElsewhere(f"{run_dir} is being trained by another process ({owner}): left to it")
        except OSError as err:
            if not _unsupported(err):
                raise
            log.warning("cannot lock %s (%s): nothing stops another process from training it at once", path, err)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as err:
            if refusal := refused_write(err):
                raise write_failed(path, refusal) from err
            raise
        yield
    finally:
        _held.remove(fd)
        os.close(fd)  # the lock goes with the descriptor


def owned_here(run_dir: Path) -> AbstractContextManager[None]:
    """``owned(run_dir)`` in the process that owns a run (rank 0 of node 0); nothing in the other DDP ranks,
    which share the run of their rank 0. The rank is the launcher's (environment variables), known before the
    trainer is built."""
    first = rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"
    return owned(run_dir) if first else nullcontext()


def running(run_dir: Path) -> bool:
    """Whether a process holds ``run_dir`` now: a probe that takes the lock for a moment if it is free (an attempt
    starting meanwhile waits that out, ``PATIENCE_S``)."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # none there (never trained since locks exist), or not ours to read: no owner known
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as err:
        if _unsupported(err):
            return False
        raise
    finally:
        os.close(fd)
    return False
