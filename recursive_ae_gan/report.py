"""One results table for many runs: ``python -m recursive_ae_gan.report outputs/multiruns/X``.

A run is any folder under DIR (at any depth) holding ``.hydra/config.yaml``: the jobs of a sweep, or all of
``outputs/``. Writes into DIR:

- ``report.csv`` and ``report.md``: one row per run (its settings, status, score, and the test metrics of
  step 0 and of its last trained step), the course report's figures beside it;
- ``loss_curves.png``: training and validation loss per epoch of every run, read from its TensorBoard
  event files;
- ``test_steps.png``: each run's test reconstruction loss against the recursion step, from
  ``metrics.json``, or from ``eval.json`` where ``recursive_ae_gan.evaluate`` tested deeper steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from recursive_ae_gan.errors import UserError

STEP_METRICS = ("mse", "bce", "psnr", "ssim")
LOSS_TAGS = {"train": "train/loss_epoch", "val": "val/loss"}

# The course report's test losses (Table 1, CIFAR10 BCE; section 5.1, MNIST MSE): (dataset, model, metric).
REPORTED = {
    ("mnist", "ae", "mse"): 0.014,
    ("cifar10", "ae", "bce"): 0.553,
    ("cifar10", "rae", "bce"): 0.559,
    ("cifar10", "ae_gan", "bce"): 0.593,
}

COLUMNS = (
    "run", "experiment", "dataset", "model", "depth", "train", "val", "test", "epochs", "status",
    "score_name", "score", "reported",
    *(f"step0_{m}" for m in STEP_METRICS), *(f"last_{m}" for m in STEP_METRICS),
)  # fmt: skip

REFERENCE = """\
## The course report's figures

