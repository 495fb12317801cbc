"""Each variant against a baseline (``report --baseline model=ae``): is it better, and by how much, beyond a seed?

Per dataset, every group that is not a baseline group is compared with one baseline group on the headline
metric (the baseline's score, ``test/step_0/<loss>``; lower is better): the mean difference variant minus
baseline and its 95% interval, paired over the seeds the two share (``runs.run_seeds``; a seed only one side
has is left out), Welch's unpaired interval when they share none. The baseline group of a variant is the one
whose overrides, apart from the baseline's key (``model=...``), equal the variant's, as in a sweep
``model=ae,rae model.lr=0.001,0.01``; else the dataset's only baseline group; else there is none to name.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from recursive_ae_gan.analysis.runs import (
    Group,
    Run,
    dataset_name,
    judged_steps,
    label_overrides,
    override_key,
    run_result,
    run_seeds,
    score_metric,
)
from recursive_ae_gan.analysis.stats import Difference, paired_difference, welch_difference
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models import VARIANTS

COMPARISON_COLUMNS = (
    "dataset", "variant", "baseline", "metric", "difference", "low", "high", "verdict",
    "paired_seeds", "variant_n", "baseline_n",
)  # fmt: skip
_ABSENT = object()


@dataclass(frozen=True)
class Baseline:
    """``KEY=VALUE``: a Hydra choice (``model=ae``) or a config key (``model.lr=0.005``), as Hydra parses it."""

    key: str
    value: object

    @classmethod
    def parse(cls, spec: str) -> Baseline:
        try:
            override = OverridesParser.create().parse_override(spec)
        except HydraException:
            override = None
        if override is None or "=" not in spec or override.is_sweep_override():
            raise UserError(f"--baseline {spec}: expected KEY=VALUE, a Hydra choice (model=ae) or a config key")
        return cls(override.key_or_group, override.value())

    def __str__(self) -> str:
        return f"{self.key}={self.value}"

    def holds(self, run: Run) -> bool:
        if self.key in run.choices:
            return str(run.choices[self.key]) == str(self.value)
        found = OmegaConf.select(run.config, self.key, default=_ABSENT, throw_on_resolution_failure=False)
        return found is not _ABSENT and found == self.value


@dataclass
class Comparison:
    """One variant group against its baseline group on ``metric``."""

    dataset: str
    variant: str
    baseline: str
    metric: str
    difference: Difference
    variant_n: int
    baseline_n: int

    @property
    def verdict(self) -> str:
        d = self.difference
        if math.isnan(d.low):  # one paired seed, or a side with one run
            return "no interval (too few runs)"
        return "worse" if d.low > 0 else "better" if d.high < 0 else "no clear difference"

    def line(self) -> str:
        """``RAE vs AE on MNIST: MSE +0.0012 [+0.0003, +0.0021], worse, 3 paired seeds``."""
        d = self.difference
        extent = max(abs(x) for x in (d.mean, d.low, d.high) if not math.isnan(x)) or 0.01
        digits = max(0, 2 - math.floor(math.log10(extent)))  # three significant digits of the largest
        interval = "" if math.isnan(d.low) else f" [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"
        if d.paired:
            basis = f"{d.n} paired seed" + ("" if d.n == 1 else "s")
        else:
            basis = f"unpaired (Welch, no shared seed), {self.variant_n} and {self.baseline_n} runs"
        head = f"{self.variant} vs {self.baseline} on {self.dataset.upper()}"
        label = self.metric.upper() if self.metric.isalnum() else self.metric  # a loss's short name in capitals
        return f"{head}: {label} {d.mean:+.{digits}f}{interval}, {self.verdict}, {basis}"

    def row(self) -> dict:
        d = self.difference
        nan = math.isnan(d.low)
        return {
            "dataset": self.dataset, "variant": self.variant, "baseline": self.baseline, "metric": self.metric,
            "difference": d.mean, "low": None if nan else d.low, "high": None if nan else d.high,
            "verdict": self.verdict, "paired_seeds": d.n if d.paired else 0,
            "variant_n": self.variant_n, "baseline_n": self.baseline_n,
        }  # fmt: skip


def group_name(group: Group) -> str:
    """``RAE``, or ``RAE (model.lr=0.01)`` where the group differs from others in more than its model."""
    model = group.runs[0].choices.get("model")
    extras = [o for o in group.differs if override_key(o) != "model"]
    name = VARIANTS.get(model, str(model)) + (f" ({', '.join(extras)})" if extras else "")
    return name + (f" #{group.label.rpartition(' #')[2]}" if " #" in group.label else "")


def _values_by_seed(group: Group, key: str) -> dict[tuple, list[float]]:
    """``{seeds: [the value of key (``test/step_0/mse``) of each ok run with those seeds]}``."""
    values: dict[tuple, list[float]] = {}
    for run in group.ok:
        if (value := run_result(run, key)) is not None:
            values.setdefault(run_seeds(run), []).append(value)
    return values


def _settings_but(group: Group, key: str) -> frozenset[str]:
    return frozenset(o for o in label_overrides(group.runs[0]) if override_key(o) != key)


def baseline_of(variant: Group, bases: Sequence[Group], key: str) -> Group | None:
    """The baseline group whose overrides, apart from ``key``, are the variant's; else the only one; else none."""
    same = [b for b in bases if _settings_but(b, key) == _settings_but(variant, key)]
    if len(same) == 1:
        return same[0]
    return bases[0] if len(bases) == 1 else None


