"""What a sweep's jobs return and how a sweep went: :func:`objective` is what a job returns to the sweeper
(``optimized_metric``), :class:`SweepSummary` (``hydra.callbacks`` in ``conf/train.yaml``) reads every job's
``metrics.json`` when a multirun ends, says how many failed (and how many another process is training), and makes
the command exit 1 if any failed.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.records import Damaged, read_json
from recursive_ae_gan.run.lock import running

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

    The status is ``running`` while another process trains the job (it holds the job's lock, ``run.lock``), else
    ``metrics.json``'s (``ok``, ``collapsed``, ``failed``, ...), or ``missing`` when a job left no ``metrics.json``
    (killed, or a write the filesystem refused), or ``unreadable`` (damaged). Jobs are named by their path under
    ``sweep_dir``.
    """
    statuses = {}
    for marker in sweep_dir.rglob(".hydra/overrides.yaml"):
        job = marker.parent.parent
        if job == sweep_dir:
            continue
        statuses[job.relative_to(sweep_dir).as_posix()] = job_status(job)
    return dict(sorted(statuses.items(), key=lambda item: _job_order(item[0])))


def job_status(job: Path) -> str:
    """How a job's directory says it went (``job_statuses``)."""
    if running(job):  # another process trains it now: a metrics.json there is an earlier attempt's
        return "running"
    try:
        return read_json(job / "metrics.json").get("status", "unknown")
    except FileNotFoundError:
        return "missing"
    except Damaged:
        return "unreadable"


def _job_order(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


FINE = ("ok", "running", "pruned")  # the statuses that do not fail a sweep


def summary(sweep_dir: Path, statuses: Mapping[str, str]) -> str:
    """One line: ``5 jobs: 2 ok, 2 failed, 1 running elsewhere (jobs 2, 4: see <sweep_dir>/2/error.log; job 3:
    left to the process training it)``. A job another process trains is neither ok nor failed yet; one an Optuna
    pruner stopped (``pruned``) is counted apart too, after the failed ones (``..., 0 failed, 3 pruned``)."""
    running = [job for job, status in statuses.items() if status == "running"]
    pruned = [job for job, status in statuses.items() if status == "pruned"]
    failed = [job for job, status in statuses.items() if status not in FINE]
    ok = len(statuses) - len(failed) - len(running) - len(pruned)
    line = f"{len(statuses)} job{'' if len(statuses) == 1 else 's'}: {ok} ok, {len(failed)} failed"
    notes = []
    if failed:
        first = sweep_dir / failed[0]
        see = first / "error.log" if (first / "error.log").is_file() else first
        notes.append(f"{_jobs(failed)}: see {see}")
    if pruned:
        line += f", {len(pruned)} pruned"
    if running:
        line += f", {len(running)} running elsewhere"
        notes.append(f"{_jobs(running)}: left to the process training {'it' if len(running) == 1 else 'them'}")
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _jobs(names: list[str]) -> str:
    return f"{'job' if len(names) == 1 else 'jobs'} {', '.join(names)}"


class SweepSummary(Callback):
    """When a multirun ends: log how it went, or print it as one ``error:`` line and exit 1 if a job failed.

    A job counts as failed unless its ``metrics.json`` says ``"status": "ok"`` (so collapsed jobs fail too) or
    ``pruned`` (an Optuna search stopped it early, on purpose), or another process is training it (the same
    sweep started twice): that job is its owner's to finish and report,
    and does not fail this command. Hydra turns a callback's exceptions into warnings, so this exits with
    ``SystemExit``, which it lets through; callbacks listed before this one in ``hydra.callbacks`` then miss
    ``on_multirun_end``.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = job_statuses(sweep_dir)
        line = summary(sweep_dir, statuses)
        if all(status in FINE for status in statuses.values()):
            log.info(line)
            return
        print(f"error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(1)
