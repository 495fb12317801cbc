"""Sweeps at scale: one GPU per job, the metric a sweeper optimises, and a sweep's pass/fail summary.

- ``hydra/launcher=gpus`` (``conf/hydra/launcher/gpus.yaml``) runs ``jobs_per_gpu`` jobs at once on every
  visible GPU through Hydra's joblib launcher: its ``n_jobs`` is the ``gpu_jobs`` resolver below
  (registered when this module is imported, so by ``recursive_ae_gan.train`` before Hydra resolves the
  launcher), and ``main()`` calls :func:`pin_job_to_gpu` first thing in every job.
- :func:`objective` is what ``main()`` returns to a sweeper: ``optimized_metric``, a number or None.
- :class:`SweepSummary` (``hydra.callbacks`` in ``conf/train.yaml``) reads every job's ``metrics.json``
  when a multirun ends, says how many failed, and makes the command exit 1 if any did.
- ``hydra/sweeper=optuna`` (the ``sweep`` extra) is the plugin's sweeper with studies that continue (a stored
  study runs on to ``n_trials`` in total, trial i in job directory i) and grid studies that end even when their
  last trial fails (``optuna_grid.py``): its config is stored below, under the plugin's name.

Docs: ``docs/scaling.md``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from recursive_ae_gan.errors import UserError

log = logging.getLogger(__name__)


# --- one GPU per job ---------------------------------------------------------------------------------


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, else all.

    Entries are kept as written (indices or ``GPU-``/``MIG-`` UUIDs). As in CUDA, a negative index ends the
    list (``CUDA_VISIBLE_DEVICES=-1`` hides every GPU). Counting all GPUs asks ``torch.cuda.device_count()``,
    which reads NVML and leaves CUDA uninitialised, so a job can still be pinned afterwards.
    """
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(torch.cuda.device_count())]
    gpus = []
    for entry in (e.strip() for e in listed.split(",")):
        if not entry or entry.startswith("-"):
            break
        gpus.append(entry)
    return gpus


def gpu_for_job(job_num: int, gpus: Sequence[str]) -> str | None:
    """The GPU of job ``job_num``: round robin over ``gpus`` (job i on ``gpus[i % len(gpus)]``); None if none."""
    if job_num < 0:
        raise ValueError(f"job numbers start at 0, got {job_num}")
    return gpus[job_num % len(gpus)] if gpus else None


def pin_to_gpu(job_num: int, environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Restrict this process to job ``job_num``'s GPU by setting ``CUDA_VISIBLE_DEVICES``; returns that GPU.

    The pool is the GPUs visible to the process (:func:`visible_gpus`). A joblib worker runs several jobs
    one after the other, and CUDA stays on the GPU it was initialised on: the worker's first job pins it,
    and its later jobs find a one-GPU pool and stay there. So each worker is a slot on one GPU, and
    ``jobs_per_gpu`` workers per GPU keep every GPU at ``jobs_per_gpu`` jobs until the sweep runs dry.
    """
    gpu = gpu_for_job(job_num, visible_gpus(environ))
    if gpu is not None:
        environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def pin_job_to_gpu(hydra_cfg: DictConfig) -> None:
    """In a job of the joblib launcher (``hydra/launcher=gpus``), pin it to one GPU; other launchers: nothing.

    Call it before anything touches CUDA. The basic launcher runs one job at a time, SLURM gives every job
    its own GPUs, and ``submitit_local`` gives every job the first ``gpus_per_node`` GPUs (a trial run).
    """
    if not str(hydra_cfg.launcher.get("_target_", "")).endswith(".JoblibLauncher"):
        return
    gpu = pin_to_gpu(hydra_cfg.job.num)
    where = f"GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})" if gpu is not None else "the CPU (no GPU visible)"
    log.info("job %d runs on %s", hydra_cfg.job.num, where)


def gpu_jobs(jobs_per_gpu: int) -> int:
    """``jobs_per_gpu`` x the visible GPUs: how many jobs ``hydra/launcher=gpus`` runs at once.

    Without a GPU it is ``jobs_per_gpu``: the sweep runs that many jobs at once on the CPU.
    """
    if not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be a positive integer, got {jobs_per_gpu!r}")
    return jobs_per_gpu * max(1, len(visible_gpus()))


OmegaConf.register_new_resolver("gpu_jobs", gpu_jobs, replace=True)


# --- what a job returns to the sweeper --------------------------------------------------------------


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


# --- how a sweep went -------------------------------------------------------------------------------


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


# --- the Optuna sweeper -----------------------------------------------------------------------------

if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper"):  # the `sweep` extra
    # Hydra's plugin scan (once per process) runs every plugin's module, and the Optuna plugin's stores its
    # configs: scan first, so that the config below replaces the plugin's, not the other way round.
    Plugins.instance()
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf

    from hydra_plugins.recursive_ae_gan.optuna_sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)  # the scan may not see an editable install's hydra_plugins

    @dataclasses.dataclass
    class StudyOptunaSweeperConf(OptunaSweeperConf):
        """``hydra/sweeper=optuna``: the plugin's settings, for the sweeper whose studies continue and grids end."""

        _target_: str = f"{OptunaSweeper.__module__}.{OptunaSweeper.__name__}"

    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=StudyOptunaSweeperConf, provider="recursive_ae_gan"
    )
