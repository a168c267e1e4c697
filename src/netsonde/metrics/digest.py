"""Mergeable digests of a metric over a set of runs, and the bucket digest a rollup row holds.

A :class:`Digest` keeps what every consolidation needs and merges without losing it: the count,
the exact sum (as a canonical float expansion, so a mean is ``math.fsum`` of every value
whatever the merge order), min, max, the last value by time, and for percentiles either the
sorted values (EXACT) or a DDSketch-style log-bucket sketch with 1 % relative accuracy.

Digests built at query time are exact with no cap; a stored digest is :meth:`Digest.capped`:
exact up to ``EXACT_MAX`` values, a sketch beyond. Merging a sketch with anything is a sketch
(bucket counts add up, so sketch merges are exact and associative).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson

from netsonde.metrics.stats import percentile as exact_percentile

EXACT_MAX = 64  # a stored digest keeps its values while it has at most this many
ACCURACY = 0.01  # a sketch's relative error bound
_GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


def _expansion(values: Iterable[float]) -> tuple[float, ...]:
    """The exact sum of ``values`` as a canonical expansion: the correctly rounded sum, then the
    correctly rounded remainder, … until nothing remains. Canonical (the same exact sum gives
    the same tuple whatever the order) and usually one or two floats."""
    parts = list(values)
    out: list[float] = []
    while True:
        head = math.fsum(parts)
        if head == 0.0:
            return tuple(out)
        out.append(head)
        parts.append(-head)


def _index(magnitude: float) -> int:
    """The sketch bucket of a positive magnitude: bucket i holds (γ^(i-1), γ^i]."""
    return math.ceil(math.log(magnitude) / _LOG_GAMMA)


def _value_of(index: int) -> float:
    """The bucket's representative: within ACCURACY of every magnitude the bucket holds."""
    return 2 * _GAMMA**index / (_GAMMA + 1)


@dataclass(slots=True)
class Sketch:
    """Log-bucket counts for positive and negative values (by magnitude) and a zero count."""

    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)
    zero: int = 0

    @classmethod
    def of(cls, values: Iterable[float]) -> Sketch:
        out = cls()
        for v, count in Counter(values).items():  # measured values repeat: one log each
            if v > 0:
                i = _index(v)
                out.pos[i] = out.pos.get(i, 0) + count
            elif v < 0:
                i = _index(-v)
                out.neg[i] = out.neg.get(i, 0) + count
            else:
                out.zero += count
        return out

    @classmethod
    def merge(cls, sketches: Iterable[Sketch]) -> Sketch:
        pos: Counter[int] = Counter()
        neg: Counter[int] = Counter()
        zero = 0
        for s in sketches:
            pos.update(s.pos)
            neg.update(s.neg)
            zero += s.zero
        return cls(dict(pos), dict(neg), zero)

    def ranked(self) -> list[tuple[float, int]]:
        """(representative value, count) in ascending order of value."""
        neg = [(-_value_of(i), self.neg[i]) for i in sorted(self.neg, reverse=True)]
        zero = [(0.0, self.zero)] if self.zero else []
        return neg + zero + [(_value_of(i), self.pos[i]) for i in sorted(self.pos)]


