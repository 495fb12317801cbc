"""stats: the t interval, paired and Welch differences (scipy's) against hand computations with a printed t table."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sp

from recursive_ae_gan.analysis.stats import paired_difference, summarize, welch_difference


def test_summary_matches_a_hand_computation() -> None:
    values = [0.0130, 0.0125, 0.0141]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = 4.302652729911275 * std / math.sqrt(3)  # t_{0.975, 2} from a printed table
    s = summarize(values)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(mean), pytest.approx(std))
    assert (s.low, s.high, s.half_width) == (
        pytest.approx(mean - half),
        pytest.approx(mean + half),
        pytest.approx(half),
    )


def test_one_value_has_no_interval() -> None:
    s = summarize([0.5])
    assert s.mean == 0.5 and math.isnan(s.std) and math.isnan(s.low) and math.isnan(s.high)


def test_paired_difference_matches_a_hand_computation() -> None:
    variant, base = [0.5521, 0.5473, 0.5609, 0.5502], [0.5490, 0.5451, 0.5570, 0.5488]
    diffs = [v - b for v, b in zip(variant, base, strict=True)]
    mean = sum(diffs) / 4
    half = 3.182446305284263 * math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3) / 2  # t_{0.975, 3}, sqrt(4) = 2
    d = paired_difference(variant, base)
    assert (d.mean, d.low, d.high, d.n) == (
        pytest.approx(mean),
        pytest.approx(mean - half),
        pytest.approx(mean + half),
        4,
    )


def test_welch_difference_matches_a_hand_computation() -> None:
    # Equal sizes and variances: Welch-Satterthwaite's df is 2 (n - 1) = 4, in a printed t table.
    d = welch_difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    half = 2.7764451051977987 * math.sqrt(1 / 3 + 1 / 3)
    assert (d.mean, d.low, d.high, d.n) == (-3.0, pytest.approx(-3 - half), pytest.approx(-3 + half), 6)
    # Unequal variances: the interval is mean +- t(df) * se with Welch-Satterthwaite's df, computed here by hand.
    a, b = [1.0, 3.0, 5.0], [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0]
    va, vb = 4.0 / 3, sum((x - 4) ** 2 for x in b) / 8 / 9  # sample variance / n
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 8)
    half = sp.t.ppf(0.975, df) * math.sqrt(va + vb)
    d = welch_difference(a, b)
    assert (d.mean, d.low, d.high) == (-1.0, pytest.approx(-1 - half), pytest.approx(-1 + half))


def test_equal_values_give_a_zero_wide_interval_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize([0.25, 0.25, 0.25])
        same = welch_difference([0.5, 0.5], [0.25, 0.25])
        paired = paired_difference([0.5, 0.6, 0.7], [0.25, 0.35, 0.45])
    assert (s.mean, s.std, s.low, s.high) == (0.25, 0.0, 0.25, 0.25)
    assert (same.low, same.high) == (pytest.approx(0.25), pytest.approx(0.25)) and same.excludes_zero
    assert (paired.low, paired.high) == (pytest.approx(0.25), pytest.approx(0.25))


def test_paired_difference_is_scipys_paired_t_interval() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.55, 0.01, 5)
    variant = base + rng.normal(0.003, 0.001, 5)
    d = paired_difference(list(variant), list(base))
    expected = sp.ttest_rel(variant, base).confidence_interval(0.95)
    assert d.paired and d.n == 5
    assert (d.low, d.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert d.mean == pytest.approx(float(np.mean(variant - base))) and d.excludes_zero


def test_welch_difference_is_scipys_welch_interval() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.56, 0.02, 4), rng.normal(0.55, 0.005, 6)
    d = welch_difference(list(a), list(b))
    expected = sp.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert not d.paired and d.n == 10
    assert (d.low, d.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert d.excludes_zero == (expected.low > 0 or expected.high < 0)


def test_a_side_with_one_value_has_no_welch_interval() -> None:
    d = welch_difference([0.56], [0.55, 0.54, 0.56])
    assert d.mean == pytest.approx(0.01) and math.isnan(d.low) and math.isnan(d.high) and not d.excludes_zero
