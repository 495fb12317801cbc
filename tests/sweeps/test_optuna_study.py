"""The project's Optuna sweeper (``hydra/sweeper=optuna``, ``sweeps.optuna_study``, ``sweeps.trial``): through the
CLI, a grid search with the median pruner in the default journal storage, continued by a re-run, and a search
whose every trial fails; with a stand-in launcher, the trials an earlier run left RUNNING and damaged storages."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import assert_one_line_error, run_cli_forked
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.run.lock import owned
from recursive_ae_gan.sweeps.optuna_study import StudySweeper

# Optuna's grid order under its seed 0 puts these three as trials 0.005, 1e-7, 1e30: a run that learns, one that
# learns nothing in its first epoch (the median pruner stops it there), and one that diverges (FAIL).
GRID = ("hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "model.lr=choice(1e30,1e-7,0.005)")
PRUNED_AFTER_ONE_TRIAL = ("hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1")

READ_BACK = """
import json, sys, optuna
storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(sys.argv[1]))
print(json.dumps([
    {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
     "intermediate": t.intermediate_values, "run_dir": t.user_attrs.get("run_dir")}
    for t in optuna.load_study(study_name=sys.argv[2], storage=storage).trials
]))
"""


def read_back(journal: Path, study_name: str) -> list[dict]:
    """The study's trials as a fresh interpreter reads them through Optuna's public API (what the dashboard reads)."""
    process = subprocess.run(
        [sys.executable, "-c", READ_BACK, str(journal), study_name], capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout)


def test_a_pruned_grid_search_continues_and_ends_in_its_journal(data_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "D"
    search = [*GRID, *PRUNED_AFTER_ONE_TRIAL, "hydra.sweeper.n_jobs=1", "optimized_metric=val/loss"]
    search += ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep}", "trainer.max_epochs=2", "collapse_threshold=0"]
    first = run_cli_forked(data_root, tmp_path / "first", *search, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 jobs: 1 ok, 0 failed, 1 pruned" in first.stdout  # a pruned trial does not fail the sweep

    second = run_cli_forked(data_root, tmp_path / "second", *search, "hydra.sweeper.n_trials=10")
    assert "study D already holds 2 trials of n_trials=3: running 1 more" in second.stdout  # the grid's 3 points
    assert assert_one_line_error(second) == f"error: 3 jobs: 1 ok, 1 failed, 1 pruned (job 2: see {sweep}/2/error.log)"

    trials = read_back(sweep / "optuna.journal", "D")  # the default storage, the study named after the sweep dir
    assert [(t["number"], t["state"], t["params"]["model.lr"]) for t in trials] == [
        (0, "COMPLETE", 0.005),
        (1, "PRUNED", 1e-7),
        (2, "FAIL", 1e30),
    ]
    metrics = [json.loads((sweep / str(t["number"]) / "metrics.json").read_text()) for t in trials]
    assert [m["status"] for m in metrics] == ["ok", "pruned", "diverged"]
    for trial in trials:  # job i is trial i, recorded for the dashboard
        job = sweep / str(trial["number"])
        assert trial["run_dir"] == str(job)
        assert f"model.lr={trial['params']['model.lr']}" in OmegaConf.load(job / ".hydra" / "overrides.yaml")
    # Every validation reported, its epoch the step: the last one is the run's val/loss.
    assert list(trials[0]["intermediate"]) == ["0", "1"]
    assert trials[0]["intermediate"]["1"] == pytest.approx(metrics[0]["val/loss"]) == pytest.approx(trials[0]["value"])
    assert trials[0]["intermediate"]["0"] < trials[1]["intermediate"]["0"]  # why the median pruner stopped trial 1
    assert list(trials[1]["intermediate"]) == ["0"] and metrics[1]["pruned_after_epoch"] == 0
    assert trials[1]["intermediate"]["0"] == pytest.approx(metrics[1]["val/loss"])
    assert "score" not in metrics[1] and (sweep / "1" / "checkpoints" / "last.ckpt").is_file()  # validated, kept
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_params == {"model.lr": 0.005}


def test_a_search_whose_every_trial_fails_ends_in_one_line(data_root: Path, tmp_path: Path) -> None:
    """The issue's command, at one trial: the autoencoder collapses (a threshold no model reaches)."""
    search = (
        "hydra.mode=MULTIRUN",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=1",
        "model.lr=interval(0.0005,0.01)",
    )
    process = run_cli_forked(data_root, tmp_path, *search, "trainer.max_epochs=1", "collapse_threshold=1000")
    (sweep,) = (tmp_path / "multiruns").iterdir()
    assert assert_one_line_error(process) == f"error: 1 job: 0 ok, 1 failed (job 0: see {sweep}/0/error.log)"
    assert f"study {sweep.name}: no trial completed (1 failed): no best parameters" in process.stdout
    assert "the model collapsed" in process.stdout  # the job's reason, in the sweep's log
    assert not (sweep / "optimization_results.yaml").exists()


