from __future__ import annotations

from netsonde.mp.point import LatenessWindow
from netsonde.mp.status import Lateness


def test_summary_is_nearest_rank_over_the_last_runs_only() -> None:
    w = LatenessWindow(size=100)
    assert w.summary() is None
    for us in range(1000, 101_000, 1000):  # 1 ms … 100 ms
        w.add(us)
    assert w.summary() == Lateness(p50_ms=51.0, p99_ms=100.0, max_ms=100.0)
    for _ in range(100):  # a hundred on-time runs push every old one out
        w.add(0)
    assert w.summary() == Lateness(p50_ms=0.0, p99_ms=0.0, max_ms=0.0)
