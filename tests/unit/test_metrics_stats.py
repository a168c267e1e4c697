"""Hand-computed vectors for the generic order statistics (R-7 percentile, median, mean)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsonde.metrics.stats import mean, median, percentile

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        # [1,2,3,4], n=4: h = 3·p/100
        ([1, 2, 3, 4], 0, 1.0),  # h=0 → x0
        ([1, 2, 3, 4], 25, 1.75),  # h=0.75 → 1 + 0.75·(2-1)
        ([1, 2, 3, 4], 50, 2.5),  # h=1.5 → 2 + 0.5·(3-2)
        ([1, 2, 3, 4], 75, 3.25),  # h=2.25 → 3 + 0.25·(4-3)
        ([1, 2, 3, 4], 100, 4.0),  # h=3 → x3
        ([4, 1, 3, 2], 25, 1.75),  # unsorted input is sorted first
        ([10, 20], 10, 11.0),  # h=0.1 → 10 + 0.1·10
        ([1, 3, 5, 7, 9], 30, 3.4),  # h=1.2 → 3 + 0.2·(5-3)
        ([1, 3, 5, 7, 9], 90, 8.2),  # h=3.6 → 7 + 0.6·(9-7)
        ([1, 2, 9], 25, 1.5),  # h=0.5 → 1 + 0.5·(2-1)
        ([1, 2, 9], 75, 5.5),  # h=1.5 → 2 + 0.5·(9-2)
        ([7], 0, 7.0),  # one value: every percentile is it
        ([7], 37, 7.0),
        ([7], 100, 7.0),
        ([5, 5, 5], 60, 5.0),  # ties
        ([-3, -1], 50, -2.0),  # h=0.5 → -3 + 0.5·2
    ],
)
def test_percentile_r7(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == pytest.approx(expected)


def test_percentile_returns_float() -> None:
    assert isinstance(percentile([1, 2], 0), float)


@pytest.mark.parametrize("p", [-0.1, 100.1, -50, 200])
def test_percentile_rejects_p_outside_0_100(p: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], p)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3, 1, 2], 2.0),  # odd: sorted 1,2,3 → middle
        ([10, 12, 11, 22], 11.5),  # even: sorted 10,11,12,22 → (11+12)/2
        ([4.5], 4.5),
        ([1, 1, 100], 1.0),  # median ignores the outlier
    ],
)
def test_median(values: list[float], expected: float) -> None:
    assert median(values) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([10, 12, 11, 22], 13.75),  # 55/4
        ([1, 2], 1.5),  # 3/2
        ([2.5], 2.5),
        ([0.1, 0.2, 0.3], 0.2),  # 0.6/3
        ([-1, 1], 0.0),
    ],
)
def test_mean(values: list[float], expected: float) -> None:
    assert mean(values) == pytest.approx(expected)


def test_mean_accepts_an_iterator() -> None:
    assert mean(iter([1, 2, 3])) == pytest.approx(2.0)  # 6/3


@pytest.mark.parametrize("func", [mean, median, lambda v: percentile(v, 25)])
def test_empty_input_gives_none(func: Callable[[list[float]], float | None]) -> None:
    assert func([]) is None


def test_percentile_checks_p_even_for_empty_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 101)


@given(st.lists(finite, min_size=2, max_size=50))
def test_quartiles_match_statistics_inclusive(values: list[float]) -> None:
    """statistics.quantiles(method="inclusive") is also R-7: an independent oracle."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    assert percentile(values, 25) == pytest.approx(q1, abs=1e-6)
    assert percentile(values, 50) == pytest.approx(q2, abs=1e-6)
    assert percentile(values, 75) == pytest.approx(q3, abs=1e-6)


@given(st.lists(finite, min_size=1, max_size=50), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_bounded_and_monotone(values: list[float], p: float, q: float) -> None:
    lo, hi = sorted((p, q))
    a, b = percentile(values, lo), percentile(values, hi)
    assert a is not None and b is not None
    assert min(values) <= a <= b <= max(values)


@given(st.lists(finite, min_size=1, max_size=50))
def test_mean_and_median_within_range(values: list[float]) -> None:
    m, md = mean(values), median(values)
    assert m is not None and md is not None
    assert min(values) <= m <= max(values)
    assert min(values) <= md <= max(values)


@given(st.lists(finite, min_size=1, max_size=30), st.randoms())
def test_order_does_not_matter(values: list[float], rnd: random.Random) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert mean(shuffled) == mean(values)
    assert median(shuffled) == median(values)
