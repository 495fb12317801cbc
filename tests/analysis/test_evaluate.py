"""evaluate: a real training run's checkpoint, tested on more recursion steps than it was trained on."""

from __future__ import annotations

import csv
import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import (
    CONF_DIR,
    ONE_EPOCH,
    data_configs,
    ok,
    run_cli_forked,
    run_entry_forked,
    write_mnist,
)
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from recursive_ae_gan.analysis.evaluate import bce_floor, evaluate, step_table
from recursive_ae_gan.analysis.realism_tables import panel_table
from recursive_ae_gan.analysis.report import write_report
from recursive_ae_gan.compat import upgrade_old_run_config
from recursive_ae_gan.core.errors import UserError

DEPTH = 2  # the trained run's model.recursion_depth
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """An RAE+GAN run of 2 epochs, trained by the real CLI in a forked child (so it has ``.hydra/config.yaml``)."""
    out = tmp_path_factory.mktemp("evaluate")
    overrides = ["model=rae_gan", "model.warmup_epochs=1", "trainer.max_epochs=2", "collapse_threshold=0"]
    ok(run_cli_forked(data_root, out, *overrides))
    (run,) = (out / "runs").iterdir()
    return run


def eval_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="evaluate", overrides=["eval.accelerator=cpu", *overrides])


