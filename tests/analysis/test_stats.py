"""stats: the t interval, paired and Welch differences against scipy's own tests and a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from recursive_ae_gan.analysis.stats import paired_difference, summarize, t_quantile, welch_difference


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
    assert t_quantile(4) == pytest.approx(2.7764451051977987)


def test_one_value_has_no_interval() -> None:
    s = summarize([0.5])
    assert s.mean == 0.5 and math.isnan(s.std) and math.isnan(s.low) and math.isnan(s.high)


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
