"""Errors a user can fix by changing an override (or the machine): entry points print them as one line."""

from __future__ import annotations

import errno
import os

# What a filesystem answers when it refuses a write, in words: full, over quota, mounted read-only, not permitted.
REFUSALS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class UserError(Exception):
    """Bad input or missing data; the message says which override fixes it."""


class RunFailed(UserError):
    """Training ran but its result is unusable; ``status`` goes into metrics.json."""

    status = "failed"


class DivergedError(RunFailed):
    """A training loss became non-finite: the run stops at that step."""

    status = "diverged"


class CollapsedRunError(RunFailed):
    """The trained network outputs (nearly) the same image for every input."""

    status = "collapsed"


def user_error(err: BaseException | None) -> UserError | None:
    """The UserError behind ``err``, if any (Hydra's instantiate wraps what constructors raise)."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__
    return err


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): enough for a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class WriteFailed(UserError):
    """The filesystem refused a write (``REFUSALS``); nothing half-written is left under the file's name."""


def refused_write(err: BaseException | None) -> OSError | None:
    """The filesystem's refusal (an ``OSError`` with an errno of ``REFUSALS``) behind ``err``, if any: raised, its
    cause, or what it was raised while handling (torch.save turns the ``OSError`` of its writes into a
    ``RuntimeError``; Lightning and Hydra raise again while cleaning up)."""
    pending, seen = [err], set()
    while pending:
        err = pending.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in REFUSALS:
            return err
        pending += [err.__cause__, err.__context__]
    return None


def write_failed(path: str | os.PathLike, refusal: OSError, kept: bool = False) -> WriteFailed:
    """The one-line error of a refused write to ``path``; ``kept``: its previous version is still there, whole."""
    kept_line = "; its previous version is kept" if kept else ""
    return WriteFailed(f"cannot write {os.fspath(path)}: {REFUSALS[refusal.errno]}{kept_line}")
