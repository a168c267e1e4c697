"""The embedded archive: one SQLite file in WAL mode.

Tests are stored under their stable key (same tool, target and parameters → same key), runs
under their stable run id, so storing the same run twice is a no-op. Per-packet samples are
kept with each result as a compact JSON array, as the PingER MA kept its rtts/seqNums CSVs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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


class ArchiveError(Exception):
    """The archive cannot be opened or used; the message says why, in one line."""


class SQLiteArchive:
    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.exists():
                    raise ArchiveError(
                        f"no archive at {self.path} (has `netsonde run` stored anything yet?)"
                    )
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
                try:
                    self._db.execute("SELECT value FROM meta WHERE name = 'schema_version'")
                except sqlite3.OperationalError:  # created a moment ago, schema not yet in
                    self._db.close()
                    raise ArchiveError(
                        f"no archive at {self.path} yet (still being created)"
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
        except sqlite3.Error as e:
            raise ArchiveError(f"cannot open archive {self.path}: {e}") from None
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

    def close(self) -> None:
        self._db.close()

    # ---- writing -------------------------------------------------------------------------

    def register_tests(self, specs: Iterable[TestSpec], now_us: int) -> None:
        rows = [
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
        with self._db:
            self._db.executemany(
                "INSERT INTO tests VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " test_id = excluded.test_id, last_seen_us = excluded.last_seen_us",
                rows,
            )

    def store_runs(self, runs: Sequence[Run]) -> int:
        """Store finished/missed runs in one transaction; returns how many were new."""
        run_rows = [
            (
                r.run_id,
                r.test_key,
                r.slot,
                str(r.state),
                r.planned_us,
                r.actual_us,
                r.end_us,
                r.error,
            )
            for r in runs
        ]
        result_rows = [
            (
                r.run_id,
                r.result.sent,
                json.dumps(r.result.values),
                json.dumps([[p.seq, p.rtt_ms, p.ttl, p.size, p.recv_us] for p in r.result.replies]),
                json.dumps(r.result.extra),
            )
            for r in runs
            if r.result is not None
        ]
        with self._db:
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", run_rows
            )
            new = self._db.total_changes - before
            self._db.executemany(
                "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?)", result_rows
            )
        return new

    # ---- reading -------------------------------------------------------------------------

    def tests(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT t.*, (SELECT count(*) FROM runs r WHERE r.test_key = t.key) AS runs,"
            " (SELECT max(planned_us) FROM runs r WHERE r.test_key = t.key) AS last_run_us"
            " FROM tests t ORDER BY t.test_id, t.first_seen_us"
        ).fetchall()
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
        where, args = [], []
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
            "SELECT r.*, t.test_id, t.tool, t.target, res.sent, res.summary, res.samples"
            " FROM runs r JOIN tests t ON t.key = r.test_key"
            " LEFT JOIN results res ON res.run_id = r.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.planned_us DESC LIMIT ?"
        )
        rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [_run_row(r) for r in reversed(rows)]


def _run_row(r: sqlite3.Row) -> dict[str, Any]:
    row = {k: r[k] for k in r.keys() if k not in ("summary", "samples")}  # noqa: SIM118 (Row)
    row["values"] = json.loads(r["summary"]) if r["summary"] else {}
    row["samples"] = [
        dict(zip(("seq", "rtt_ms", "ttl", "size", "recv_us"), s, strict=True))
        for s in (json.loads(r["samples"]) if r["samples"] else [])
    ]
    return row
