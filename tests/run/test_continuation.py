"""Continuing a run in its own directory (``run.continuation``): a killed run or sweep, re-run with the same command,
ends as an uninterrupted one; finished runs are not trained again; other settings are refused."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import fixture_overrides, run_cli_forked, write_image_folder

from recursive_ae_gan.run.continuation import Continuation, NotContinued, continuation, differences, start
from recursive_ae_gan.run.train import train

REPO = Path(__file__).resolve().parents[2]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_other_settings_are_refused_in_one_line_and_the_directory_kept(compose_cfg, tmp_path: Path) -> None:
    hydra_config = tmp_path / ".hydra" / "config.yaml"
    hydra_config.parent.mkdir()
    hydra_config.write_text("the trained run's\n")
    start(compose_cfg("ckpt_path=auto", "trainer.max_epochs=2"))  # what an attempt writes as its training starts
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    hydra_config.write_text("this attempt's\n")  # Hydra rewrites .hydra/ before the job runs

    other = compose_cfg("ckpt_path=auto", "model.lr=0.01", "seed=1", "trainer.max_epochs=1")
    with pytest.raises(NotContinued) as refused:
        continuation(other, automatic=False)
    assert str(refused.value) == (
        f"{tmp_path} holds a run trained under other settings: seed=1 (trained under 0), "
        "model.lr=0.01 (trained under 0.005), data.seed=1 (trained under 0), trainer.max_epochs=1 (trained under 2); "
        "use its overrides, another run directory, or ckpt_path=FILE to resume from it on purpose"
    )
    assert hydra_config.read_text() == "the trained run's\n"  # the directory still describes the run it holds

    # Labels, loggers and a longer run do not change what was trained; an explicit checkpoint is always taken.
    same = compose_cfg("ckpt_path=auto", "tags=[again]", "logger=csv", "trainer.max_epochs=5")
    assert continuation(same, automatic=False) == Continuation(ckpt_path=last)
    assert continuation(compose_cfg(f"ckpt_path={last}", "model.lr=0.01"), automatic=False).ckpt_path == last
    # Without ckpt_path=auto a single run starts afresh; a multirun's job continues (so it is refused here).
    assert continuation(compose_cfg("model.lr=0.01"), automatic=False) == Continuation()
    with pytest.raises(NotContinued, match="model.lr=0.01"):
        continuation(compose_cfg("model.lr=0.01"), automatic=True)


def test_an_option_added_since_the_run_trained_continues_it_only_while_off() -> None:
    trained = {"model.lr": 0.005, "trainer.max_epochs": 2}
    assert differences(trained, {**trained, "data.hflip": False, "model.step_weights": None}) == []
    assert differences(trained, {**trained, "data.hflip": True}) == ["data.hflip=True (trained under unset)"]
    assert differences({**trained, "data.hflip": True}, trained) == ["data.hflip=unset (trained under True)"]
    assert differences(trained, {**trained, "trainer.max_epochs": 3}) == []  # a longer run trains on
    assert differences(trained, {**trained, "trainer.max_epochs": 1}) == ["trainer.max_epochs=1 (trained under 2)"]


def test_a_failed_run_is_kept_unless_rerun_failed(compose_cfg, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"status": "failed", "error": "MNIST not found"}))  # before training started
    with pytest.raises(NotContinued, match="holds a run that ended failed: MNIST not found; rerun_failed=true"):
        continuation(compose_cfg("ckpt_path=auto"), automatic=False)
    start(compose_cfg())
    error = "model.lr=1000: train/loss is nan at epoch 0, batch 3"
    metrics.write_text(json.dumps({"status": "diverged", "error": error}))
    with pytest.raises(
        NotContinued, match=f"holds a run that ended diverged: {error}; rerun_failed=true runs it again"
    ):
        continuation(compose_cfg("ckpt_path=auto"), automatic=False)
    rerun = compose_cfg("ckpt_path=auto", "rerun_failed=true")
    assert continuation(rerun, automatic=False) == Continuation()  # no checkpoint: from scratch
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert continuation(rerun, automatic=False) == Continuation(ckpt_path=last)  # on from its last checkpoint


def test_a_damaged_result_counts_as_unfinished_and_damaged_settings_are_refused(compose_cfg, tmp_path, caplog) -> None:
    start(compose_cfg("ckpt_path=auto"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"status": "ok", "score": 0.0')  # cut short
    with caplog.at_level(logging.WARNING):
        assert continuation(compose_cfg("ckpt_path=auto"), automatic=True) == Continuation(ckpt_path=last)
    cut = "not JSON: Expecting ',' delimiter: line 1 column 30 (char 29); cut short?"
    assert f"{metrics} is damaged ({cut}): the run counts as unfinished" in caplog.text

    settings = tmp_path / "trained_config" / "settings.yaml"
    for damage, why in [("model.lr: [0.005\n", "not YAML: expected ',' or ']', but got '<stream end>' at line 2"),
                        ("", "not a mapping of settings"), ("- model.lr\n", "not a mapping of settings")]:  # fmt: skip
        settings.write_text(damage)
        with pytest.raises(NotContinued) as refused:
            continuation(compose_cfg("ckpt_path=auto"), automatic=True)
        assert str(refused.value) == (
            f"{settings} is damaged ({why}; cut short?): the settings of the run in {tmp_path} cannot be compared "
            f"with this command's; resume it on purpose with ckpt_path={last}, or use another run directory"
        )


def test_killed_streaming_run_continues_bit_identical_and_finished_is_not_retrained(compose_cfg, tmp_path) -> None:
    """What a kill during epoch 1 leaves (the attempt's settings, last.ckpt of epoch 0, no metrics.json),
    continued with ckpt_path=auto, then extended by one epoch, ends with an uninterrupted 3-epoch run's weights."""
    folder = write_image_folder(tmp_path / "images", corrupt=False)
    streaming = [f"data.root={folder}", "data=folder", "data.image_size=16", "data.in_memory=false",
                 "data.num_workers=0", "data.train_size=24", "data.val_size=8", "data.test_size=8",
                 "data.batch_size=8", "collapse_threshold=0"]  # fmt: skip
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    (killed_dir / "checkpoints").mkdir(parents=True)
    kill_state = killed_dir / "checkpoints" / "last.ckpt"
    copy = [f"+callbacks.copy.{key}" for key in ("_target_=recorders.CopyAt", "epoch=1", f"target={kill_state}")]
    straight_last = straight_dir / "checkpoints" / "last.ckpt"
    straight = compose_cfg(*streaming, "trainer.max_epochs=3", *copy, f"+callbacks.copy.source={straight_last}")
    straight.paths.output_dir = str(straight_dir)
    straight_result = train(straight)
    assert torch.load(kill_state, weights_only=True)["epoch"] == 0

    seen = tmp_path / "seen" / "rank0.json"  # the batches each attempt trains
    record = ["+callbacks.record._target_=recorders.RecordBatches", f"+callbacks.record.path={seen.parent}"]

    def killed(*overrides: str):
        cfg = compose_cfg(*streaming, *record, "ckpt_path=auto", *overrides)
        cfg.paths.output_dir = str(killed_dir)
        return cfg

    start(killed("trainer.max_epochs=2"))  # the killed attempt's training had started
    result = train(killed("trainer.max_epochs=2"))
    assert [epoch for epoch, _, _ in json.loads(seen.read_text())] == [1, 1, 1]  # on from epoch 1's first batch
    metrics = killed_dir / "metrics.json"
    stamp = metrics.stat().st_mtime_ns, kill_state.stat().st_mtime_ns
    assert train(killed("trainer.max_epochs=2")) == result  # finished: the stored result, nothing trained again
    assert (metrics.stat().st_mtime_ns, kill_state.stat().st_mtime_ns) == stamp
    metrics.unlink()  # killed after its last epoch, while testing
    assert train(killed("trainer.max_epochs=2")) == result
    assert train(killed("trainer.max_epochs=3")) == straight_result  # a longer run trains on
    assert [epoch for epoch, _, _ in json.loads(seen.read_text())] == [2, 2, 2]
    assert_same_weights(straight_last, kill_state)


def test_killed_sweep_rerun_skips_finished_jobs_and_resumes_the_killed_one(data_root, compose_cfg, tmp_path) -> None:
    """A sweep of the game over two seeds, SIGKILLed mid-epoch in its second job and run again: the finished
    job is not trained again, the killed one resumes from its last.ckpt and ends as an uninterrupted run."""
    sweep = tmp_path / "sweep"
    game = ["model=ae_gan", "model.warmup_epochs=1", "seed=0,1", "trainer.max_epochs=2", "collapse_threshold=0",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    kill = ["_target_=tests.recorders.KillAt", "job=1", "epoch=1", "batch=2", f"marker={tmp_path / 'killed'}"]
    seen = tmp_path / "seen" / "rank0.json"  # the batches of the last job that trained
    record = ["+callbacks.record._target_=tests.recorders.RecordBatches", f"+callbacks.record.path={seen.parent}"]
    kill_and_record = [f"+callbacks.kill.{k}" for k in kill] + record
    command = [sys.executable, "-m", "recursive_ae_gan.train", "--multirun", *fixture_overrides(data_root, tmp_path),
               *game, *kill_and_record]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == -9, first.stderr[-3000:]  # SIGKILL
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "ok"
    assert not (sweep / "1" / "metrics.json").exists() and (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
    finished = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    # The same command again, in a child forked from this process (the SIGKILL is the first's).
    second = run_cli_forked(data_root, tmp_path, *game, *kill_and_record, "--multirun")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 jobs: 2 ok, 0 failed" in second.stdout + second.stderr
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == finished
    assert [epoch for epoch, _, _ in json.loads(seen.read_text())] == [1] * 4  # job 1, on from epoch 1's start

    # The killed job's directory, continued as a single run with another learning rate: one line, nothing changed.
    job = sweep / "1"
    hydra_files = {name: (job / ".hydra" / name).read_text() for name in ("config.yaml", "overrides.yaml")}
    single = [o for o in game if not o.startswith(("seed=", "hydra."))] + ["seed=1", f"hydra.run.dir={job}"]
    refused = run_cli_forked(
        data_root, tmp_path / "refused", *single, *kill_and_record, "ckpt_path=auto", "model.lr=0.01"
    )
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1] == (
        f"error: {job} holds a run trained under other settings: model.lr=0.01 (trained under 0.005); "
        "use its overrides, another run directory, or ckpt_path=FILE to resume from it on purpose"
    )
    assert {name: (job / ".hydra" / name).read_text() for name in hydra_files} == hydra_files

    straight = compose_cfg(
        "model=ae_gan", "model.warmup_epochs=1", "seed=1", "trainer.max_epochs=2", "collapse_threshold=0"
    )
    result = train(straight)
    assert json.loads((sweep / "1" / "metrics.json").read_text()) == result
    assert_same_weights(tmp_path / "checkpoints" / "last.ckpt", sweep / "1" / "checkpoints" / "last.ckpt")
