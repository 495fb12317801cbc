"""What a sweep's jobs return and how a sweep went: :func:`objective` is what a job returns to the sweeper
(``optimized_metric``), :class:`SweepSummary` (``hydra.callbacks`` in ``conf/train.yaml``) reads every job's
``metrics.json`` when a multirun ends, says how many failed, and makes the command exit 1 if any did.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from recursive_ae_gan.errors import UserError

log = logging.getLogger(__name__)


def objective(result: Mapping[str, Any], metric: str | None) -> float | None:
    """The value of ``metric`` (``optimized_metric``; None: ``score``) in a run's ``result``.

    A metric the run did not record is a one-line error (the job fails). A value that is not a finite
    number gives None: the Optuna sweeper records it as a failed trial (NaN would crash it).
    """
    name = metric or "score"
    if name not in result:
        choices = ", ".join(k for k in result if k.startswith(("val/", "test/")))
        raise UserError(f"optimized_metric={name} is not a metric of the run; choose one of: {choices}")
    value = float(result[name])
    if not math.isfinite(value):
        log.error("%s is %s: no value for a sweeper, which records the job as failed", name, value)
        return None
    return value


def job_statuses(sweep_dir: Path) -> dict[str, str]:
    """``{job: status}`` for every job directory under ``sweep_dir`` (one holding Hydra's ``.hydra/``).

    The status is ``metrics.json``'s (``ok``, ``collapsed``, ``failed``, ...), or ``missing`` when a job left
    no ``metrics.json`` (killed, or still running), or ``unreadable``. Jobs are named by their path under
    ``sweep_dir``.
    """
    statuses = {}
    for marker in sweep_dir.rglob(".hydra/overrides.yaml"):
        job = marker.parent.parent
        if job == sweep_dir:
            continue
        try:
            status = json.loads((job / "metrics.json").read_text()).get("status", "unknown")
        except FileNotFoundError:
            status = "missing"
        except json.JSONDecodeError:
            status = "unreadable"
        statuses[job.relative_to(sweep_dir).as_posix()] = status
    return dict(sorted(statuses.items(), key=lambda item: _job_order(item[0])))


def _job_order(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def summary(sweep_dir: Path, statuses: Mapping[str, str]) -> str:
    """One line: ``5 jobs: 3 ok, 2 failed (jobs 2, 4: see <sweep_dir>/2/error.log)``."""
    failed = [job for job, status in statuses.items() if status != "ok"]
    jobs = f"{len(statuses)} job" + ("" if len(statuses) == 1 else "s")
    line = f"{jobs}: {len(statuses) - len(failed)} ok, {len(failed)} failed"
    if failed:
        first = sweep_dir / failed[0]
        see = first / "error.log" if (first / "error.log").is_file() else first
        line += f" ({'job' if len(failed) == 1 else 'jobs'} {', '.join(failed)}: see {see})"
    return line


class SweepSummary(Callback):
    """When a multirun ends: log how many jobs failed, or print it as one ``error:`` line and exit 1.

    A job counts as failed unless its ``metrics.json`` says ``"status": "ok"`` (so collapsed jobs fail too).
    Hydra turns a callback's exceptions into warnings, so this exits with ``SystemExit``, which it lets
    through; callbacks listed before this one in ``hydra.callbacks`` then miss ``on_multirun_end``.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = job_statuses(sweep_dir)
        line = summary(sweep_dir, statuses)
        if all(status == "ok" for status in statuses.values()):
            log.info(line)
            return
        print(f"error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(1)