| model | dataset | protocol | test loss |
|---|---|---|---|
| AE | MNIST | 3000 train / 600 test, 100 epochs | MSE 0.014 |
| AE | CIFAR10 | 10000 train / 2000 test, 200 epochs | BCE 0.553 |
| RAE (depth 2) | CIFAR10 | 10000 train, 150 epochs | BCE 0.559 |
| AE+GAN | CIFAR10 | 20000 train, 20 epochs | BCE 0.593 (Table 1; section 5.3's text says 0.567) |

BCE on images in [0, 1] cannot reach 0: its floor is the test pixels' own entropy, about 0.548 on CIFAR10
test images (`python -m recursive_ae_gan.evaluate` prints the floor of a run's test set). The report's
0.553 is thus about 0.005 above what a perfect reconstruction scores.
"""


@dataclass
class Run:
    """What a run directory holds: its config, Hydra's group choices, and its result files."""

    path: Path
    config: DictConfig
    choices: dict
    metrics: dict  # metrics.json; empty when the run never finished
    evaluation: dict  # the deepest eval.json under the run; empty when none


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def find_runs(root: Path) -> list[Run]:
    """Every run under ``root``, in path order."""
    runs = []
    for config_file in sorted(root.rglob(".hydra/config.yaml")):
        path = config_file.parent.parent
        hydra_file = path / ".hydra" / "hydra.yaml"
        choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.is_file() else {}
        evaluations = [_read_json(p) for p in sorted(path.rglob("eval.json"))]
        runs.append(
            Run(
                path=path,
                config=OmegaConf.load(config_file),
                choices=dict(choices),
                metrics=_read_json(path / "metrics.json"),
                evaluation=max(evaluations, key=lambda e: e.get("max_depth", -1), default={}),
            )
        )
    return runs


def dataset_name(run: Run) -> str | None:
    """The run's dataset, short: ``data.dataset`` names a torchvision class (``torchvision.datasets.MNIST``:
    ``mnist``) or ``folder``; runs from before the data package name it already (``mnist``)."""
    dataset = run.config.get("data", {}).get("dataset")
    return dataset.rpartition(".")[2].lower() if isinstance(dataset, str) else None


def last_step(metrics: dict, metric: str) -> int | None:
    """The deepest step with ``test/step_i/<metric>`` in ``metrics``."""
    steps = [int(m[1]) for key in metrics if (m := re.fullmatch(rf"test/step_(\d+)/{metric}", key))]
    return max(steps, default=None)


def score_metric(run: Run) -> str | None:
    """The run's headline metric (``mse`` or ``bce``), from ``score_name`` = ``test/step_0/<metric>``."""
    name = run.metrics.get("score_name") or run.evaluation.get("score_name")
    return name.rsplit("/", 1)[-1] if name else None


def table_row(run: Run, root: Path) -> dict:
    """One row of the results table (``None`` where the run has no such value)."""
    data, m = run.config.get("data", {}), run.metrics
    model, depth = run.choices.get("model"), run.config.get("model", {}).get("recursion_depth")
    dataset = dataset_name(run)
    return {
        "run": run.path.relative_to(root).as_posix(),
        "experiment": run.choices.get("experiment"),
        "dataset": dataset,
        "model": model,
        "depth": depth,
        **{split: data.get(f"{split}_size") or "all" for split in ("train", "val", "test")},
        "epochs": run.config.get("trainer", {}).get("max_epochs"),
        "status": m.get("status", "missing"),
        "score_name": m.get("score_name"),
        "score": m.get("score"),
        "reported": REPORTED.get((dataset, model, score_metric(run))),
        **{f"step0_{k}": m.get(f"test/step_0/{k}") for k in STEP_METRICS},
        **{f"last_{k}": m.get(f"test/step_{depth}/{k}") for k in STEP_METRICS},
    }


def loss_curves(run: Run) -> dict[str, tuple[list[float], list[float]]]:
    """``{"train"|"val": (epochs, losses)}`` from the run's TensorBoard event files."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for folder in sorted({p.parent for p in run.path.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
        events.Reload()
        tags = events.Tags()["scalars"]
        # Lightning logs the epoch at the same global step as every other scalar: x-axis in epochs.
        epoch_at = {e.step: e.value for e in events.Scalars("epoch")} if "epoch" in tags else {}
        for name, tag in LOSS_TAGS.items():
            if tag in tags:
                points = events.Scalars(tag)
                curves[name] = ([epoch_at.get(e.step, math.nan) for e in points], [e.value for e in points])
    return curves


def step_curve(run: Run) -> tuple[str, list[int], list[float]] | None:
    """``(metric, steps, values)``: the test score per step, from eval.json where it goes deeper than metrics.json."""
    metric = score_metric(run)
    if metric is None:
        return None
    trained, evaluated = last_step(run.metrics, metric), last_step(run.evaluation, metric)
    if evaluated is not None and (trained is None or evaluated > trained):
        source, depth = run.evaluation, evaluated
    elif trained is not None:
        source, depth = run.metrics, trained
    else:
        return None
    steps = list(range(depth + 1))
    return metric, steps, [source[f"test/step_{i}/{metric}"] for i in steps]


def _label(run: Run, root: Path) -> str:
    return f"{run.path.relative_to(root).as_posix()} ({run.choices.get('model', 'model?')})"


def plot_loss_curves(runs: Sequence[Run], root: Path, path: Path) -> bool:
    """One panel per run with TensorBoard losses; ``False`` (no file) when no run has any."""
    curves = [(run, c) for run in runs if (c := loss_curves(run))]
    if not curves:
        return False
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (run, run_curves) in zip(axes, curves, strict=False):  # the grid may have spare panels
        for name, (epochs, losses) in run_curves.items():
            ax.plot(epochs, losses, marker=".", label=name)
        ax.set(title=_label(run, root), xlabel="epoch", ylabel="loss")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    for ax in axes[len(curves) :]:
        ax.set_axis_off()
    fig.savefig(path, dpi=100)
    return True


def plot_test_steps(runs: Sequence[Run], root: Path, path: Path) -> bool:
    """Test score against recursion step, one panel per (dataset, metric); ``False`` when no run has one."""
    panels: dict[tuple[str, str], list[tuple[Run, list[int], list[float]]]] = {}
    for run in runs:
        if curve := step_curve(run):
            metric, steps, values = curve
            panels.setdefault((dataset_name(run), metric), []).append((run, steps, values))
    if not panels:
        return False
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    for ax, ((dataset, metric), lines) in zip(
        fig.subplots(1, len(panels), squeeze=False).ravel(), panels.items(), strict=True
    ):
        for run, steps, values in lines:
            ax.plot(steps, values, marker="o", label=_label(run, root))
        ax.set(title=f"{dataset}: test {metric} per recursion step", xlabel="step (autoencoder applied step+1 times)")
        ax.set(ylabel=f"test {metric}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return True


def format_value(value: object) -> str:
    """Four significant digits for floats, empty for missing values."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table: readable in a terminal, rendered in report.md."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def write_report(root: Path) -> list[dict]:
    """Write report.md, report.csv and the plots into ``root``; returns the table's rows."""
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; give a sweep directory or outputs/")
    runs = find_runs(root)
    if not runs:
        raise UserError(f"no runs under {root}: a run is a folder holding .hydra/config.yaml")
    rows = [table_row(run, root) for run in runs]
    with open(root / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    sections = [
        f"# Results: {len(runs)} runs under {root.resolve()}",
        "",
        "Scores are test losses of step 0 (`score_name`); `reported` is the course report's test loss for the",
        "same dataset, model and loss (under its protocol, below); `last_*` are the test metrics of the last",
        "trained step (step `depth`).",
        "",
        markdown_table(COLUMNS, [[format_value(row[c]) for c in COLUMNS] for row in rows]),
        "",
    ]
    if plot_loss_curves(runs, root, root / "loss_curves.png"):
        sections += ["## Loss curves", "", "![training and validation loss](loss_curves.png)", ""]
    if plot_test_steps(runs, root, root / "test_steps.png"):
        sections += [
            "## Test loss per recursion step",
            "",
            "Steps beyond a run's depth come from `eval.json` (`python -m recursive_ae_gan.evaluate`).",
            "",
            "![test loss per recursion step](test_steps.png)",
            "",
        ]
    sections.append(REFERENCE)
    (root / "report.md").write_text("\n".join(sections))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write the report of DIR, print its short table; bad input is one ``error:`` line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m recursive_ae_gan.report")
    parser.add_argument("dir", type=Path, help="a sweep directory, or outputs/ as a whole")
    args = parser.parse_args(argv)
    try:
        rows = write_report(args.dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    shown = ("run", "experiment", "model", "status", "score_name", "score", "reported")
    print(markdown_table(shown, [[format_value(row[c]) for c in shown] for row in rows]))
    print(f"wrote {args.dir / 'report.md'}, report.csv and plots")


if __name__ == "__main__":
    main()
