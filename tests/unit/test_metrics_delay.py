"""Hand-computed vectors for RFC 3393 IPDV, RFC 5481 PDV, RFC 3550 jitter, RFC 4737 reordering
and the ``delay_summary`` a tool merges into its values.

Delays are in ms. Percentiles are R-7: h = (n−1)·p/100, x[⌊h⌋] + (h−⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋]).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsonde.metrics import pinger_summary
from netsonde.metrics.delay import (
    DELAY_KEYS,
    delay_summary,
    first_arrivals,
    ipdv,
    jitter_rfc3550,
    pdv,
    reordering,
)
from netsonde.model import PacketSample

delay_ms = st.floats(min_value=0, max_value=10_000, allow_nan=False)


def s(seq: int, rtt: float | None, recv_us: int | None = None) -> PacketSample:
    return PacketSample(seq=seq, rtt_ms=rtt, recv_us=recv_us)


# ---- first arrivals --------------------------------------------------------------------------


def test_first_arrivals_sorts_by_recv_time_and_keeps_first_copy() -> None:
    samples = [s(1, 10, 100), s(2, 30, 400), s(3, None), s(4, 12, 300), s(2, 50, 200)]
    # by recv_us: 1@100, 2@200 (rtt 50, the first copy to arrive), 4@300, 2@400 (dup, dropped)
    firsts = first_arrivals(samples)
    assert [(f.seq, f.rtt_ms) for f in firsts] == [(1, 10), (2, 50), (4, 12)]


def test_first_arrivals_keeps_list_order_on_ties_and_without_times() -> None:
    assert [f.seq for f in first_arrivals([s(3, 1, 5), s(1, 1, 5), s(2, 1, 5)])] == [3, 1, 2]
    # One reply without recv_us: the list order is the arrival order.
    assert [f.seq for f in first_arrivals([s(3, 1, 9), s(1, 1), s(2, 1, 1)])] == [3, 1, 2]


# ---- RFC 3393 IPDV ---------------------------------------------------------------------------


def test_ipdv_pairs_only_consecutive_received_seqs() -> None:
    # seq 4 lost: pairs (1,2) = 12 − 10 = +2, (2,3) = 11 − 12 = −1, (5,6) = 14 − 15 = −1;
    # no (3,5) pair across the gap.
    assert ipdv({1: 10, 2: 12, 3: 11, 5: 15, 6: 14}) == [2, -1, -1]
    assert ipdv({}) == []
    assert ipdv({7: 3.0}) == []
    assert ipdv({1: 1.0, 3: 2.0}) == []


@given(st.lists(delay_ms, min_size=2, max_size=50), st.integers(min_value=-5, max_value=100))
def test_ipdv_telescopes_over_a_gapless_run(delays: list[float], start: int) -> None:
    by_seq = {start + k: d for k, d in enumerate(delays)}
    values = ipdv(by_seq)
    assert len(values) == len(delays) - 1
    assert math.fsum(values) == pytest.approx(delays[-1] - delays[0], abs=1e-6)


# ---- RFC 5481 PDV ----------------------------------------------------------------------------


def test_pdv_is_delay_minus_minimum() -> None:
    # min 10 → [0, 2, 1, 5, 4]
    assert pdv([10, 12, 11, 15, 14]) == [0, 2, 1, 5, 4]
    assert pdv([]) == []
    assert pdv([7.5]) == [0.0]


@given(st.lists(delay_ms, min_size=1, max_size=50))
def test_pdv_is_never_negative_and_reaches_zero(delays: list[float]) -> None:
    values = pdv(delays)
    assert min(values) == 0.0
    assert all(v >= 0 for v in values)


# ---- RFC 3550 interarrival jitter ------------------------------------------------------------


def test_jitter_vector() -> None:
    # transits 10, 12, 11, 15 → |D| = 2, 1, 4
    # J1 = 0 + (2 − 0)/16 = 0.125
    # J2 = 0.125 + (1 − 0.125)/16 = 0.125 + 0.0546875 = 0.1796875
    # J3 = 0.1796875 + (4 − 0.1796875)/16 = 0.1796875 + 0.23876953125 = 0.41845703125
    assert jitter_rfc3550([10, 12, 11, 15]) == 0.41845703125


def test_jitter_needs_two_packets() -> None:
    assert jitter_rfc3550([]) is None
    assert jitter_rfc3550([5.0]) is None
    assert jitter_rfc3550([5.0, 5.0]) == 0.0
    assert jitter_rfc3550([5.0, 21.0]) == 1.0  # 0 + (16 − 0)/16


@given(delay_ms, st.integers(min_value=2, max_value=100))
def test_jitter_of_constant_delay_is_zero(delay: float, n: int) -> None:
    assert jitter_rfc3550([delay] * n) == 0.0


@given(st.lists(delay_ms, min_size=2, max_size=50))
def test_jitter_is_bounded_by_the_largest_step(transits: list[float]) -> None:
    j = jitter_rfc3550(transits)
    biggest = max(abs(b - a) for a, b in pairwise(transits))
    assert j is not None and 0.0 <= j <= biggest + 1e-9


# ---- RFC 4737 reordering ---------------------------------------------------------------------


def test_reordering_in_order() -> None:
    r = reordering(list(range(1, 11)))
    assert (r.received, r.reordered, r.extents, r.ratio, r.max_extent) == (10, 0, (), 0.0, 0)


def test_reordering_single_late_packet() -> None:
    # 1 2 3 5 6 7 8 4 9 10: at 4's arrival NextExp = 8 + 1 = 9 > 4 → reordered.
    # Arrival index of 4 is i = 8 (1-based); the first arrival with s > 4 is 5 at j = 4
    # → extent e = 8 − 4 = 4. 9 arrives with NextExp = 9 → in order. Ratio 1/10.
    r = reordering([1, 2, 3, 5, 6, 7, 8, 4, 9, 10])
    assert (r.received, r.reordered, r.extents, r.ratio, r.max_extent) == (10, 1, (4,), 0.1, 4)


def test_reordering_late_block() -> None:
    # 1 2 3 7 8 4 5 6 9 10 (indices 1..10): after 8, NextExp = 9, so 4, 5, 6 are reordered.
    # First arrival with s > 4, 5 or 6 is 7 at j = 4: extents 6−4 = 2, 7−4 = 3, 8−4 = 4.
    # 9 then arrives with NextExp = 9: in order. Ratio 3/10.
    r = reordering([1, 2, 3, 7, 8, 4, 5, 6, 9, 10])
    assert (r.reordered, r.extents, r.ratio, r.max_extent) == (3, (2, 3, 4), 0.3, 4)


def test_reordering_extent_uses_the_earliest_higher_seq() -> None:
    # 1 3 6 2 5: 2 arrives at i = 4, earliest s > 2 is 3 at j = 2 → e = 2;
    # 5 arrives at i = 5, earliest s > 5 is 6 at j = 3 → e = 2 (not 3, which is < 5).
    assert reordering([1, 3, 6, 2, 5]).extents == (2, 2)
    # 3 1 2: 1 at i = 2 → e = 2 − 1 = 1; 2 at i = 3 → e = 3 − 1 = 2. Ratio 2/3.
    r = reordering([3, 1, 2])
    assert (r.extents, r.ratio) == ((1, 2), pytest.approx(2 / 3))


def test_reordering_with_loss_and_duplicates() -> None:
    # 1 2 4 3 (5 lost): 3 < NextExp = 5 → reordered, e = 4 − 3 = 1.
    assert reordering([1, 2, 4, 3]).extents == (1,)
    # Copies are dropped before analysis (else the second 2 and 1 would count as reordered).
    r = reordering([1, 2, 2, 3, 1])
    assert (r.received, r.reordered) == (3, 0)


def test_reordering_of_nothing() -> None:
    r = reordering([])
    assert (r.received, r.reordered, r.ratio, r.max_extent) == (0, 0, None, None)


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=40))
def test_reordering_matches_the_definition(arrivals: list[int]) -> None:
    distinct = list(dict.fromkeys(arrivals))
    brute: list[int] = []
    for i, seq in enumerate(distinct):
        higher = [j for j in range(i) if distinct[j] > seq]
        if higher:  # seq < NextExp = max(earlier) + 1
            brute.append(i - higher[0])
    r = reordering(arrivals)
    assert r.received == len(distinct)
    assert r.extents == tuple(brute)
    # Same count as PingER's outOfOrder on the same arrivals.
    replies = [s(seq, 1.0) for seq in arrivals]
    assert r.reordered == pinger_summary(0, replies)["outOfOrder"]


# ---- delay_summary ---------------------------------------------------------------------------

EMPTY: dict[str, Any] = {key: None for key in DELAY_KEYS} | {
    "delayOneWay": 0,
    "ipdvCount": 0,
    "reorderedCount": 0,
    "mathisMss": 1460,
}


def test_summary_of_nothing() -> None:
    assert delay_summary(0, []) == EMPTY
    # All lost: loss is known but nothing else is; no MOS without latency.
    assert delay_summary(5, [s(seq, None) for seq in range(1, 6)]) == EMPTY


def test_summary_of_one_reply() -> None:
    got = delay_summary(3, [s(2, 20.0, 500)])
    # PDV of one packet is 0; no pair for IPDV/jitter; no jitter → no MOS.
    # Mathis: p = 2/3 → C/√p = 1.5; 11680·1.5 / (1000·20) = 0.876
    want = EMPTY | {
        "pdvP50": 0.0,
        "pdvP95": 0.0,
        "pdvP99": 0.0,
        "pdvP999": 0.0,
        "pdvMax": 0.0,
        "reorderedRatio": 0.0,
        "reorderExtentMax": 0,
        "mathisMbps": pytest.approx(0.876),
        "mathisRule": 1,
    }
    assert got == want


# Probes every 10 ms (S = seq·10 000 µs); seq 4 lost; seq 3 is slow (60 ms) and arrives after
# 5 and 6; a copy of 2 arrives last with RTT 75. Listed in seq order, so sorting by recv_us
# matters: arrivals are 1@30000, 2@44000, 5@80000, 6@88000, 3@90000, (2@95000 dropped).
RUN = [
    s(1, 20.0, 30_000),
    s(2, 24.0, 44_000),
    s(3, 60.0, 90_000),
    s(4, None),
    s(5, 30.0, 80_000),
    s(6, 28.0, 88_000),
    s(2, 75.0, 95_000),
]

# D = RTT: {1: 20, 2: 24, 3: 60, 5: 30, 6: 28}
RUN_WANT: dict[str, Any] = {
    "delayOneWay": 0,
    # IPDV pairs (1,2) = +4, (2,3) = +36, (5,6) = −2; sorted signed [−2, 4, 36]
    "ipdvCount": 3,
    "ipdvMean": 38 / 3,  # (4 + 36 − 2)/3
    "ipdvMin": -2.0,
    "ipdvMax": 36.0,
    "ipdvP5": -1.4,  # h = 0.1: −2 + 0.1·(4 − (−2))
    "ipdvP50": 4.0,  # h = 1
    "ipdvP95": 32.8,  # h = 1.9: 4 + 0.9·(36 − 4)
    # |IPDV| sorted [2, 4, 36]
    "ipdvMeanAbs": 14.0,  # 42/3
    "ipdvP50Abs": 4.0,
    "ipdvP95Abs": 32.8,  # h = 1.9: 4 + 0.9·32
    "ipdvP99Abs": 35.36,  # h = 1.98: 4 + 0.98·32
    "ipdvMaxAbs": 36.0,
    # PDV = D − 20 → sorted [0, 4, 8, 10, 40]
    "pdvP50": 8.0,  # h = 2
    "pdvP95": 34.0,  # h = 3.8: 10 + 0.8·30
    "pdvP99": 38.8,  # h = 3.96: 10 + 0.96·30
    "pdvP999": 39.88,  # h = 3.996: 10 + 0.996·30
    "pdvMax": 40.0,
    # arrival order 1 2 5 6 3 → transits 20 24 30 28 60 → |D| = 4, 6, 2, 32
    # J = 4/16 = 0.25; + (6 − 0.25)/16 = 0.609375; + (2 − 0.609375)/16 = 0.6962890625;
    #   + (32 − 0.6962890625)/16 = 2.65277099609375
    "jitter3550": 2.65277099609375,
    # 3 arrives at i = 5 with NextExp = 7; earliest higher is 5 at j = 3 → e = 2; ratio 1/5
    "reorderedCount": 1,
    "reorderedRatio": 0.2,
    "reorderExtentMax": 2,
    # one-way = RTT/2: latency = (162/5)/2 = 16.2; jitter = mean(4, 36, 30, 2)/2 = 18/2 = 9
    # eff = 16.2 + 2·9 + 10 = 44.2 → 44.2/40 = 1.105; loss 1/6 = 16.667 % → 41.6667 points
    # R = 93.2 − 1.105 − 41.666667 = 50.428333
    "rFactor": 50.428333333333335,
    # MOS = 1 + 0.035·50.428333 + 7e-6·50.428333·(−9.571667)·49.571667
    #     = 1 + 1.7649917 − 0.1674919 = 2.5974998
    "mos": 2.5974997927585606,
    # mean RTT 32.4 ms, p = 1/6 → C/√p = √(1.5·6) = 3: 11680·3/32400 = 1.0814815
    "mathisMbps": 35040 / 32400,
    "mathisMss": 1460,
    "mathisRule": 1,
}


def assert_summary(got: dict[str, float | int | None], want: dict[str, Any]) -> None:
    assert list(got) == list(DELAY_KEYS)
    for key in DELAY_KEYS:
        if want[key] is None:
            assert got[key] is None, key
        elif key in ("delayOneWay", "ipdvCount", "reorderedCount", "mathisMss", "mathisRule"):
            assert type(got[key]) is int and got[key] == want[key], key
        else:
            assert got[key] == pytest.approx(want[key]), key


def test_summary_vector() -> None:
    assert_summary(delay_summary(6, RUN), RUN_WANT)


def test_summary_with_one_way_delays() -> None:
    # One-way delays half the RTTs: every delay figure halves, MOS (which halved the RTTs
    # itself before) is unchanged, Mathis still uses the RTTs.
    one_way = {1: 10.0, 2: 12.0, 3: 30.0, 5: 15.0, 6: 14.0}
    halved = {
        key: value / 2 if key.startswith(("ipdv", "pdv", "jitter")) else value
        for key, value in RUN_WANT.items()
    }
    halved |= {"delayOneWay": 1, "ipdvCount": 3}
    assert_summary(delay_summary(6, RUN, one_way_ms=one_way), halved)


def test_summary_one_way_must_cover_every_reply() -> None:
    with pytest.raises(ValueError, match=r"\[3\]"):
        delay_summary(6, RUN, one_way_ms={1: 10.0, 2: 12.0, 5: 15.0, 6: 14.0})


def test_summary_zero_loss_uses_the_bound_and_mss() -> None:
    # 4 replies of 4, RTTs 10 10 10 10: p = 1/4 → C/√p = √6 = 2.4494897;
    # 8·9000·√6 / (1000·10) = 7.2·2.4494897 = 17.636326
    got = delay_summary(4, [s(seq, 10.0) for seq in range(1, 5)], mss=9000)
    assert got["mathisRule"] == 2
    assert got["mathisMss"] == 9000
    assert got["mathisMbps"] == pytest.approx(7.2 * math.sqrt(6))
    # constant delay: no variation anywhere; eff = 5 + 0 + 10 = 15 → R = 93.2 − 0.375
    assert got["ipdvMaxAbs"] == got["pdvMax"] == got["jitter3550"] == 0.0
    assert got["rFactor"] == pytest.approx(92.825)


def test_summary_stray_reply_does_not_hide_loss() -> None:
    # probes 1..2, only seq 9 (not a probe) answered: both probes lost, p = 1 for Mathis,
    # loss 100 % → R = 0 → MOS 1 (needs two replies for jitter, so give two strays).
    got = delay_summary(2, [s(9, 10.0), s(10, 10.0)])
    assert got["mathisRule"] == 1
    assert got["mathisMbps"] == pytest.approx(8 * 1460 * math.sqrt(1.5) / (1000 * 10))
    assert got["rFactor"] == 0.0 and got["mos"] == 1.0


def test_summary_rejects_negative_sent() -> None:
    with pytest.raises(ValueError, match="sent"):
        delay_summary(-1, [])


replies = st.lists(
    st.builds(
        PacketSample,
        seq=st.integers(min_value=1, max_value=12),
        rtt_ms=st.one_of(st.none(), st.floats(min_value=0.01, max_value=1000, allow_nan=False)),
        recv_us=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    ),
    max_size=30,
)


@given(st.integers(min_value=0, max_value=12), replies)
def test_summary_is_numeric_and_consistent(sent: int, samples: list[PacketSample]) -> None:
    got = delay_summary(sent, samples)
    assert list(got) == list(DELAY_KEYS)
    assert all(v is None or isinstance(v, int | float) for v in got.values())
    for key in ("pdvP50", "pdvP95", "pdvP99", "pdvP999", "pdvMax", "ipdvMaxAbs", "jitter3550"):
        assert got[key] is None or got[key] >= 0, key
    if got["pdvP50"] is not None:
        assert got["pdvP50"] <= got["pdvP95"] <= got["pdvP99"] <= got["pdvP999"] <= got["pdvMax"]
    if got["mos"] is not None:
        assert 1.0 <= got["mos"] <= 4.5
    assert got["reorderedCount"] == pinger_summary(sent, first_arrivals(samples))["outOfOrder"]