@pytest.fixture(scope="module")
def evaluated(run_dir: Path) -> tuple[dict, str, bytes]:
    """``evaluate`` of the run's last.ckpt with the defaults: its result, and the eval.json and eval.png it wrote
    beside the checkpoint (as written, before another test's evaluate writes them again)."""
    result = evaluate(eval_cfg(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"))
    checkpoints = run_dir / "checkpoints"
    return result, (checkpoints / "eval.json").read_text(), (checkpoints / "eval.png").read_bytes()


def test_evaluate_repeats_the_runs_test_metrics_and_goes_deeper(run_dir: Path, evaluated) -> None:
    result, eval_json, eval_png = evaluated
    trained = json.loads((run_dir / "metrics.json").read_text())

    # Steps 0..DEPTH: what training measured on the same final weights and test images.
    for step in range(DEPTH + 1):
        for name in ("mse", "bce", "psnr", "ssim", "fool_rate", "d_fake_mean"):
            key = f"test/step_{step}/{name}"
            assert result[key] == pytest.approx(trained[key], abs=1e-5), key
    assert result["test/d_real_acc"] == pytest.approx(trained["test/d_real_acc"], abs=1e-5)
    # Then three steps deeper than trained, and no further.
    assert result["max_depth"] == DEPTH + 3
    assert all(f"test/step_{DEPTH + 3}/{name}" in result for name in ("mse", "bce", "psnr", "ssim", "fool_rate"))
    assert f"test/step_{DEPTH + 4}/mse" not in result
    assert 0 < result["test/bce_floor"] < result["test/step_0/bce"]

    assert json.loads(eval_json) == result
    assert eval_png[:8] == PNG_MAGIC
    # make_grid's 2-pixel padding around 28x28 images: 8 columns; the inputs, then steps 0..DEPTH+3.
    assert Image.open(io.BytesIO(eval_png)).size == (8 * 30 + 2, (DEPTH + 5) * 30 + 2)

    table = step_table(result).splitlines()
    assert table[0].split(" | ")[:3] == ["| step", "mse", "bce"] and "fool_rate" in table[0]
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 0*", "| 1*", "| 2*", "| 3", "| 4", "| 5"]


def test_evaluate_applies_data_and_depth_overrides(run_dir: Path) -> None:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    result = evaluate(
        eval_cfg(f"ckpt_path={ckpt}", f"eval.max_depth={DEPTH}", "eval.num_images=4", "data.test_size=16")
    )
    assert "test/step_2/mse" in result and "test/step_3/mse" not in result
    assert Image.open(run_dir / "checkpoints" / "eval.png").size == (4 * 30 + 2, (DEPTH + 2) * 30 + 2)
    with pytest.raises(UserError, match="MNIST not found in /nowhere"):
        evaluate(eval_cfg(f"ckpt_path={ckpt}", "data.root=/nowhere"))


def test_bce_floor_is_the_bce_of_a_perfect_reconstruction() -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    target = images.float() / 255
    assert bce_floor(images) == pytest.approx(torch.nn.functional.binary_cross_entropy(target, target).item(), rel=1e-5)
    assert bce_floor(torch.tensor([0, 255], dtype=torch.uint8)) == 0


def test_evaluate_rejects_bad_input(run_dir: Path, tmp_path: Path) -> None:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    outside = tmp_path / "last.ckpt"
    shutil.copy(ckpt, outside)
    junk = run_dir / "junk.ckpt"
    junk.write_text("not a checkpoint")
    cases = {
        "checkpoint not found": f"ckpt_path={tmp_path / 'missing.ckpt'}",
        "no run config": f"ckpt_path={outside}",
        "not a readable checkpoint": f"ckpt_path={junk}",
    }
    for message, override in cases.items():
        with pytest.raises(UserError, match=message):
            evaluate(eval_cfg(override))
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir / ".hydra", damaged / ".hydra")
    config = (damaged / ".hydra" / "config.yaml").read_text()
    (damaged / ".hydra" / "config.yaml").write_text(config[: config.index("\ntrainer:")])  # cut short before trainer
    (damaged / "checkpoints").mkdir()
    shutil.copy(ckpt, damaged / "checkpoints" / "last.ckpt")
    with pytest.raises(UserError) as refused:
        evaluate(eval_cfg(f"ckpt_path={damaged / 'checkpoints' / 'last.ckpt'}"))
    assert str(refused.value) == f"{damaged}/.hydra/config.yaml is damaged (no trainer, paths; cut short?)"
    with pytest.raises(UserError, match="eval.max_depth=1 is below the run's model.recursion_depth=2"):
        evaluate(eval_cfg(f"ckpt_path={ckpt}", "eval.max_depth=1"))
    with pytest.raises(UserError, match="no checkpoint given"):
        evaluate(eval_cfg())
    with pytest.raises(UserError, match=r"realism\.epochs=-1: expected >= 1"):  # before the checkpoint is looked for
        evaluate(eval_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}", "realism.epochs=-1"))


def test_cli_reports_a_missing_checkpoint_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    missing = cwd / "runs" / "x" / "checkpoints" / "last.ckpt"
    proc = run_entry_forked("evaluate", tmp_path / "output", f"ckpt_path={missing}", cwd=cwd)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: checkpoint not found: {missing}; set ckpt_path to a run's checkpoints/*.ckpt file"
    ]
    assert list(cwd.iterdir()) == []  # no Hydra output dir, no log file


