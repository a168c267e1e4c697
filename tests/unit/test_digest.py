"""Mergeable digests (metrics/digest.py): hand-computed vectors, merge laws, the sketch's bound."""

from __future__ import annotations

import functools
import math
import random

import orjson
import pytest

from netsonde.metrics.digest import (
    ACCURACY,
    EXACT_MAX,
    Bucket,
    Digest,
    bucket_of,
    merge_all,
)
from netsonde.metrics.stats import percentile


def digest(*values: float, t0: int = 0) -> Digest:
    d = Digest.of((t0 + i, v) for i, v in enumerate(values))
    assert d is not None
    return d


def roundtrip(d: Digest) -> Digest:
    return Digest.load(orjson.loads(orjson.dumps(d.dump())))


def test_exact_digest_by_hand() -> None:
    d = digest(3.0, 1.0, 2.0, 8.0)
    assert (d.n, d.total, d.min, d.max, d.mean) == (4, 14.0, 1.0, 8.0, 3.5)
    assert d.values == [1.0, 2.0, 3.0, 8.0] and d.exact
    assert (d.last_t, d.last) == (3, 8.0)  # the latest point, not the largest value
    assert d.percentile(50) == 2.5  # h = 1.5: 2 + .5·(3 − 2)
    assert d.percentile(90) == pytest.approx(6.5)  # h = 2.7: 3 + .7·(8 − 3)
    assert (d.percentile(0), d.percentile(100)) == (1.0, 8.0)
    assert Digest.of([]) is None


def test_sum_is_exact_whatever_the_merge_order() -> None:
    # Summed in floats, 1e16 + 1 − 1e16 is 0 (1e16 + 1 rounds to 1e16); the expansion keeps it.
    a, b = digest(1e16, 1.0), digest(-1e16)
    assert a.sum == (1e16, 1.0)
    assert a.merged(b).total == 1.0 == b.merged(a).total
    assert a.merged(b).sum == b.merged(a).sum == (1.0,)  # canonical: one form per exact sum
    tenths = merge_all(digest(0.1) for _ in range(10))
    assert tenths is not None and tenths.total == 1.0 == math.fsum([0.1] * 10)
    assert sum([0.1] * 10) != 1.0  # what a plain float sum would have given


def test_last_is_the_latest_time_and_the_larger_value_on_a_tie() -> None:
    early, late = digest(9.0, t0=10), digest(1.0, t0=20)
    assert early.merged(late).last == late.merged(early).last == 1.0
    tie_a, tie_b = digest(4.0, t0=20), digest(5.0, t0=20)
    assert tie_a.merged(tie_b).last == tie_b.merged(tie_a).last == 5.0


def test_capped_is_exact_up_to_the_cap_and_a_sketch_beyond() -> None:
    small = digest(*range(EXACT_MAX)).capped()
    assert small.exact and small.values == [float(v) for v in range(EXACT_MAX)]
    big = digest(*range(EXACT_MAX + 1)).capped()
    assert not big.exact and big.sketch is not None
    assert (big.n, big.total, big.min, big.max) == (65, 2080.0, 0.0, 64.0)
    assert big.sketch.zero == 1 and sum(big.sketch.pos.values()) == 64
    # Two exact halves stay exact when merged, whatever their sizes.
    halves = digest(*range(40)).capped().merged(digest(*range(40, 80)).capped())
    assert halves.exact and halves.values == [float(v) for v in range(80)]
    assert not halves.capped().exact


def test_sketch_by_hand() -> None:
    d = digest(1.0, 2.0, 2.0, 2.0, 100.0).capped(2)
    assert not d.exact
    # min and max are kept exactly; the middle rank is its bucket's representative:
    # bucket i = ⌈ln 2 / ln γ⌉ = 35 (γ = 1.01/0.99), representative 2γ^35/(γ+1).
    gamma = 1.01 / 0.99
    assert d.sketch is not None and d.sketch.pos[35] == 3
    assert d.percentile(50) == pytest.approx(2 * gamma**35 / (gamma + 1))
    assert abs(d.percentile(50) - 2.0) <= ACCURACY * 2.0
    assert (d.percentile(0), d.percentile(100)) == (1.0, 100.0)
    # h = 3.5 between rank 3 (≈2) and rank 4 (100, exact): the same interpolation as exact.
    assert d.percentile(87.5) == pytest.approx((d.percentile(50) + 100.0) / 2)