@dataclass(slots=True, eq=False)
class Digest:
    """One metric over a set of runs. ``values`` (sorted) when exact, else ``sketch``.

    A digest loaded from storage keeps its distribution as the stored JSON text until
    ``values`` or ``sketch`` is asked for: most reads (counts, means, min/max) never are, and
    decoding the numbers is most of the cost of reading a rollup row."""

    n: int
    sum: tuple[float, ...]  # the exact sum as a canonical expansion (see _expansion)
    min: float
    max: float
    last_t: int  # the time of the last value: the latest, the larger value on a tie
    last_v: float
    _values: list[float] | None
    _sketch: Sketch | None = None
    _text: str | None = None  # the distribution as stored, not decoded yet

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and self.dump() == other.dump()

    @property
    def values(self) -> list[float] | None:
        self._decode()
        return self._values

    @property
    def sketch(self) -> Sketch | None:
        self._decode()
        return self._sketch

    def _decode(self) -> None:
        if self._text is None:
            return
        dist = orjson.loads(self._text)
        if dist and isinstance(dist[0], list):  # [[i, c, …] positive, [i, c, …] negative, zeros]
            self._sketch = Sketch(_unflat(dist[0]), _unflat(dist[1]), dist[2])
        else:
            self._values = dist  # written by dump: floats, sorted
        self._text = None

    @classmethod
    def of(cls, points: Iterable[tuple[int, float]]) -> Digest | None:
        """An exact digest of (time, value) points; None when there are none."""
        pts = list(points)
        if not pts:
            return None
        values = sorted(v for _, v in pts)
        last_t, last_v = max(pts)
        return cls(len(values), _expansion(values), values[0], values[-1], last_t, last_v, values)

    @property
    def exact(self) -> bool:
        if self._text is not None:
            return not self._text.startswith("[[")
        return self._values is not None

    @property
    def total(self) -> float:
        """The sum of every value, correctly rounded (as ``math.fsum`` of them all)."""
        return math.fsum(self.sum)

    @property
    def mean(self) -> float:
        # Clamped like stats.mean: fsum/n may land one ulp outside [min, max].
        return min(max(self.total / self.n, self.min), self.max)

    @property
    def last(self) -> float:
        return self.last_v

    def merged(self, other: Digest) -> Digest:
        return Digest.merge((self, other))

    @classmethod
    def merge(cls, digests: Sequence[Digest]) -> Digest:
        """All their values as one digest (at least one): exact when all are, else a sketch.
        One sort (or one histogram sum) however many digests: merging one at a time would
        sort the growing list again each time."""
        if len(digests) == 1:
            return digests[0]
        last_t, last_v = max((d.last_t, d.last_v) for d in digests)
        values = sketch = None
        if all(d.exact for d in digests):
            values = sorted(chain.from_iterable(d.values or () for d in digests))
        else:
            sketch = Sketch.merge(d._as_sketch() for d in digests)
        return cls(
            sum(d.n for d in digests),
            _expansion(chain.from_iterable(d.sum for d in digests)),
            min(d.min for d in digests),
            max(d.max for d in digests),
            last_t,
            last_v,
            values,
            sketch,
        )

    def capped(self, cap: int = EXACT_MAX) -> Digest:
        """This digest as it is stored: exact while it has at most ``cap`` values."""
        if not self.exact or self.n <= cap:
            return self
        return Digest(
            self.n, self.sum, self.min, self.max, self.last_t, self.last_v, None, self._as_sketch()
        )

    def _as_sketch(self) -> Sketch:
        return self.sketch if self.sketch is not None else Sketch.of(self.values or ())

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100) as ``stats.percentile`` defines it: exact from the
        values; from a sketch, the same interpolation between the representatives of the two
        closest ranks (within ACCURACY of the exact answer for values of one sign)."""
        if self.values is not None:
            value = exact_percentile(self.values, p)
            assert value is not None  # a digest has at least one value
            return value
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within [0, 100], got {p!r}")
        h = (self.n - 1) * p / 100
        lo = math.floor(h)
        hi = min(lo + 1, self.n - 1)
        x_lo, x_hi = self._at_rank(lo), self._at_rank(hi)
        return min(max(x_lo + (h - lo) * (x_hi - x_lo), x_lo), x_hi)

    def _at_rank(self, rank: int) -> float:
        """The value of 0-based rank ``rank``: min and max exactly, the others from the sketch."""
        if rank == 0:
            return self.min
        if rank == self.n - 1:
            return self.max
        seen = 0
        assert self.sketch is not None
        for value, count in self.sketch.ranked():
            seen += count
            if rank < seen:
                return min(max(value, self.min), self.max)
        return self.max

    # ---- JSON-ready form (what a rollup row stores) ----------------------------------------

    def dump(self) -> dict[str, Any]:
        """The JSON-ready form; the distribution ("d") as JSON text of its own, so that a
        reader parses it only when it needs it: the sorted values, or a sketch as
        [[index, count, …] positive, [index, count, …] negative, zeros]."""
        text = self._text
        if text is None:
            if self._values is not None:
                dist: list[Any] = self._values
            else:
                assert self._sketch is not None
                dist = [_flat(self._sketch.pos), _flat(self._sketch.neg), self._sketch.zero]
            text = orjson.dumps(dist).decode()
        return {
            "n": self.n,
            "s": list(self.sum),
            "lo": self.min,
            "hi": self.max,
            "lt": self.last_t,
            "lv": self.last_v,
            "d": text,
        }

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> Digest:
        # As dump wrote it (floats stay floats in JSON): no conversion, this is the hot path.
        return cls(d["n"], tuple(d["s"]), d["lo"], d["hi"], d["lt"], d["lv"], None, None, d["d"])


def _flat(counts: dict[int, int]) -> list[int]:
    return [x for i in sorted(counts) for x in (i, counts[i])]


def _unflat(flat: list[int]) -> dict[int, int]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def merge_all(digests: Iterable[Digest | None]) -> Digest | None:
    """The merge of those that are not None; None when none is."""
    present = [d for d in digests if d is not None]
    return Digest.merge(present) if present else None


# ---- the bucket digest -------------------------------------------------------------------------


@dataclass(slots=True)
class Bucket:
    """What one rollup row holds: a set of runs (of one test, or of several keys of one test id)
    summarised. ``metrics`` and the packet fields cover the finished runs' results."""

    runs: int = 0  # runs of any state
    results: int = 0  # runs with a result, of any state
    finished: int = 0  # finished runs with a result: what metrics and packets summarise
    metrics: dict[str, Digest] = field(default_factory=dict)  # summary value name → digest
    rtt: Digest | None = None  # per-packet RTTs (ms), the first reply of each probe
    sent: int = 0  # probes sent
    received: int = 0  # probes answered

    @property
    def loss_percent(self) -> float | None:
        """Packet loss over every probe in the bucket (not a mean of the runs' loss)."""
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else None

    def merged(self, other: Bucket) -> Bucket:
        return Bucket.merge((self, other))

    @classmethod
    def merge(cls, buckets: Sequence[Bucket]) -> Bucket:
        """All their runs as one bucket (``Digest.merge`` per metric)."""
        if len(buckets) == 1:
            return buckets[0]
        names = sorted(set(chain.from_iterable(b.metrics for b in buckets)))
        metrics = {}
        for name in names:
            if (d := merge_all(b.metrics.get(name) for b in buckets)) is not None:
                metrics[name] = d
        return cls(
            sum(b.runs for b in buckets),
            sum(b.results for b in buckets),
            sum(b.finished for b in buckets),
            metrics,
            merge_all(b.rtt for b in buckets),
            sum(b.sent for b in buckets),
            sum(b.received for b in buckets),
        )

    def capped(self, cap: int = EXACT_MAX) -> Bucket:
        return Bucket(
            self.runs,
            self.results,
            self.finished,
            {name: d.capped(cap) for name, d in self.metrics.items()},
            None if self.rtt is None else self.rtt.capped(cap),
            self.sent,
            self.received,
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "runs": self.runs,
            "results": self.results,
            "finished": self.finished,
            "metrics": {name: d.dump() for name, d in self.metrics.items()},
            "sent": self.sent,
            "received": self.received,
        }
        if self.rtt is not None:
            out["rtt"] = self.rtt.dump()
        return out

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> Bucket:
        return cls(
            d["runs"],
            d["results"],
            d["finished"],
            {name: Digest.load(m) for name, m in d["metrics"].items()},
            Digest.load(d["rtt"]) if "rtt" in d else None,
            d["sent"],
            d["received"],
        )


