"""PingER views of the archive: the metaData and data tables of the PingER MA, as queries.

A PingER "metadata" is one ping test: source, destination and the probe parameters; its key is
the test's stable key. Its "data" are the summary rows of finished runs, stamped with the run's
planned start in unix seconds, optionally consolidated per ``resolution`` seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netsonde.archive import Archive
from netsonde.model import US_PER_S

# The order of the original MA's output (with its lostPercent typo mended: loss is returned).
DATUM_NAMES = (
    "minRtt",
    "maxRtt",
    "medianRtt",
    "meanRtt",
    "clp",
    "iqrIpd",
    "lossPercent",
    "maxIpd",
    "minIpd",
    "meanIpd",
    "duplicates",
    "outOfOrder",
)
BOOLEAN_DATUMS = frozenset({"duplicates", "outOfOrder"})  # counts stored, booleans on the wire


@dataclass(frozen=True, slots=True)
class PingerMeta:
    key: str
    source: str
    destination: str
    count: int
    packet_size: int
    ttl: int
    packet_interval: float
    transport: str = "ICMP"


@dataclass(frozen=True, slots=True)
class MetaFilter:
    """What a subject and its parameters ask for; None means "any"."""

    source: str | None = None
    destination: str | None = None
    count: int | None = None
    packet_size: int | None = None
    ttl: int | None = None
    packet_interval: float | None = None
    transport: str | None = None

    def matches(self, m: PingerMeta) -> bool:
        checks = (
            (self.source, m.source),
            (self.destination, m.destination),
            (self.count, m.count),
            (self.packet_size, m.packet_size),
            (self.ttl, m.ttl),
        )
        if any(want is not None and want != have for want, have in checks):
            return False
        if self.packet_interval is not None and not math.isclose(
            self.packet_interval, m.packet_interval
        ):
            return False
        return self.transport is None or self.transport.upper() == m.transport


def metadata(archive: Archive, source: str, key: str | None = None) -> list[PingerMeta]:
    """Every ping test the archive knows (or the one with ``key``), as PingER metadata
    (``source``: this MP's name, for tests stored without one)."""
    out = []
    for t in archive.tests_of_tool("ping", key):
        p = t["params"]
        out.append(
            PingerMeta(
                key=t["key"],
                source=t.get("source") or source,
                destination=t["target"],
                count=int(p.get("count", 10)),
                packet_size=int(p.get("packet_size", 56)),
                ttl=int(p.get("ttl", 64)),
                packet_interval=float(p.get("interval", 1.0)),
            )
        )
    return out


def find(metas: Iterable[PingerMeta], want: MetaFilter) -> list[PingerMeta]:
    return [m for m in metas if want.matches(m)]


@dataclass(frozen=True, slots=True)
class Datum:
    """One nmwg:commonTime: a unix timestamp and the named values, in DATUM_NAMES order."""

    time: int
    values: tuple[tuple[str, float | bool], ...]


def data(
    archive: Archive,
    key: str,
    start: int,
    end: int,
    *,
    consolidation: str | None = None,
    resolution: int | None = None,
    limit: int = 1_000_000,
) -> list[Datum]:
    """Finished runs of test ``key`` planned in [start, end] (unix seconds, both inclusive as
    the PingER MA had it), each row or each ``resolution``-second bucket consolidated with
    AVERAGE, MIN or MAX."""
    rows = archive.summaries(key, start * US_PER_S, (end + 1) * US_PER_S, limit=limit)
    points = [(planned_us // US_PER_S, json.loads(summary)) for planned_us, summary in rows]
    if consolidation and resolution and resolution > 0:
        return consolidate(points, consolidation, resolution)
    return [Datum(t, _row_values(v)) for t, v in points]


def consolidate(
    points: Sequence[tuple[int, dict[str, float | int | None]]], function: str, resolution: int
) -> list[Datum]:
    """RRD-style consolidation: one datum per ``resolution``-second bucket, stamped with the
    bucket's start."""
    buckets: dict[int, list[dict[str, float | int | None]]] = {}
    for t, values in points:
        buckets.setdefault(t - t % resolution, []).append(values)
    return [Datum(t, _datum_values(rows, function)) for t, rows in sorted(buckets.items())]


def _row_values(row: dict[str, float | int | None]) -> tuple[tuple[str, float | bool], ...]:
    """One run's datums: ``_datum_values`` of a single row, without the combining."""
    return tuple(
        (name, bool(v) if name in BOOLEAN_DATUMS else float(v))
        for name in DATUM_NAMES
        if (v := row.get(name)) is not None
    )


_COMBINE = {
    "AVERAGE": lambda xs: math.fsum(xs) / len(xs),
    "MIN": min,
    "MAX": max,
    "LAST": lambda xs: xs[-1],
}


def _datum_values(
    rows: Sequence[dict[str, float | int | None]], function: str = "AVERAGE"
) -> tuple[tuple[str, float | bool], ...]:
    combine = _COMBINE[function.upper()]
    out: list[tuple[str, float | bool]] = []
    for name in DATUM_NAMES:
        present = [r[name] for r in rows if r.get(name) is not None]
        if not present:
            continue  # null (e.g. RTT at 100 % loss) is left out; zero is kept
        if name in BOOLEAN_DATUMS:
            out.append((name, any(bool(v) for v in present)))
        else:
            out.append((name, float(combine([float(v) for v in present]))))  # type: ignore[arg-type]
    return tuple(out)