def test_sketch_keeps_negative_zero_and_positive_apart() -> None:
    d = digest(-5.0, -5.0, 0.0, 0.0, 0.0, 5.0).capped(1)
    assert d.sketch is not None and d.sketch.zero == 3
    assert sum(d.sketch.neg.values()) == 2 and sum(d.sketch.pos.values()) == 1
    assert d.percentile(20) == pytest.approx(-5.0, rel=ACCURACY)  # h = 1: rank 1, a −5
    assert d.percentile(50) == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sketch_percentiles_within_one_percent_of_exact(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(3, 1.5) for _ in range(5000)]
    parts = [digest(*values[i : i + 37]).capped() for i in range(0, len(values), 37)]
    d = functools.reduce(lambda a, b: a.merged(b).capped(), parts)  # as rollups are kept
    assert not d.exact and d.n == 5000
    assert d.total == math.fsum(values) and (d.min, d.max) == (min(values), max(values))
    for p in (0, 1, 5, 25, 50, 75, 95, 99, 100):
        want = percentile(values, p)
        assert want is not None
        assert abs(d.percentile(p) - want) <= ACCURACY * want * (1 + 1e-9), p


def test_merge_is_associative_and_commutative() -> None:
    rng = random.Random(7)

    def some(n: int) -> Digest:
        return digest(*(rng.uniform(-10, 100) for _ in range(n)), t0=rng.randrange(100))

    for sizes in ((3, 5, 7), (40, 30, 2), (70, 1, 90)):
        a, b, c = (some(n).capped() for n in sizes)
        left = a.merged(b).merged(c).capped()
        right = a.merged(b.merged(c)).capped()
        other = c.merged(a).merged(b).capped()
        assert left.dump() == right.dump() == other.dump()


def test_dump_and_load_round_trip_both_forms() -> None:
    exact = digest(1.5, -2.0, 1e16)
    sketch = digest(*range(-50, 50)).capped(10)
    for d in (exact, sketch):
        again = roundtrip(d)
        assert again.dump() == d.dump()
        assert again.percentile(30) == d.percentile(30)


def test_bucket_of_runs_by_hand() -> None:
    runs = [
        # finished: loss over its probes; seq 2 replied twice (first arrival counts), 3 lost
        (100, "finished", True, 3, {"minRtt": 1.0, "duplicates": 1, "outOfOrder": False},
         [(1, 1.0), (2, 3.0), (2, 9.0), (3, None)]),
        (110, "finished", True, 2, {"minRtt": 2.0, "duplicates": 0, "outOfOrder": True,
                                    "meanRtt": None, "note": "text", "huge": 1e308},
         [(1, 2.0), (2, 4.0)]),
        (120, "failed", True, 2, {"minRtt": 50.0}, [(1, 50.0)]),  # a result, not finished
        (130, "missed", False, 0, {}, []),
    ]  # fmt: skip
    b = bucket_of(runs)
    assert (b.runs, b.results, b.finished) == (4, 3, 2)
    assert sorted(b.metrics) == ["duplicates", "minRtt", "outOfOrder"]  # None, text, 1e308: none
    assert b.metrics["minRtt"].values == [1.0, 2.0]
    assert b.metrics["outOfOrder"].max == 1.0 and b.metrics["duplicates"].total == 1.0
    assert b.rtt is not None and b.rtt.values == [1.0, 2.0, 3.0, 4.0]
    assert (b.sent, b.received, b.loss_percent) == (5, 4, 20.0)
    lean = bucket_of(runs, metrics={"minRtt"}, packets=False)
    assert list(lean.metrics) == ["minRtt"] and lean.rtt is None and lean.sent == 0


def test_buckets_merge_and_round_trip() -> None:
    a = bucket_of([(0, "finished", True, 2, {"x": 1.0}, [(1, 1.0)])])
    b = bucket_of([(5, "finished", True, 2, {"x": 3.0, "y": 1}, [(1, 2.0), (2, 2.5)])])
    both = a.merged(b)
    assert (both.runs, both.finished, both.sent, both.received) == (2, 2, 4, 3)
    assert both.metrics["x"].values == [1.0, 3.0] and both.metrics["y"].n == 1
    assert both.loss_percent == 25.0
    again = Bucket.load(orjson.loads(orjson.dumps(both.capped().dump())))
    assert again.dump() == both.dump()
    assert Bucket().loss_percent is None
