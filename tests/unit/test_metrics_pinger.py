"""Hand-computed vectors for the PingER metric set.

Every expected value is a literal with its arithmetic in a comment; RTTs are in ms.
Percentiles are R-7: h = (n-1)·p/100, interpolate between x[⌊h⌋] and x[⌊h⌋+1].
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsonde.metrics import PINGER_KEYS, pinger_summary
from netsonde.model import PacketSample

NOTHING: dict[str, Any] = {
    "minRtt": None,
    "meanRtt": None,
    "medianRtt": None,
    "maxRtt": None,
    "lossPercent": None,
    "clp": None,
    "minIpd": None,
    "meanIpd": None,
    "maxIpd": None,
    "iqrIpd": None,
    "duplicates": 0,
    "outOfOrder": 0,
}


def s(seq: int, rtt: float | None) -> PacketSample:
    return PacketSample(seq=seq, rtt_ms=rtt)


def in_order(*rtts: float | None) -> list[PacketSample]:
    """Replies for seq 1.. arriving in seq order; None = no reply for that seq."""
    return [s(seq, rtt) for seq, rtt in enumerate(rtts, start=1) if rtt is not None]


def arrivals(*pairs: tuple[int, float | None]) -> list[PacketSample]:
    return [s(seq, rtt) for seq, rtt in pairs]


def assert_summary(actual: dict[str, float | int | None], expected: dict[str, Any]) -> None:
    assert list(actual) == list(PINGER_KEYS)
    for key in PINGER_KEYS:
        want, got = expected[key], actual[key]
        if want is None:
            assert got is None, key
        elif key in ("duplicates", "outOfOrder"):
            assert type(got) is int and got == want, key
        else:
            assert isinstance(got, float), key
            assert got == pytest.approx(want), key


SUMMARY_CASES = [
    pytest.param(
        4,
        in_order(10, 12, 11, 22),
        {
            # rtts 10,12,11,22 → sorted 10,11,12,22
            "minRtt": 10.0,
            "meanRtt": 13.75,  # 55/4
            "medianRtt": 11.5,  # (11+12)/2
            "maxRtt": 22.0,
            "lossPercent": 0.0,
            "clp": None,  # nothing lost → denominator 0
            # ipd |12-10|,|11-12|,|22-11| = 2,1,11 → sorted 1,2,11
            "minIpd": 1.0,
            "meanIpd": 14 / 3,  # (2+1+11)/3 = 4.667
            "maxIpd": 11.0,
            "iqrIpd": 5.0,  # p75 h=1.5 → 2+0.5·9 = 6.5; p25 h=0.5 → 1+0.5·1 = 1.5
            "duplicates": 0,
            "outOfOrder": 0,
        },
        id="zero-loss",
    ),
    pytest.param(
        5,
        [],
        # all 5 lost: loss 5/5; clp pairs (1,2)(2,3)(3,4)(4,5) all lost-lost → 4/4
        {**NOTHING, "lossPercent": 100.0, "clp": 100.0},
        id="total-loss-no-samples",
    ),
    pytest.param(
        5,
        arrivals((1, None), (2, None), (3, None), (4, None), (5, None)),
        # timeouts listed as samples with rtt None are not replies → same as above
        {**NOTHING, "lossPercent": 100.0, "clp": 100.0},
        id="total-loss-timeouts-listed",
    ),
    pytest.param(0, [], NOTHING, id="sent-zero"),
    pytest.param(
        1,
        in_order(5.5),
        {
            **NOTHING,
            "minRtt": 5.5,
            "meanRtt": 5.5,
            "medianRtt": 5.5,
            "maxRtt": 5.5,
            "lossPercent": 0.0,
            # clp: a single probe has no successor → None; IPD: one reply → None
        },
        id="one-reply",
    ),
    pytest.param(
        3,
        arrivals((2, 7.0)),
        {
            **NOTHING,
            "minRtt": 7.0,
            "meanRtt": 7.0,
            "medianRtt": 7.0,
            "maxRtt": 7.0,
            "lossPercent": 200 / 3,  # 100·2/3 = 66.67
            "clp": 0.0,  # L R L: lost with successor = {1}; 2 not lost → 0/1
        },
        id="one-reply-of-three",
    ),
    pytest.param(
        3,
        arrivals((1, 10), (2, 20), (2, 25), (3, 30), (1, 99)),
        {
            # unique first arrivals 10,20,30; the duplicates' 25 and 99 are ignored
            "minRtt": 10.0,
            "meanRtt": 20.0,  # 60/3
            "medianRtt": 20.0,
            "maxRtt": 30.0,  # not 99
            "lossPercent": 0.0,  # 3 unique of 3, duplicates don't offset loss
            "clp": None,
            # ipd |20-10|,|30-20| = 10,10
            "minIpd": 10.0,
            "meanIpd": 10.0,
            "maxIpd": 10.0,
            "iqrIpd": 0.0,
            "duplicates": 2,  # second 2, second 1
            "outOfOrder": 0,  # the late seq 1 is a duplicate, not reordering
        },
        id="duplicates",
    ),
    pytest.param(
        4,
        arrivals((1, 10), (3, 14), (2, 30), (4, 15)),
        {
            # rtts sorted 10,14,15,30
            "minRtt": 10.0,
            "meanRtt": 17.25,  # 69/4
            "medianRtt": 14.5,  # (14+15)/2
            "maxRtt": 30.0,
            "lossPercent": 0.0,
            "clp": None,
            # seq order rtts 10,30,14,15 → ipd 20,16,1 (arrival order would give 4,16,15)
            # sorted 1,16,20
            "minIpd": 1.0,
            "meanIpd": 37 / 3,  # 12.33
            "maxIpd": 20.0,
            "iqrIpd": 9.5,  # p75 h=1.5 → 16+0.5·4 = 18; p25 h=0.5 → 1+0.5·15 = 8.5
            "duplicates": 0,
            "outOfOrder": 1,  # seq 2 arrived after seq 3
        },
        id="reordered",
    ),
    pytest.param(
        6,
        arrivals((2, 21), (1, 20), (3, None), (2, 22), (4, 30), (6, 25)),
        {
            # unique by seq: 1:20 2:21 4:30 6:25; sorted 20,21,25,30
            "minRtt": 20.0,
            "meanRtt": 24.0,  # 96/4
            "medianRtt": 23.0,  # (21+25)/2
            "maxRtt": 30.0,
            "lossPercent": 100 / 3,  # seqs 3,5 lost: 100·2/6
            "clp": 0.0,  # R R L R L R: lost with successor {3,5}, neither followed by loss → 0/2
            # seq order 20,21,30,25 → ipd 1,9,5 → sorted 1,5,9
            "minIpd": 1.0,
            "meanIpd": 5.0,  # 15/3
            "maxIpd": 9.0,
            "iqrIpd": 4.0,  # p75 h=1.5 → 5+0.5·4 = 7; p25 h=0.5 → 1+0.5·4 = 3
            "duplicates": 1,  # second seq 2
            "outOfOrder": 1,  # seq 1 after seq 2
        },
        id="mixed-loss-dup-reorder",
    ),
    pytest.param(
        5,
        in_order(10, None, None, 40, 45),
        {
            # R L L R R; rtts 10,40,45
            "minRtt": 10.0,
            "meanRtt": 95 / 3,  # 31.67
            "medianRtt": 40.0,
            "maxRtt": 45.0,
            "lossPercent": 40.0,  # 100·2/5
            # lost with successor {2,3}; lost after lost: 3 → 1/2 (PingER's 1/(lost-1) = 100)
            "clp": 50.0,
            # ipd over consecutive replies in seq order, skipping the gap: |40-10|,|45-40| = 30,5
            "minIpd": 5.0,
            "meanIpd": 17.5,  # 35/2
            "maxIpd": 30.0,
            "iqrIpd": 12.5,  # p75 h=0.75 → 5+0.75·25 = 23.75; p25 h=0.25 → 5+0.25·25 = 11.25
            "duplicates": 0,
            "outOfOrder": 0,
        },
        id="burst-then-last-arrives",
    ),
]


@pytest.mark.parametrize(("sent", "replies", "expected"), SUMMARY_CASES)
def test_summary_vectors(sent: int, replies: list[PacketSample], expected: dict[str, Any]) -> None:
    assert_summary(pinger_summary(sent, replies), expected)


def pattern_replies(pattern: str) -> list[PacketSample]:
    """'R' = replied (rtt 1.0), 'L' = lost; position i is seq i+1."""
    return [s(i, 1.0) for i, c in enumerate(pattern, start=1) if c == "R"]


@pytest.mark.parametrize(
    ("pattern", "loss", "clp"),
    [
        ("RRRRR", 0.0, None),  # no loss → clp denominator 0
        # lost {2,3,5}; with successor {2,3}; lost-after-lost: 3 → 1/2
        ("RLLRL", 60.0, 50.0),
        # lost {2,3}; with successor {2,3}; lost-after-lost: 3 → 1/2 (PingER: 1/(2-1) = 100)
        ("RLLRR", 40.0, 50.0),
        ("LRRRL", 40.0, 0.0),  # lost {1,5}; with successor {1}; 2 not lost → 0/1
        ("RRRRL", 20.0, None),  # only the last lost: it has no successor → 0/0
        ("LRRRR", 20.0, 0.0),  # only the first lost: successor 2 arrived → 0/1
        ("LLLLL", 100.0, 100.0),  # with successor {1,2,3,4}, all followed by loss → 4/4
        ("LRLRL", 60.0, 0.0),  # lost {1,3,5}; with successor {1,3}; none followed by loss → 0/2
        ("RLLLR", 60.0, 200 / 3),  # lost {2,3,4}, all with successor; 3,4 after loss → 2/3
        ("L", 100.0, None),  # one probe: no successor
        ("R", 0.0, None),
        ("LL", 100.0, 100.0),  # with successor {1}; 2 lost → 1/1
        ("RL", 50.0, None),
        ("LR", 50.0, 0.0),
        # lost {2,4,5,6,9,10}: 6/10; with successor {2,4,5,6,9}; after loss 5,6,10 → 3/5
        ("RLRLLLRRLL", 60.0, 60.0),
        # lost {1,2,4}: 3/4 = 75; with successor {1,2}; after loss: 2 → 1/2
        ("LLRL", 75.0, 50.0),
    ],
)
def test_loss_and_clp_patterns(pattern: str, loss: float, clp: float | None) -> None:
    out = pinger_summary(len(pattern), pattern_replies(pattern))
    assert out["lossPercent"] == pytest.approx(loss)
    if clp is None:
        assert out["clp"] is None
    else:
        assert out["clp"] == pytest.approx(clp)


@pytest.mark.parametrize(
    ("arrival_seqs", "duplicates", "out_of_order"),
    [
        ([1, 2, 3], 0, 0),
        ([2, 1], 0, 1),
        ([5, 4, 3, 2, 1], 0, 4),  # every one after 5 is below the max seen
        ([3, 1, 2, 5, 4], 0, 3),  # 1<3, 2<3, 4<5
        ([1, 2, 4, 3, 5], 0, 1),  # 3<4
        ([1, 3, 2, 2, 1], 2, 1),  # 2<3 counts; the second 2 and second 1 are duplicates
        ([2, 2, 1], 1, 1),  # duplicate 2, then 1<2
        ([1, 1, 1], 2, 0),
        ([3, 3, 1, 1, 2], 2, 2),  # 1<3, 2<3; the repeats are duplicates only
    ],
)
def test_duplicate_and_out_of_order_counts(
    arrival_seqs: list[int], duplicates: int, out_of_order: int
) -> None:
    replies = [s(seq, 1.0) for seq in arrival_seqs]
    out = pinger_summary(max(arrival_seqs), replies)
    assert out["duplicates"] == duplicates
    assert out["outOfOrder"] == out_of_order


def test_mean_max_and_median_iqr_are_not_swapped() -> None:
    """Catches the 2008 PingER bug (mean/max RTT swapped, median IPD stored as iqrIpd)."""
    out = pinger_summary(4, in_order(10, 12, 11, 22))
    assert out["meanRtt"] == pytest.approx(13.75)  # 55/4
    assert out["maxRtt"] == 22.0
    # ipd 2,1,11: median 2 vs IQR 6.5-1.5 = 5
    assert out["iqrIpd"] == pytest.approx(5.0)
    assert out["iqrIpd"] != pytest.approx(2.0)


def test_keys_are_exactly_the_pinger_set_in_order() -> None:
    assert list(pinger_summary(2, in_order(1, 2))) == [
        "minRtt",
        "meanRtt",
        "medianRtt",
        "maxRtt",
        "lossPercent",
        "clp",
        "minIpd",
        "meanIpd",
        "maxIpd",
        "iqrIpd",
        "duplicates",
        "outOfOrder",
    ]


def test_first_seq_selects_the_probe_range() -> None:
    replies = arrivals((0, 1.0), (1, 2.0), (2, 3.0))
    assert pinger_summary(3, replies, first_seq=0)["lossPercent"] == 0.0
    # default first_seq=1: probes are 1,2,3 → 3 is lost → 100·1/3
    out = pinger_summary(3, replies)
    assert out["lossPercent"] == pytest.approx(100 / 3)
    # seq 0 is outside the probe range but still a reply: it counts for RTT stats
    assert out["minRtt"] == 1.0


def test_reply_outside_probe_range_does_not_make_loss_negative() -> None:
    # sent=2 but seq 3 came back too: probes 1,2 both answered → 0 %, not -50 %
    out = pinger_summary(2, in_order(1.0, 2.0, 3.0))
    assert out["lossPercent"] == 0.0
    assert out["maxRtt"] == 3.0


def test_integer_rtts_come_out_as_floats() -> None:
    out = pinger_summary(2, arrivals((1, 3), (2, 5)))
    assert out["minRtt"] == 3.0 and isinstance(out["minRtt"], float)
    assert out["meanIpd"] == 2.0 and isinstance(out["meanIpd"], float)  # |5-3|


def test_input_is_not_mutated() -> None:
    replies = arrivals((2, 2.0), (1, 1.0), (2, 9.0))
    before = [(r.seq, r.rtt_ms) for r in replies]
    pinger_summary(2, replies)
    assert [(r.seq, r.rtt_ms) for r in replies] == before


def test_negative_sent_is_rejected() -> None:
    with pytest.raises(ValueError):
        pinger_summary(-1, [])


# --- properties --------------------------------------------------------------------------

RTT = st.floats(min_value=0.001, max_value=10_000, allow_nan=False, allow_infinity=False)


@st.composite
def ping_runs(draw: st.DrawFn, allow_duplicates: bool = True) -> tuple[int, list[PacketSample]]:
    """A run of ``sent`` probes: each lost, timed out, answered, or (optionally) duplicated."""
    sent = draw(st.integers(min_value=0, max_value=25))
    fates = ["lost", "timeout", "reply", "dup"] if allow_duplicates else ["lost", "reply"]
    samples: list[PacketSample] = []
    for seq in range(1, sent + 1):
        fate = draw(st.sampled_from(fates))
        if fate == "timeout":
            samples.append(s(seq, None))
        if fate in ("reply", "dup"):
            samples.append(s(seq, draw(RTT)))
        if fate == "dup":
            samples.append(s(seq, draw(RTT)))
    return sent, list(draw(st.permutations(samples)))


@given(ping_runs())
def test_summary_invariants(run: tuple[int, list[PacketSample]]) -> None:
    sent, replies = run
    out = pinger_summary(sent, replies)
    answered = [r for r in replies if r.rtt_ms is not None]
    unique = {r.seq for r in answered}

    if sent == 0:
        assert out["lossPercent"] is None
    else:
        assert 0.0 <= out["lossPercent"] <= 100.0  # type: ignore[operator]
        assert out["lossPercent"] == pytest.approx(100 * (sent - len(unique)) / sent)
    assert out["clp"] is None or 0.0 <= out["clp"] <= 100.0

    rtt = [out[k] for k in ("minRtt", "meanRtt", "medianRtt", "maxRtt")]
    if unique:
        lo, mean, med, hi = rtt
        assert lo <= mean <= hi  # type: ignore[operator]
        assert lo <= med <= hi  # type: ignore[operator]
    else:
        assert rtt == [None] * 4

    ipd = [out[k] for k in ("minIpd", "meanIpd", "maxIpd", "iqrIpd")]
    if len(unique) >= 2:
        lo, mean, hi, iqr = ipd
        assert 0.0 <= lo <= mean <= hi  # type: ignore[operator]
        assert 0.0 <= iqr <= hi - lo  # type: ignore[operator]
    else:
        assert ipd == [None] * 4

    assert out["duplicates"] == len(answered) - len(unique)
    assert 0 <= out["outOfOrder"] <= max(len(unique) - 1, 0)  # type: ignore[operator]


@given(ping_runs(allow_duplicates=False), st.randoms())
def test_arrival_order_only_changes_out_of_order(
    run: tuple[int, list[PacketSample]], rnd: random.Random
) -> None:
    sent, replies = run
    in_seq_order = sorted(replies, key=lambda r: r.seq)
    shuffled = list(replies)
    rnd.shuffle(shuffled)
    ordered_out = pinger_summary(sent, in_seq_order)
    shuffled_out = pinger_summary(sent, shuffled)
    assert ordered_out["outOfOrder"] == 0
    for key in PINGER_KEYS:
        if key != "outOfOrder":
            assert shuffled_out[key] == ordered_out[key], key
