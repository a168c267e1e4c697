"""The embedded archive: one SQLite file in WAL mode.

Tests are stored under their stable key (same tool, target and parameters → same key), runs
under their stable run id, so storing the same run twice is a no-op. Per-packet samples are
kept with each result as a compact JSON array, as the PingER MA kept its rtts/seqNums CSVs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from netsonde import filesystem
from netsonde.archive import jsontext, retention, rollups, stores
from netsonde.archive.base import ArchiveError, Backend, UnknownTestError
from netsonde.model import Run, TestSpec

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tests (
    key TEXT PRIMARY KEY,
    test_id TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    tool TEXT NOT NULL,
    target TEXT NOT NULL,
    params TEXT NOT NULL,
    first_seen_us INTEGER NOT NULL,
    last_seen_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tests_by_id ON tests (test_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    test_key TEXT NOT NULL REFERENCES tests (key),
    slot INTEGER NOT NULL,
    state TEXT NOT NULL,
    planned_us INTEGER NOT NULL,
    actual_us INTEGER,
    end_us INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_test_time ON runs (test_key, planned_us);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (planned_us);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id),
    sent INTEGER NOT NULL,
    summary TEXT NOT NULL,
    samples TEXT NOT NULL,
    extra TEXT NOT NULL
);
"""


def _why(path: Path) -> str:
    """What SQLite's "unable to open database file" leaves out, when the disk is the cause."""
    found = filesystem.trouble(path.parent)
    return f" ({found})" if found else ""


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as e:  # a directory on the way this user may not enter
        raise ArchiveError(f"cannot read archive {path}: {e.strerror}") from None


def _why_unreadable(path: Path) -> str:
    """Why a read-only open fails: a file of the archive this user may not read, or a
    write-ahead log whose index (-shm) a reader would have to create and cannot."""
    wal, shm = (path.with_name(path.name + end) for end in ("-wal", "-shm"))
    for part in (path, wal, shm):
        if part.exists() and not os.access(part, os.R_OK):
            return f" ({part} is not readable by this user)"
    if wal.exists() and not shm.exists():
        cause = filesystem.trouble(path.parent) or f"{path.parent} is not writable by this user"
        return f" (reading its write-ahead log needs {shm.name}, which cannot be created: {cause})"
    return _why(path)


# ---- URLs: sqlite:///relative/path, sqlite:////absolute/path --------------------------------

_PREFIX = "sqlite:///"


def path_of(url: str) -> Path:
    """``sqlite:///rel/path`` → rel/path, ``sqlite:////abs/path`` → /abs/path."""
    if not url.startswith(_PREFIX) or len(url) == len(_PREFIX):
        raise ArchiveError(f"invalid SQLite archive URL {url!r} (use sqlite:///PATH)")
    return Path(url[len(_PREFIX) :])


def url_of(path: Path) -> str:
    return f"{_PREFIX}{path}"


def _resolve(url: str, base: Path) -> str:
    path = path_of(url).expanduser()
    return url_of(path if path.is_absolute() else base / path)


def _open(url: str, readonly: bool) -> SQLiteArchive:
    return SQLiteArchive(path_of(url), readonly=readonly)


