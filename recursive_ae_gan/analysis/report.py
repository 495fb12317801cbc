"""One results table for many runs: ``python -m recursive_ae_gan.report outputs/multiruns/X``.

A run is any folder under DIR (at any depth) holding ``.hydra/config.yaml``: the jobs of a sweep, or all of
``outputs/``; ``--tag X`` (repeatable) keeps the runs tagged X (``tags=[X,...]`` when they ran). Runs that
differ only in their seeds form one group (``runs.group_runs``; the keys it ignores are printed). Writes into DIR:

- ``report.csv`` and ``report.md``: one row per group (its settings, how many runs ended how, and for the
  score and the test metrics of step 0 and of the last trained step: the mean over its ok runs, their
  standard deviation and the 95% Student's t interval), the course report's figures beside it;
  ``report_runs.csv`` and report.md's "Runs" table: one row per run;
- ``report_comparisons.csv`` and report.md's comparisons: every variant against the baseline of its dataset
  (``--baseline model=ae``, ``comparisons``), also printed;
- ``loss_curves.png``: training and validation loss per epoch of every group (mean and 95% band), read from
  its runs' TensorBoard event files;
- ``test_steps.png``: each group's test reconstruction loss against the recursion step (mean and 95% error
  bars), from ``metrics.json``, or from ``eval.json`` where ``recursive_ae_gan.evaluate`` tested deeper steps;
- where runs were judged (``evaluate``, or ``realism=default``): ``report_realism.csv``, report.md's realism
  section (the fresh judge's accuracy per group and step over seeds, paired with the baseline) and
  ``perception_distortion.png`` (judge accuracy against distortion);
- where ``evaluate kid_fid=default`` measured runs: ``report_kid_fid.csv`` and report.md's KID and FID section.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recursive_ae_gan.analysis.comparisons import COMPARISON_COLUMNS, Baseline, Comparison, compare, compare_realism
from recursive_ae_gan.analysis.feature_tables import FEATURE_COLUMNS, feature_rows, feature_section
from recursive_ae_gan.analysis.plots import plot_loss_curves, plot_perception_distortion, plot_test_steps
from recursive_ae_gan.analysis.realism_tables import REALISM_COLUMNS, realism_rows, realism_section
from recursive_ae_gan.analysis.runs import (
    Group,
    Run,
    dataset_name,
    find_runs,
    group_runs,
    run_seeds,
    run_tags,
    score_metric,
)
from recursive_ae_gan.analysis.stats import summarize
from recursive_ae_gan.analysis.tables import format_value, markdown_table
from recursive_ae_gan.core.atomic import atomic_open, atomic_write
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models.metrics import reported_metrics
from recursive_ae_gan.run.identity import IGNORED_KEYS, SEED_KEYS

# The course report's test losses (Table 1, CIFAR10 BCE; section 5.1, MNIST MSE): (dataset, model, metric).
REPORTED = {
    ("mnist", "ae", "mse"): 0.014,
    ("cifar10", "ae", "bce"): 0.553,
    ("cifar10", "rae", "bce"): 0.559,
    ("cifar10", "ae_gan", "bce"): 0.593,
}

SETTINGS = ("experiment", "dataset", "model", "depth", "train", "val", "test", "epochs", "status", "tags")
SPREAD = ("", "_std", "_low", "_high")  # report.csv's columns of each metric: mean, standard deviation, interval

GROUPING = (
    f"runs whose configs differ only in {', '.join(SEED_KEYS)} (the seeds) or in {', '.join(IGNORED_KEYS)} (not "
    "what is trained) are one group"
)


def metric_columns() -> tuple[str, ...]:
    """The score, and the reported step metrics (``reported_metrics``, as they are now) of step 0 and the last step."""
    reported = reported_metrics()
    return "score", *(f"step0_{m}" for m in reported), *(f"last_{m}" for m in reported)


def run_columns() -> tuple[str, ...]:
    """report_runs.csv's and the Runs table's columns."""
    return "run", *SETTINGS, "score_name", "score", "reported", *metric_columns()[1:], "seed", "group"


def group_columns() -> tuple[str, ...]:
    """report.csv's columns."""
    metrics = (f"{m}{s}" for m in metric_columns() for s in SPREAD)
    return "group", "runs", *SETTINGS, "n", "seeds", "score_name", *metrics, "reported"


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
class Results:
    """What ``write_report`` wrote: the rows of report.csv (groups) and report_runs.csv, the comparisons, and
    a line for each comparison that could not be made."""

    groups: list[dict]
    runs: list[dict]
    comparisons: list[Comparison]
    notes: list[str]
    realism: list[dict]  # report_realism.csv: per group and judged step
    realism_comparisons: list[Comparison]
    left_out: list[str]  # a line for each run left out: a file of it is damaged


