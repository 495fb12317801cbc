"""Crash-safe writes: a file the project writes is replaced by its new version whole, or not at all.

A kill, a full disk or a node crash in the middle of a write must not leave a truncated ``last.ckpt`` or
``metrics.json`` where the previous version was. So the new version goes to a temporary file beside the
target (the same directory, hence the same filesystem, whatever the system temp directory is), is flushed
and ``fsync``'ed, replaces the target with ``os.replace`` (atomic), and the directory is ``fsync``'ed so
that the replacement itself survives a crash. A failed write removes its temporary file; one that the filesystem
refuses (full, over quota, read-only, not permitted) raises ``errors.WriteFailed``, one line naming the file.

Checkpoints are written with it by ``checkpoints.AtomicCheckpointIO``, a Lightning ``CheckpointIO`` plugin
(``trainer.plugins`` in ``conf/trainer/default.yaml``). Lightning's own writer goes through an fsspec
transaction instead: a temporary file in the system temp directory, then a move, which is a copy when that
directory is on another filesystem (a node's local /tmp, outputs on a network share), and no ``fsync``.
Only the standard library (and ``errors``) here: ``report`` imports this module without torch.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from recursive_ae_gan.core.errors import refused_write, write_failed


def fsync_directory(directory: Path) -> None:
    """Make a rename or removal in ``directory`` durable (POSIX; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``, plus ``open``'s other arguments), whose file
    replaces ``path`` only when the ``with`` block ends without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    # A unique name beside the target, created like any new file (the umask's permissions, not mkstemp's 0600).
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, mode.replace("w", "x"), **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())  # a network filesystem may report a full disk only here
        os.replace(temporary, path)
    except BaseException as err:  # a kill (KeyboardInterrupt) too: the target keeps its previous version
        with suppress(OSError):  # none there (it was never created), or a filesystem that refuses even this
            temporary.unlink()
        if (refusal := refused_write(err)) is None:
            raise
        raise write_failed(path, refusal, kept=os.path.exists(path)) from err
    fsync_directory(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically (text is written as UTF-8)."""
    if isinstance(data, bytes):
        with atomic_open(path, "wb") as file:
            file.write(data)
    else:
        with atomic_open(path, "w", encoding="utf-8") as file:
            file.write(data)
