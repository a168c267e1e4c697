"""The shared archive: PostgreSQL (psycopg 3), for a fleet writing to one database.

Same tables, columns and answers as the SQLite archive (``sqlite.py``, whose row shaping and
encoding this module reuses), with what a server adds:

* ``runs`` and ``results`` are partitioned by ``planned_us`` into UTC calendar months
  (``runs_p2026_12``), created on demand in the storing transaction; retention drops whole
  months (:meth:`PostgresArchive.expire`).
* Ingest is one binary COPY into a per-connection staging table and one statement that moves
  the new runs, their results and their ``rollup_pending`` rows into place, idempotent by run
  id under any number of concurrent writers.
* A connection lost (the server restarted) fails the call in progress with ArchiveError and is
  opened again by the next call: the BatchWriter and the spool retry, so nothing is lost.

The schema is created and upgraded by versioned migrations (``archive.stores``); a database
written by a newer netsonde is refused. Text is compared and ordered byte by byte (``COLLATE
"C"`` in the queries, not in the columns, so joins with other tables keep one collation), as
SQLite does, whatever the database's locale.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from netsonde.archive import pg, retention, rollups
from netsonde.archive.base import ArchiveError, Backend, UnknownTestError
from netsonde.archive.sqlite import (
    _UPSERT_TEST,
    _result_rows,
    _run_row,
    _run_rows,
    _test_rows,
    _Where,
)
from netsonde.archive.stores import Migration, PgStore, StoreError, migrate, to_format
from netsonde.model import Run, TestSpec

if TYPE_CHECKING:
    import sqlite3

    import psycopg

# ---- schema ---------------------------------------------------------------------------------

# A run id is uuid5(test key, nominal time) (model.run_id_for), so one run id always comes with
# one planned time: (run_id, planned_us) is as unique as run_id, and PostgreSQL needs the
# partition key in every unique index of a partitioned table.
_FIRST_US = 0  # 1970-01-01: months from here get partitions of their own
_END_US = 253_402_300_800_000_000  # 10000-01-01, past the last time the API can say
_V1 = f"""
CREATE TABLE tests (
    key TEXT PRIMARY KEY,
    test_id TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    tool TEXT NOT NULL,
    target TEXT NOT NULL,
    params TEXT NOT NULL,
    first_seen_us BIGINT NOT NULL,
    last_seen_us BIGINT NOT NULL
);
CREATE INDEX tests_by_id ON tests (test_id);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (
    run_id TEXT,
    test_key TEXT NOT NULL,
    slot BIGINT NOT NULL,
    state TEXT NOT NULL,
    planned_us BIGINT,
    actual_us BIGINT,
    end_us BIGINT,
    error TEXT,
    PRIMARY KEY (run_id, planned_us)
) PARTITION BY RANGE (planned_us);
CREATE INDEX runs_by_test_time ON runs (test_key, planned_us);
CREATE INDEX runs_by_time ON runs (planned_us);
CREATE TABLE results (
    run_id TEXT,
    planned_us BIGINT,
    sent INT NOT NULL,
    summary TEXT NOT NULL,
    samples TEXT NOT NULL,
    extra TEXT NOT NULL,
    PRIMARY KEY (run_id, planned_us)
) PARTITION BY RANGE (planned_us);
CREATE TABLE runs_before PARTITION OF runs FOR VALUES FROM (MINVALUE) TO ({_FIRST_US});
CREATE TABLE results_before PARTITION OF results FOR VALUES FROM (MINVALUE) TO ({_FIRST_US});
CREATE TABLE runs_after PARTITION OF runs FOR VALUES FROM ({_END_US}) TO (MAXVALUE);
CREATE TABLE results_after PARTITION OF results FOR VALUES FROM ({_END_US}) TO (MAXVALUE);
"""
# Times outside [1970, 10000) go to the fixed runs_before/runs_after partitions rather than a
# DEFAULT one: a DEFAULT partition is scanned by every CREATE of a month, and would quietly
# take the rows of a month whose partition retention just dropped (which then could never be
# created again); without one, such a row fails its batch, which is retried and recreates it.
# No foreign keys, as in SQLite (which does not enforce them): store_batch checks test keys.
# The archive's own migrations: SQLite keeps its schema in sqlite.py.
MIGRATIONS = [Migration(1, sqlite="", postgresql=_V1)]

# Advisory lock keys: class 7100 is netsonde's; (7100, 0) is stores.migrate's, (7100, 1) the
# rollup worker's (rollups.process).
_PARTITION_LOCK = (7100, 2)

# ---- ingest ----------------------------------------------------------------------------------

_STAGE_COLUMNS = (
    "run_id, test_key, slot, state, planned_us, actual_us, end_us, error,"
    " sent, summary, samples, extra"
)
_STAGE_TYPES = ["text", "text", "int8", "text", "int8", "int8", "int8", "text"]
_STAGE_TYPES += ["int4", "text", "text", "text"]
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_runs (run_id TEXT, test_key TEXT, slot BIGINT,"
    " state TEXT, planned_us BIGINT, actual_us BIGINT, end_us BIGINT, error TEXT, sent INT,"
    " summary TEXT, samples TEXT, extra TEXT) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY stage_runs ({_STAGE_COLUMNS}) FROM STDIN (FORMAT BINARY)"
# The staged runs in (planned_us, run_id) order, so that concurrent writers of overlapping
# batches take their index entries in one order (a writer waits for another, never both for
# each other); those whose id is new, with their result (sent is NULL for a run without one)
# and their rollup_pending row; the count of new runs.
_MERGE = (
    "WITH new AS (INSERT INTO runs (run_id, test_key, slot, state, planned_us, actual_us, end_us,"
    " error) SELECT run_id, test_key, slot, state, planned_us, actual_us, end_us, error"
    " FROM stage_runs ORDER BY planned_us, run_id ON CONFLICT DO NOTHING"
    " RETURNING run_id, test_key, planned_us),"
    " pending AS (INSERT INTO rollup_pending (run_id, test_key, planned_us)"
    " SELECT run_id, test_key, planned_us FROM new ON CONFLICT DO NOTHING),"
    " res AS (INSERT INTO results (run_id, planned_us, sent, summary, samples, extra)"
    " SELECT s.run_id, s.planned_us, s.sent, s.summary, s.samples, s.extra"
    " FROM stage_runs s JOIN new USING (run_id, planned_us) WHERE s.sent IS NOT NULL"
    " ON CONFLICT DO NOTHING)"
    " SELECT count(*) FROM new"
)
_COUNT_RECEIVED = (
    "INSERT INTO meta (name, value) VALUES ('runs_received', %s) ON CONFLICT (name)"
    " DO UPDATE SET value = (CAST(meta.value AS BIGINT) + CAST(excluded.value AS BIGINT))::text"
)
# A LATERAL probe per staged run (the index of each partition, by run id): a plan the planner
# cannot turn into a scan of all runs, whatever it guesses of the unanalyzed staging table.
_DROP_REUSED = (
    "DELETE FROM stage_runs s WHERE EXISTS (SELECT 1 FROM LATERAL (SELECT 1 FROM runs r"
    " WHERE r.run_id = s.run_id AND r.planned_us <> s.planned_us LIMIT 1) AS used)"
)
_UNKNOWN_KEYS = (
    "SELECT k FROM unnest(?::text[]) AS k WHERE NOT EXISTS (SELECT 1 FROM tests WHERE key = k)"
    ' ORDER BY k COLLATE "C"'
)


def _stage_rows(runs: Sequence[Run]) -> list[tuple[Any, ...]]:
    """One row per run id (the first of each wins, as in SQLite), with its result's columns
    (NULL without one), in (planned_us, run_id) order."""
    first: dict[str, Run] = {}
    for run in runs:
        first.setdefault(run.run_id, run)
    unique = list(first.values())
    results = {row[0]: row[1:] for row in _result_rows(unique)}
    none = (None, None, None, None)
    rows = [(*row, *results.get(row[0], none)) for row in _run_rows(unique)]
    rows.sort(key=lambda row: (row[4], row[0]))
    return rows


# ---- monthly partitions ----------------------------------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PARTITION_NAME = re.compile(r"runs_p(\d{4})_(\d{2})")


def _month_of(us: int) -> tuple[int, int] | None:
    """(year, month) of a time, UTC; None outside the months that get partitions."""
    if not _FIRST_US <= us < _END_US:
        return None
    t = _EPOCH + dt.timedelta(microseconds=us)
    return t.year, t.month


def _month_bounds(year: int, month: int) -> tuple[int, int]:
    """[start, end) of a UTC calendar month in epoch µs."""
    start = _us(dt.datetime(year, month, 1, tzinfo=dt.UTC))
    if (year, month) == (9999, 12):  # the next month is past what datetime can say
        return start, _END_US
    return start, _us(dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC))


def _us(t: dt.datetime) -> int:
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def _partition(table: str, year: int, month: int) -> str:
    return f"{table}_p{year:04d}_{month:02d}"


class PostgresArchive(rollups.RolledUp):
    """One connection to the archive in a PostgreSQL database."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self._shown = pg.shown(url)
        self._readonly = readonly
        self._store: PgStore | None = None
        self._connect()

    # ---- connection ---------------------------------------------------------------------

    def _connect(self) -> PgStore:
        """Open the connection (again): the schema migrated (or, read-only, checked), the
        staging table made and the months around now partitioned."""
        store = PgStore(self.url)  # ArchiveError when the server cannot be reached
        try:
            if self._readonly:
                store.raw.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                self._check_schema(store)
            else:
                migrate(store, "archive", MIGRATIONS)
                migrate(store, "rollups", rollups.MIGRATIONS)
                store.raw.execute(_STAGE)  # a temporary table: this connection's own
                now = _month_of(int(time.time() * 1_000_000))
                if now is not None:  # this month and the next, ahead of the first batch
                    next_month = (now[0] + now[1] // 12, now[1] % 12 + 1)
                    with store.raw.transaction():
                        self._ensure_partitions(store.raw.cursor(), {now, next_month})
        except StoreError as e:
            store.close()
            why = str(e).removeprefix(f"{store.location}: ")
            raise ArchiveError(f"cannot open archive {self._shown}: {why}") from None
        except BaseException as e:
            store.close()
            import psycopg

            if isinstance(e, psycopg.Error):
                why = pg.error_text(e)
                raise ArchiveError(f"cannot open archive {self._shown}: {why}") from None
            raise
        self._store = store
        return store

    def _check_schema(self, store: PgStore) -> None:
        """A reader creates nothing: the archive must be there, and not newer than us."""
        import psycopg

        try:
            row = store.raw.execute(
                "SELECT version FROM netsonde_schema WHERE component = 'archive'"
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is None:
            raise ArchiveError(
                f"no archive at {self._shown} (has `netsonde run` stored anything yet?)"
            )
        newest = max(m.version for m in MIGRATIONS)
        if int(row[0]) > newest:
            raise ArchiveError(
                f"cannot open archive {self._shown}: the archive schema is version {row[0]},"
                f" newer than this netsonde knows ({newest}); upgrade netsonde"
            )

    def _live(self) -> PgStore:
        """The connection's store, opened again if it was lost."""
        return self._store if self._store is not None else self._connect()

    def _conn(self) -> psycopg.Connection[Any]:
        return self._live().raw

    def _rollup_store(self) -> PgStore:
        return self._live()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Every driver failure as one ArchiveError naming the database (never a password);
        a connection that died is dropped, to be opened again by the next call."""
        import psycopg

        try:
            yield
        except (psycopg.Error, StoreError) as e:
            raw = self._store.raw if self._store is not None else None
            if raw is not None and (raw.broken or raw.closed):
                self._drop()
            why = pg.error_text(e) if isinstance(e, psycopg.Error) else str(e)
            raise ArchiveError(f"archive {self._shown} unavailable: {why}") from None

    _store_errors = _errors  # what rollups.RolledUp wraps its calls in

    def _drop(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def interrupt(self) -> None:
        """Abort the query running on this connection (from another thread): a request that
        ran past its time limit must not keep the server busy. A cancel that arrives while
        the connection is idle is ignored by the server."""
        store = self._store
        if store is not None and not store.raw.closed:
            with contextlib.suppress(Exception):
                store.raw.cancel_safe(timeout=5.0)

    def close(self) -> None:
        self._drop()

    # ---- writing -------------------------------------------------------------------------

    def register_tests(self, specs: Iterable[TestSpec], now_us: int) -> None:
        with self._errors():
            conn = self._conn()
            with conn.transaction():
                self._upsert_tests(conn.cursor(), specs, now_us)

    def store_runs(self, runs: Sequence[Run]) -> int:
        """Store runs in one transaction; returns how many were new (first write wins)."""
        with self._errors():
            conn = self._conn()
            with conn.transaction():
                return self._insert_runs(conn.cursor(), runs)

    def store_batch(self, specs: Iterable[TestSpec], runs: Sequence[Run], now_us: int) -> int:
        """Register ``specs`` and store ``runs`` in ONE transaction; returns how many runs were
        new. Nothing is written when a run names a test key neither in ``specs`` nor stored
        (UnknownTestError) or when the write fails (ArchiveError)."""
        keys = sorted({r.test_key for r in runs})
        with self._errors():
            conn = self._conn()
            with conn.transaction():
                cur = conn.cursor()
                self._upsert_tests(cur, specs, now_us)
                cur.execute(to_format(_UNKNOWN_KEYS), (keys,))
                missing = [row[0] for row in cur.fetchall()]
                if missing:
                    raise UnknownTestError(missing)  # leaving the block rolls the upsert back
                new = self._insert_runs(cur, runs, foreign=True)
                if new:  # no row lock on the counter for a batch of duplicates
                    cur.execute(_COUNT_RECEIVED, (str(new),))
                return new

    def received(self) -> int:
        """How many runs ``store_batch`` has stored, ever (counted in the archive)."""
        rows = self._rows("SELECT value FROM meta WHERE name = 'runs_received'", ())
        return int(rows[0]["value"]) if rows else 0

    def _upsert_tests(self, cur: psycopg.Cursor[Any], specs: Iterable[TestSpec], now: int) -> None:
        # One row per key (the last wins, as SQLite's row-by-row upsert leaves it), in key
        # order: concurrent writers lock the rows of shared tests in one order.
        rows = sorted({row[0]: row for row in _test_rows(specs, now)}.values())
        if rows:
            cur.executemany(to_format(_UPSERT_TEST), rows)

    def _insert_runs(
        self, cur: psycopg.Cursor[Any], runs: Sequence[Run], *, foreign: bool = False
    ) -> int:
        """COPY the runs into the staging table and move the new ones into place; returns
        how many were new. Call inside a transaction (the staging rows go at its end).

        ``foreign`` runs (another host's, through the REST store) may reuse a stored run id
        with another planned time, which the primary key (run_id, planned_us) would let in:
        those are dropped first, so the first write wins by run id alone, as in SQLite."""
        rows = _stage_rows(runs)
        if not rows:
            return 0
        months = {m for m in (_month_of(row[4]) for row in rows) if m is not None}
        self._ensure_partitions(cur, months)
        with cur.copy(_COPY) as copy:
            copy.set_types(_STAGE_TYPES)
            for row in rows:
                copy.write_row(row)
        if foreign:
            cur.execute(_DROP_REUSED)
        # The staged batch is a few MB: sorted and joined in memory, not spilled to disk.
        cur.execute("SET LOCAL work_mem = '64MB'")
        cur.execute(_MERGE)
        (new,) = cur.fetchone() or (0,)
        return int(new)

    def _ensure_partitions(self, cur: psycopg.Cursor[Any], months: set[tuple[int, int]]) -> None:
        """Create the monthly partitions of ``months`` that do not exist yet, under a lock so
        that two writers do not race to create one. Done before the batch touches ``runs``:
        creating a partition locks the parent table, which must not wait on our own rows."""
        if not months:
            return
        names = [_partition("runs", *m) for m in sorted(months)]
        cur.execute("SELECT m FROM unnest(%s::text[]) AS m WHERE to_regclass(m) IS NULL", (names,))
        missing = {row[0] for row in cur.fetchall()}
        if not missing:
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _PARTITION_LOCK)
        for year, month in sorted(months):
            if _partition("runs", year, month) not in missing:
                continue
            start, end = _month_bounds(year, month)
            for table in ("runs", "results"):
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {_partition(table, year, month)}"
                    f" PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})"
                )

    # ---- retention -----------------------------------------------------------------------

    def expire(self, before_us: int) -> int:
        """Remove the runs planned before ``before_us`` with their results and pending
        rollups; returns how many runs went. The rollups are kept (they are small, and long
        windows stay answerable).

        Months that end at or before the cutoff are dropped whole (one partition pair per
        transaction: no row-by-row work, no bloat). The month that straddles the cutoff is
        trimmed in bounded batches (``retention.expire``), so the cutoff is exact, as on
        SQLite, and the writer never waits long."""
        with self._errors():
            gone = self._drop_months(before_us)
            return gone + retention.expire(self._live(), before_us)

    def _drop_months(self, before_us: int) -> int:
        conn = self._conn()
        listed = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'runs'::regclass"
        ).fetchall()
        old = []
        for (name,) in listed:
            found = _PARTITION_NAME.fullmatch(name)
            if found:
                start, end = _month_bounds(int(found[1]), int(found[2]))
                if end <= before_us:
                    old.append((start, end, int(found[1]), int(found[2])))
        gone = 0
        for start, end, year, month in sorted(old):
            with conn.transaction():
                cur = conn.cursor()
                # Dropping waits for every reader of the table, and queues every later one
                # behind it: give up rather than stall the fleet (the next pass retries).
                cur.execute("SET LOCAL lock_timeout = '5s'")
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _PARTITION_LOCK)
                runs_part = _partition("runs", year, month)
                cur.execute("SELECT to_regclass(%s)", (runs_part,))
                if (cur.fetchone() or (None,))[0] is None:  # another process was first
                    continue
                cur.execute(f"SELECT count(*) FROM {runs_part}")
                gone += int((cur.fetchone() or (0,))[0])
                # The drop first: the rollup worker reads runs and then deletes its pending
                # rows, so holding those rows while waiting for its read would deadlock.
                cur.execute(
                    f"DROP TABLE IF EXISTS {_partition('results', year, month)}, {runs_part}"
                )
                cur.execute(
                    "DELETE FROM rollup_pending WHERE planned_us >= %s AND planned_us < %s",
                    (start, end),
                )
        return gone

    # ---- reading -------------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._errors():
            cur = self._conn().cursor(row_factory=dict_row)
            cur.execute(to_format(sql), args)
            return cur.fetchall()

    def last_slots(self, keys: Iterable[str]) -> dict[str, int]:
        """The highest stored slot (of a run in any state) by test key; keys without runs are
        left out. What a restarted scheduler resumes from."""
        rows = self._rows(
            "SELECT test_key, max(slot) AS slot FROM runs WHERE test_key = ANY(?)"
            " GROUP BY test_key",
            (list(dict.fromkeys(keys)),),
        )
        return {r["test_key"]: int(r["slot"]) for r in rows}

    def tests(self) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT t.*, (SELECT count(*) FROM runs r WHERE r.test_key = t.key) AS runs,"
            " (SELECT max(planned_us) FROM runs r WHERE r.test_key = t.key) AS last_run_us"
            ' FROM tests t ORDER BY t.test_id COLLATE "C", t.first_seen_us',
            (),
        )
        return [{**r, "params": json.loads(r["params"])} for r in rows]

    def tests_of_tool(self, tool: str, key: str | None = None) -> list[dict[str, Any]]:
        """The tests of one tool (or the one with ``key``), without run statistics."""
        where = _Where()
        where.add("tool = ?", tool)
        where.maybe("key = ?", key)
        rows = self._rows(
            "SELECT key, test_id, source, tool, target, params FROM tests"
            f'{where.sql} ORDER BY test_id COLLATE "C", first_seen_us',
            where.args,
        )
        return [{**r, "params": json.loads(r["params"])} for r in rows]

    def runs(
        self,
        test_id: str | None = None,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Runs with their results, oldest first, by test id (any key it had) and time range."""
        where = _Where()
        where.maybe("t.test_id = ?", test_id)
        where.maybe("r.planned_us >= ?", since_us)
        where.maybe("r.planned_us < ?", until_us)
        rows = self._rows(
            "SELECT r.*, t.test_id, t.tool, t.target, res.sent, res.summary, res.samples,"
            f" res.extra FROM runs r JOIN tests t ON t.key = r.test_key {_RESULT_JOIN}"
            f'{where.sql} ORDER BY r.planned_us DESC, r.run_id COLLATE "C" DESC LIMIT ?',
            [*where.args, limit],
        )
        return [_shaped(r) for r in reversed(rows)]

    def summaries(
        self, test_key: str, since_us: int, until_us: int, *, limit: int
    ) -> list[tuple[int, str]]:
        """(planned_us, summary JSON) of the finished runs of one test in [since, until)."""
        rows = self._rows(
            f"SELECT r.planned_us, res.summary FROM runs r {_WITH_RESULT}"
            " WHERE r.test_key = ? AND r.planned_us >= ? AND r.planned_us < ?"
            " AND r.state = 'finished' ORDER BY r.planned_us LIMIT ?",
            (test_key, since_us, until_us, limit),
        )
        return [(r["planned_us"], r["summary"]) for r in rows]

    def find_tests(
        self,
        *,
        key: str | None = None,
        test_id: str | None = None,
        test_id_contains: str | None = None,
        tool: str | None = None,
        target: str | None = None,
        after: tuple[str, str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Test metadata with run counts, ordered by (test_id, key); ``after`` is the
        (test_id, key) of the previous page's last row (keyset paging)."""
        where = _Where()
        where.maybe("t.key = ?", key)
        where.maybe("t.test_id = ?", test_id)
        where.maybe("strpos(t.test_id, ?) > 0", test_id_contains)  # no LIKE wildcards
        where.maybe("t.tool = ?", tool)
        where.maybe("t.target = ?", target)
        if after is not None:
            where.add('(t.test_id COLLATE "C", t.key COLLATE "C") > (?, ?)', *after)
        rows = self._rows(
            "SELECT t.*, (SELECT count(*) FROM runs r WHERE r.test_key = t.key) AS runs,"
            " (SELECT max(planned_us) FROM runs r WHERE r.test_key = t.key) AS last_run_us"
            f' FROM tests t{where.sql} ORDER BY t.test_id COLLATE "C", t.key COLLATE "C"'
            " LIMIT ? OFFSET ?",
            [*where.args, limit, offset],
        )
        return [{**r, "params": json.loads(r["params"])} for r in rows]

    def find_runs(
        self,
        *,
        test_id: str | None = None,
        test_key: str | None = None,
        states: Sequence[str] = (),
        since_us: int | None = None,
        until_us: int | None = None,
        results_only: bool = False,
        samples: bool = False,
        after: tuple[int, str] | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Runs in [since, until) by planned start, with their result when they have one,
        ordered by (planned_us, run_id); ``after`` is the previous page's last (planned_us,
        run_id) in the order asked for (keyset paging)."""
        where = _Where()
        where.maybe("t.test_id = ?", test_id)
        where.maybe("r.test_key = ?", test_key)
        if states:
            where.add("r.state = ANY(?)", list(states))
        where.maybe("r.planned_us >= ?", since_us)
        where.maybe("r.planned_us < ?", until_us)
        if after is not None:
            where.add(
                f'(r.planned_us, r.run_id COLLATE "C") {"<" if descending else ">"} (?, ?)',
                *after,
            )
        order = "DESC" if descending else "ASC"
        join = _WITH_RESULT if results_only else _RESULT_JOIN
        rows = self._rows(
            "SELECT r.*, t.test_id, t.tool, t.target, res.sent, res.summary,"
            f" {'res.samples' if samples else 'NULL'} AS samples,"
            f" {'res.extra' if samples else 'NULL'} AS extra"
            f" FROM runs r JOIN tests t ON t.key = r.test_key {join}{where.sql}"
            f' ORDER BY r.planned_us {order}, r.run_id COLLATE "C" {order} LIMIT ? OFFSET ?',
            [*where.args, limit, offset],
        )
        return [_shaped(r) for r in rows]


# A run's result: same id and planned time (the partition key, so each run probes the one
# partition of results that can hold it).
_WITH_RESULT = "JOIN results res ON res.run_id = r.run_id AND res.planned_us = r.planned_us"
_RESULT_JOIN = f"LEFT {_WITH_RESULT}"


def _shaped(row: dict[str, Any]) -> dict[str, Any]:
    """A run row as both backends give it: SQLite's shaping, which reads a row only by its
    keys, as a dict offers them."""
    return _run_row(cast("sqlite3.Row", row))


def _resolve(url: str, base: Path) -> str:
    return pg.check(url, base)


def _open(url: str, readonly: bool) -> PostgresArchive:
    return PostgresArchive(url, readonly=readonly)


BACKEND = Backend(scheme=pg.SCHEME, form=pg.FORM, resolve=_resolve, open=_open)
