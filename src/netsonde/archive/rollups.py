"""Rollups: summaries of each test per 5 minutes, 1 hour and 1 day, kept up to date as runs
arrive, so that long windows read a few rows instead of every run.

Both backends keep the same two tables (same DDL): ``rollup_pending``, the runs stored but not
yet rolled up (a backend inserts every newly stored run into it in the transaction that stores
the run), and ``rollups``, one bucket digest (``metrics.digest.Bucket``, compact JSON) per
(test key, resolution, bucket start). :func:`process` moves pending runs into the rollups;
:func:`windows` answers any window from rollups where they cover it and from raw runs
elsewhere, with the same digest function, so an answer never depends on how far the rollup
worker has got. The SQL is portable, with ``?`` placeholders, run on a store's cursor.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson

from netsonde.archive import jsontext
from netsonde.archive.base import no_check
from netsonde.archive.stores import Cursor, Migration, Store, StoreError
from netsonde.metrics.digest import Bucket, RunRow, bucket_of

RESOLUTIONS_US = (300_000_000, 3_600_000_000, 86_400_000_000)  # 5 min, 1 h, 1 d

# The summary metrics the rollups keep: the headline figures of each tool (the PingER datums
# among them, tests/unit/test_rollups.py checks). A window of any other metric is answered from
# the raw runs. Rolling up all of them (ping alone has 39, most of them derived detail) made a
# bucket 4 kB and the worker ~5x slower, for figures nobody charts over a year.
ROLLED_UP = frozenset(
    {
        # ping: RTT, loss, inter-packet delay (the PingER set), jitter, quality
        "minRtt", "meanRtt", "maxRtt", "medianRtt", "lossPercent", "clp",
        "minIpd", "meanIpd", "maxIpd", "iqrIpd", "duplicates", "outOfOrder",
        "jitter3550", "mos", "delayOneWay",
        # throughput (iperf3), one-way and two-way delay (owamp, twamp), tcp/http/dns
        "throughput_mbps", "jitter_ms", "retransmits", "lost_packets",
        "connectMs", "durationMs", "tlsMs", "ok",
    }
)  # fmt: skip

_DDL = """
CREATE TABLE rollup_pending (
    run_id TEXT PRIMARY KEY,
    test_key TEXT NOT NULL,
    planned_us BIGINT NOT NULL
);
CREATE TABLE rollups (
    test_key TEXT NOT NULL,
    resolution_us BIGINT NOT NULL,
    start_us BIGINT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (test_key, resolution_us, start_us)
);
"""

# A window's pending runs are found by test and time; and the runs stored before rollups
# existed are rolled up like new ones (the archive's ``runs`` table is migrated first).
_V2 = """
CREATE INDEX rollup_pending_by_test ON rollup_pending (test_key, planned_us);
INSERT INTO rollup_pending (run_id, test_key, planned_us)
    SELECT run_id, test_key, planned_us FROM runs WHERE true ON CONFLICT (run_id) DO NOTHING;