class Launcher:
    """Hydra's launcher as the sweeper sees it: records each launch, and writes for every job the ``metrics.json``
    of a run whose value is its ``x`` (``failed``: of a failed run), except for the jobs in ``elsewhere`` (another
    process trains them)."""

    def __init__(self, sweep_dir: Path, elsewhere: tuple[int, ...] = (), failed: tuple[int, ...] = ()) -> None:
        self.sweep_dir, self.elsewhere, self.failed = sweep_dir, elsewhere, failed
        self.launches: list[tuple[int, list[str]]] = []

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        self.launches.append((initial_job_idx, [" ".join(o) for o in job_overrides]))
        for job, overrides in enumerate(job_overrides, start=initial_job_idx):
            if job not in self.elsewhere:
                x = float(overrides[0].split("=")[1])  # x=VALUE, the only parameter
                (self.sweep_dir / str(job)).mkdir(parents=True)
                status = "failed" if job in self.failed else "ok"
                (self.sweep_dir / str(job) / "metrics.json").write_text(json.dumps({"status": status, "score": x}))
        return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED) for o in job_overrides]


def sweep(
    tmp_path: Path,
    sampler: dict,
    x: str,
    n_trials: int,
    n_jobs: int = 1,
    max_failure_rate: float = 1.0,
    custom_search_space: str | None = None,
    **launcher,
) -> Launcher:
    """One run of the sweeper on study ``s`` in ``tmp_path/study.db``, set up as Hydra sets it up."""
    config = DictConfig({"hydra": {"sweeper": {"sampler": sampler}, "sweep": {"dir": str(tmp_path)}}})
    sweeper = StudySweeper(
        sampler=instantiate(config.hydra.sweeper.sampler),
        direction="minimize",
        storage=f"sqlite:///{tmp_path}/study.db",
        study_name="s",
        n_trials=n_trials,
        n_jobs=n_jobs,
        max_failure_rate=max_failure_rate,
        params=DictConfig({"x": x}),
        custom_search_space=custom_search_space,
        pruner=None,
    )
    sweeper.config, sweeper.launcher, sweeper.sweep_dir = config, Launcher(tmp_path, **launcher), tmp_path
    sweeper.sweep([])
    return sweeper.launcher


