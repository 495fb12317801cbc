"""sweeps.summary and sweeps through the real CLI: submitit, a sweep's summary and exit
status, what a job returns to the sweeper, the same sweep started twice."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    ONE_EPOCH,
    REPO,
    assert_one_line_error,
    compose_hydra,
    fixture_overrides,
    run_cli_forked,
    sweep_dir,
)

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.run.lock import owned
from recursive_ae_gan.sweeps.summary import job_statuses, objective, summary


def error_line(process: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command that failed without a traceback."""
    assert process.returncode == 1, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.stderr[-3000:]
    return errors[0]


def test_submitit_local_runs_a_sweep(data_root: Path, tmp_path: Path) -> None:
    """The sweep's own process forked from this one; submitit starts each job's process afresh."""
    overrides = ["hydra/launcher=submitit_local", "seed=0,1", "trainer.max_epochs=1", "collapse_threshold=0"]
    process = run_cli_forked(data_root, tmp_path, *overrides, "--multirun")
    assert process.returncode == 0, process.stderr[-3000:]
    assert "2 jobs: 2 ok, 0 failed" in process.stdout
    sweep = sweep_dir(tmp_path)
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "ok"
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # each job ran as a submitit job


def test_sweep_with_failed_and_collapsed_jobs_exits_1_with_a_summary(data_root: Path, tmp_path: Path) -> None:
    """Jobs 2 and 3 cannot find 100000 images; job 1 collapses (no model varies 1000x as much as its inputs).
    Every job runs: a failed one is recorded, with where to look, and the sweep goes on."""
    sweep_overrides = ["data.train_size=64,100000", "collapse_threshold=0,1000", "trainer.max_epochs=1"]
    process = run_cli_forked(data_root, tmp_path, *sweep_overrides, "--multirun")
    sweep = sweep_dir(tmp_path)
    assert error_line(process) == f"error: 4 jobs: 1 ok, 3 failed (jobs 1, 2, 3: see {sweep}/1/error.log)"
    assert job_statuses(sweep) == {"0": "ok", "1": "collapsed", "2": "failed", "3": "failed"}
    failed = json.loads((sweep / "2" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "data.train_size=100000" in failed["error"]
    assert "UserError" in (sweep / "2" / "error.log").read_text()


def test_summary_counts_every_status_but_ok_as_failed_and_running_jobs_apart(tmp_path: Path) -> None:
    jobs = [("0", '{"status": "ok"}'), ("1", '{"status": "diverged"}'), ("2", None), ("10", "{"), ("11", "[]"),
            ("12", b"\x89PNG"), ("13", '{"status": "ok"}')]  # fmt: skip
    for job, metrics in jobs:
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text("[]\n")
        if isinstance(metrics, bytes):
            (tmp_path / job / "metrics.json").write_bytes(metrics)
        elif metrics is not None:
            (tmp_path / job / "metrics.json").write_text(metrics)
    (tmp_path / "1" / "error.log").write_text("Traceback ...")
    with owned(tmp_path / "13"):  # trained again, by another process: its metrics.json is an earlier attempt's
        statuses = job_statuses(tmp_path)
    unreadable = {"10": "unreadable", "11": "unreadable", "12": "unreadable"}  # cut short, not an object, not text
    assert statuses == {"0": "ok", "1": "diverged", "2": "missing", **unreadable, "13": "running"}
    assert summary(tmp_path, statuses) == (
        f"7 jobs: 1 ok, 5 failed, 1 running elsewhere (jobs 1, 2, 10, 11, 12: see {tmp_path}/1/error.log; job 13: "
        "left to the process training it)"
    )
    assert summary(tmp_path, {"2": "missing"}) == f"1 job: 0 ok, 1 failed (job 2: see {tmp_path}/2)"
    one_failed = f"2 jobs: 1 ok, 1 failed (job 1: see {tmp_path}/1/error.log)"  # the sweep's line, but for "error: "
    assert summary(tmp_path, {"0": "ok", "1": "failed"}) == one_failed
    assert summary(tmp_path, {"0": "ok", "1": "running", "2": "running"}) == (
        "3 jobs: 1 ok, 0 failed, 2 running elsewhere (jobs 1, 2: left to the process training them)"
    )
    assert summary(tmp_path, {"0": "ok", "1": "pruned", "2": "failed", "3": "pruned"}) == (
        f"4 jobs: 1 ok, 1 failed, 2 pruned (job 2: see {tmp_path}/2)"  # an Optuna pruner's stop is no failure
    )


def test_a_sweep_started_twice_leaves_the_job_in_training_to_its_owner(data_root: Path, tmp_path: Path) -> None:
    """The first sweep holds mid-epoch in job 0. The same command again leaves job 0 to it and trains job 1; a
    single run continued with ckpt_path=auto in job 0's directory is refused. After a SIGKILL of the first, the
    same command takes job 0 over; job 1's metrics.json, cut short meanwhile, counts as unfinished: job 1 is tested
    again from its last.ckpt, not trained again."""
    sweep, holding = tmp_path / "sweep", tmp_path / "holding"
    hold = [f"+callbacks.hold.{key}" for key in ("_target_=tests.recorders.HoldAt", "job=0", "epoch=0", "batch=1")]
    overrides = [*ONE_EPOCH, *hold, f"+callbacks.hold.marker={holding}"]
    sweep_command = [*overrides, "seed=0,1", f"hydra.sweep.dir={sweep}", "--multirun"]
    command = [sys.executable, "-m", "recursive_ae_gan.train", *fixture_overrides(data_root, tmp_path), *sweep_command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.txt", "w") as output:
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not holding.exists():  # job 0 is in its first epoch
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.txt").read_text()[-3000:]
            time.sleep(0.2)
        owner = f"{sweep / '0'} is being trained by another process (pid {first.pid} on {socket.gethostname()})"

        # The same command in another process: forked from this one (its sweep's processes are not the point).
        second = run_cli_forked(data_root, tmp_path, *sweep_command)
        assert second.returncode == 0, second.stderr[-3000:]  # nothing failed: job 0 is its owner's to report
        assert f"job 0: {owner}: left to it" in second.stdout
        assert "2 jobs: 1 ok, 0 failed, 1 running elsewhere (job 0: left to the process training it)" in second.stdout
        assert not (sweep / "0" / "metrics.json").exists() and not (sweep / "0" / "error.log").exists()
        assert "left to it" not in (sweep / "0" / "train.log").read_text()  # the owner's log: only its own lines

        single = [*overrides, "seed=0", f"hydra.run.dir={sweep / '0'}", "ckpt_path=auto"]
        assert assert_one_line_error(run_cli_forked(data_root, tmp_path / "single", *single)) == (
            f"error: {owner}: left to it"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    metrics = sweep / "1" / "metrics.json"
    result, trained = json.loads(metrics.read_text()), (sweep / "1" / "checkpoints" / "last.ckpt").read_bytes()
    metrics.write_text(metrics.read_text()[:100])
    third = run_cli_forked(data_root, tmp_path, *sweep_command)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "2 jobs: 2 ok, 0 failed" in third.stdout
    assert f"{metrics} is damaged (not JSON: " in third.stdout and "the run counts as unfinished" in third.stdout
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "ok"  # trained at last
    assert json.loads(metrics.read_text()) == result  # tested again, as before
    assert (sweep / "1" / "checkpoints" / "last.ckpt").read_bytes() == trained  # not trained again


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
