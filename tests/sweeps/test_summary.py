"""sweeps.summary and sweeps through the real CLI: Optuna with a failing trial, submitit, a sweep's summary and exit
status, what a job returns to the sweeper."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from helpers import compose_hydra, run_sweep, sweep_dir
from omegaconf import OmegaConf

from recursive_ae_gan.errors import UserError
from recursive_ae_gan.sweeps.summary import job_statuses, objective, summary


def error_line(process: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command that failed without a traceback."""
    assert process.returncode == 1, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.stderr[-3000:]
    return errors[0]


# optuna 2.10 (the newest the Hydra plugin takes) uses SQLAlchemy 1.4 APIs that 2.0 removed, and says so.
@pytest.mark.filterwarnings("ignore:Deprecated API features detected")
def test_optuna_records_a_failed_trial_and_completes_the_study(data_root: Path, tmp_path: Path) -> None:
    """Sampler seed 3 draws data.train_size 64, 100000, 64: trial 1 cannot find its 100000 images."""
    import optuna  # here, under the filter: importing optuna 2.10 warns

    storage = f"sqlite:///{tmp_path}/study.db"
    process = run_sweep(
        data_root,
        tmp_path,
        "hparams_search=ae_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=3",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=test",
        "data.train_size=choice(64,100000)",
        "trainer.max_epochs=1",
        "collapse_threshold=0",
        drop=("data.train_size",),  # a fixed value would replace the search over it
    )
    sweep = sweep_dir(tmp_path)
    assert error_line(process) == f"error: 3 jobs: 2 ok, 1 failed (job 1: see {sweep}/1/error.log)"

    trials = optuna.load_study(study_name="test", storage=storage).trials
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert [t.params["data.train_size"] for t in trials] == [64, 100000, 64]
    metrics = [json.loads((sweep / str(job) / "metrics.json").read_text()) for job in range(3)]
    assert [m["status"] for m in metrics] == ["ok", "failed", "ok"]
    # The study minimises optimized_metric=val/loss, the last validation loss of each run.
    values = {job: metrics[job]["val/loss"] for job in (0, 2)}
    assert [t.value for t in trials] == [pytest.approx(values[0]), None, pytest.approx(values[2])]

    results = OmegaConf.load(sweep / "optimization_results.yaml")
    best = min(values, key=values.get)
    assert results.best_value == pytest.approx(values[best])
    assert results.best_params == trials[best].params


def test_submitit_local_runs_a_sweep(data_root: Path, tmp_path: Path) -> None:
    process = run_sweep(
        data_root, tmp_path, "hydra/launcher=submitit_local", "seed=0,1", "trainer.max_epochs=1", "collapse_threshold=0"
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "2 jobs: 2 ok, 0 failed" in process.stdout
    sweep = sweep_dir(tmp_path)
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "ok"
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # each job ran as a submitit job


def test_sweep_with_failed_and_collapsed_jobs_exits_1_with_a_summary(data_root: Path, tmp_path: Path) -> None:
    """Jobs 2 and 3 cannot find 100000 images; job 1 collapses (no model varies 1000x as much as its inputs)."""
    sweep_overrides = ["data.train_size=64,100000", "collapse_threshold=0,1000", "trainer.max_epochs=1"]
    process = run_sweep(data_root, tmp_path, *sweep_overrides)
    sweep = sweep_dir(tmp_path)
    assert error_line(process) == f"error: 4 jobs: 1 ok, 3 failed (jobs 1, 2, 3: see {sweep}/1/error.log)"
    assert job_statuses(sweep) == {"0": "ok", "1": "collapsed", "2": "failed", "3": "failed"}


def test_summary_counts_every_status_but_ok_as_failed(tmp_path: Path) -> None:
    for job, metrics in [("0", '{"status": "ok"}'), ("1", '{"status": "diverged"}'), ("2", None), ("10", "{")]:
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text("[]\n")
        if metrics is not None:
            (tmp_path / job / "metrics.json").write_text(metrics)
    (tmp_path / "1" / "error.log").write_text("Traceback ...")
    statuses = job_statuses(tmp_path)
    assert statuses == {"0": "ok", "1": "diverged", "2": "missing", "10": "unreadable"}
    assert summary(tmp_path, statuses) == f"4 jobs: 1 ok, 3 failed (jobs 1, 2, 10: see {tmp_path}/1/error.log)"
    assert summary(tmp_path, {"2": "missing"}) == f"1 job: 0 ok, 1 failed (job 2: see {tmp_path}/2)"


def test_gan_search_space_composes_into_valid_overrides() -> None:
    """Every search parameter is a key of the adversarial model; the adv weight bound is a list element."""
    cfg = compose_hydra("hparams_search=ae_gan_optuna")
    assert cfg.optimized_metric == "val/loss" and cfg.hydra.sweeper.direction == "minimize"
    params = dict(cfg.hydra.sweeper.params)
    assert set(params) == {"model.lr", "model.d_lr", "model.adv_weight_bounds.1"}
    picked = compose_hydra("hparams_search=ae_gan_optuna", "model.adv_weight_bounds.1=0.5", "model.d_lr=0.002")
    assert list(picked.model.adv_weight_bounds) == [0.0, 0.5] and picked.model.d_lr == 0.002


def test_objective_is_the_optimized_metric_or_none() -> None:
    result = {"score_name": "test/step_0/mse", "score": 0.5, "val/loss": 0.25, "test/loss": float("nan")}
    assert objective(result, None) == 0.5
    assert objective(result, "val/loss") == 0.25
    with pytest.raises(UserError, match=r"optimized_metric=val/missing is not a metric of the run; .*val/loss"):
        objective(result, "val/missing")  # a typo must not quietly tune on the test score
    assert objective(result, "test/loss") is None  # a NaN would crash the Optuna sweeper
    assert objective({**result, "score": math.inf}, None) is None