"""

# PostgreSQL compresses a value over 2 kB with pglz, whose decompression was most of the time
# of reading 720 hourly rows (33 of 45 ms): kept uncompressed (the rows are small next to the
# runs they summarise), a long window reads in a third of the time.
_V3_PG = "ALTER TABLE rollups ALTER COLUMN digest SET STORAGE EXTERNAL"

MIGRATIONS = [
    Migration(1, sqlite=_DDL, postgresql=_DDL),
    Migration(2, sqlite=_V2, postgresql=_V2),
    Migration(3, sqlite="", postgresql=_V3_PG),
]

# What a backend runs (in the storing transaction) for each newly stored run:
# (run_id, test_key, planned_us).
ENQUEUE = (
    "INSERT INTO rollup_pending (run_id, test_key, planned_us) VALUES (?, ?, ?)"
    " ON CONFLICT (run_id) DO NOTHING"
)

_LOCK = "SELECT pg_try_advisory_xact_lock(7100, 1)"  # (7100, 0) is stores.migrate's


def _results(store: Store) -> str:
    """The join of a run (``r``) to its result (``res``). PostgreSQL partitions both by
    planned time: naming it lets the join probe the one partition that can hold the result."""
    join = "LEFT JOIN results res ON res.run_id = r.run_id"
    return join + (" AND res.planned_us = r.planned_us" if store.dialect == "postgresql" else "")


def _take(store: Store) -> str:
    """The oldest pending runs with what a digest reads; r.run_id is NULL for a run that
    retention removed before it was rolled up (it is simply dropped)."""
    return (
        "SELECT p.run_id, p.test_key, p.planned_us, r.run_id, r.state, res.sent, res.summary,"
        " res.samples FROM rollup_pending p LEFT JOIN runs r ON r.run_id = p.run_id"
        f" AND r.planned_us = p.planned_us {_results(store)}"
        " ORDER BY p.planned_us, p.run_id LIMIT ?"
    )


_READ = (
    "SELECT digest, test_key, resolution_us, start_us FROM rollups"
    " WHERE (test_key, resolution_us, start_us) IN (VALUES "
)
_READ_CHUNK = 1000  # rows per read: 3,000 parameters, well below SQLite's 32,766
_WRITE = (
    "INSERT INTO rollups (test_key, resolution_us, start_us, digest) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (test_key, resolution_us, start_us) DO UPDATE SET digest = excluded.digest"
)
_DONE = "DELETE FROM rollup_pending WHERE run_id = ?"

SUMMARY_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MIN_US, _MAX_US = -(2**63), 2**63 - 1  # BIGINT's range: no bound


# ---- decoding stored rows ------------------------------------------------------------------


def _json(value: Any) -> Any:
    """A stored JSON column: text (SQLite, or PostgreSQL text) or already decoded (jsonb)."""
    return jsontext.loads(value) if isinstance(value, str | bytes) else value


def _run_row(t: int, state: str | None, sent: int | None, summary: Any, samples: Any) -> RunRow:
    replies = ((s[0], s[1]) for s in _json(samples) or ())
    values = _json(summary)
    if not isinstance(values, dict):
        values = {}
    return (t, state, sent is not None, sent or 0, values, replies)


def _dumps(bucket: Bucket) -> str:
    return orjson.dumps(bucket.capped().dump()).decode()


def _loads(digest: Any, metrics: Collection[str] | None = None, packets: bool = True) -> Bucket:
    """A stored bucket, with only ``metrics`` (None: all) and the packets only if asked: a
    digest left out is never decoded."""
    d = orjson.loads(digest) if isinstance(digest, str | bytes) else digest  # ours: plain JSON
    if metrics is not None:
        d["metrics"] = {k: v for k, v in d["metrics"].items() if k in metrics}
    if not packets:
        d.pop("rtt", None)
        d["sent"] = d["received"] = 0
    return Bucket.load(d)


# ---- the rollup worker's step --------------------------------------------------------------


def process(store: Store, limit: int = 5000) -> int:
    """Roll up at most ``limit`` pending runs, oldest first; returns how many were taken.

    One transaction: the runs' digests merged into the rollup rows of every resolution
    (read-modify-write, in key order) and the runs taken off ``rollup_pending``; a process that
    dies midway leaves both as they were, so every run is rolled up exactly once. On
    PostgreSQL one process rolls up at a time (an advisory lock; the others return 0).
    """
    with store.transaction() as cur:
        if store.dialect == "postgresql" and not cur.execute(_LOCK).fetchone()[0]:
            return 0
        taken = cur.execute(_take(store), (limit,)).fetchall()
        finest = RESOLUTIONS_US[0]
        groups: dict[tuple[str, int], list[RunRow]] = {}
        for _, key, planned, exists, state, sent, summary, samples in taken:
            if exists is not None:
                groups.setdefault((key, planned - planned % finest), []).append(
                    _run_row(planned, state, sent, summary, samples)
                )
        changes: dict[tuple[str, int, int], list[Bucket]] = {}
        for (key, start), runs in groups.items():
            bucket = bucket_of(runs, metrics=ROLLED_UP)
            for res in RESOLUTIONS_US:
                changes.setdefault((key, res, start - start % res), []).append(bucket)
        at = sorted(changes)  # one order for every writer: no lock-order deadlock
        for digest, *key in _stored(cur, at):
            try:
                changes[(key[0], key[1], key[2])].append(_loads(digest))
            except (ValueError, KeyError, TypeError) as e:
                raise StoreError(f"rollup {tuple(key)} unreadable: {e!r}") from None
        cur.executemany(_WRITE, [(*k, _dumps(Bucket.merge(changes[k]))) for k in at])
        cur.executemany(_DONE, [(row[0],) for row in taken])
        return len(taken)


def _stored(cur: Cursor, keys: Sequence[tuple[str, int, int]]) -> list[Any]:
    """(digest, test_key, resolution_us, start_us) of the rollup rows at ``keys`` that exist:
    a few statements for the whole step rather than one per row."""
    rows = []
    for i in range(0, len(keys), _READ_CHUNK):
        chunk = keys[i : i + _READ_CHUNK]
        sql = _READ + ", ".join(["(?, ?, ?)"] * len(chunk)) + ")"
        rows += cur.execute(sql, [v for key in chunk for v in key]).fetchall()
    return rows


def backlog(store: Store) -> int:
    """Runs stored and not yet rolled up."""
    return int(store.cursor().execute("SELECT count(*) FROM rollup_pending").fetchone()[0])


# ---- reading windows -----------------------------------------------------------------------


def _key_filter(alias: str, test_key: str | None, test_id: str | None) -> str:
    """The condition on ``alias.test_key`` for one key, every key of a test id, or none."""
    if test_key is not None:
        return f" AND {alias}.test_key = ?"
    if test_id is not None:
        return f" AND {alias}.test_key IN (SELECT key FROM tests WHERE test_id = ?)"
    return ""


def _key_args(test_key: str | None, test_id: str | None) -> list[str]:
    return [test_key] if test_key is not None else [test_id] if test_id is not None else []


def resolution_for(window_us: int) -> int | None:
    """The coarsest rollup resolution whose buckets tile windows of ``window_us``."""
    return next((r for r in reversed(RESOLUTIONS_US) if window_us % r == 0), None)


def windows(
    store: Store,
    window_us: int,
    *,
    test_key: str | None = None,
    test_id: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    limit: int = 1000,
    metrics: Collection[str] | None = None,
    packets: bool = True,
    check: Callable[[], None] = no_check,
) -> list[tuple[int, Bucket]]:
    """(start, bucket digest) per window of ``window_us`` (windows start at multiples of it
    since the epoch) over the runs planned in [since, until) of one test key, every key of a
    test id, or every test: the windows with at least one result, oldest first, at most
    ``limit``. ``metrics`` (None: ``ROLLED_UP``) and ``packets`` say what the digests hold;
    a metric outside ``ROLLED_UP`` makes every window come from the raw runs.

    The part of [since, until) aligned to the coarsest rollup resolution that divides the
    window comes from the rollups plus the runs still pending there; the rest from the raw
    runs. One statement, so one snapshot: a run rolled up meanwhile is counted once.
    """
    if window_us <= 0:
        raise ValueError(f"window must be positive, got {window_us} µs")
    lo = _MIN_US if since_us is None else since_us
    hi = _MAX_US if until_us is None else until_us
    if metrics is None:
        metrics = ROLLED_UP
    # Metrics the rollups do not keep: every window from the raw runs.
    res = resolution_for(window_us) if ROLLED_UP.issuperset(metrics) else None
    start, end = (hi, hi) if res is None else (-(-lo // res) * res, hi - hi % res)
    if start >= end:
        start = end = hi  # nothing aligned: all raw
    raw = (
        f"SELECT r.planned_us, r.state, res.sent, res.summary,"
        f" {'res.samples' if packets else 'NULL'}, NULL FROM {{}} {_results(store)}"
        " WHERE {}.planned_us >= ? AND {}.planned_us < ?"
    )
    parts: list[str] = []
    args: list[Any] = []
    for a, b in ((lo, start), (end, hi)):
        if a < b:
            parts.append(raw.format("runs r", "r", "r") + _key_filter("r", test_key, test_id))
            args += [a, b, *_key_args(test_key, test_id)]
    if start < end:
        pending = (
            "rollup_pending p JOIN runs r ON r.run_id = p.run_id AND r.planned_us = p.planned_us"
        )
        parts.append(raw.format(pending, "p", "p") + _key_filter("p", test_key, test_id))
        args += [start, end, *_key_args(test_key, test_id)]
        parts.append(
            "SELECT u.start_us, NULL, NULL, NULL, NULL, u.digest FROM rollups u"
            " WHERE u.resolution_us = ? AND u.start_us >= ? AND u.start_us < ?"
            + _key_filter("u", test_key, test_id)
        )
        args += [res, start, end, *_key_args(test_key, test_id)]
    if not parts:
        return []
    rows = store.cursor().execute(" UNION ALL ".join(parts), args).fetchall()
    raw_runs: dict[int, list[RunRow]] = {}
    rolled: dict[int, list[Bucket]] = {}
    for n, (t, state, sent, summary, sample_json, digest) in enumerate(rows):
        if n % 10_000 == 0:
            check()
        w = t - t % window_us
        if digest is None:
            raw_runs.setdefault(w, []).append(_run_row(t, state, sent, summary, sample_json))
        else:
            rolled.setdefault(w, []).append(_loads(digest, metrics, packets))
    out: list[tuple[int, Bucket]] = []
    for w in sorted(raw_runs.keys() | rolled.keys()):
        pieces = rolled.get(w, [])
        if w in raw_runs:
            pieces.append(bucket_of(raw_runs[w], metrics=metrics, packets=packets))
        bucket = Bucket.merge(pieces)
        if bucket.results:
            out.append((w, bucket))
            if len(out) == limit:
                break
    return out


def aggregate(
    store: Store,
    metric: str,
    window_us: int,
    *,
    test_id: str | None = None,
    test_key: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """``Archive.aggregate`` for every backend: per window with results (at most ``limit``,
    oldest first) ``start_us``; ``runs``, the results in it; over the finished runs' numeric
    values of ``metric``: ``count``, ``min``, ``mean``, ``max`` and ``digest`` (its
    ``metrics.digest.Digest``, for percentiles; None without values); and ``mean_loss``, the
    mean of their lossPercent values."""
    if not SUMMARY_KEY.fullmatch(metric):
        raise ValueError(f"invalid summary key {metric!r}")
    found = windows(
        store,
        window_us,
        test_key=test_key,
        test_id=test_id,
        since_us=since_us,
        until_us=until_us,
        limit=limit,
        metrics={metric, "lossPercent"},
        packets=False,
    )
    out = []
    for start, bucket in found:
        d, loss = bucket.metrics.get(metric), bucket.metrics.get("lossPercent")
        out.append(
            {
                "start_us": start,
                "runs": bucket.results,
                "count": 0 if d is None else d.n,
                "min": None if d is None else d.min,
                "mean": None if d is None else d.mean,
                "max": None if d is None else d.max,
                "mean_loss": None if loss is None else loss.mean,
                "digest": d,
            }
        )
    return out


class RolledUp(abc.ABC):
    """The rollup methods of an :class:`~netsonde.archive.base.Archive`, the same on every
    backend: a backend gives its store (``_rollup_store``) and the context that turns its
    failures into ArchiveError (``_store_errors``)."""

    @abc.abstractmethod
    def _rollup_store(self) -> Store: ...

    @abc.abstractmethod
    def _store_errors(self) -> AbstractContextManager[None]: ...

    def aggregate(
        self,
        metric: str,
        window_us: int,
        *,
        test_id: str | None = None,
        test_key: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Statistics of one summary metric per window: :func:`aggregate`."""
        with self._store_errors():
            return aggregate(
                self._rollup_store(),
                metric,
                window_us,
                test_id=test_id,
                test_key=test_key,
                since_us=since_us,
                until_us=until_us,
                limit=limit,
            )

    def windows(
        self,
        window_us: int,
        *,
        test_key: str | None = None,
        test_id: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
        metrics: Collection[str] | None = None,
        packets: bool = True,
        check: Callable[[], None] = no_check,
    ) -> list[tuple[int, Bucket]]:
        """Bucket digests per window: :func:`windows`."""
        with self._store_errors():
            return windows(
                self._rollup_store(),
                window_us,
                test_key=test_key,
                test_id=test_id,
                since_us=since_us,
                until_us=until_us,
                limit=limit,
                metrics=metrics,
                packets=packets,
                check=check,
            )

    def process_rollups(self, limit: int = 5000) -> int:
        """Roll up at most ``limit`` pending runs: :func:`process`."""
        with self._store_errors():
            return process(self._rollup_store(), limit)

    def rollup_backlog(self) -> int:
        with self._store_errors():
            return backlog(self._rollup_store())
