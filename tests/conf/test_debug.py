"""The ``debug`` presets (lightning-hydra-template's): each composes with every model and dataset, and runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONF_DIR
from hydra import compose, initialize_config_dir

from recursive_ae_gan.run.config import check
from recursive_ae_gan.run.train import train

# Every model and every dataset, each at least once (the full product costs 3x the time and finds nothing more:
# the presets set only trainer, data loading, logging and callback keys).
PAIRS = [("ae", "mnist"), ("rae", "cifar10"), ("ae_gan", "folder"), ("rae_gan", "cifar10")]
# What each preset sets on top of debug/default (one epoch on the CPU, one device, no workers, anomaly detection).
PRESETS = {
    "default": {"max_epochs": 1},
    "fdr": {"max_epochs": 1, "fast_dev_run": True},
    "limit": {"max_epochs": 3, "limit_train_batches": 4, "limit_val_batches": 2, "limit_test_batches": 2},
    "overfit": {"max_epochs": 20, "overfit_batches": 3},
    "profiler": {"max_epochs": 1},
}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_passes_the_check_with_every_model_and_dataset(preset: str, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for model, data in PAIRS:
            overrides = [f"debug={preset}", f"model={model}", f"data={data}", f"paths.output_dir={tmp_path}"]
            cfg = compose("train", overrides=overrides)
            check(cfg)
            trainer = cfg.trainer
            assert (trainer.accelerator, trainer.devices, trainer.detect_anomaly) == ("cpu", 1, True)
            assert cfg.data.num_workers == 0 and cfg.data.on_device is False
            assert cfg.logger is None and cfg.callbacks is None
            assert {key: trainer[key] for key in PRESETS[preset]} == PRESETS[preset]
        hydra_cfg = compose("train", overrides=[f"debug={preset}"], return_hydra_config=True).hydra
    assert hydra_cfg.job_logging.root.level == "DEBUG"
    assert "/debug/runs/" in hydra_cfg.run.dir and "/debug/multiruns/" in hydra_cfg.sweep.dir


# (preset, model, data, extra overrides, the checkpoint Lightning's default callback leaves: its epoch and step)
RUNS = [
    ("default", "ae_gan", "mnist", [], "epoch=0-step=4.ckpt"),  # 4 batches, all warm-up: one optimizer step each
    ("fdr", "rae_gan", "cifar10", ["model.warmup_epochs=0"], None),  # fast_dev_run writes no checkpoint
    ("limit", "rae", "mnist", [], "epoch=2-step=12.ckpt"),
    ("overfit", "ae", "cifar10", ["trainer.max_epochs=2"], "epoch=1-step=6.ckpt"),  # 3 batches an epoch
    ("profiler", "ae", "mnist", [], "epoch=0-step=4.ckpt"),
]


@pytest.mark.parametrize(("preset", "model", "data", "extra", "checkpoint"), RUNS, ids=[r[0] for r in RUNS])
def test_preset_trains_a_few_batches_on_the_cpu(compose_cfg, tmp_path: Path, preset, model, data, extra, checkpoint):
    result = train(
        compose_cfg(f"debug={preset}", f"model={model}", f"data={data}", "extras.print_config=false", *extra)
    )
    assert result["status"] == "ok"
    assert sorted(p.name for p in tmp_path.glob("checkpoints/*.ckpt")) == ([checkpoint] if checkpoint else [])
    assert not (tmp_path / "tensorboard").exists()  # debug runs log nowhere
    if preset == "profiler":
        report = (tmp_path / "fit-profiler.txt").read_text()
        assert report.startswith("FIT Profiler Report") and "run_training_batch" in report
