"""KID and FID across runs, for ``report``: per group and recursion step, the Inception feature distances that
``evaluate kid_fid=default`` wrote into each run's ``eval.json`` (``models.feature_distances``), over seeds."""

from __future__ import annotations

from collections.abc import Sequence

from recursive_ae_gan.analysis.runs import Group, dataset_name, run_result
from recursive_ae_gan.analysis.stats import summarize
from recursive_ae_gan.analysis.tables import markdown_table
from recursive_ae_gan.core.keys import step_key, steps_with

FEATURE_COLUMNS = ("group", "dataset", "step", "n", "kid", "kid_subset_std", "kid_low", "kid_high", "fid")


def measured_steps(group: Group) -> list[int]:
    """The steps whose KID any ok run of the group measured."""
    keys = {key for run in group.ok for key in (*run.metrics, *run.evaluation)}
    return steps_with(keys, "test", "kid")


def feature_rows(groups: Sequence[Group]) -> list[dict]:
    """One row per group and measured step: the mean KID over the group's ok runs with its 95% t interval over
    seeds (one value per run), the mean of the runs' own standard deviations over KID's subsets, and the mean FID."""
    rows = []
    for group in groups:
        for step in measured_steps(group):
            runs = [run for run in group.ok if run_result(run, step_key("test", step, "kid")) is not None]
            kid = summarize([run_result(run, step_key("test", step, "kid")) for run in runs])
            spread = kid.n > 1
            rows.append({
                "group": group.label, "dataset": dataset_name(group.runs[0]), "step": step, "n": kid.n,
                "kid": kid.mean,
                "kid_subset_std": summarize([run_result(run, step_key("test", step, "kid_std")) for run in runs]).mean,
                "kid_low": kid.low if spread else None, "kid_high": kid.high if spread else None,
                "fid": summarize([run_result(run, step_key("test", step, "fid")) for run in runs]).mean,
            })  # fmt: skip
    return rows


def _kid(row: dict) -> str:
    interval = "" if row["kid_low"] is None else f" [{row['kid_low']:.4f}, {row['kid_high']:.4f}]"
    return f"{row['kid']:.4f}{interval} (± {row['kid_subset_std']:.4f})"


def feature_section(rows: Sequence[dict]) -> str:
    """report.md's KID and FID section."""
    header = ["group", "dataset", "step", "n", "KID [95% interval] (± over subsets)", "FID"]
    table = [[r["group"], r["dataset"], r["step"], r["n"], _kid(r), f"{r['fid']:.2f}"] for r in rows]
    return f"""## KID and FID: Inception feature distances from the real test images

Per group and recursion step, from `evaluate kid_fid=default`: KID (the mean over the group's ok runs, its 95% t
interval over seeds, and in parentheses the runs' mean standard deviation over KID's random subsets) and FID;
0 is indistinguishable from the test images. At a few thousand test images trust KID, which is unbiased; FID is
biased upwards at small n, and comparable only at equal n. Neither replaces the two-sample test above
(docs/evaluation.md, "KID and FID").

{markdown_table(header, table)}"""