def table_row(run: Run, root: Path, group: str) -> dict:
    """One row of the per-run table (``None`` where the run has no such value)."""
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
        "status": run.status,
        "tags": ",".join(run_tags(run)) or None,
        "score_name": m.get("score_name"),
        "score": m.get("score"),
        "reported": REPORTED.get((dataset, model, score_metric(run))),
        **{f"step0_{k}": m.get(step_key("test", 0, k)) for k in reported_metrics()},
        **{f"last_{k}": m.get(step_key("test", depth, k)) if depth is not None else None for k in reported_metrics()},
        "seed": run_seeds(run)[0],
        "group": group,
    }


def group_row(group: Group, rows: Sequence[dict]) -> dict:
    """One row of the group table from its runs' rows: the settings of its first run, and per metric the mean,
    std and 95% interval over its ok runs (a group of one: the run's value, no spread)."""
    first, ok = rows[0], [row for run, row in zip(group.runs, rows, strict=True) if run.ok]
    tags = sorted({tag for row in rows for tag in (row["tags"] or "").split(",") if tag})
    row = {
        "group": group.label,
        "runs": " ".join(r["run"] for r in rows),
        **{key: first[key] for key in SETTINGS},
        "status": group.status,
        "tags": ",".join(tags) or None,
        "n": len(ok),
        "seeds": " ".join(str(r["seed"]) for r in ok) or None,
        "score_name": next((r["score_name"] for r in ok), first["score_name"]),
    }
    for metric in metric_columns():
        values = [r[metric] for r in ok if r[metric] is not None]
        s = summarize(values) if values else None
        spread = s is not None and s.n > 1
        row |= {
            metric: s.mean if s else None,
            f"{metric}_std": s.std if spread else None,
            f"{metric}_low": s.low if spread else None,
            f"{metric}_high": s.high if spread else None,
        }
    row["reported"] = next((r["reported"] for r in ok), first["reported"])
    return row


def format_mean(row: dict, metric: str) -> str:
    """``0.0132 ± 0.00041``: the mean ± the half-width of its 95% interval; a single value alone."""
    if row[f"{metric}_low"] is None:
        return format_value(row[metric])
    return f"{row[metric]:.4g} ± {(row[f'{metric}_high'] - row[f'{metric}_low']) / 2:.2g}"


def _cell(row: dict, column: str) -> str:
    if column == "95% interval":  # the score's
        low, high = row["score_low"], row["score_high"]
        return "" if low is None else f"[{low:.4g}, {high:.4g}]"
    return format_mean(row, column) if column in metric_columns() else format_value(row[column])


def group_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """The group table with ``columns``: a metric shows its mean ± half-width, ``95% interval`` the score's."""
    return markdown_table(columns, [[_cell(row, c) for c in columns] for row in rows])


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def select_runs(root: Path, tags: Sequence[str]) -> tuple[list[Run], list[str]]:
    """The runs under ``root`` carrying every tag of ``tags``, and a line for each run left out as damaged; a
    one-line error when there are none."""
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; give a sweep directory or outputs/")
    found, left_out = find_runs(root)
    if not found and left_out:
        more = "; ..." if len(left_out) > 1 else ""
        raise UserError(f"no readable runs under {root}, {len(left_out)} damaged: {left_out[0]}{more}")
    if not found:
        raise UserError(f"no runs under {root}: a run is a folder holding .hydra/config.yaml")
    runs = [run for run in found if set(tags) <= set(run_tags(run))]
    if not runs:
        tagged = sorted({tag for run in found for tag in run_tags(run)})
        raise UserError(f"no run under {root} is tagged {', '.join(tags)} (tags found: {', '.join(tagged) or 'none'})")
    return runs, left_out


