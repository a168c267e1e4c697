"""PingER views: metadata matching and RRD-style consolidation, by hand-computed vectors."""

from __future__ import annotations

import pytest

from netsonde.services.pinger.views import (
    DATUM_NAMES,
    Datum,
    MetaFilter,
    PingerMeta,
    consolidate,
    find,
)

META = [
    PingerMeta("k1", "mp.example", "127.0.0.1", 10, 56, 64, 1.0),
    PingerMeta("k2", "mp.example", "127.0.0.2", 10, 1000, 64, 1.0),
    PingerMeta("k3", "other.example", "127.0.0.1", 5, 56, 32, 0.2),
]


@pytest.mark.parametrize(
    ("want", "keys"),
    [
        (MetaFilter(), ["k1", "k2", "k3"]),
        (MetaFilter(destination="127.0.0.1"), ["k1", "k3"]),
        (MetaFilter(source="mp.example", packet_size=1000), ["k2"]),
        (MetaFilter(interval=0.2), ["k3"]),  # float compare, not string
        (MetaFilter(transport="icmp", ttl=64), ["k1", "k2"]),  # transport is case-blind
        (MetaFilter(transport="UDP"), []),
        (MetaFilter(count=7), []),
    ],
)
def test_metadata_filter(want: MetaFilter, keys: list[str]) -> None:
    assert [m.key for m in find(META, want)] == keys


ROW_A = {"minRtt": 1.0, "maxRtt": 3.0, "lossPercent": 0.0, "duplicates": 0, "outOfOrder": 0}
ROW_B = {"minRtt": 2.0, "maxRtt": 7.0, "lossPercent": 50.0, "duplicates": 2, "outOfOrder": 0}
ROW_C = {"minRtt": None, "maxRtt": None, "lossPercent": 100.0, "duplicates": 0, "outOfOrder": 1}


def test_no_consolidation_keeps_zero_drops_null_and_orders_as_pinger() -> None:
    (datum,) = consolidate([(100, ROW_A)], "AVERAGE", 1)
    assert datum == Datum(
        100,
        (
            ("minRtt", 1.0),
            ("maxRtt", 3.0),
            ("lossPercent", 0.0),  # the original dropped zeros and never sent loss
            ("duplicates", False),
            ("outOfOrder", False),
        ),
    )
    names = [n for n, _ in datum.values]
    assert names == [n for n in DATUM_NAMES if n in names]


@pytest.mark.parametrize(
    ("function", "min_rtt", "max_rtt", "loss"),
    [
        ("AVERAGE", 1.5, 5.0, 50.0),  # (1+2)/2, (3+7)/2, (0+50+100)/3
        ("MIN", 1.0, 3.0, 0.0),
        ("MAX", 2.0, 7.0, 100.0),
    ],
)
def test_buckets_consolidate_each_metric_over_present_values(
    function: str, min_rtt: float, max_rtt: float, loss: float
) -> None:
    # 100, 104 and 109 fall in bucket 100 (resolution 10); 110 starts the next bucket.
    points = [(100, ROW_A), (104, ROW_B), (109, ROW_C), (110, ROW_A)]
    first, second = consolidate(points, function, 10)
    assert (first.time, second.time) == (100, 110)
    got = dict(first.values)
    assert (got["minRtt"], got["maxRtt"], got["lossPercent"]) == (min_rtt, max_rtt, loss)
    assert got["duplicates"] is True and got["outOfOrder"] is True  # any run in the bucket
    assert dict(second.values)["minRtt"] == 1.0
