"""Optuna studies that continue (``sweeps.optuna_study.StudySweeperImpl``): a re-run on a stored study adds the trials
it lacks, with new parameters, each in the job directory of its trial number; a trial a killed run left
running is told FAIL; a grid study goes on with the points it has not run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ONE_EPOCH, assert_one_line_error, run_cli_forked, run_sweep, sweep_dir
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recursive_ae_gan.analysis.report import write_report
from recursive_ae_gan.core.errors import UserError

# optuna 2.10 (the newest the Hydra plugin takes) uses SQLAlchemy 1.4 APIs that 2.0 removed, and says so.
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated API features detected")


def files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: its modification time and bytes."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_a_rerun_continues_the_study_to_n_trials_in_new_job_directories(data_root: Path, tmp_path: Path) -> None:
    import optuna  # here, under the filter: importing optuna 2.10 warns

    storage, sweep = f"sqlite:///{tmp_path}/study.db", tmp_path / "D"
    study = [
        "hparams_search=ae_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=s1",
        f"hydra.sweep.dir={sweep}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "collapse_threshold=0",
    ]
    first = run_cli_forked(data_root, tmp_path / "first", *study, "hydra.sweeper.n_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    trial_0 = files(sweep / "0")

    second = run_sweep(data_root, tmp_path, *study, "hydra.sweeper.n_trials=3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "study s1 already holds 1 trial of n_trials=3: running 2 more" in second.stdout
    assert "3 jobs: 3 ok, 0 failed" in second.stdout  # the summary covers both runs' jobs
    trials = optuna.load_study(study_name="s1", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["model.lr"] for t in trials}) == 3  # the sampler, seeded anew, did not replay trial 0
    for trial in trials:  # job i is trial i: its parameters, its own result
        job = sweep / str(trial.number)
        assert f"model.lr={trial.params['model.lr']}" in OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert json.loads((job / "metrics.json").read_text())["val/loss"] == pytest.approx(trial.value)
    assert files(sweep / "0") == trial_0

    third = run_cli_forked(data_root, tmp_path / "third", *study, "hydra.sweeper.n_trials=3")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "study s1 already holds 3 trials of n_trials=3: nothing to run" in third.stdout
    assert len(optuna.load_study(study_name="s1", storage=storage).trials) == 3
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert files(sweep / "0") == trial_0
    assert len(write_report(sweep).runs) == 3  # report DIR reads the jobs of both runs


class Launcher:
    """Hydra's launcher as the sweeper sees it: records each launch, and every job returns its value of x."""

    def __init__(self) -> None:
        self.launches: list[tuple[int, list[str]]] = []

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        self.launches.append((initial_job_idx, [" ".join(o) for o in job_overrides]))
        return [
            JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=float(o[0].split("=")[1]))
            for o in job_overrides  # o[0]: x=VALUE, the only parameter
        ]


def sweep(tmp_path: Path, sampler: dict, x: str, n_trials: int, n_jobs: int = 1) -> Launcher:
    """One run of the sweeper on study ``s`` in ``tmp_path/study.db``, set up as Hydra sets it up."""
    from recursive_ae_gan.sweeps.optuna_study import StudySweeperImpl

    config = DictConfig({"hydra": {"sweeper": {"sampler": sampler}, "sweep": {"dir": str(tmp_path)}}})
    sweeper = StudySweeperImpl(
        sampler=instantiate(config.hydra.sweeper.sampler),
        direction="minimize",
        storage=f"sqlite:///{tmp_path}/study.db",
        study_name="s",
        n_trials=n_trials,
        n_jobs=n_jobs,
        max_failure_rate=1.0,
        search_space=None,
        custom_search_space=None,
        params=DictConfig({"x": x}),
    )
    sweeper.config, sweeper.launcher, sweeper.sweep_dir = config, Launcher(), str(tmp_path)
    sweeper.hydra_context = object()  # the launcher's: unused by the sweeper itself
    sweeper.sweep([])
    return sweeper.launcher


def test_a_trial_left_running_by_a_killed_run_is_failed_and_counts(tmp_path: Path, caplog) -> None:
    import optuna

    random = {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    sweep(tmp_path, random, "interval(0, 1)", n_trials=1)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db")
    study.ask()  # trial 1, asked by a run killed before it could tell it

    launcher = sweep(tmp_path, random, "interval(0, 1)", n_trials=4, n_jobs=2)
    assert "trial 1 of study s was left running by a run that was killed: told FAIL" in caplog.text
    assert [job for job, _ in launcher.launches] == [2]  # one batch: jobs 2 and 3, trials 2 and 3
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert launcher.launches[0][1] == [f"x={trials[n].params['x']}" for n in (2, 3)]
    assert len({t.params["x"] for t in trials if t.state.name == "COMPLETE"}) == 3


def test_a_damaged_study_database_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "study.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 2)  # a header, then garbage
    with pytest.raises(UserError) as refused:
        sweep(tmp_path, {"_target_": "optuna.samplers.RandomSampler", "seed": 0}, "interval(0, 1)", n_trials=1)
    assert str(refused.value) == (
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db cannot be read (file is not a database; a damaged "
        "file?): move it away to start the study anew, or give another storage"
    )


def test_a_continued_grid_study_runs_the_points_it_has_not(tmp_path: Path) -> None:
    grid = {"_target_": "optuna.samplers.GridSampler", "_partial_": True}
    assert sweep(tmp_path, grid, "choice(3, 1, 2)", n_trials=1).launches == [(0, ["x=1"])]
    assert sweep(tmp_path, grid, "choice(3, 1, 2)", n_trials=10).launches == [(1, ["x=2"]), (2, ["x=3"])]
    assert sweep(tmp_path, grid, "choice(3, 1, 2)", n_trials=10).launches == []  # the grid's 3 points are run
    assert OmegaConf.load(tmp_path / "optimization_results.yaml").best_params == {"x": 1}


@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna 2.10 on SQLAlchemy 1.4
def test_a_grid_study_whose_last_trial_fails_ends_with_its_results(data_root: Path, tmp_path: Path) -> None:
    grid = ("hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "model.lr=choice(0.005,1e30)")
    process = run_cli_forked(data_root, tmp_path, "hydra.mode=MULTIRUN", *grid, *ONE_EPOCH)  # -m, as an override
    sweep = sweep_dir(tmp_path)
    assert "Traceback" not in process.stderr
    assert_one_line_error(process, f"2 jobs: 1 ok, 1 failed (job 1: see {sweep}/1/error.log)")
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "diverged"
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_params == {"model.lr": 0.005}
    assert results.best_value == pytest.approx(json.loads((sweep / "0" / "metrics.json").read_text())["score"])
