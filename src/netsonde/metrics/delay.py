"""Delay variation and reordering of one packet stream, and the one summary a tool merges in.

- RFC 3393 IPDV: D(s) − D(s−1) for every pair of consecutive seqs both received (signed).
- RFC 5481 PDV: D − D_min over the received packets (never negative).
- RFC 3550 §6.4.1 interarrival jitter: J += (|D(i−1,i)| − J)/16 over packets in ARRIVAL order.
- RFC 4737 reordering: in arrival order a packet is reordered when its seq < NextExp (the
  highest seq seen so far + 1); extent e = i − j, j the earliest arrival with a higher seq.

D is the delay measure the caller has: one-way delay when known, otherwise the RTT. Every
function here sees only the first arrival of each seq (RFC 4737 §3.3: later copies are noted,
not analysed; PingER counts them in ``duplicates``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from netsonde.metrics.quality import DEFAULT_MSS, mathis, mos_from_r, r_factor
from netsonde.metrics.stats import mean, percentile
from netsonde.model import PacketSample

DELAY_KEYS: tuple[str, ...] = (
    "delayOneWay",  # 1: D was one-way delay, 0: D was RTT
    "ipdvCount",
    "ipdvMean",
    "ipdvMin",
    "ipdvMax",
    "ipdvP5",
    "ipdvP50",
    "ipdvP95",
    "ipdvMeanAbs",
    "ipdvP50Abs",
    "ipdvP95Abs",
    "ipdvP99Abs",
    "ipdvMaxAbs",
    "pdvP50",
    "pdvP95",
    "pdvP99",
    "pdvP999",
    "pdvMax",
    "jitter3550",
    "reorderedCount",
    "reorderedRatio",
    "reorderExtentMax",
    "rFactor",
    "mos",
    "mathisMbps",
    "mathisMss",
    "mathisRule",
)


def first_arrivals(samples: Iterable[PacketSample]) -> list[PacketSample]:
    """The replies (``rtt_ms`` not None) in arrival order, keeping only each seq's first arrival.

    Arrival order is ``recv_us`` (ties keep list order) when every reply has one; otherwise the
    list order, which is arrival order for ``Result.replies``.
    """
    answered = [s for s in samples if s.rtt_ms is not None]
    if answered and all(s.recv_us is not None for s in answered):
        answered.sort(key=lambda s: s.recv_us or 0)  # stable sort: ties keep list order
    seen: set[int] = set()
    firsts: list[PacketSample] = []
    for s in answered:
        if s.seq not in seen:
            seen.add(s.seq)
            firsts.append(s)
    return firsts


def ipdv(delays: Mapping[int, float]) -> list[float]:
    """RFC 3393 IPDV in seq order: D(s) − D(s−1) for each s whose predecessor s−1 was received.

    A lost packet leaves no pair on either side of it (the RFC's selection function takes
    consecutive packets of the stream; a gap is not one long pair).
    """
    return [delays[s] - delays[s - 1] for s in sorted(delays) if s - 1 in delays]


def pdv(delays: Iterable[float]) -> list[float]:
    """RFC 5481 PDV: each received packet's delay minus the minimum delay of the sample."""
    ds = [float(d) for d in delays]
    if not ds:
        return []
    floor = min(ds)
    return [d - floor for d in ds]


def jitter_rfc3550(transits: Sequence[float]) -> float | None:
    """RFC 3550 §6.4.1 interarrival jitter after the last packet; None below two packets.

    ``transits`` are the packets' relative transit times in ARRIVAL order, so that
    D(i−1,i) = (R_i − R_{i−1}) − (S_i − S_{i−1}) = transit_i − transit_{i−1}. For a one-way
    stream transit = R − S (a constant clock offset cancels). For ping the reply arrives at
    R_i = S_i + RTT_i, so the RTT differences are exactly D(i−1,i) of the round trip: we use
    them when send times are not known. J starts at 0, as in the RFC.
    """
    if len(transits) < 2:
        return None
    j = 0.0
    for prev, cur in pairwise(transits):
        j += (abs(cur - prev) - j) / 16
    return j


@dataclass(frozen=True, slots=True)
class Reordering:
    """RFC 4737 reordering of one stream (duplicates already dropped)."""

    received: int
    reordered: int
    extents: tuple[int, ...] = field(default=())  # one per reordered packet, arrival order

    @property
    def ratio(self) -> float | None:
        """Type-P-Reordered-Ratio-Stream as a fraction: reordered / received; None if none."""
        return self.reordered / self.received if self.received else None

    @property
    def max_extent(self) -> int | None:
        """Largest reordering extent; 0 when nothing was reordered, None when nothing arrived."""
        if not self.received:
            return None
        return max(self.extents, default=0)


