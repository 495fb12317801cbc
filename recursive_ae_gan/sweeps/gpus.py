"""One GPU per job: ``hydra/launcher=gpus`` (``conf/hydra/launcher/gpus.yaml``) runs ``jobs_per_gpu`` jobs at once
on every visible GPU through Hydra's joblib launcher. Its ``n_jobs`` is the ``gpu_jobs`` resolver below (registered
on import, by ``run.train``, before Hydra resolves the launcher); every job calls :func:`pin_job_to_gpu` first.
Docs: ``docs/scaling.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


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
