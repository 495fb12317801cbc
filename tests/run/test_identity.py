"""run.identity: which keys make a run what it is; a run configured with the paths classes had before the package was
arranged by job trains, evaluates, continues under today's configs and joins their group in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import CONF_DIR, ok, run_cli_forked
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import OmegaConf

from recursive_ae_gan.analysis.evaluate import evaluate
from recursive_ae_gan.analysis.report import write_report
from recursive_ae_gan.compat import current_target
from recursive_ae_gan.models import AdversarialAutoencoder
from recursive_ae_gan.run.continuation import trained_settings
from recursive_ae_gan.run.identity import ignored
from recursive_ae_gan.run.loggers import run_name  # noqa: F401  (registers the run_name resolver)

# What configs written before the move named: the model, the checkpoint plugin, the callbacks.
OLD_PATHS = [
    "model._target_=recursive_ae_gan.module.AdversarialAutoencoder",
    "trainer.plugins=[{_target_:recursive_ae_gan.checkpoints.AtomicCheckpointIO}]",
    "callbacks.reconstruction_grid._target_=recursive_ae_gan.callbacks.ReconstructionGrid",
    "callbacks.step_dashboard._target_=recursive_ae_gan.callbacks.StepDashboard",
]
GAME = ["model=ae_gan", "model.warmup_epochs=1", "collapse_threshold=0"]


@pytest.mark.filterwarnings("ignore:recursive_ae_gan.module is deprecated:DeprecationWarning")  # tests/test_compat.py
def test_old_paths_name_todays_classes() -> None:
    assert get_object("recursive_ae_gan.module.AdversarialAutoencoder") is AdversarialAutoencoder
    assert current_target("recursive_ae_gan.module.AdversarialAutoencoder") == (
        "recursive_ae_gan.models.AdversarialAutoencoder"
    )
    assert current_target("recursive_ae_gan.callbacks.EMA") == "recursive_ae_gan.run.callbacks.EMA"
    assert current_target("recursive_ae_gan.networks.ConvAutoencoder") == "recursive_ae_gan.networks.ConvAutoencoder"
    assert current_target("elsewhere.module.Net") == "elsewhere.module.Net"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        old = compose("train", [*GAME, *OLD_PATHS, "paths.output_dir=x"])
        new = compose("train", [*GAME, "paths.output_dir=x"])
    assert trained_settings(old) == trained_settings(new)
    assert OmegaConf.select(old, "model._target_") != OmegaConf.select(new, "model._target_")


def test_keys_that_do_not_change_what_is_trained_are_ignored() -> None:
    for key in ("paths.log_dir", "logger/mlflow", "+tags", "~logger", "trainer.enable_progress_bar", "data.root"):
        assert ignored(key), key
    for key in ("model.lr", "trainer.max_epochs", "data.in_memory", "seed"):
        assert not ignored(key), key
    assert ignored("seed", seeds=True) and ignored("data.split_seed", seeds=True)


def test_a_run_with_old_paths_evaluates_continues_and_reports_with_todays(data_root: Path, tmp_path: Path) -> None:
    old_run, new_run = tmp_path / "old", tmp_path / "new"
    ok(run_cli_forked(data_root, tmp_path / "a", *GAME, *OLD_PATHS, f"hydra.run.dir={old_run}", "trainer.max_epochs=1"))
    written = OmegaConf.load(old_run / ".hydra" / "config.yaml")
    assert written.model._target_ == "recursive_ae_gan.module.AdversarialAutoencoder"

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        eval_cfg = compose("evaluate", [f"ckpt_path={old_run / 'checkpoints' / 'last.ckpt'}", "eval.accelerator=cpu"])
    assert evaluate(eval_cfg)["max_depth"] == 3

    # Today's configs continue it: the same run, one epoch more, not "trained under other settings".
    more = ok(run_cli_forked(data_root, tmp_path / "b", *GAME, f"hydra.run.dir={old_run}", "ckpt_path=auto",
                             "trainer.max_epochs=2"))  # fmt: skip
    assert "resuming from" in more.stdout + more.stderr
    assert json.loads((old_run / "metrics.json").read_text())["status"] == "ok"

    ok(run_cli_forked(data_root, tmp_path / "c", *GAME, f"hydra.run.dir={new_run}", "trainer.max_epochs=2"))
    (group,) = write_report(tmp_path).groups  # one setting, whatever paths its configs name
    assert group["status"] == "2 ok"
