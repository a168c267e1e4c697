"""The outbox file: its SQLite schema, how it is opened, and its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, NamedTuple

DB_BUSY_MS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    planned_us INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    test_key TEXT NOT NULL,
    queued_us INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_by_time ON outbox (planned_us, run_id);
CREATE INDEX IF NOT EXISTS outbox_by_queued ON outbox (queued_us);
CREATE TABLE IF NOT EXISTS tests (key TEXT PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    run_id TEXT NOT NULL,
    test_key TEXT NOT NULL,
    planned_us INTEGER NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    failed_us INTEGER NOT NULL
);
"""


class Entry(NamedTuple):
    """One run, encoded: a row of the outbox, or of dead_letter when ``reason`` is set."""

    planned_us: int
    run_id: str
    test_key: str
    queued_us: int
    payload: bytes
    reason: str | None = None


class Row(NamedTuple):
    """An outbox row, as delivery reads it."""

    id: int
    planned_us: int
    run_id: str
    test_key: str
    payload: bytes


def open_outbox(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=DB_BUSY_MS / 1000, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut, too
    db.executescript(_SCHEMA)
    return db


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """The runs refused for good, oldest first, from an outbox file (read-only)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=DB_BUSY_MS / 1000)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM dead_letter ORDER BY rowid").fetchall()
        return [dict(r) for r in rows]
    except sqlite3.OperationalError:  # no table yet
        return []
    finally:
        db.close()
