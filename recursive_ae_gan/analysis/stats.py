"""Statistics over seeds, as papers report them: mean ± the half-width of a 95% Student's t interval (n runs).

Small samples (3 to 10 seeds) are the norm for training runs, so intervals use Student's t, not the normal
approximation. Two variants that were trained on the same seeds are compared *paired* (the mean of the
per-seed differences, which cancels what a seed does to both); variants that share no seed are compared
with Welch's unpaired interval. The intervals are scipy's (``ttest_1samp``, ``ttest_rel``, ``ttest_ind`` with
``equal_var=False``, each with ``confidence_interval``). Pure functions of lists of floats, so that ``report`` and
the tests share them.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import stats

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


def t_interval(test: Callable[..., object], *samples: Sequence[float], confidence: float) -> tuple[float, float]:
    """The ``confidence`` interval of scipy's t ``test`` on ``samples`` (``nan`` where a value is not finite).

    Values that are (nearly) equal, as a loss over seeds can be, give a (nearly) zero-wide interval, correctly;
    scipy warns of its lost precision then, and non-finite values make numpy warn of invalid arithmetic: neither
    is news to a reader of the report."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        interval = test(*samples).confidence_interval(confidence)
    return float(interval.low), float(interval.high)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample std (n - 1) and the t interval of ``values``; one value has no spread (``nan``)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = statistics.fmean(values)
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    low, high = t_interval(partial(stats.ttest_1samp, popmean=0.0), values, confidence=confidence)
    return Summary(n, mean, statistics.stdev(values), low, high)


def paired_difference(
    variant: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> Difference:
    """``variant[i] - baseline[i]`` over shared seeds (same order): its mean and t interval."""
    if len(variant) != len(baseline):
        raise ValueError(f"paired values need equal lengths, got {len(variant)} and {len(baseline)}")
    mean = statistics.fmean([v - b for v, b in zip(variant, baseline, strict=True)])
    if len(variant) < 2:
        return Difference(mean, math.nan, math.nan, len(variant), paired=True)
    low, high = t_interval(stats.ttest_rel, variant, baseline, confidence=confidence)
    return Difference(mean, low, high, len(variant), paired=True)


def welch_difference(variant: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> Difference:
    """``mean(variant) - mean(baseline)`` of two independent samples: Welch's t interval (unequal variances)."""
    mean, n = statistics.fmean(variant) - statistics.fmean(baseline), len(variant) + len(baseline)
    if len(variant) < 2 or len(baseline) < 2:
        return Difference(mean, math.nan, math.nan, n, paired=False)
    low, high = t_interval(partial(stats.ttest_ind, equal_var=False), variant, baseline, confidence=confidence)
    return Difference(mean, low, high, n, paired=False)
