"""sweeps.gpus: one GPU per job (round robin over the visible GPUs), the gpus and slurm launchers' sizes."""

from __future__ import annotations

import pytest
from helpers import compose_hydra
from omegaconf.errors import InterpolationResolutionError

from recursive_ae_gan.sweeps.gpus import gpu_for_job, pin_to_gpu, visible_gpus


def test_gpu_for_job_is_round_robin_over_the_pool() -> None:
    assert [gpu_for_job(job, ["0", "1"]) for job in range(5)] == ["0", "1", "0", "1", "0"]
    assert [gpu_for_job(job, ["2", "5", "7"]) for job in (0, 4, 8, 100)] == ["2", "5", "7", "5"]
    assert gpu_for_job(13, ["GPU-aa"]) == "GPU-aa"
    assert gpu_for_job(3, []) is None
    with pytest.raises(ValueError, match="start at 0"):
        gpu_for_job(-1, ["0"])


def test_visible_gpus_honours_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": " GPU-aa, MIG-bb "}) == ["GPU-aa", "MIG-bb"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,-1,3"}) == ["2"]  # CUDA stops at an invalid index


def test_pin_to_gpu_sets_one_gpu_and_a_worker_keeps_it() -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "4,6"}
    assert pin_to_gpu(1, environ) == "6" and environ == {"CUDA_VISIBLE_DEVICES": "6"}
    # The same worker process, a later job: CUDA may already be on GPU 6, so the job stays there.
    assert pin_to_gpu(2, environ) == "6" and environ == {"CUDA_VISIBLE_DEVICES": "6"}
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}
    assert pin_to_gpu(0, no_gpu) is None and no_gpu == {"CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize(
    ("visible", "overrides", "n_jobs"),
    [("", [], 4), ("0,1,2", [], 12), ("GPU-aa,GPU-bb", ["jobs_per_gpu=1"], 2), ("0,1,2", ["jobs_per_gpu=2"], 6)],
)
def test_gpus_launcher_runs_jobs_per_gpu_on_every_gpu(monkeypatch, visible: str, overrides: list, n_jobs: int) -> None:
    """No GPU: jobs_per_gpu jobs at once, on the CPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    cfg = compose_hydra("hydra/launcher=gpus", *overrides)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert cfg.hydra.launcher.n_jobs == n_jobs
    # An Optuna study asks for as many trials at once as the launcher runs.
    assert compose_hydra("hparams_search=ae_optuna", "hydra/launcher=gpus", *overrides).hydra.sweeper.n_jobs == n_jobs
    assert compose_hydra("hparams_search=ae_optuna").hydra.sweeper.n_jobs == 1


def test_gpus_launcher_rejects_a_bad_jobs_per_gpu(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(InterpolationResolutionError, match="jobs_per_gpu must be a positive integer, got 0"):
        _ = compose_hydra("hydra/launcher=gpus", "jobs_per_gpu=0").hydra.launcher.n_jobs


def test_slurm_launcher_runs_one_task_per_gpu() -> None:
    launcher = compose_hydra("hydra/launcher=slurm", "trainer.devices=2", "trainer.num_nodes=3").hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (3, 2, 2)
