"""What every entry point shares: bad input ends as one ``error:`` line on stderr and exit status 1.

Hydra reports its own errors (a bad override, an unknown key, a run directory it cannot create)
in several lines plus a hint about ``HYDRA_FULL_ERROR``. ``run`` sets that variable so that Hydra
re-raises instead, and prints one line. A user who sets ``HYDRA_FULL_ERROR=1`` still gets Hydra's
full traceback. Only a bug in the package (any other exception) prints a traceback. A task function
also wraps its own work in ``one_line_errors()``: an exception that left the task would make Hydra print
one more line ("Error executing job with overrides: ...") before ours.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf.errors import OmegaConfBaseException

from recursive_ae_gan.compat import null_group_overrides
from recursive_ae_gan.core.errors import WriteFailed, refused_write, user_error, write_failed

# The configs, as an absolute path: the entry points then work however they are started (python -m, an
# import of main(), Lightning's DDP re-launch), not only as __main__. They ship as the package
# recursive_ae_gan.conf (setup.py), found where it is installed: the repository's conf/ (editable) or the
# installed package.
CONF_DIR = str(importlib.resources.files("recursive_ae_gan.conf"))
_OURS = "RECURSIVE_AE_GAN_SET_HYDRA_FULL_ERROR"  # marks the variable as ours in child processes (DDP ranks)


def one_line(err: BaseException) -> str:
    """A Hydra or OmegaConf error (and its cause) as one line, without their debugging details."""
    parts = []
    while err is not None:
        for line in str(err).splitlines():
            line = line.strip()
            if line.startswith(("full_key:", "object_type=", "reference_type=")) or not line:
                continue
            if line.startswith("Config search path"):
                break
            parts.append(line)
        err = err.__cause__
    return " ".join(dict.fromkeys(parts))


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class LogFile(logging.FileHandler):
    """The run's log file (``<run dir>/train.log``: ``hydra.job_logging`` in ``conf/hydra/default.yaml``), whose write
    the filesystem refuses ends the command in one line, as any other write does; logging's own file handler prints
    a traceback and goes on. What is logged after that is not written (it could not be)."""

    refused = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.refused:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        refusal = refused_write(sys.exc_info()[1])
        if refusal is None:
            super().handleError(record)
            return
        self.refused = True
        with suppress(OSError):  # closed without what it could not write (closing flushes, which fails again)
            self.stream.close()
        self.stream = None
        raise write_failed(self.baseFilename, refusal) from refusal


def quiet() -> None:
    """Silence third-party noise, each by its exact message: Lightning's advertisements ("💡 Tip: ..."), its
    own use of a torch API that torch 2.14 deprecates, and its advice to add workers to in-memory loaders; and show
    the package's own deprecations (an old spelling on the command line), which Python hides outside ``__main__``."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropMessages("💡 Tip: For seamless cloud"))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The '\w+_dataloader' does not have many workers")
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"recursive_ae_gan\.")


# What moves a training run to another folder: said after a write that the filesystem refused there.
MOVE_THE_RUN = "set paths.log_dir (or hydra.run.dir) to a writable folder"


def write_refused(err: BaseException) -> WriteFailed | None:
    """The one-line error of a write the filesystem refused behind ``err``, naming the file its ``OSError`` carries:
    for the writes the project does not make itself (Lightning's, TensorBoard's, Hydra's, a log's; the loggers of
    ``run.loggers`` name theirs); its own raise ``WriteFailed``."""
    if (refusal := refused_write(err)) is None:
        return None
    unnamed = f"a file under {HydraConfig.get().runtime.output_dir}" if HydraConfig.initialized() else "a file"
    return write_failed(os.fsdecode(refusal.filename) if refusal.filename is not None else unnamed, refusal)


@contextmanager
def one_line_errors(remedy: str | None = None) -> Iterator[None]:
    """Bad input (a UserError behind any exception, a write the filesystem refuses, a Hydra or OmegaConf error, a
    trainer setting Lightning refuses, a folder that cannot be written) exits with one ``error:`` line and status 1;
    anything else is a bug and keeps its traceback. ``remedy`` follows a refused write that the command did not
    name a file for itself (``MOVE_THE_RUN`` for training)."""
    then = f"; {remedy}" if remedy else ""
    try:
        yield
    except Exception as err:
        if reason := user_error(err):
            sys.exit(f"error: {reason}")
        if failed := write_refused(err):
            sys.exit(f"error: {failed}{then}")
        if isinstance(err, HydraException | OmegaConfBaseException | MisconfigurationException):
            sys.exit(f"error: {one_line(err)}")  # MisconfigurationException: Lightning refuses a trainer setting
        if isinstance(err, OSError):  # e.g. Hydra cannot create the run directory
            where = f" {err.filename}" if err.filename else ""
            sys.exit(f"error: cannot write{where}: {err.strerror or err}{then}")
        raise


def run(entry: Callable[[], object], remedy: str | None = None) -> None:
    """Run a ``@hydra.main`` entry point: a quiet console, and bad input as one ``error:`` line."""
    quiet()
    sys.argv[1:] = null_group_overrides(sys.argv[1:], CONF_DIR)  # old command lines' GROUP=null (compat)
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and _OURS not in os.environ:
        entry()  # the user asked for Hydra's full tracebacks
        return
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_OURS] = "1"
    with one_line_errors(remedy):
        entry()
