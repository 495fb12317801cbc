"""evaluate: a real training run's checkpoint, tested on more recursion steps than it was trained on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, fixture_overrides
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from recursive_ae_gan.errors import UserError
from recursive_ae_gan.evaluate import bce_floor, evaluate, step_table

DEPTH = 2  # the trained run's model.recursion_depth
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """An RAE+GAN run of 2 epochs, trained by the real CLI (so it has ``.hydra/config.yaml``)."""
    out = tmp_path_factory.mktemp("evaluate")
    overrides = ["model=rae_gan", "model.warmup_epochs=1", "trainer.max_epochs=2", "collapse_threshold=0"]
    subprocess.run(
        [sys.executable, "-m", "recursive_ae_gan.train", *fixture_overrides(data_root, out), *overrides],
        cwd=out, check=True, capture_output=True,
    )  # fmt: skip
    (run,) = (out / "runs").iterdir()
    return run


def eval_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="evaluate", overrides=["eval.accelerator=cpu", *overrides])


def test_evaluate_repeats_the_runs_test_metrics_and_goes_deeper(run_dir: Path) -> None:
    result = evaluate(eval_cfg(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"))
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

    checkpoints = run_dir / "checkpoints"
    assert json.loads((checkpoints / "eval.json").read_text()) == result
    png = checkpoints / "eval.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    # make_grid's 2-pixel padding around 28x28 images: 8 columns; the inputs, then steps 0..DEPTH+3.
    assert Image.open(png).size == (8 * 30 + 2, (DEPTH + 5) * 30 + 2)

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
    with pytest.raises(UserError, match="mnist not found: looked in /nowhere"):
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
    with pytest.raises(UserError, match="eval.max_depth=1 is below the run's model.recursion_depth=2"):
        evaluate(eval_cfg(f"ckpt_path={ckpt}", "eval.max_depth=1"))
    with pytest.raises(UserError, match="no checkpoint given"):
        evaluate(eval_cfg())


def test_cli_reports_a_missing_checkpoint_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "x" / "checkpoints" / "last.ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "recursive_ae_gan.evaluate", f"ckpt_path={missing}"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: checkpoint not found: {missing}; set ckpt_path to a run's checkpoints/*.ckpt file"
    ]
    assert list(tmp_path.iterdir()) == []  # no Hydra output dir, no log file
