"""Small order statistics shared by the metric sets.

Every function takes any iterable of numbers, returns a float, and returns None for empty input
rather than raising: a run with no replies is normal, not an error, and the caller stores None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean, summed with ``math.fsum`` so the result does not depend on input order."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    # fsum/n can land one ulp outside [min, max] (e.g. three copies of 0.1); clamp so
    # min <= mean <= max always holds for the stored summary.
    return min(max(math.fsum(vals) / len(vals), min(vals)), max(vals))


def percentile(values: Iterable[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100), linear interpolation between closest ranks.

    This is Hyndman & Fan type 7 (R's default, numpy's ``"linear"``, ``statistics.quantiles``
    with ``method="inclusive"``): h = (n-1)·p/100, result = x[⌊h⌋] + (h-⌊h⌋)·(x[⌊h⌋+1]-x[⌊h⌋]).
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p!r}")
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    h = (len(xs) - 1) * p / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    value = xs[lo] + (h - lo) * (xs[hi] - xs[lo])
    # Rounding in the interpolation must not step outside the bracketing ranks.
    return min(max(value, xs[lo]), xs[hi])


def median(values: Iterable[float]) -> float | None:
    """The 50th percentile (mean of the two middle values for an even count)."""
    return percentile(values, 50)
