"""The train entry point: a real short training, its run directory, and the CLI in a subprocess."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import (
    ONE_EPOCH,
    assert_one_line_error,
    data_and_model,
    fixture_overrides,
    refuse_writes,
    run_cli,
    run_cli_forked,
    run_dir,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recursive_ae_gan.models import RecursiveAutoencoder
from recursive_ae_gan.run.train import processes_per_node, strategy_for, train

REPO = Path(__file__).resolve().parents[2]
BATCHES = 4  # 64 fixture training images in batches of 16


def test_training_lowers_the_loss_and_fills_the_run_dir(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("trainer.max_epochs=8")
    # The model train() starts from: same seed, same instantiation order.
    datamodule, untrained = data_and_model(cfg)
    tester = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    untrained_loss = tester.test(untrained, datamodule=datamodule, verbose=False)[0]["test/loss"]

    result = train(cfg)
    assert result["status"] == "ok"
    assert result["test/loss"] < 0.5 * untrained_loss
    assert result["score_name"] == "test/step_0/mse" and result["score"] == result["test/step_0/mse"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    # last.ckpt is the final state (the tested weights), whether or not the last epoch was the best.
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 7 and last["global_step"] == 8 * BATCHES
    assert len(list((tmp_path / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    assert not list((tmp_path / "checkpoints").glob("last-v*.ckpt"))
    # The checkpoint alone rebuilds the tested model (its hparams hold the network configs and image shape).
    rebuilt = RecursiveAutoencoder.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert rebuilt.hparams.image_shape == [1, 28, 28]
    rebuilt_loss = tester.test(rebuilt, datamodule=datamodule, verbose=False)[0]["test/loss"]
    assert rebuilt_loss == pytest.approx(result["test/loss"], rel=1e-5)

    # Lightning reopens the writer for testing and hparams: read the whole folder.
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    val_loss = [e.value for e in accumulator.Scalars("val/loss")]
    assert len(val_loss) == 8 and val_loss[-1] < 0.5 * val_loss[0]
    assert len(accumulator.Images("val/reconstructions")) == 8
    (hp_metric,) = accumulator.Scalars("hp_metric")
    assert hp_metric.value == pytest.approx(result["score"])


def test_csv_logger_writes_the_metrics(compose_cfg, tmp_path: Path) -> None:
    """``logger=csv`` replaces TensorBoard: the run logs to csv/metrics.csv and still finishes."""
    result = train(compose_cfg("logger=csv", "trainer.max_epochs=1", "collapse_threshold=0"))
    assert result["status"] == "ok"
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "val/loss", "train/loss_epoch"} <= set(header)
    assert not (tmp_path / "tensorboard").exists()


def test_cli_missing_data_is_one_line_error(data_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_data"
    process = run_cli_forked(data_root, tmp_path / "out", f"data.root={missing}", "data.download=false")
    assert_one_line_error(process, f"error: MNIST not found in {missing} (torchvision: ", "data.root", "data.download")


def test_cli_invalid_choice_is_one_line_error(data_root: Path, tmp_path: Path) -> None:
    process = run_cli_forked(data_root, tmp_path / "out", "model=ae_gan", "model.balance=foo")
    error = assert_one_line_error(process)
    assert error == "error: model.balance='foo': expected one of alternate, report, target"


def test_cli_sweep_runs_every_job(data_root: Path, tmp_path: Path) -> None:
    # model=ae has no warm-up, so the sweep cannot set model.warmup_epochs; one epoch is all warm-up
    # for rae_gan. One epoch is too short not to look collapsed: collapse_threshold=0.
    sweep_overrides = ["model=ae,rae_gan", "model.recursion_depth=0,1", "trainer.max_epochs=1"]
    process = run_cli(data_root, tmp_path, *sweep_overrides, "collapse_threshold=0", multirun=True)
    assert process.returncode == 0, process.stderr[-3000:]
    (sweep,) = (tmp_path / "multiruns").iterdir()
    jobs = sorted(sweep.glob("[0-9]*"), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combos = set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "ok"
        assert (job / "checkpoints" / "last.ckpt").is_file()
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        model = "rae_gan" if "model=rae_gan" in overrides else "ae"
        depth = 1 if "model.recursion_depth=1" in overrides else 0
        combos.add((model, depth))
        assert f"test/step_{depth}/mse" in metrics and f"test/step_{depth + 1}/mse" not in metrics
        assert ("test/d_real_acc" in metrics) is (model == "rae_gan")
    assert combos == {("ae", 0), ("ae", 1), ("rae_gan", 0), ("rae_gan", 1)}


def test_cli_sweep_leaves_a_job_whose_write_is_refused_unfinished_and_goes_on(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job 0's checkpoints and error.log do not fit on the disk: it is left unfinished (no metrics.json, so the
    same command continues it once there is room), and the sweep trains job 1."""
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    refuse_writes(monkeypatch, lambda target: target.parent == job / "checkpoints" or target == job / "error.log")
    process = run_cli_forked(data_root, tmp_path, "seed=0,1", *ONE_EPOCH, f"hydra.sweep.dir={sweep}", "--multirun")
    assert assert_one_line_error(process) == f"error: 2 jobs: 1 ok, 1 failed (job 0: see {job})"
    assert (
        f"job 0 failed: cannot write {job / 'checkpoints' / 'last.ckpt'}: no space left on device (cannot write "
        f"{job / 'error.log'}: no space left on device)"
    ) in process.stdout
    assert not (job / "metrics.json").exists() and not list((job / "checkpoints").iterdir())
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "ok"


