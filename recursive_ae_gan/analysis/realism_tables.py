"""Realism across runs, for ``report``: per group and recursion step, how often a fresh judge tells the
reconstructions from real test images (``models.realism``), over seeds, beside what the step costs in distortion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from recursive_ae_gan.analysis.comparisons import Comparison
from recursive_ae_gan.analysis.runs import Group, dataset_name, judged_steps, run_result, score_metric
from recursive_ae_gan.analysis.stats import summarize
from recursive_ae_gan.analysis.tables import markdown_table
from recursive_ae_gan.core.keys import parse_step_key, step_key

REALISM_COLUMNS = (
    "group", "dataset", "step", "n", "judge_acc", "judge_acc_std", "judge_acc_low", "judge_acc_high",
    "judge_auc", "distortion", "distortion_metric",
)  # fmt: skip
JUDGE_ACC_LOW = re.compile(r"judge_(\w+)_acc_low")  # a judge's metric name: judge_NAME_acc_low
JUDGE_KEYS = ("acc", "acc_low", "acc_high", "auc", "p", "epochs", "best_epoch", "val_acc", "converged")  # per judge


def panel_table(result: Mapping[str, float]) -> str:
    """``evaluate``'s table of the realism panel (``models.realism``): one row per step and judge, its test accuracy
    [95% interval], AUC, own p-value (uncorrected), and for a trained judge its epochs, best epoch and that epoch's
    validation accuracy, "NOT CONVERGED" where it reached the epoch bound; ``*`` marks each step's strongest judge,
    whose accuracy is the step's verdict."""
    rows = []
    for step in range(int(result["max_depth"]) + 1):
        # each judge NAME of the panel has judge_NAME_acc_low; the step's verdict (judge_acc_low) has no NAME
        keys = [k for k in map(parse_step_key, result) if k and (k.split, k.step) == ("test", step)]  # in order
        names = [match[1] for k in keys if (match := JUDGE_ACC_LOW.fullmatch(k.name))]
        judges = {}
        for name in names:
            keys = {k: step_key("test", step, f"judge_{name}_{k}") for k in JUDGE_KEYS}
            judges[name] = {k: result[key] for k, key in keys.items() if key in result}
        strongest = max(judges, key=lambda name: judges[name]["acc"], default=None)
        for name, found in judges.items():
            trained = [int(found["epochs"]), int(found["best_epoch"]), found["val_acc"]] if "epochs" in found else []
            converged = ["yes" if found["converged"] else "NOT CONVERGED"] if trained else []
            accuracy = f"{found['acc']:.3f} [{found['acc_low']:.3f}, {found['acc_high']:.3f}]"
            mark = "*" if name == strongest else ""
            rows.append([step, name + mark, accuracy, found["auc"], found["p"], *(trained + converged or [""] * 4)])
    header = ["step", "judge", "test accuracy [95% interval]", "AUC", "p", "epochs", "best epoch", "val accuracy",
              "converged"]  # fmt: skip
    return markdown_table(header, rows)


def realism_rows(groups: Sequence[Group]) -> list[dict]:
    """One row per group and judged step: the judge's mean accuracy over the group's ok runs with its 95% t interval
    (over seeds: each run's accuracy is one value), its mean AUC, and the step's mean distortion (the score's
    metric at that step, ``test/step_i/<bce|mse>``)."""
    rows = []
    for group in groups:
        metric = next((m for run in group.ok if (m := score_metric(run))), None)
        for step in judged_steps(group):
            runs = [run for run in group.ok if run_result(run, step_key("test", step, "judge_acc")) is not None]
            acc = summarize([run_result(run, step_key("test", step, "judge_acc")) for run in runs])
            auc = summarize([run_result(run, step_key("test", step, "judge_auc")) for run in runs])
            distortions = [d for run in runs if (d := run_result(run, step_key("test", step, metric))) is not None]
            spread = acc.n > 1
            rows.append({
                "group": group.label, "dataset": dataset_name(group.runs[0]), "step": step, "n": acc.n,
                "judge_acc": acc.mean, "judge_acc_std": acc.std if spread else None,
                "judge_acc_low": acc.low if spread else None, "judge_acc_high": acc.high if spread else None,
                "judge_auc": auc.mean, "distortion": summarize(distortions).mean if distortions else None,
                "distortion_metric": metric,
            })  # fmt: skip
    return rows


def _accuracy(row: dict) -> str:
    if row["judge_acc_low"] is None:
        return f"{row['judge_acc']:.3f}"
    return f"{row['judge_acc']:.3f} [{row['judge_acc_low']:.3f}, {row['judge_acc_high']:.3f}]"


def realism_section(rows: Sequence[dict], comparisons: Sequence[Comparison], plotted: bool) -> str:
    """report.md's realism section: the table, the differences with the baseline, the plot."""
    header = ["group", "dataset", "step", "n", "judge accuracy [95% interval]", "judge AUC", "distortion"]
    table = [
        [r["group"], r["dataset"], r["step"], r["n"], _accuracy(r), r["judge_auc"],
         f"{r['distortion_metric']} {r['distortion']:.4g}" if r["distortion"] is not None else ""]
        for r in rows
    ]  # fmt: skip
    lines = [f"- {c.line()}" for c in comparisons] or ["- no variant and baseline were both judged"]
    plot = "\n\n![judge accuracy against distortion](perception_distortion.png)" if plotted else ""
    return f"""## Realism: can a fresh judge tell?

Per group and recursion step: the verdict of a panel of fresh judges, each trained to convergence to tell real
images from that step's reconstructions (`evaluate`, or `realism=default` in training: two-sample tests), the
strongest judge's test accuracy, as the mean over the group's ok runs with its 95% t interval over seeds; 0.5 is
chance, 1 is told apart every time (a run judged before the panel: its single judge's accuracy). `distortion`
is the step's mean test loss. The differences with the baseline are paired over seeds (lower: more realistic).

{markdown_table(header, table)}

{chr(10).join(lines)}{plot}"""
