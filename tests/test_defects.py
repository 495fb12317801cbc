"""Commands found broken by trying them as a user would (issue 14), each through the real CLI.

Training commands run in a child forked from the test process (``run_cli_forked``); the Optuna sweep runs in
a subprocess of its own (the sweeper's plugins are part of what is tested). The DDP row is folded into
tests/test_ddp.py (``trainer.strategy=ddp`` for the game).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, run_cli_forked, write_mnist
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from image_folders import write_image_folder
from omegaconf import OmegaConf, open_dict
from recorders import image_keys
from test_docs_commands import data_configs
from test_sweeps import sweep_dir
from test_train import assert_one_line_error

from recursive_ae_gan.data import BatchIndexSampler
from recursive_ae_gan.errors import UserError
from recursive_ae_gan.run.console import null_groups_as_deletions
from recursive_ae_gan.run.train import strategy_for

ONE_EPOCH = ("trainer.max_epochs=1", "collapse_threshold=0")
RECORD = "+callbacks.record._target_=recorders.RecordBatches"  # recorders is importable in the forked child


def ok(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    return process


def _entry_child(entry: str, argv: list[str], stdout: str, stderr: str) -> None:
    for path, fd in ((stdout, 1), (stderr, 2)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    sys.argv = [f"recursive_ae_gan.{entry}", *argv]
    module = __import__(f"recursive_ae_gan.{entry}", fromlist=["main"])
    module.main()


def run_entry_forked(entry: str, out: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m recursive_ae_gan.<entry> ARGV`` in a child forked from the test process (as run_cli_forked)."""
    out.mkdir(parents=True, exist_ok=True)
    stdout, stderr = out / "stdout.txt", out / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(
        target=_entry_child, args=(entry, list(argv), str(stdout), str(stderr))
    )
    child.start()
    child.join(timeout=120)
    return subprocess.CompletedProcess(argv, child.exitcode, stdout.read_text(), stderr.read_text())


