"""The PingER metric set computed from one ping run's reply packets.

Key names follow PingER so archived values line up with PingER/perfSONAR-PS data.

Known upstream bug: the 2008 PingER MP code stored meanRtt and maxRtt swapped and wrote the
median IPD into iqrIpd; the unit tests use vectors whose mean/max RTT and median/IQR IPD all
differ, so a swap like that here fails them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from netsonde.metrics.stats import mean, median, percentile
from netsonde.model import PacketSample

PINGER_KEYS: tuple[str, ...] = (
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
)


def pinger_summary(
    sent: int, replies: Sequence[PacketSample], *, first_seq: int = 1
) -> dict[str, float | int | None]:
    """Summarise one ping run as the PingER metric set (keys in ``PINGER_KEYS`` order).

    ``replies`` is in arrival order and may hold duplicates and reordering; samples whose
    ``rtt_ms`` is None are not replies and are ignored. The probes are taken to be seqs
    ``first_seq .. first_seq+sent-1``. RTT and IPD statistics use the first arrival of each seq;
    loss and clp look only at seqs inside that probe range, so a stray reply outside it still
    counts for RTT/IPD/duplicates/outOfOrder but can never push lossPercent below 0.

    clp follows RFC 3357: P(probe n lost | probe n-1 lost) in percent, i.e. the number of lost
    probes whose predecessor was lost, over the number of lost probes that have a successor
    (every lost probe but the last one of the sequence). The original PingER divided by
    ``lost - 1`` instead, which equals this only when the last probe was lost and otherwise
    overstates clp (R L L R R: RFC 3357 gives 1/2 = 50 %, PingER 1/1 = 100 %).

    Values are not rounded; formatting is the caller's job.
    """
    if sent < 0:
        raise ValueError(f"sent must be >= 0, got {sent}")
    answered = [r for r in replies if r.rtt_ms is not None]
    first = _first_arrivals(answered)
    by_seq = [first[seq] for seq in sorted(first)]
    lost = [seq not in first for seq in range(first_seq, first_seq + sent)]
    return {
        **_rtt_stats(by_seq),
        "lossPercent": _loss_percent(lost),
        "clp": _clp_percent(lost),
        **_ipd_stats(by_seq),
        "duplicates": len(answered) - len(first),
        "outOfOrder": _count_out_of_order(answered),
    }


def _first_arrivals(answered: Sequence[PacketSample]) -> dict[int, float]:
    """seq → RTT of its first arrival; a later duplicate's RTT is not a fresh measurement."""
    first: dict[int, float] = {}
    for r in answered:
        if r.seq not in first and r.rtt_ms is not None:
            first[r.seq] = float(r.rtt_ms)
    return first


def _rtt_stats(rtts: Sequence[float]) -> dict[str, float | None]:
    """min/mean/median/max RTT in ms; all None when nothing came back."""
    return {
        "minRtt": min(rtts) if rtts else None,
        "meanRtt": mean(rtts),
        "medianRtt": median(rtts),
        "maxRtt": max(rtts) if rtts else None,
    }


def _loss_percent(lost: Sequence[bool]) -> float | None:
    """Share of probes with no reply; undefined (None) when nothing was sent."""
    if not lost:
        return None
    return 100.0 * sum(lost) / len(lost)


def _clp_percent(lost: Sequence[bool]) -> float | None:
    """RFC 3357 conditional loss probability over the probe sequence, in percent."""
    pairs = list(pairwise(lost))
    lost_with_successor = sum(prev for prev, _ in pairs)
    if lost_with_successor == 0:
        return None
    both_lost = sum(prev and cur for prev, cur in pairs)
    return 100.0 * both_lost / lost_with_successor


def _ipd_stats(rtts_by_seq: Sequence[float]) -> dict[str, float | None]:
    """PingER inter-packet delay variation: |Δrtt| between consecutive replies in seq order.

    Seq order (not arrival order) so that reordering in the network does not change the
    jitter figure; a lost probe between two replies is simply skipped, as in PingER.
    """
    ipds = [abs(b - a) for a, b in pairwise(rtts_by_seq)]
    p25, p75 = percentile(ipds, 25), percentile(ipds, 75)
    return {
        "minIpd": min(ipds) if ipds else None,
        "meanIpd": mean(ipds),
        "maxIpd": max(ipds) if ipds else None,
        "iqrIpd": None if p25 is None or p75 is None else p75 - p25,
    }


def _count_out_of_order(answered: Sequence[PacketSample]) -> int:
    """Non-duplicate replies that arrived after a reply with a higher seq."""
    seen: set[int] = set()
    highest: int | None = None
    count = 0
    for r in answered:
        if r.seq in seen:
            continue
        if highest is not None and r.seq < highest:
            count += 1
        seen.add(r.seq)
        highest = r.seq if highest is None else max(highest, r.seq)
    return count
