"""Statistics over seeds, as papers report them: mean ± the half-width of a 95% Student's t interval (n runs).

Small samples (3 to 10 seeds) are the norm for training runs, so intervals use Student's t, not the normal
approximation. Two variants that were trained on the same seeds are compared *paired* (the mean of the
per-seed differences, which cancels what a seed does to both); variants that share no seed are compared
with Welch's unpaired interval. Pure functions of lists of floats, so that ``report`` and the tests share them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """``n`` values: their mean, sample standard deviation and 95% t interval (``nan`` below 2 values)."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference:
    """A variant minus its baseline: the mean difference, its 95% interval, and how it was computed."""

    mean: float
    low: float
    high: float
    n: int  # paired: the shared seeds; unpaired: the variant's runs + the baseline's
    paired: bool

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``df`` degrees of freedom."""
    return float(student_t.ppf(0.5 + confidence / 2, df))


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample std (n - 1) and the t interval of ``values``; one value has no spread (``nan``)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = statistics.fmean(values)
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = statistics.stdev(values)
    half = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def paired_difference(
    variant: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> Difference:
    """``variant[i] - baseline[i]`` over shared seeds (same order): its mean and t interval."""
    if len(variant) != len(baseline):
        raise ValueError(f"paired values need equal lengths, got {len(variant)} and {len(baseline)}")
    summary = summarize([v - b for v, b in zip(variant, baseline, strict=True)], confidence)
    return Difference(summary.mean, summary.low, summary.high, summary.n, paired=True)


def welch_difference(variant: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> Difference:
    """``mean(variant) - mean(baseline)`` of two independent samples: Welch's t interval (unequal variances)."""
    a, b = summarize(variant), summarize(baseline)
    mean, n = a.mean - b.mean, a.n + b.n
    if a.n < 2 or b.n < 2:
        return Difference(mean, math.nan, math.nan, n, paired=False)
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(mean, mean, mean, n, paired=False)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))  # Welch-Satterthwaite
    half = t_quantile(df, confidence) * se
    return Difference(mean, mean - half, mean + half, n, paired=False)