def open_store(path: str, schema: str) -> sqlite3.Connection:
    """A service's own SQLite file (the Status MA's link states, the lookup registry), or
    ``:memory:``: its directory made, WAL for a file, ``schema`` applied. One connection,
    shared by threads under the caller's lock. sqlite3.Error and OSError go to the caller."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10, check_same_thread=False)
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


class SQLiteArchive(rollups.RolledUp):
    """The embedded backend: one SQLite file in WAL mode."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.url = url_of(self.path)
        try:
            if readonly:
                if not _exists(self.path):
                    raise ArchiveError(
                        f"no archive at {self.path} (has `netsonde run` stored anything yet?)"
                    )
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
                try:
                    self._db.execute("SELECT value FROM meta WHERE name = 'schema_version'")
                except sqlite3.OperationalError as e:
                    self._db.close()
                    if "no such table" in str(e):  # created a moment ago, schema not yet in
                        raise ArchiveError(
                            f"no archive at {self.path} yet (still being created)"
                        ) from None
                    raise ArchiveError(
                        f"cannot read archive {self.path}: {e}{_why_unreadable(self.path)}"
                    ) from None
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                self._db.commit()
            # Portable store code (rollups) runs on this same connection.
            self._store = stores.SQLiteStore.over(self._db, str(self.path))
            if not readonly:
                stores.migrate(self._store, "rollups", rollups.MIGRATIONS)
        except sqlite3.Error as e:
            raise ArchiveError(f"cannot open archive {self.path}: {e}{_why(self.path)}") from None
        self._db.row_factory = sqlite3.Row

    def summaries(
        self, test_key: str, since_us: int, until_us: int, *, limit: int
    ) -> list[tuple[int, str]]:
        """(planned_us, summary JSON) of the finished runs of one test in [since, until)."""
        return self._db.execute(
            "SELECT r.planned_us, res.summary FROM runs r JOIN results res USING (run_id)"
            " WHERE r.test_key = ? AND r.planned_us >= ? AND r.planned_us < ?"
            " AND r.state = 'finished' ORDER BY r.planned_us LIMIT ?",
            (test_key, since_us, until_us, limit),
        ).fetchall()

    def interrupt(self) -> None:
        """Abort the query running on this connection (from another thread): a request that
        ran past its time limit must not keep the database busy."""
        self._db.interrupt()

    def close(self) -> None:
        self._db.close()

    # ---- writing -------------------------------------------------------------------------

    def register_tests(self, specs: Iterable[TestSpec], now_us: int) -> None:
        with self._db:
            self._db.executemany(_UPSERT_TEST, _test_rows(specs, now_us))

    def store_runs(self, runs: Sequence[Run]) -> int:
        """Store finished/missed runs in one transaction; returns how many were new."""
        with self._db:
            return self._insert_runs(runs)

    # ---- reading -------------------------------------------------------------------------

    def last_slots(self, keys: Iterable[str]) -> dict[str, int]:
        """The highest stored slot (of a run in any state) by test key; keys without runs are
        left out. What a restarted scheduler resumes from."""
        out: dict[str, int] = {}
        for key in dict.fromkeys(keys):
            row = self._db.execute(
                "SELECT max(slot) FROM runs WHERE test_key = ?", (key,)
            ).fetchone()
            if row[0] is not None:
                out[key] = row[0]
        return out

    def tests(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT t.*, (SELECT count(*) FROM runs r WHERE r.test_key = t.key) AS runs,"
            " (SELECT max(planned_us) FROM runs r WHERE r.test_key = t.key) AS last_run_us"
            " FROM tests t ORDER BY t.test_id, t.first_seen_us"
        ).fetchall()
        return [{**dict(r), "params": json.loads(r["params"])} for r in rows]

    def tests_of_tool(self, tool: str, key: str | None = None) -> list[dict[str, Any]]:
        """The tests of one tool (or the one with ``key``), without run statistics: cheap
        enough to ask on every request."""
        sql = "SELECT key, test_id, source, tool, target, params FROM tests WHERE tool = ?"
        args: list[Any] = [tool]
        if key is not None:
            sql += " AND key = ?"
            args.append(key)
        rows = self._db.execute(sql + " ORDER BY test_id, first_seen_us", args).fetchall()
        return [{**dict(r), "params": json.loads(r["params"])} for r in rows]

    def runs(
        self,
        test_id: str | None = None,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Runs with their results, oldest first, by test id (any key it had) and time range."""
        where: list[str] = []
        args: list[Any] = []
        if test_id is not None:
            where.append("t.test_id = ?")
            args.append(test_id)
        if since_us is not None:
            where.append("r.planned_us >= ?")
            args.append(since_us)
        if until_us is not None:
            where.append("r.planned_us < ?")
            args.append(until_us)
        sql = (
            "SELECT r.*, t.test_id, t.tool, t.target, res.sent, res.summary, res.samples,"
            " res.extra FROM runs r JOIN tests t ON t.key = r.test_key"
            " LEFT JOIN results res ON res.run_id = r.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.planned_us DESC LIMIT ?"
        )
        rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [_run_row(r) for r in reversed(rows)]

    # ---- the REST API's queries and store (services/archive/rest.py) ----------------------

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
        """Test metadata with run counts, ordered by (test_id, key).

        ``after`` is the (test_id, key) of the previous page's last row: keyset pagination stays
        right while tests are added, where an offset would skip or repeat rows.
        """
        where = _Where()
        where.maybe("t.key = ?", key)
        where.maybe("t.test_id = ?", test_id)
        where.maybe("instr(t.test_id, ?) > 0", test_id_contains)  # instr: no LIKE wildcards
        where.maybe("t.tool = ?", tool)
        where.maybe("t.target = ?", target)
        if after is not None:
            where.add("(t.test_id, t.key) > (?, ?)", *after)
        rows = self._query(
            "SELECT t.*, (SELECT count(*) FROM runs r WHERE r.test_key = t.key) AS runs,"
            " (SELECT max(planned_us) FROM runs r WHERE r.test_key = t.key) AS last_run_us"
            f" FROM tests t{where.sql} ORDER BY t.test_id, t.key LIMIT ? OFFSET ?",
            [*where.args, limit, offset],
        )
        return [{**dict(r), "params": json.loads(r["params"])} for r in rows]

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
        ordered by (planned_us, run_id).

        ``results_only`` keeps only runs with a result; ``samples`` also loads the per-packet
        samples (the bulk of a result, so only on request); ``after`` is the (planned_us, run_id)
        of the previous page's last row, in the order asked for.
        """
        where = _Where()
        where.maybe("t.test_id = ?", test_id)
        where.maybe("r.test_key = ?", test_key)
        if states:
            where.add(f"r.state IN ({', '.join('?' * len(states))})", *states)
        where.maybe("r.planned_us >= ?", since_us)
        where.maybe("r.planned_us < ?", until_us)
        if after is not None:
            where.add(f"(r.planned_us, r.run_id) {'<' if descending else '>'} (?, ?)", *after)
        order = "DESC" if descending else "ASC"
        rows = self._query(
            "SELECT r.*, t.test_id, t.tool, t.target, res.sent, res.summary,"
            f" {'res.samples' if samples else 'NULL'} AS samples,"
            f" {'res.extra' if samples else 'NULL'} AS extra"
            " FROM runs r JOIN tests t ON t.key = r.test_key"
            f" {'' if results_only else 'LEFT '}JOIN results res ON res.run_id = r.run_id"
            f"{where.sql} ORDER BY r.planned_us {order}, r.run_id {order} LIMIT ? OFFSET ?",
            [*where.args, limit, offset],
        )
        return [_run_row(r) for r in rows]

    def store_batch(self, specs: Iterable[TestSpec], runs: Sequence[Run], now_us: int) -> int:
        """Register ``specs`` and store ``runs`` in ONE transaction; returns how many runs were
        new (a run id already stored is left as it is).

        Nothing is written when a run names a test key that is neither in ``specs`` nor already
        in the archive (UnknownTestError), or when the write fails (ArchiveError): a caller that
        gets an answer knows that all of it is committed.
        """
        keys = sorted({r.test_key for r in runs})
        with self._archive_errors(), self._db:
            self._db.executemany(_UPSERT_TEST, _test_rows(specs, now_us))
            missing = [
                row[0]
                for row in self._db.execute(
                    "SELECT value FROM json_each(?) WHERE value NOT IN (SELECT key FROM tests)",
                    (json.dumps(keys),),
                )
            ]
            if missing:
                raise UnknownTestError(missing)  # leaving the `with` rolls the upsert back
            new = self._insert_runs(runs)
            self._db.execute(_COUNT_RECEIVED, (new,))
            return new

    def expire(self, before_us: int) -> int:
        """Remove the runs planned before ``before_us`` in bounded batches
        (``retention.expire``); the rollups are kept."""
        with self._archive_errors():
            return retention.expire(self._store, before_us)

    def received(self) -> int:
        """How many runs ``store_batch`` has stored, ever: counted in the archive because the
        API processes that store them are not the daemon that reports them."""
        row = self._query("SELECT value FROM meta WHERE name = 'runs_received'", ())
        return int(row[0][0]) if row else 0

    def _insert_runs(self, runs: Sequence[Run]) -> int:
        """Insert the runs whose id is not stored yet, each with its result; returns how many.

        First write wins, entirely: a run id already stored (or earlier in ``runs``) is skipped
        with its result, so a run stored as missed never gains the result of a later store of
        the same id as finished. One INSERT per run, because its row count says whether it was
        ours; the first takes the write lock, so no other writer comes between. Call inside a
        transaction."""
        new = [
            run
            for run, row in zip(runs, _run_rows(runs), strict=True)
            if self._db.execute(_INSERT_RUN, row).rowcount == 1
        ]
        self._db.executemany(_INSERT_RESULT, _result_rows(new))
        self._db.executemany(rollups.ENQUEUE, [(r.run_id, r.test_key, r.planned_us) for r in new])
        return len(new)

    def _query(self, sql: str, args: Sequence[Any]) -> list[sqlite3.Row]:
        with self._archive_errors():
            return self._db.execute(sql, args).fetchall()

    def _rollup_store(self) -> stores.Store:
        return self._store

    @contextlib.contextmanager
    def _archive_errors(self) -> Iterator[None]:
        """A locked or unreadable database is the archive's state, not a bug: say so as an
        ArchiveError (which the API answers with 503) instead of an internal error."""
        try:
            yield
        except sqlite3.OperationalError as e:
            raise ArchiveError(f"archive {self.path} unavailable: {e}") from None

    _store_errors = _archive_errors  # what rollups.RolledUp wraps its calls in


def _run_row(r: sqlite3.Row) -> dict[str, Any]:
    row = {k: r[k] for k in r.keys() if k not in ("summary", "samples", "extra")}  # noqa: SIM118
    row["values"] = jsontext.loads(r["summary"]) if r["summary"] else {}
    row["extra"] = jsontext.loads(r["extra"]) if r["extra"] else {}  # tool detail: hops, T1–T4…
    row["samples"] = [
        dict(zip(("seq", "rtt_ms", "ttl", "size", "recv_us"), s, strict=True))
        for s in (jsontext.loads(r["samples"]) if r["samples"] else [])
    ]
    return row


# ---- for the REST API's methods ----------------------------------------------------------------


_COUNT_RECEIVED = (
    "INSERT INTO meta VALUES ('runs_received', ?1) ON CONFLICT (name)"
    " DO UPDATE SET value = CAST(value AS INTEGER) + ?1"
)
_UPSERT_TEST = (
    "INSERT INTO tests (key, test_id, source, tool, target, params, first_seen_us, last_seen_us)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
    " test_id = excluded.test_id, last_seen_us = excluded.last_seen_us"
)
_INSERT_RUN = (
    "INSERT OR IGNORE INTO runs (run_id, test_key, slot, state, planned_us, actual_us, end_us,"
    " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_RESULT = (
    "INSERT OR IGNORE INTO results (run_id, sent, summary, samples, extra) VALUES (?, ?, ?, ?, ?)"
)


def _test_rows(specs: Iterable[TestSpec], now_us: int) -> list[tuple[Any, ...]]:
    return [
        (
            s.key,
            s.id,
            s.source,
            s.tool,
            s.target,
            json.dumps(s.params_dict(), sort_keys=True),
            now_us,
            now_us,
        )
        for s in specs
    ]


def _run_rows(runs: Iterable[Run]) -> list[tuple[Any, ...]]:
    return [
        (r.run_id, r.test_key, r.slot, str(r.state), r.planned_us, r.actual_us, r.end_us, r.error)
        for r in runs
    ]


def _result_rows(runs: Iterable[Run]) -> list[tuple[Any, ...]]:
    return [
        (
            r.run_id,
            r.result.sent,
            jsontext.dumps(r.result.values),
            jsontext.dumps([[p.seq, p.rtt_ms, p.ttl, p.size, p.recv_us] for p in r.result.replies]),
            jsontext.dumps(r.result.detail()),
        )
        for r in runs
        if r.result is not None
    ]


class _Where:
    """A WHERE clause built from optional conditions, with its arguments in order."""

    def __init__(self) -> None:
        self._conditions: list[str] = []
        self.args: list[Any] = []

    def add(self, condition: str, *args: Any) -> None:
        self._conditions.append(condition)
        self.args.extend(args)

    def maybe(self, condition: str, value: Any) -> None:
        """Add ``condition`` (one ``?``) unless ``value`` is None: an absent filter."""
        if value is not None:
            self.add(condition, value)

    @property
    def sql(self) -> str:
        return " WHERE " + " AND ".join(self._conditions) if self._conditions else ""


BACKEND = Backend(scheme="sqlite", form="sqlite:///PATH", resolve=_resolve, open=_open)
