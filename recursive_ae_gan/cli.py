"""What every entry point shares: bad input ends as one ``error:`` line on stderr and exit status 1.

Hydra reports its own errors (a bad override, an unknown key, a run directory it cannot create)
in several lines plus a hint about ``HYDRA_FULL_ERROR``. ``run`` sets that variable so that Hydra
re-raises instead, and prints one line. A user who sets ``HYDRA_FULL_ERROR=1`` still gets Hydra's
full traceback. Only a bug in the package (any other exception) prints a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from recursive_ae_gan.errors import UserError

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
    return " ".join(dict.fromkeys(parts)).replace(":", ":", 1)


def run(entry: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` entry point, turning bad input into one ``error:`` line and exit status 1."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and _OURS not in os.environ:
        entry()  # the user asked for Hydra's full tracebacks
        return
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_OURS] = "1"
    try:
        entry()
    except UserError as err:
        sys.exit(f"error: {err}")
    except (HydraException, OmegaConfBaseException) as err:
        sys.exit(f"error: {one_line(err)}")
    except OSError as err:  # e.g. Hydra cannot create the run directory
        where = f" {err.filename}" if err.filename else ""
        sys.exit(f"error: cannot write{where}: {err.strerror or err}; set paths.log_dir (or hydra.run.dir) to a "
                 f"writable folder")