# Noise that must not reach a run's console: Lightning's advertisements, its use of an API torch deprecates,
# and the warning of a scheduler stepped before its optimizer (D's, during the warm-up).
NOISE = ("💡 Tip", "litlogger", "litmodels", "LeafSpec", "lr_scheduler.step()")


def test_cli_resumes_from_last_checkpoint_with_a_quiet_console(data_root: Path, tmp_path: Path) -> None:
    game = ["model=ae_gan", "model.warmup_epochs=1", "collapse_threshold=0",
            "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:1}"]  # fmt: skip
    first = run_cli(data_root, tmp_path / "first", "trainer.max_epochs=1", *game)
    assert first.returncode == 0, first.stderr[-3000:]
    last = run_dir(tmp_path / "first") / "checkpoints" / "last.ckpt"
    second = run_cli(data_root, tmp_path / "second", f"ckpt_path={last}", "trainer.max_epochs=2", *game)
    assert second.returncode == 0, second.stderr[-3000:]
    before = torch.load(last, weights_only=True)
    after = torch.load(run_dir(tmp_path / "second") / "checkpoints" / "last.ckpt", weights_only=True)
    assert (before["epoch"], before["global_step"]) == (0, BATCHES)  # the warm-up: one step a batch
    assert (after["epoch"], after["global_step"]) == (1, 3 * BATCHES)  # then the game: two a batch
    for process in (first, second):
        console = process.stdout + process.stderr
        assert not [noise for noise in NOISE if noise in console], console[-3000:]


def test_cli_collapsed_model_fails_with_one_line(data_root: Path, tmp_path: Path) -> None:
    """lr=1000 throws the network into (nearly) one constant image; the default lr does not.

    In 5 epochs on the fixture, seeds 0-3 give a test variation of 0.44-0.78 at lr=0.005 and
    0.00-0.02 at lr=1000.
    """
    process = run_cli_forked(data_root, tmp_path, "model.lr=1000", "trainer.max_epochs=5")
    assert_one_line_error(process, "collapsed", "collapse_threshold=0.1")
    metrics = json.loads((run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "collapsed" and metrics["test/step_0/variation"] < 0.1


def test_ctrl_c_keeps_the_run_in_last_ckpt(data_root: Path, tmp_path: Path) -> None:
    """Ctrl-C mid-training: Lightning shuts down gracefully and last.ckpt holds the state reached."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recursive_ae_gan.train",
            *fixture_overrides(data_root, tmp_path),
            "trainer.max_epochs=100000",
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default, whatever pytest inherited: a job a shell put in the background ignores SIGINT, and so
        # would the run, which would then train on (it did, in a suite started with `&`).
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("runs/*/checkpoints/last.ckpt")):  # training is under way
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()  # a run that ignores Ctrl-C fails here instead of holding the suite's worker
        raise
    assert process.returncode == 1
    assert "Detected KeyboardInterrupt" in stderr and "Traceback" not in stderr
    checkpoint = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] > 0
    assert not (run_dir(tmp_path) / "metrics.json").exists()  # an interrupted run is not tested


@pytest.mark.parametrize(
    ("overrides", "strategy"),
    [
        (["model=rae_gan", "trainer.strategy=ddp"], "ddp_find_unused_parameters_true"),
        (["model=ae_gan", "trainer.strategy=ddp_spawn"], "ddp_spawn_find_unused_parameters_true"),
        (["model=rae_gan", "trainer.devices=4"], "ddp_find_unused_parameters_true"),  # auto picks DDP for 4
        (["model=rae_gan", "trainer.accelerator=cpu", "trainer.devices='2'"], "ddp_find_unused_parameters_true"),
        (["model=rae_gan", "trainer.devices=auto"], "auto"),  # every device Lightning finds: one CPU here
        (["model=rae_gan", "trainer.num_nodes=2"], "ddp_find_unused_parameters_true"),
        (["model=rae_gan"], "auto"),  # one device
        (["model=rae_gan", "trainer.strategy=ddp_find_unused_parameters_false"], "ddp_find_unused_parameters_false"),
        (["model=rae", "trainer.strategy=ddp"], "ddp"),  # the autoencoder uses every parameter
    ],
)
def test_the_game_gets_the_ddp_strategy_it_needs(compose_cfg, overrides: list[str], strategy: str) -> None:
    assert strategy_for(compose_cfg(*overrides)) == strategy


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="Lightning parses GPU indices against the GPUs there")
def test_gpu_indices_count_as_lightning_parses_them() -> None:
    assert processes_per_node("gpu", [0, 1]) == processes_per_node("cuda", "0,1") == 2
    assert processes_per_node("auto", "1,") == 1 and processes_per_node("gpu", -1) == torch.cuda.device_count()


def test_realism_after_training_judges_every_trained_step(compose_cfg, tmp_path: Path) -> None:
    """``realism=default``: after the test, a fresh judge per trained step; its verdicts go into metrics.json."""
    judge = ["realism=default", "realism.min_epochs=1", "realism.max_epochs=2", "realism.patience=1",
             "~realism/judge@realism.judges.patchgan", "realism/judge@realism.judges.highpass=mlp",
             "realism.judges.highpass.hidden=[32,16,8]"]  # fmt: skip
    cfg = compose_cfg("model=rae", "model.recursion_depth=1", "trainer.max_epochs=1", "collapse_threshold=0", *judge)
    result = train(cfg)
    for step in (0, 1):
        low, acc, high = (result[f"test/step_{step}/judge_{m}"] for m in ("acc_low", "acc", "acc_high"))
        assert 0 <= low <= acc <= high <= 1 and 0 <= result[f"test/step_{step}/judge_p"] <= 1
    assert "test/step_2/judge_acc" not in result
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
