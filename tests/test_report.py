"""report: one table and the plots for every run of a real (tiny) multirun sweep."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fixture_overrides
from omegaconf import OmegaConf

from recursive_ae_gan.report import find_runs, loss_curves, main, step_curve, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """``-m model=ae,rae`` for 2 epochs through the real CLI: jobs ``0`` (AE) and ``1`` (RAE, depth 2).

    Two epochs are too short not to look collapsed, and a collapsed job fails the sweep: collapse_threshold=0."""
    out = tmp_path_factory.mktemp("report")
    overrides = ["model=ae,rae", "trainer.max_epochs=2", "collapse_threshold=0", f"hydra.sweep.dir={out / 'sweep'}"]
    subprocess.run(
        [sys.executable, "-m", "recursive_ae_gan.train", "-m", *fixture_overrides(data_root, out), *overrides],
        cwd=out, check=True, capture_output=True,
    )  # fmt: skip
    return out / "sweep"


def copy_run(run: Path, dest: Path, metrics: dict | None = None, experiment: str | None = None) -> Path:
    """A run directory with ``run``'s config, and the given metrics.json and experiment choice."""
    shutil.copytree(run / ".hydra", dest / ".hydra")
    if metrics is not None:
        (dest / "metrics.json").write_text(json.dumps(metrics))
    if experiment is not None:
        hydra = OmegaConf.load(dest / ".hydra" / "hydra.yaml")
        hydra.hydra.runtime.choices.experiment = experiment
        OmegaConf.save(hydra, dest / ".hydra" / "hydra.yaml")
    return dest


def test_report_has_one_row_per_run_and_the_plots(sweep: Path) -> None:
    write_report(sweep)
    with open(sweep / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["model"], r["depth"], r["dataset"]) for r in rows] == [
        ("0", "ae", "0", "mnist"),
        ("1", "rae", "2", "mnist"),
    ]
    for row in rows:
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
        depth = int(row["depth"])
        assert (row["train"], row["val"], row["test"], row["epochs"]) == ("64", "16", "32", "2")
        assert (row["status"], row["score_name"]) == (metrics["status"], "test/step_0/mse")
        assert float(row["score"]) == metrics["score"]
        # The course report measured the MNIST AE (test MSE 0.014), not the MNIST RAE.
        assert row["reported"] == ("0.014" if row["model"] == "ae" else "")
        for name in ("mse", "bce", "psnr", "ssim"):
            assert float(row[f"step0_{name}"]) == metrics[f"test/step_0/{name}"]
            assert float(row[f"last_{name}"]) == metrics[f"test/step_{depth}/{name}"]

    markdown = (sweep / "report.md").read_text()
    assert "| run | experiment | dataset | model |" in markdown and "| 1 |  | mnist | rae | 2 |" in markdown
    assert "0.553" in markdown and "0.014" in markdown  # the course report's figures
    for plot in ("loss_curves.png", "test_steps.png"):
        assert f"]({plot})" in markdown
        data = (sweep / plot).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_loss_curves_come_from_tensorboard_per_epoch(sweep: Path) -> None:
    for run in find_runs(sweep):
        curves = loss_curves(run)
        assert set(curves) == {"train", "val"}
        for epochs, losses in curves.values():
            assert epochs == [0, 1] and all(0 < loss < 10 for loss in losses)


def test_step_curve_prefers_eval_jsons_deeper_steps(sweep: Path, tmp_path: Path) -> None:
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    run = copy_run(sweep / "1", tmp_path / "run", metrics)
    (run_info,) = find_runs(run)
    assert step_curve(run_info) == ("mse", [0, 1, 2], [metrics[f"test/step_{i}/mse"] for i in range(3)])

    deeper = {"max_depth": 4, "score_name": "test/step_0/mse", **{f"test/step_{i}/mse": 1.0 + i for i in range(5)}}
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "eval.json").write_text(json.dumps(deeper))
    (run_info,) = find_runs(run)
    assert step_curve(run_info) == ("mse", [0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0])


def test_report_marks_unfinished_runs_and_reported_figures(sweep: Path, tmp_path: Path) -> None:
    copy_run(sweep / "0", tmp_path / "a_missing")
    copy_run(sweep / "0", tmp_path / "b_failed", {"status": "failed", "error": "boom"})
    ok = json.loads((sweep / "0" / "metrics.json").read_text())
    copy_run(sweep / "0", tmp_path / "nested" / "c_done", ok, experiment="mnist_ae")

    rows = write_report(tmp_path)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("a_missing", "missing"),
        ("b_failed", "failed"),
        ("nested/c_done", ok["status"]),
    ]
    assert rows[0]["score"] is None and rows[0]["last_mse"] is None
    assert (rows[2]["experiment"], rows[2]["score"]) == ("mnist_ae", ok["score"])
    # No run has TensorBoard events: no loss plot, and report.md does not link one.
    assert not (tmp_path / "loss_curves.png").exists()
    assert "loss_curves.png" not in (tmp_path / "report.md").read_text()
    assert (tmp_path / "test_steps.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("dataset", "short"),
    [
        ("torchvision.datasets.CIFAR10", "cifar10"),  # the package's configs name torchvision classes
        ("torchvision.datasets.FashionMNIST", "fashionmnist"),  # any other class: its name, lowercased
        ("folder", "folder"),
        ("mnist", "mnist"),  # runs from before the data package named the dataset
    ],
)
def test_dataset_column_is_the_short_name(sweep: Path, tmp_path: Path, dataset: str, short: str) -> None:
    ok = json.loads((sweep / "0" / "metrics.json").read_text())
    run = copy_run(sweep / "0", tmp_path / "run", ok)
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    config.data.dataset = dataset
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    (row,) = write_report(tmp_path)
    assert row["dataset"] == short
    assert row["reported"] == (0.014 if short == "mnist" else None)  # the MNIST AE's figure, looked up by name


@pytest.mark.parametrize("make, message", [(False, "is not a directory"), (True, "no runs under")])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, make: bool, message: str) -> None:
    target = tmp_path / "empty"
    if make:
        target.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(target)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
