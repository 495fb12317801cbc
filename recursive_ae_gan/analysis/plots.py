"""The report's figures, one line per group of runs (``runs.group_runs``): its mean over the group's ok runs,
with the 95% Student's t interval of those runs as error bars or a band (none where one run has the value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from recursive_ae_gan.analysis.runs import (
    Group,
    dataset_name,
    judged_steps,
    loss_curves,
    run_result,
    score_metric,
    step_curve,
)
from recursive_ae_gan.analysis.stats import summarize
from recursive_ae_gan.core.atomic import atomic_open
from recursive_ae_gan.core.keys import step_key


def _mean_and_interval(points: dict[float, list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, means, lows, highs)`` of ``{x: values}`` in x order; the interval is the mean itself for one value."""
    xs = sorted(points)
    summaries = [summarize(points[x]) for x in xs]
    means = np.array([s.mean for s in summaries])
    lows, highs = np.array([s.low for s in summaries]), np.array([s.high for s in summaries])
    return np.array(xs), means, np.where(np.isnan(lows), means, lows), np.where(np.isnan(highs), means, highs)


def _save(fig: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as file:
        fig.savefig(file, format="png", dpi=100)


def group_loss_curves(group: Group) -> dict[str, dict[float, list[float]]]:
    """``{"train"|"val": {epoch: [loss of each ok run]}}`` (a run's last value of an epoch, if it logged several)."""
    points: dict[str, dict[float, list[float]]] = {}
    for run in group.ok:
        for name, (epochs, losses) in loss_curves(run).items():
            per_epoch = {e: loss for e, loss in zip(epochs, losses, strict=True) if not math.isnan(e)}
            for epoch, loss in per_epoch.items():
                points.setdefault(name, {}).setdefault(epoch, []).append(loss)
    return points


def plot_loss_curves(groups: Sequence[Group], path: Path) -> bool:
    """One panel per group: train and validation loss per epoch, the mean over its runs and the band of their
    95% t interval; ``False`` (no file) when no ok run has TensorBoard losses."""
    curves = [(group, c) for group in groups if (c := group_loss_curves(group))]
    if not curves:
        return False
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (group, group_curves) in zip(axes, curves, strict=False):  # the grid may have spare panels
        for name, points in group_curves.items():
            epochs, means, lows, highs = _mean_and_interval(points)
            (line,) = ax.plot(epochs, means, marker=".", label=name)
            ax.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.25, linewidth=0)
        ax.set(title=f"{group.label} (n={len(group.ok)})", xlabel="epoch", ylabel="loss")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    for ax in axes[len(curves) :]:
        ax.set_axis_off()
    _save(fig, path)
    return True


def plot_test_steps(groups: Sequence[Group], path: Path) -> bool:
    """Test score against recursion step, one panel per (dataset, metric), one line per group with the 95% t
    interval of its runs as error bars; ``False`` when no ok run has one."""
    panels: dict[tuple[str | None, str], list[tuple[Group, dict[float, list[float]]]]] = {}
    for group in groups:
        per_metric: dict[str, dict[float, list[float]]] = {}
        for run in group.ok:
            if curve := step_curve(run):
                metric, steps, values = curve
                for step, value in zip(steps, values, strict=True):
                    per_metric.setdefault(metric, {}).setdefault(step, []).append(value)
        for metric, points in per_metric.items():
            panels.setdefault((dataset_name(group.runs[0]), metric), []).append((group, points))
    if not panels:
        return False
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    for ax, ((dataset, metric), lines) in zip(
        fig.subplots(1, len(panels), squeeze=False).ravel(), panels.items(), strict=True
    ):
        for i, (group, points) in enumerate(lines):
            steps, means, lows, highs = _mean_and_interval(points)
            dodge = (i - (len(lines) - 1) / 2) * 0.04  # side by side: groups with equal means stay visible
            label = f"{group.label} (n={len(group.ok)})"
            ax.errorbar(steps + dodge, means, yerr=[means - lows, highs - means], marker="o", capsize=3, label=label)
        ax.set(title=f"{dataset}: test {metric} per recursion step", xlabel="step (autoencoder applied step+1 times)")
        ax.set(ylabel=f"test {metric} (mean, 95% interval)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize="small")
    _save(fig, path)
    return True


MARKERS = "osD^v<>p*hX"  # one per recursion step


def plot_perception_distortion(groups: Sequence[Group], path: Path) -> bool:
    """Judge accuracy against distortion (Blau & Michaeli, 2018), one panel per dataset: a point per run and judged
    step (marker: the step), and per group a line through its steps' means; ``False`` when no run was judged."""
    panels: dict[str | None, list[tuple[Group, str, dict[int, list[tuple[float, float]]]]]] = {}
    for group in groups:
        metric = next((m for run in group.ok if (m := score_metric(run))), None)
        points: dict[int, list[tuple[float, float]]] = {}
        for step in judged_steps(group):
            for run in group.ok:
                acc, loss = (
                    run_result(run, step_key("test", step, "judge_acc")),
                    run_result(run, step_key("test", step, metric)),
                )
                if acc is not None and loss is not None:
                    points.setdefault(step, []).append((loss, acc))
        if points:
            panels.setdefault(dataset_name(group.runs[0]), []).append((group, metric, points))
    if not panels:
        return False
    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    for ax, (dataset, lines) in zip(fig.subplots(1, len(panels), squeeze=False).ravel(), panels.items(), strict=True):
        for group, _, points in lines:
            means = [np.mean(points[step], axis=0) for step in sorted(points)]
            (line,) = ax.plot(*np.array(means).T, label=f"{group.label} (n={len(group.ok)})", alpha=0.8)
            for step, xy in sorted(points.items()):
                ax.scatter(*np.array(xy).T, marker=MARKERS[step % len(MARKERS)], color=line.get_color(), s=22)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)  # chance: the judge cannot tell
        for step in sorted({step for _, _, points in lines for step in points}):  # the markers' legend
            ax.scatter([], [], marker=MARKERS[step % len(MARKERS)], color="black", s=22, label=f"step {step}")
        ax.set(title=f"{dataset}: judge accuracy against distortion", xlabel=f"test {lines[0][1]} (distortion)",
               ylabel="fresh judge's test accuracy (0.5: chance)")  # fmt: skip
        ax.legend(fontsize="small")
    _save(fig, path)
    return True