def reordering(seqs: Sequence[int]) -> Reordering:
    """RFC 4737 reordering of seqs given in arrival order (later duplicates are ignored).

    Reordered: s < NextExp, NextExp = (highest seq so far) + 1, i.e. a higher seq already came.
    Extent (§4.2): e = i − j with i the packet's arrival index and j the smallest index with
    s[j] > s[i]. That j always holds a new running maximum, so a binary search over the
    running maxima finds it.
    """
    seen: set[int] = set()
    record_seqs: list[int] = []  # running maxima, strictly increasing …
    record_idx: list[int] = []  # … and the arrival index at which each was set
    extents: list[int] = []
    i = 0
    for s in seqs:
        if s in seen:
            continue
        seen.add(s)
        next_exp = record_seqs[-1] + 1 if record_seqs else s
        if s < next_exp:
            k = bisect.bisect_right(record_seqs, s)  # first running maximum > s
            extents.append(i - record_idx[k])
        else:
            record_seqs.append(s)
            record_idx.append(i)
        i += 1
    return Reordering(received=i, reordered=len(extents), extents=tuple(extents))


def _ipdv_stats(values: Sequence[float]) -> dict[str, float | int | None]:
    absolute = [abs(v) for v in values]
    return {
        "ipdvCount": len(values),
        "ipdvMean": mean(values),
        "ipdvMin": min(values, default=None),
        "ipdvMax": max(values, default=None),
        "ipdvP5": percentile(values, 5),
        "ipdvP50": percentile(values, 50),
        "ipdvP95": percentile(values, 95),
        "ipdvMeanAbs": mean(absolute),
        "ipdvP50Abs": percentile(absolute, 50),
        "ipdvP95Abs": percentile(absolute, 95),
        "ipdvP99Abs": percentile(absolute, 99),
        "ipdvMaxAbs": max(absolute, default=None),
    }


def _pdv_stats(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "pdvP50": percentile(values, 50),
        "pdvP95": percentile(values, 95),
        "pdvP99": percentile(values, 99),
        "pdvP999": percentile(values, 99.9),
        "pdvMax": max(values, default=None),
    }


def _delays(
    firsts: Sequence[PacketSample], one_way_ms: Mapping[int, float] | None
) -> dict[int, float]:
    """seq → D of each first arrival: the one-way delay if given, else the RTT."""
    if one_way_ms is None:
        return {s.seq: float(s.rtt_ms) for s in firsts if s.rtt_ms is not None}
    missing = [s.seq for s in firsts if s.seq not in one_way_ms]
    if missing:
        raise ValueError(f"one_way_ms has no delay for received seq(s) {missing[:5]}")
    return {s.seq: float(one_way_ms[s.seq]) for s in firsts}


def delay_summary(
    sent: int,
    samples: Sequence[PacketSample],
    *,
    first_seq: int = 1,
    one_way_ms: Mapping[int, float] | None = None,
    mss: int = DEFAULT_MSS,
) -> dict[str, float | int | None]:
    """Delay variation, reordering, MOS and Mathis of one run, keys in ``DELAY_KEYS`` order.

    ``samples`` as in ``Result.replies``. The probes are seqs ``first_seq .. first_seq+sent-1``
    (loss counts only those, as in ``pinger_summary``). D is ``one_way_ms[seq]`` when given
    (it must cover every received seq), else the RTT. Delays are in ms.

    - IPDV/PDV/jitter3550 are computed on D (RTT-based values are round-trip variation).
    - MOS/rFactor use one-way latency = mean D and jitter = mean |ΔD| between consecutive
      replies in seq order (PingER's meanIpd on D; unlike J of RFC 3550 it has no 1/16
      warm-up that biases a 10-packet run low). With RTTs both are halved (one-way = RTT/2).
      None unless something was sent and at least two replies came.
    - Mathis uses the mean RTT (always round trip) and the loss fraction; ``mathisRule``:
      1 = measured loss, 2 = no loss seen so p = 1/sent (see ``quality.MATHIS_RULES``).
    - reorderedRatio is a fraction of the distinct replies (0 … 1), not a percent.
    """
    if sent < 0:
        raise ValueError(f"sent must be >= 0, got {sent}")
    firsts = first_arrivals(samples)
    delays = _delays(firsts, one_way_ms)
    by_seq = [delays[s] for s in sorted(delays)]
    order = reordering([s.seq for s in firsts])

    lost = sum(seq not in delays for seq in range(first_seq, first_seq + sent))
    loss_percent = 100.0 * lost / sent if sent else None
    scale = 1.0 if one_way_ms is not None else 0.5
    latency = mean(by_seq)
    jitter = mean(abs(b - a) for a, b in pairwise(by_seq))
    r = mos_value = None
    if loss_percent is not None and latency is not None and jitter is not None:
        r = r_factor(latency * scale, jitter * scale, loss_percent)
        mos_value = mos_from_r(r)

    rtts = [float(s.rtt_ms) for s in firsts if s.rtt_ms is not None]
    tcp = mathis(mean(rtts), lost, sent, mss=mss)
    return {
        "delayOneWay": int(one_way_ms is not None),
        **_ipdv_stats(ipdv(delays)),
        **_pdv_stats(pdv(by_seq)),
        "jitter3550": jitter_rfc3550([delays[s.seq] for s in firsts]),
        "reorderedCount": order.reordered,
        "reorderedRatio": order.ratio,
        "reorderExtentMax": order.max_extent,
        "rFactor": r,
        "mos": mos_value,
        "mathisMbps": tcp.mbps,
        "mathisMss": tcp.mss,
        "mathisRule": tcp.rule_code,
    }