def old_run_config(data_root: Path) -> dict:
    """The run_dir fixture's run as a run from before the networks were built from the image shape wrote
    its ``.hydra/config.yaml`` (unresolved, as Hydra saves it): the dataset and the networks by name."""
    by_name = "${data.dataset}"
    return {
        "seed": 0,
        "ckpt_path": None,
        "collapse_threshold": 0.0,
        "model": {
            "_target_": "recursive_ae_gan.module.AdversarialAutoencoder",
            "_convert_": "all",
            "net": {"_target_": "recursive_ae_gan.networks.autoencoder_for", "dataset": by_name},
            "recursion_depth": DEPTH, "loss": None, "lr": 0.005, "betas": [0.9, 0.999], "scheduler": None,
            "eval_depth": None, "compile": False, "channels_last": False,
            "discriminator": {
                "_target_": "recursive_ae_gan.networks.discriminator_for", "dataset": by_name, "hidden": [512, 256, 128]
            },
            "d_lr": 0.001, "d_betas": [0.9, 0.999], "warmup_epochs": 1, "adv_weight": 0.01, "adv_loss": "minimax",
            "balance": "target", "target_gain": 0.002, "adv_weight_bounds": [0.0, 0.1],
        },
        "data": {
            "_target_": "recursive_ae_gan.data.ImageDataModule", "dataset": "mnist", "root": "${paths.data_dir}",
            "download": False, "verify": False, "batch_size": 16, "train_size": 64, "val_size": 16, "test_size": 32,
            "split_seed": 0, "seed": "${seed}", "num_workers": 0, "on_device": None,
        },
        "trainer": {"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "precision": "32-true"},
        "paths": {"data_dir": str(data_root), "log_dir": "outputs", "output_dir": "${hydra:runtime.output_dir}"},
    }  # fmt: skip


def write_old_run(run_dir: Path, dest: Path, data_root: Path, model_target: str | None = None) -> Path:
    """An old-format run directory holding the run_dir fixture's final weights; returns its checkpoint."""
    config = old_run_config(data_root)
    if model_target is not None:
        config["model"]["_target_"] = model_target
    (dest / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), dest / ".hydra" / "config.yaml")
    new = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Old models kept their networks out of hparams; runs before model._convert_=all kept OmegaConf lists there.
    hparams = {k: v for k, v in config["model"].items() if not k.startswith("_") and k not in ("net", "discriminator")}
    hparams = {k: ListConfig(v) if isinstance(v, list) else v for k, v in hparams.items() if k != "scheduler"}
    checkpoint = {
        "epoch": new["epoch"],
        "global_step": new["global_step"],
        "pytorch-lightning_version": new["pytorch-lightning_version"],
        "state_dict": new["state_dict"],
        "hyper_parameters": hparams,
    }
    ckpt = dest / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save(checkpoint, ckpt)
    return ckpt


def test_old_run_config_becomes_todays_form(data_root: Path) -> None:
    old = OmegaConf.create(old_run_config(data_root))
    new = upgrade_old_run_config(old)
    assert (new.data.dataset, new.data.train_split, new.data.test_split) == (
        "torchvision.datasets.MNIST", {"train": True}, {"train": False}
    )  # fmt: skip
    assert new.model.net == {"_target_": "recursive_ae_gan.networks.report_autoencoder"}
    assert new.model.discriminator == {
        "_target_": "recursive_ae_gan.networks.MLPDiscriminator",
        "hidden": [512, 256, 128],
    }
    assert new.model._target_ == "recursive_ae_gan.models.AdversarialAutoencoder"  # its path before the move: today's
    assert new.model._recursive_ is False and new.data.root == str(data_root)  # interpolations still resolve
    assert old.data.dataset == "mnist"  # the run's config is not modified
    assert upgrade_old_run_config(new) == new  # today's form is kept as it is


def test_evaluate_reads_a_run_from_before_shape_built_networks(
    run_dir: Path, evaluated, data_root: Path, tmp_path: Path
) -> None:
    """An old run (dataset and networks by name, OmegaConf objects in its checkpoint) with the fixture run's
    weights evaluates exactly as the fixture run does."""
    old_ckpt = write_old_run(run_dir, tmp_path / "old_run", data_root)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):  # what the fallback is for
        torch.load(old_ckpt, weights_only=True)
    old = evaluate(eval_cfg(f"ckpt_path={old_ckpt}"))
    new = evaluated[0]  # the fixture run's, by the same command

    assert (old["max_depth"], old["recursion_depth"], old["score_name"]) == (DEPTH + 3, DEPTH, "test/step_0/mse")
    metrics = {k for k in new if k.startswith("test/")}
    assert {k for k in old if k.startswith("test/")} == metrics and "test/step_5/fool_rate" in metrics
    for key in metrics:
        assert old[key] == pytest.approx(new[key], rel=1e-6, abs=1e-7), key
    assert Image.open(old_ckpt.parent / "eval.png").size == (8 * 30 + 2, (DEPTH + 5) * 30 + 2)

    # Unpickled in full only inside a run directory of this project.
    foreign = write_old_run(run_dir, tmp_path / "foreign_run", data_root, model_target="elsewhere.Model")
    with pytest.raises(UserError, match="is not a readable checkpoint"):
        evaluate(eval_cfg(f"ckpt_path={foreign}"))


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