def states(tmp_path: Path) -> list[str]:
    return [t.state.name for t in optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db").trials]


def test_a_trial_left_running_by_a_killed_run_is_failed_and_counts(tmp_path: Path, caplog) -> None:
    random = {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    sweep(tmp_path, random, "interval(0, 1)", n_trials=1)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db")
    study.ask()  # trial 1, asked by a run killed before it could tell it

    launcher = sweep(tmp_path, random, "interval(0, 1)", n_trials=4, n_jobs=2)
    assert "trial 1 of study s was left running by a run that was killed: told FAIL" in caplog.text
    assert [job for job, _ in launcher.launches] == [2]  # one batch: jobs 2 and 3, trials 2 and 3
    assert states(tmp_path) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db").trials
    assert launcher.launches[0][1] == [f"x={trials[n].params['x']}" for n in (2, 3)]
    assert len({t.params["x"] for t in trials if t.state.name == "COMPLETE"}) == 3  # reseeded: no repeats


def test_a_job_left_to_another_process_is_not_failed_and_told_once_it_ends(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="recursive_ae_gan.sweeps.optuna_study")
    random = {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    with owned(tmp_path / "1"):  # job 1 is trained by another process: the sweep leaves it
        sweep(tmp_path, random, "interval(0, 1)", n_trials=2, elsewhere=(1,))
    assert "trial 1 of study s: its job is trained by another process; left running" in caplog.text
    assert states(tmp_path) == ["COMPLETE", "RUNNING"]
    (tmp_path / "1" / "metrics.json").write_text(json.dumps({"status": "ok", "score": 0.25}))  # its owner finished

    assert sweep(tmp_path, random, "interval(0, 1)", n_trials=2).launches == []  # the next run tells it
    assert "trial 1 of study s ended after its run: told COMPLETE" in caplog.text
    assert states(tmp_path) == ["COMPLETE", "COMPLETE"]
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db").trials[1].value == 0.25


def test_a_continued_grid_study_runs_the_points_it_has_not(tmp_path: Path) -> None:
    grid = {"_target_": "optuna.samplers.GridSampler", "_partial_": True}
    first = sweep(tmp_path, grid, "choice(3, 1, 2)", n_trials=1).launches
    rest = sweep(tmp_path, grid, "choice(3, 1, 2)", n_trials=10).launches
    assert [job for job, _ in first + rest] == [0, 1, 2]  # one job a launch (n_jobs=1)
    assert sorted(x for _, xs in first + rest for x in xs) == ["x=1", "x=2", "x=3"]  # each point once
    assert sweep(tmp_path, grid, "choice(3, 1, 2)", n_trials=10).launches == []  # the grid's 3 points are run
    assert OmegaConf.load(tmp_path / "optimization_results.yaml").best_params == {"x": 1}


@pytest.mark.parametrize("storage", ["study.db", "optuna.journal"])
def test_a_damaged_storage_is_one_line_naming_it(tmp_path: Path, storage: str) -> None:
    from recursive_ae_gan.sweeps.optuna_study import open_storage

    path = tmp_path / storage
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 2 + b"\n")  # a header, then garbage
    address = f"sqlite:///{path}" if storage.endswith(".db") else str(path)
    with pytest.raises(UserError) as refused:
        open_storage(address)
    message = str(refused.value)
    assert message.startswith(f"hydra.sweeper.storage={address} cannot be read (")
    assert message.endswith("; a damaged file?): move it away to start the study anew, or give another storage")


def test_a_batch_failing_beyond_max_failure_rate_stops_the_search(tmp_path: Path, caplog) -> None:
    random = {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    launcher = sweep(tmp_path, random, "interval(0, 1)", n_trials=6, n_jobs=2, max_failure_rate=0.5, failed=(2, 3))
    assert [job for job, _ in launcher.launches] == [0, 2]  # the second batch failed whole: no third
    assert "2 of 2 trials failed, more than max_failure_rate=0.5: the search stops" in caplog.text
    assert states(tmp_path) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]


def suggest_depth(cfg: DictConfig, trial: optuna.trial.Trial) -> None:
    """A ``custom_search_space``: one more parameter, suggested in Python."""
    trial.suggest_int("model.recursion_depth", 0, 2)


def test_a_custom_search_space_adds_its_parameters_to_every_job(tmp_path: Path) -> None:
    random = {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    launcher = sweep(tmp_path, random, "interval(0, 1)", n_trials=2, custom_search_space=f"{__name__}.suggest_depth")
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db").trials
    assert [overrides for _, overrides in launcher.launches] == [
        [f"x={t.params['x']} model.recursion_depth={t.params['model.recursion_depth']}"] for t in trials
    ]
