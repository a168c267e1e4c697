"""PingER views of the archive: the metaData and data tables of the PingER MA, as queries.

A PingER "metadata" is one ping test: source, destination and the probe parameters; its key is
the test's stable key. Its "data" are the summary rows of finished runs, stamped with the run's
planned start in unix seconds, optionally consolidated per ``resolution`` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from netsonde.archive import Archive, jsontext
from netsonde.metrics.digest import FINISHED, Digest, RunRow, bucket_of
from netsonde.model import US_PER_S
from netsonde.nmwg.pinger import BOOLEAN_DATUMS, DATUM_NAMES, PARAMETERS, TRANSPORT
from netsonde.probes import ping

# A test stored without one of ping's parameters ran with ping's default for it.
_PING_DEFAULTS = ping.Params().model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class PingerMeta:
    """One ping test as PingER metadata; the parameters by their ping names (nmwg.pinger)."""

    key: str
    source: str
    destination: str
    count: int
    packet_size: int
    ttl: int
    interval: float
    transport: str = TRANSPORT

    def params(self) -> dict[str, int | float | str]:
        return {p.key: getattr(self, p.key) for p in PARAMETERS}


@dataclass(frozen=True, slots=True)
class MetaFilter:
    """What a subject and its parameters ask for; None means "any"."""

    source: str | None = None
    destination: str | None = None
    count: int | None = None
    packet_size: int | None = None
    ttl: int | None = None
    interval: float | None = None
    transport: str | None = None

    def matches(self, m: PingerMeta) -> bool:
        if self.source is not None and self.source != m.source:
            return False
        if self.destination is not None and self.destination != m.destination:
            return False
        return all(_same(p.kind, getattr(self, p.key), getattr(m, p.key)) for p in PARAMETERS)


def _same(kind: type, want: object, have: object) -> bool:
    """None wants anything; a float compares approximately, a name (transport) case-blind."""
    if want is None:
        return True
    if kind is float:
        return math.isclose(want, have)  # type: ignore[arg-type]
    if kind is str:
        return str(want).upper() == str(have).upper()
    return want == have


def metadata(archive: Archive, source: str, key: str | None = None) -> list[PingerMeta]:
    """Every ping test the archive knows (or the one with ``key``), as PingER metadata
    (``source``: this MP's name, for tests stored without one)."""
    out = []
    for t in archive.tests_of_tool("ping", key):
        given = {**_PING_DEFAULTS, **t["params"]}
        params = {p.key: p.kind(given[p.key]) for p in PARAMETERS if p.key in given}
        out.append(
            PingerMeta(
                key=t["key"],
                source=t.get("source") or source,
                destination=t["target"],
                **params,  # type: ignore[arg-type]
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


def buckets(consolidation: str | None, resolution: int | None) -> tuple[str, int] | None:
    """(function, seconds) when :func:`data` answers per bucket; None: one datum per row."""
    if consolidation and resolution and resolution > 0:
        return consolidation, resolution
    return None


DECODE_CHECK_EVERY = 10_000  # rows decoded between two cancellation checks


def data(
    archive: Archive,
    key: str,
    start: int,
    end: int,
    *,
    consolidation: str | None = None,
    resolution: int | None = None,
    limit: int = 1_000_000,
    check: Callable[[], None] = lambda: None,
) -> list[Datum]:
    """Finished runs of test ``key`` planned in [start, end] (unix seconds, both inclusive as
    the PingER MA had it), at most ``limit`` rows, each row or each ``resolution``-second
    bucket consolidated with AVERAGE, MIN or MAX. ``check`` (a request's cancellation) is
    called while decoding. Consolidated, ``limit`` counts buckets."""
    if (per := buckets(consolidation, resolution)) is not None:
        return _per_window(archive, key, start, end, *per, limit=limit, check=check)
    rows = archive.summaries(key, start * US_PER_S, (end + 1) * US_PER_S, limit=limit)
    points = []
    for n, (planned_us, summary) in enumerate(rows):
        if n % DECODE_CHECK_EVERY == 0:
            check()
        points.append((planned_us // US_PER_S, jsontext.loads(summary)))
    return [Datum(t, _row_values(v)) for t, v in points]


def _per_window(
    archive: Archive,
    key: str,
    start: int,
    end: int,
    function: str,
    resolution: int,
    *,
    limit: int,
    check: Callable[[], None],
) -> list[Datum]:
    """One datum per ``resolution``-second bucket with finished runs, from the archive's
    windows: its rollups where they cover the bucket, the raw runs elsewhere."""
    found = archive.windows(
        resolution * US_PER_S,
        test_key=key,
        since_us=start * US_PER_S,
        until_us=(end + 1) * US_PER_S,
        limit=limit,
        metrics=DATUM_NAMES,
        packets=False,
        check=check,
    )
    return [Datum(w // US_PER_S, _combined(b.metrics, function)) for w, b in found if b.finished]


def consolidate(
    points: Sequence[tuple[int, dict[str, float | int | None]]], function: str, resolution: int
) -> list[Datum]:
    """RRD-style consolidation of (unix seconds, summary) points: one datum per
    ``resolution``-second bucket, stamped with the bucket's start; the digests are the ones
    the archive's windows give (``metrics.digest.bucket_of``), so the two agree."""
    groups: dict[int, list[RunRow]] = {}
    for t, values in points:
        groups.setdefault(t - t % resolution, []).append((t, FINISHED, True, 0, values, ()))
    return [
        Datum(t, _combined(bucket_of(rows, metrics=DATUM_NAMES, packets=False).metrics, function))
        for t, rows in sorted(groups.items())
    ]


_KINDS = tuple((name, bool if name in BOOLEAN_DATUMS else float) for name in DATUM_NAMES)


def _row_values(row: dict[str, float | int | None]) -> tuple[tuple[str, float | bool], ...]:
    """One run's datums: ``_combined`` of a single row, without the digests."""
    return tuple([(name, kind(v)) for name, kind in _KINDS if (v := row.get(name)) is not None])


_COMBINE: dict[str, Callable[[Digest], float]] = {
    "AVERAGE": lambda d: d.mean,
    "MIN": lambda d: d.min,
    "MAX": lambda d: d.max,
    "LAST": lambda d: d.last,
}


def _combined(
    metrics: Mapping[str, Digest], function: str = "AVERAGE"
) -> tuple[tuple[str, float | bool], ...]:
    """A bucket's datums from its digests. A datum no run had a value of (e.g. RTT at 100 %
    loss) is left out; zero is kept; a boolean datum is "any": true if one run's was."""
    combine = _COMBINE[function.upper()]
    out: list[tuple[str, float | bool]] = []
    for name in DATUM_NAMES:
        if (d := metrics.get(name)) is None:
            continue
        if name in BOOLEAN_DATUMS:
            out.append((name, d.min != 0 or d.max != 0))
        else:
            out.append((name, float(combine(d))))
    return tuple(out)