def difference(variant: Group, base: Group, key: str) -> tuple[Difference, int, int] | None:
    """Variant minus baseline on ``key`` (``test/step_0/mse``), paired over shared seeds (a seed's runs averaged where
    a group ran it twice), else Welch's; with the two groups' numbers of runs. None when a side has no value."""
    v, b = _values_by_seed(variant, key), _values_by_seed(base, key)
    if not v or not b:
        return None
    if shared := [seeds for seeds in b if seeds in v]:
        pairs = [(statistics.fmean(v[s]), statistics.fmean(b[s])) for s in shared]
        result = paired_difference([p[0] for p in pairs], [p[1] for p in pairs])
    else:
        result = welch_difference([x for xs in v.values() for x in xs], [x for xs in b.values() for x in xs])
    return result, sum(map(len, v.values())), sum(map(len, b.values()))


def matched(groups: Sequence[Group], baseline: Baseline) -> tuple[list[tuple[str, Group, Group]], list[str]]:
    """``(dataset, variant, its baseline group)`` for every variant of every dataset, and one line for each variant
    that has no baseline group to be compared with."""
    found, notes = [], []
    datasets: dict[str | None, list[Group]] = {}
    for group in groups:
        datasets.setdefault(dataset_name(group.runs[0]), []).append(group)
    for dataset, members in datasets.items():
        name = str(dataset).upper()
        bases = [g for g in members if baseline.holds(g.runs[0])]
        if not bases:
            notes.append(f"no baseline ({baseline}) on {name}: its {len(members)} group(s) are not compared")
            continue
        for variant in (g for g in members if g not in bases):
            base = baseline_of(variant, bases, baseline.key)
            if base is None:
                notes.append(f"{group_name(variant)} on {name}: not compared, {len(bases)} baseline groups and none "
                             "has its other settings")  # fmt: skip
                continue
            found.append((str(dataset), variant, base))
    return found, notes


def compare(groups: Sequence[Group], baseline: Baseline) -> tuple[list[Comparison], list[str]]:
    """Every dataset's variants against their baseline groups on the baseline's score, and one line for each
    comparison not made."""
    comparisons: list[Comparison] = []
    pairs, notes = matched(groups, baseline)
    for dataset, variant, base in pairs:
        metric = next((m for run in base.ok if (m := score_metric(run))), None)  # the baseline's score
        found = difference(variant, base, step_key("test", 0, metric)) if metric else None
        if found is None:
            lacking = group_name(variant) if base.ok else group_name(base)
            notes.append(f"{group_name(variant)} vs {group_name(base)} on {dataset.upper()}: not compared, {lacking} "
                         "has no ok run")  # fmt: skip
            continue
        comparisons.append(Comparison(dataset, group_name(variant), group_name(base), metric, *found))
    return comparisons, notes


def compare_realism(groups: Sequence[Group], baseline: Baseline) -> list[Comparison]:
    """Every variant against its baseline on the fresh judge's accuracy, at each step both have it (lower: the
    judge tells the reconstructions from real images less often)."""
    comparisons = []
    for dataset, variant, base in matched(groups, baseline)[0]:
        for step in sorted(set(judged_steps(variant)) & set(judged_steps(base))):
            if found := difference(variant, base, step_key("test", step, "judge_acc")):
                name = f"judge accuracy at step {step}"
                comparisons.append(Comparison(dataset, group_name(variant), group_name(base), name, *found))
    return comparisons