def test_evaluate_runs_trained_with_the_docs_own_data_config(data_root: Path, tmp_path: Path) -> None:
    """The docs' "your own data" config lists few of the data module's keys (no num_workers, on_device, ...)."""
    configs = data_configs()
    configs_dir = tmp_path / "my_configs" / "data"
    configs_dir.mkdir(parents=True)
    (name, text), *_ = configs.items()
    (configs_dir / f"{name}.yaml").write_text(text)
    dataset = OmegaConf.create(text).dataset.rpartition(".")[2]  # an MNIST-like class: FashionMNIST, ...
    root = write_mnist(tmp_path / "data")
    (root / "MNIST").rename(root / dataset)
    run = tmp_path / "run"
    ok(run_cli_forked(data_root, tmp_path / "out", f"data={name}", f"data.root={root}", *ONE_EPOCH,
                      f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]", f"hydra.run.dir={run}"))  # fmt: skip
    assert "num_workers" not in OmegaConf.load(run / ".hydra" / "config.yaml").data

    process = ok(run_entry_forked("evaluate", tmp_path / "eval", f"ckpt_path={run}/checkpoints/last.ckpt",
                                  "eval.accelerator=cpu", "eval.max_depth=1"))  # fmt: skip
    assert "wrote" in process.stdout
    evaluated = json.loads((run / "checkpoints" / "eval.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert evaluated["test/step_0/mse"] == pytest.approx(trained["test/step_0/mse"], rel=1e-5)


def test_null_groups_become_deletions() -> None:
    args = ["logger=null", "callbacks=null", "model/net=null", "ckpt_path=null", "model.loss=null", "+logger=null"]
    assert null_groups_as_deletions(args) == [
        "~logger", "~callbacks", "~model/net", "ckpt_path=null", "model.loss=null", "+logger=null"
    ]  # fmt: skip


def test_logger_and_callbacks_null_mean_none(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok(run_cli_forked(data_root, tmp_path, "logger=null", "callbacks=null", *ONE_EPOCH, f"hydra.run.dir={run}"))
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    assert not (run / "tensorboard").exists()  # no logger
    assert not list(run.glob("checkpoints/best-*.ckpt")) and not list(run.glob("checkpoints/last.ckpt"))  # no callbacks


def test_overfit_batches_trains_on_the_first_batches_every_epoch(compose_cfg, data_root: Path, tmp_path: Path) -> None:
    record = tmp_path / "batches"
    ok(run_cli_forked(data_root, tmp_path, "trainer.overfit_batches=2", "trainer.max_epochs=2", "collapse_threshold=0",
                      RECORD, f"+callbacks.record.path={record}"))  # fmt: skip
    seen = json.loads((record / "rank0.json").read_text())
    datamodule = instantiate(compose_cfg().data)
    datamodule.setup("fit")
    first = [image_keys(batch.float() / 255) for batch in datamodule.images("train", 32).split(16)]
    assert [(epoch, index) for epoch, index, _ in seen] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [keys for _, _, keys in seen] == first + first  # the split's first 2 batches, in order, both epochs


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


SPLITS = ("train", "val", "test")
FOLDER = ("data=folder", "data.image_size=16", "data.val_size=8", "data.train_size=24", "data.batch_size=8")


def test_a_folders_test_size_null_is_what_training_and_validation_leave(
    compose_cfg, data_root: Path, tmp_path: Path
) -> None:
    folder = write_image_folder(tmp_path / "images", n=40, size=16, corrupt=False)
    ok(run_cli_forked(data_root, tmp_path / "out", *FOLDER, f"data.root={folder}", "data.test_size=null", *ONE_EPOCH))

    datamodule = instantiate(compose_cfg(*FOLDER, f"data.root={folder}", "data.test_size=null").data)
    datamodule.setup("fit")
    splits = {name: {tuple(image.flatten().tolist()) for image in datamodule.images(name)} for name in SPLITS}
    assert {name: len(images) for name, images in splits.items()} == {"train": 24, "val": 8, "test": 8}
    assert len(set.union(*splits.values())) == 40  # disjoint: every image in one split
    both_null = compose_cfg(*FOLDER, f"data.root={folder}", "data.test_size=null", "data.train_size=null")
    with pytest.raises(UserError, match="data.train_size and data.test_size are both null"):
        instantiate(both_null.data).setup("fit")


@pytest.mark.parametrize(
    ("overrides", "accelerator", "strategy", "devices", "precision"),
    [
        (["trainer=gpu", "trainer/strategy=ddp", "trainer.devices=4"], "gpu", "ddp", 4, "bf16-mixed"),
        (["trainer/strategy=ddp", "trainer=gpu"], "gpu", "ddp", 2, "bf16-mixed"),  # the order does not matter
        (["trainer=cpu", "trainer/strategy=ddp"], "cpu", "ddp", 2, "32-true"),
        (["trainer=ddp", "trainer.devices=3"], "auto", "ddp", 3, "32-true"),
        (["trainer=gpu"], "gpu", "auto", 1, "bf16-mixed"),
    ],
)
def test_accelerator_and_strategy_are_separate_choices(overrides, accelerator, strategy, devices, precision) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        trainer = compose("train", overrides).trainer
    assert (trainer.accelerator, trainer.strategy, trainer.devices, trainer.precision) == (
        accelerator, strategy, devices, precision
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "strategy"),
    [
        (["model=rae_gan", "trainer.strategy=ddp"], "ddp_find_unused_parameters_true"),
        (["model=ae_gan", "trainer.strategy=ddp_spawn"], "ddp_spawn_find_unused_parameters_true"),
        (["model=rae_gan", "trainer.devices=4"], "ddp_find_unused_parameters_true"),  # auto picks DDP for 4
        (["model=rae_gan", "trainer.devices=[0,1]"], "ddp_find_unused_parameters_true"),
        (["model=rae_gan", "trainer.num_nodes=2"], "ddp_find_unused_parameters_true"),
        (["model=rae_gan"], "auto"),  # one device
        (["model=rae_gan", "trainer.strategy=ddp_find_unused_parameters_false"], "ddp_find_unused_parameters_false"),
        (["model=rae", "trainer.strategy=ddp"], "ddp"),  # the autoencoder uses every parameter
    ],
)
def test_the_game_gets_the_ddp_strategy_it_needs(compose_cfg, overrides: list[str], strategy: str) -> None:
    assert strategy_for(compose_cfg(*overrides)) == strategy


def test_no_training_batch_is_a_single_image(data_root: Path, tmp_path: Path) -> None:
    """49 images in batches of 16: 16, 16, 17 (BatchNorm cannot normalise a batch of one)."""
    record = tmp_path / "batches"
    ok(
        run_cli_forked(
            data_root, tmp_path, "data.train_size=49", *ONE_EPOCH, RECORD, f"+callbacks.record.path={record}"
        )
    )
    seen = json.loads((record / "rank0.json").read_text())
    assert sorted(len(keys) for _, _, keys in seen) == [16, 16, 17]
    assert len({key for _, _, keys in seen for key in keys}) == 49


@pytest.mark.parametrize(
    ("n", "batch_size", "world_size"), [(49, 16, 1), (49, 16, 2), (33, 16, 2), (17, 16, 3), (16, 16, 1), (3, 1, 2)]
)
def test_the_sampler_merges_a_last_batch_of_one(n: int, batch_size: int, world_size: int) -> None:
    shares = [list(BatchIndexSampler(n, batch_size, shuffle=True, seed=3, rank=r, world_size=world_size))
              for r in range(world_size)]  # fmt: skip
    assert len({len(share) for share in shares}) == 1  # DDP: every rank steps equally often
    assert all(len(share) == len(BatchIndexSampler(n, batch_size, True, rank=r, world_size=world_size))
               for r, share in enumerate(shares))  # fmt: skip
    sizes = [len(batch) for share in shares for batch in share]
    assert 1 not in sizes or batch_size == 1  # batch_size=1 is every batch of one image, as asked
    epoch = torch.cat([batch for share in shares for batch in share]).tolist()
    assert set(epoch) == set(range(n))  # every image, the wrapped-around ones twice


def test_a_training_split_of_one_image_is_refused(compose_cfg) -> None:
    cfg = compose_cfg("data.train_size=1")
    with open_dict(cfg):
        cfg.data.val_size = 16
    datamodule = instantiate(cfg.data)
    with pytest.raises(UserError, match="data.train_size=1 .* at least 2 images"):
        datamodule.setup("fit")
