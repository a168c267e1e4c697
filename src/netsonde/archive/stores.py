"""A store's tables on either backend: one small connection type for the archive's own tables
and for a service's (the Status MA's link states, the lookup registry), and the versioned
migrations that create and upgrade them.

SQL is written once with ``?`` placeholders and the SQL both SQLite and PostgreSQL speak
(``ON CONFLICT``, ``RETURNING``, ``BIGINT`` for microsecond times); where the two differ a
store asks ``store.dialect``. Every driver error comes out as :class:`StoreError`, so a
service catches one exception whatever backend it runs on.
"""

from __future__ import annotations

import abc
import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from netsonde.archive import pg
from netsonde.archive.base import ArchiveError

Dialect = Literal["sqlite", "postgresql"]


class StoreError(ArchiveError):
    """The store failed (locked, gone, full, a constraint); the message says why in one line."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Migration:
    """One step of a store's schema: ``version`` counts from 1; the SQL of each dialect may be
    several statements separated by ``;`` at line ends."""

    version: int
    sqlite: str
    postgresql: str

    def sql(self, dialect: Dialect) -> str:
        return self.sqlite if dialect == "sqlite" else self.postgresql


class Store(abc.ABC):
    """One connection, shared by a store's threads under its own lock."""

    dialect: Dialect
    location: str  # what errors name: a path, or the URL without secrets

    @abc.abstractmethod
    def cursor(self) -> Cursor: ...

    @abc.abstractmethod
    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        """One statement in its own transaction."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Cursor]:
        """A write transaction: committed when the block ends, rolled back on any exception."""

    @abc.abstractmethod
    def close(self) -> None: ...


# ---- SQLite -------------------------------------------------------------------------------------


class _SQLiteCursor:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> _SQLiteCursor:
        with _sqlite_errors():
            self._cur.execute(sql, args)
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> _SQLiteCursor:
        with _sqlite_errors():
            self._cur.executemany(sql, rows)
        return self

    def fetchone(self) -> Any:
        with _sqlite_errors():
            return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        with _sqlite_errors():
            return self._cur.fetchall()


@contextlib.contextmanager
def _sqlite_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise StoreError(str(e)) from None


class SQLiteStore(Store):
    dialect: Dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.location = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with _sqlite_errors():
            self.raw = sqlite3.connect(path, timeout=10, check_same_thread=False)
            if path != ":memory:":
                self.raw.execute("PRAGMA journal_mode=WAL")
                self.raw.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.RLock()

    @classmethod
    def over(cls, raw: sqlite3.Connection, location: str) -> SQLiteStore:
        """A store over a connection opened elsewhere (the SQLite archive's own), so that
        portable store code (migrations, rollups) runs on it; closing stays the owner's job."""
        store = cls.__new__(cls)
        store.location, store.raw, store._lock = location, raw, threading.RLock()
        return store

    def cursor(self) -> _SQLiteCursor:
        return _SQLiteCursor(self.raw.cursor())

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> _SQLiteCursor:
        with self._lock, _sqlite_errors(), self.raw:
            return _SQLiteCursor(self.raw.execute(sql, args))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_SQLiteCursor]:
        with self._lock:
            cur = self.cursor()
            cur.execute("BEGIN IMMEDIATE")  # the write lock first: no upgrade deadlock later
            try:
                yield cur
            except BaseException:
                self.raw.rollback()
                raise
            with _sqlite_errors():
                self.raw.commit()

    def close(self) -> None:
        self.raw.close()


# ---- PostgreSQL ---------------------------------------------------------------------------------

_QMARK = re.compile(r"\?")


def to_format(sql: str) -> str:
    """``?`` placeholders → psycopg's ``%s`` (a literal ``%`` doubled first)."""
    return _QMARK.sub("%s", sql.replace("%", "%%"))


class _PgCursor:
    def __init__(self, cur: Any) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> _PgCursor:
        with _pg_errors():
            self._cur.execute(to_format(sql), args or None)
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> _PgCursor:
        with _pg_errors():
            self._cur.executemany(to_format(sql), rows)
        return self

    def fetchone(self) -> Any:
        with _pg_errors():
            return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        with _pg_errors():
            return list(self._cur.fetchall())


@contextlib.contextmanager
def _pg_errors() -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.Error as e:
        raise StoreError(pg.error_text(e)) from None


class PgStore(Store):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.location = pg.shown(url)
        self.raw = pg.connect(url)
        self._lock = threading.RLock()

    def cursor(self) -> _PgCursor:
        return _PgCursor(self.raw.cursor())

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> _PgCursor:
        with self._lock:
            return self.cursor().execute(sql, args)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_PgCursor]:
        with self._lock, _pg_errors(), self.raw.transaction():
            yield self.cursor()

    def close(self) -> None:
        self.raw.close()


# ---- opening and migrating ----------------------------------------------------------------------


def open_store(location: str, component: str, migrations: Sequence[Migration]) -> Store:
    """A store at ``location`` (a SQLite path, ``:memory:``, or a ``postgresql://`` URL) with
    ``component``'s tables migrated to the newest of ``migrations``; StoreError (or
    ArchiveError when the server cannot be reached) says why it cannot be opened."""
    store: Store = PgStore(location) if pg.is_url(location) else SQLiteStore(location)
    try:
        migrate(store, component, migrations)
    except BaseException:
        store.close()
        raise
    return store


_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS netsonde_schema"
    " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)


def migrate(store: Store, component: str, migrations: Sequence[Migration]) -> int:
    """Apply the migrations of ``component`` newer than the store's, each in the transaction
    that records it; returns the version now. A store written by a newer netsonde (a version
    this one does not know) is refused rather than misread."""
    newest = max((m.version for m in migrations), default=0)
    with store.transaction() as cur:
        if store.dialect == "postgresql":
            # Two processes opening one database at once would both CREATE: one at a time.
            cur.execute("SELECT pg_advisory_xact_lock(7100, 0)")
        cur.execute(_VERSIONS)
        row = cur.execute(
            "SELECT version FROM netsonde_schema WHERE component = ?", (component,)
        ).fetchone()
        have = int(row[0]) if row else 0
        if have > newest:
            raise StoreError(
                f"{store.location}: the {component} schema is version {have}, newer than this"
                f" netsonde knows ({newest}); upgrade netsonde"
            )
        for m in sorted(migrations, key=lambda m: m.version):
            if m.version <= have:
                continue
            for statement in _statements(m.sql(store.dialect)):
                cur.execute(statement)
        if newest > have:
            cur.execute(
                "INSERT INTO netsonde_schema (component, version) VALUES (?, ?)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, newest),
            )
    return max(have, newest)


def _statements(script: str) -> list[str]:
    """A migration's statements: split at ``;`` that ends a line (no function bodies here)."""
    return [s.strip() for s in re.split(r";\s*\n", script + "\n") if s.strip()]