def write_report(root: Path, tags: Sequence[str] = (), baseline: str = "model=ae") -> Results:
    """Write report.md, the CSV tables and the plots into ``root`` for the runs carrying every tag of ``tags``,
    comparing each dataset's variants with the groups where ``baseline`` (``KEY=VALUE``) holds."""
    base = Baseline.parse(baseline)
    runs, left_out = select_runs(root, tags)
    groups = group_runs(runs)
    group_of = {id(run): group.label for group in groups for run in group.runs}
    run_rows = {id(run): table_row(run, root, group_of[id(run)]) for run in runs}
    rows = [group_row(group, [run_rows[id(run)] for run in group.runs]) for group in groups]
    comparisons, notes = compare(groups, base)
    realism = realism_rows(groups)
    results = Results(
        rows, list(run_rows.values()), comparisons, notes, realism, compare_realism(groups, base), left_out
    )
    _write_csv(root / "report.csv", group_columns(), rows)
    _write_csv(root / "report_runs.csv", run_columns(), results.runs)
    all_comparisons = [*comparisons, *results.realism_comparisons]
    _write_csv(root / "report_comparisons.csv", COMPARISON_COLUMNS, [c.row() for c in all_comparisons])
    realism_part = []
    if realism:
        _write_csv(root / "report_realism.csv", REALISM_COLUMNS, realism)
        plotted = plot_perception_distortion(groups, root / "perception_distortion.png")
        realism_part.append(realism_section(realism, results.realism_comparisons, plotted))
    if features := feature_rows(groups):  # evaluate kid_fid=default
        _write_csv(root / "report_kid_fid.csv", FEATURE_COLUMNS, features)
        realism_part.append(feature_section(features))
    title = f"# Results: {len(runs)} runs in {len(groups)} groups under {root.resolve()}"
    sections = [
        title + (f", tagged {', '.join(tags)}" if tags else ""),
        groups_section(results),
        comparisons_section(results, base),
        *realism_part,
        runs_section(results),
        *left_out_section(results),
        *plot_sections(groups, root),
        REFERENCE,
    ]
    atomic_write(root / "report.md", "\n\n".join(sections))
    return results


def groups_section(results: Results) -> str:
    shown = ("group", "dataset", "model", "depth", "epochs", "status", "score_name", "score", "95% interval",
             "reported", *metric_columns()[1:])  # fmt: skip
    return f"""Grouping: {GROUPING}.

Each metric is the mean over the group's ok runs ± the half-width of its 95% Student's t interval
(`95% interval`: the score's); `status` counts the runs by how they ended: failed, collapsed and
missing runs are left out of the statistics. A group of one run shows that run's values. Scores are
test losses of step 0 (`score_name`); `reported` is the course report's test loss for the same
dataset, model and loss (under its protocol, below); `last_*` are the test metrics of the last
trained step (step `depth`). report.csv holds every mean, standard deviation and interval bound.

{group_table(results.groups, shown)}"""


def comparisons_section(results: Results, base: Baseline) -> str:
    lines = [f"- {c.line()}" for c in results.comparisons] + [f"- {note}" for note in results.notes]
    return f"""## Comparisons with the baseline ({base})

Each variant minus its dataset's baseline on the baseline's score (a test loss: lower is better), with
the 95% interval of the difference: paired over the seeds both ran, unpaired (Welch) when they share
none. An interval above 0 is worse, below 0 better; one that holds 0 is no clear difference.

""" + "\n".join(lines)


def runs_section(results: Results) -> str:
    columns = run_columns()
    return "## Runs\n\n" + markdown_table(columns, [[row[c] for c in columns] for row in results.runs])


def left_out_section(results: Results) -> list[str]:
    if not results.left_out:
        return []
    lines = "\n".join(f"- {line}" for line in results.left_out)
    return [f"## Left out\n\nRuns a file of which is damaged (cut short, not what it should be):\n\n{lines}"]


def plot_sections(groups: Sequence[Group], root: Path) -> list[str]:
    """Draw the plots into ``root``; the sections that show them (none for a plot without data)."""
    sections = []
    if plot_loss_curves(groups, root / "loss_curves.png"):
        sections.append("""## Loss curves

Per group: the mean over its ok runs per epoch; the band is the 95% t interval of their values.

![training and validation loss](loss_curves.png)""")
    if plot_test_steps(groups, root / "test_steps.png"):
        sections.append("""## Test loss per recursion step

Per group: the mean over its ok runs, with the 95% t interval as error bars. Steps beyond a run's
depth come from `eval.json` (`python -m recursive_ae_gan.evaluate`).

![test loss per recursion step](test_steps.png)""")
    return sections


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write the report of DIR, print its short table; bad input is one ``error:`` line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m recursive_ae_gan.report")
    parser.add_argument("dir", type=Path, help="a sweep directory, or outputs/ as a whole")
    parser.add_argument("--tag", action="append", default=[], help="only the runs with this tag (repeatable: all)")
    parser.add_argument(
        "--baseline", default="model=ae", help="KEY=VALUE: the groups the others are compared with (default: model=ae)"
    )
    args = parser.parse_args(argv)
    try:
        report = write_report(args.dir, args.tag, args.baseline)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    for line in report.left_out:
        print(f"warning: {line}", file=sys.stderr)
    print(f"grouping: {GROUPING}")
    print(
        group_table(
            report.groups, ("group", "dataset", "model", "status", "score_name", "score", "95% interval", "reported")
        )
    )
    for line in [c.line() for c in [*report.comparisons, *report.realism_comparisons]] + report.notes:
        print(line)
    print(f"wrote {args.dir / 'report.md'}, report.csv, report_runs.csv, report_comparisons.csv and plots")