def test_evaluate_judges_the_realism_of_every_evaluated_step_unless_told_not_to(run_dir: Path) -> None:
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    result = evaluate(eval_cfg(ckpt, "eval.max_depth=3", "realism.min_epochs=1", "realism.max_epochs=2",
                               "realism.patience=1"))  # fmt: skip
    for step in range(4):
        low, acc, high = (result[f"test/step_{step}/judge_{m}"] for m in ("acc_low", "acc", "acc_high"))
        assert 0 <= low <= acc <= high <= 1 and 0 <= result[f"test/step_{step}/judge_auc"] <= 1
        judges = {name: result[f"test/step_{step}/judge_{name}_acc"] for name in ("conv", "patchgan", "highpass", "nn")}
        assert acc == max(judges.values())  # the verdict: the strongest judge's
        for name in ("conv", "patchgan", "highpass"):
            epochs, best = (
                result[f"test/step_{step}/judge_{name}_epochs"],
                result[f"test/step_{step}/judge_{name}_best_epoch"],
            )
            assert 1 <= best <= epochs <= 2 and 0 <= result[f"test/step_{step}/judge_{name}_val_acc"] <= 1
        assert 0 <= result[f"test/step_{step}/d_auc"] <= 1 and 0 <= result[f"test/step_{step}/d_balanced_acc"] <= 1
    table = step_table(result).splitlines()
    assert "judge_acc" in table[0] and "d_auc" in table[0]
    assert table[2].split(" | ")[table[0].split(" | ").index("judge_acc")].count("[") == 1  # with its interval
    panel = panel_table(result).splitlines()
    assert len(panel) == 2 + 4 * 4 and sum("*" in row for row in panel[2:]) == 4  # a row per judge, one strongest
    assert all(row.endswith(("| yes |", "| NOT CONVERGED |", "|  |")) for row in panel[2:])
    skipped = evaluate(eval_cfg(ckpt, "eval.max_depth=3", "~realism"))
    assert not any("judge" in key for key in skipped)


def test_evaluate_measures_kid_and_fid_of_every_step_when_asked(run_dir: Path) -> None:
    """kid_fid=default on a small feature network in place of Inception (its numbers: test_feature_distances.py)."""
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    features = ("kid_fid=default", "+kid_fid.network._target_=helpers.PixelProjection", "kid_fid.kid_subset_size=16")
    result = evaluate(eval_cfg(ckpt, "eval.max_depth=3", "~realism", *features))
    assert json.loads((run_dir / "checkpoints" / "eval.json").read_text()) == result
    for step in range(4):
        assert result[f"test/step_{step}/fid"] > 0 and result[f"test/step_{step}/kid_std"] >= 0
    header, _, *rows = step_table(result).splitlines()
    columns = header.strip("| ").split(" | ")
    assert columns[-2:] == ["kid", "fid"] and len(rows) == 4
    assert all(" ± " in row.strip("| ").split(" | ")[-2] for row in rows)  # KID with its std over subsets
    write_report(run_dir.parent)  # report reads the eval.json: one run, so its own values
    with open(run_dir.parent / "report_kid_fid.csv") as table:
        reported = list(csv.DictReader(table))
    assert [int(row["step"]) for row in reported] == [0, 1, 2, 3]
    assert [float(row["kid"]) for row in reported] == pytest.approx([result[f"test/step_{s}/kid"] for s in range(4)])
    assert [float(row["fid"]) for row in reported] == pytest.approx([result[f"test/step_{s}/fid"] for s in range(4)])
    assert "## KID and FID" in (run_dir.parent / "report.md").read_text()
    assert not any(key.endswith(("/kid", "/fid")) for key in evaluate(eval_cfg(ckpt, "eval.max_depth=3", "~realism")))