def number(value: Any) -> float | None:
    """A summary value as a digest takes it: numbers as floats, booleans as 0/1 (so a boolean
    datum's "any" is its max), anything else (None, NaN, text) as no value; so is a magnitude
    of 2^1000 or more, where a sum of a bucket's values could overflow."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and -_HUGE < value < _HUGE:
        return float(value)
    return None


_HUGE = 2.0**1000


FINISHED = "finished"  # model.RunState.FINISHED's value (model is floor 0; kept as text here)

# One run as a bucket reads it: (planned time, state, has a result, probes sent, summary
# values, replies as (seq, rtt ms or None)).
RunRow = tuple[int, str | None, bool, int, Mapping[str, Any], Iterable[tuple[int, float | None]]]


def bucket_of(
    runs: Iterable[RunRow], *, metrics: Collection[str] | None = None, packets: bool = True
) -> Bucket:
    """The exact bucket digest of ``runs``: the one function both the rollup worker and a
    query over raw runs use, so the two agree. ``metrics`` keeps only those summary values
    (None: all); ``packets`` False leaves out the samples' RTTs and counts."""
    b = Bucket()
    points: dict[str, list[tuple[int, float]]] = {}
    rtts: list[tuple[int, float]] = []
    for t, state, has_result, sent, values, replies in runs:
        b.runs += 1
        if not has_result:
            continue
        b.results += 1
        if state != FINISHED:
            continue
        b.finished += 1
        for name, raw in values.items():
            if (metrics is None or name in metrics) and (v := number(raw)) is not None:
                points.setdefault(name, []).append((t, v))
        if packets:
            first: dict[int, float] = {}  # seq → its first reply's RTT, as pinger_summary
            for seq, rtt in replies:
                if rtt is not None and seq not in first:
                    first[seq] = float(rtt)
            rtts += [(t, v) for v in first.values()]
            b.sent += sent
            b.received += min(len(first), sent)
    b.metrics = {name: d for name in sorted(points) if (d := Digest.of(points[name]))}
    b.rtt = Digest.of(rtts)
    return b
