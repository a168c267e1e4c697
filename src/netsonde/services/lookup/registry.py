"""The lookup registry: records with leases, in a SQLite file (WAL), ``":memory:"``, or tables
in a PostgreSQL database (a fleet's archive), through ``archive.stores``: SQL written once
with ``?`` placeholders, the schema the versioned ``MIGRATIONS``.

A record lives until its ``expires`` (unix seconds); every read filters on ``expires > now``
itself, so an expired record is never answered, whenever the cleaner last ran (the sLS kept
them visible up to an hour). Registering the same thing again (same type and locator values,
``records.RecordIn.stable_key``) is an upsert that keeps the record's uri, not an error.

Values are kept twice: the record as JSON (what is answered) and one row per value (what
queries match), ASCII letters in lower case (what SQLite's ``NOCASE`` and ``LIKE`` fold; the
pattern is folded the same way, so a PostgreSQL ``LIKE`` walks a plain index). Queries match
values case-insensitively, ``*`` and ``?`` as wildcards. One connection, guarded by a lock:
an instance may be shared by threads.

NMWG registrations (``nmwg.py``) live here too: every record of one registration carries its
``lease_key`` (the seed's lsKey) and one lease (``register_group``, ``renew_group``,
``delete_group``); a JSON ``service`` record gets the lease key of its locator, so NMWG
keepalives and deregistrations reach it. ``xml`` keeps an NMWG item as registered (None: the
record is rendered from its values, ``documents.render``). ``record_changes`` logs which
documents (lease key, or uri of a record without one) changed, so the XQuery's collection is
rebuilt only where something did (``changes_since``, ``documents``); a renewal changes no
content and is not logged.

Writes go one at a time on both backends (SQLite's write lock; on PostgreSQL an advisory lock
held to the commit, ``_WRITER``): the change log's numbers then come in commit order, and two
API workers registering one lease key at once neither deadlock nor lose a record.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from netsonde.archive import pg
from netsonde.archive.base import ArchiveError
from netsonde.archive.stores import (
    Cursor,
    Dialect,
    Migration,
    SQLiteStore,
    Store,
    StoreError,
    open_store,
)
from netsonde.nmwg.ls import ls_key
from netsonde.services.lookup.documents import render, store_document
from netsonde.services.lookup.records import RecordIn, values_json
from netsonde.units import check_epoch

DEFAULT_REGISTRANT = "token"  # who registered, when the client names nobody
MAX_FILTERS = 32  # keys in one query
MAX_PATTERNS = 32  # values of one key in one query
MAX_PATTERN_CHARS = 256
MAX_STARS = 8  # each `*` multiplies the work of matching a value
MAX_LIMIT = 1000
PROBE_MAX = 50_000  # index entries a query reads at most to tell a common value from a rare one

COMPONENT = "lookup"  # the registry's name in netsonde_schema
_SQLITE_V1 = """
CREATE TABLE IF NOT EXISTS records (
    uri TEXT PRIMARY KEY,
    stable_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    registrant TEXT NOT NULL,
    body TEXT NOT NULL,
    created INTEGER NOT NULL,
    renewed INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    lease_key TEXT,
    xml TEXT
);
CREATE INDEX IF NOT EXISTS records_expires ON records (expires);
CREATE INDEX IF NOT EXISTS records_registrant ON records (registrant, expires);
CREATE TABLE IF NOT EXISTS record_values (
    uri TEXT NOT NULL REFERENCES records (uri) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL COLLATE NOCASE
);
CREATE INDEX IF NOT EXISTS record_values_match ON record_values (name, value);
CREATE INDEX IF NOT EXISTS record_values_uri ON record_values (uri);
CREATE INDEX IF NOT EXISTS records_created ON records (created);
CREATE TABLE IF NOT EXISTS record_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_lease_key ON records (lease_key, expires);
"""
# PostgreSQL has no rowid: its records get a column of that name (insertion order, as SQLite's
# rowid), so that the SQL ordering by it reads the same on both. Values are stored folded
# (``fold``): text_pattern_ops lets LIKE 'abc%' walk the index whatever the collation.
_POSTGRESQL_V1 = """
CREATE TABLE records (
    uri TEXT PRIMARY KEY,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    stable_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    registrant TEXT NOT NULL,
    body TEXT NOT NULL,
    created BIGINT NOT NULL,
    renewed BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    lease_key TEXT,
    xml TEXT
);
CREATE INDEX records_expires ON records (expires);
CREATE INDEX records_registrant ON records (registrant, expires);
CREATE TABLE record_values (
    uri TEXT NOT NULL REFERENCES records (uri) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX record_values_match ON record_values (name, value text_pattern_ops);
CREATE INDEX record_values_uri ON record_values (uri);
CREATE INDEX records_created ON records (created, rowid);
CREATE TABLE record_changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX records_lease_key ON records (lease_key, expires);
"""
# Version 1 is the registry as netsonde made it before stores were versioned: IF NOT EXISTS
# lets such a SQLite file open unchanged (one of the first release gets its columns first,
# ``_adopt_first_release``).
MIGRATIONS = (Migration(1, sqlite=_SQLITE_V1, postgresql=_POSTGRESQL_V1),)
# Columns the first release lacked: ALTERed into such a file when it is opened.
_ADDED_COLUMNS = (("lease_key", "TEXT"), ("xml", "TEXT"))
_COLS = "uri, type, registrant, body, created, renewed, expires"
_DOC = "COALESCE(lease_key, uri)"  # the collection document a record belongs to
_PER_STATEMENT = 5000  # values bound in one statement (under SQLite's variable limit)
_BUSY_SECONDS = 10  # waiting for another process's write (sqlite3.connect's timeout)
CHANGES_KEPT = 3600  # seconds of change log kept: a mirror older than that reloads it all
# PostgreSQL advisory lock (space, key) every registry write holds to its commit; the space is
# the lookup registry's (7100 is the archive's and its migrations', 7101 the link status
# store's).
_WRITER = "SELECT pg_advisory_xact_lock(7102, 0)"
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(value: str) -> str:
    """``value`` as it is matched: ASCII letters in lower case (SQLite's NOCASE; other letters
    are kept as they are, on both backends)."""
    return value.translate(_FOLD)


def _second(now: float) -> int:
    """A time as the whole second to compare with: for an integer ``expires``, ``expires >
    now`` is ``expires > floor(now)`` (and an integer keeps PostgreSQL on its bigint indexes)."""
    return math.floor(now)


def time_ordered_uuid(now: float | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): milliseconds since the epoch, then 74 random bits. Records made
    together sort together, so their uris land on a few pages of the uri indexes (random
    uuid4s put each record of a registration on a page of its own, read at random: at
    10,000 services × 20, ~185 instead of ~110 pages written per registration)."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62)
    return uuid.UUID(int=value | (rand & ((1 << 62) - 1)))


class RegistryError(ValueError):
    """A request the registry refuses; the message names the limit."""


class LimitError(RegistryError):
    """A registrant holds as many live records as it may."""


class RegistryUnavailable(RegistryError, StoreError):
    """The registry cannot be opened (a file, or a PostgreSQL server that is down): the NMWG
    LS answers it as a RegistryError (its "could not be opened" code), REST as a StoreError
    (503)."""


@dataclass(frozen=True, slots=True)
class Record:
    uri: str
    type: str
    values: Mapping[str, tuple[str, ...]]
    registrant: str
    created: int
    renewed: int
    expires: int


@dataclass(frozen=True, slots=True)
class Registered:
    record: Record
    new: bool  # False: the same thing was registered before (an upsert)


@dataclass(frozen=True, slots=True)
class Member:
    """A record of an NMWG registration: the record, its XML as registered, and what makes
    it the same item again (None: the record's own ``stable_key``)."""

    record: RecordIn
    xml: str
    stable_key: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    """A record to upsert, prepared (and its size checked) before the transaction."""

    record: RecordIn
    stable_key: str
    body: str  # the values as JSON
    xml: str | None


@dataclass(frozen=True, slots=True)
class Document:
    """One document of the XQuery's collection: its XML (None: nothing live is left in it)
    and when its first live record expires."""

    xml: str | None
    expires: int


@dataclass(frozen=True, slots=True)
class Query:
    """``filters``: key → patterns (a key matches when any of its patterns does); ``operator``
    all: every key must match, any: one is enough. ``type`` always applies."""

    filters: Mapping[str, Sequence[str]]
    operator: Literal["all", "any"] = "all"
    type: str | None = None
    limit: int = 100
    offset: int = 0


def _row(r: Sequence[Any]) -> Record:
    body = {k: tuple(v) for k, v in json.loads(r[3]).items()}
    return Record(r[0], r[1], body, r[2], r[4], r[5], r[6])


def like_pattern(pattern: str) -> str:
    """``*`` / ``?`` wildcards → a folded LIKE pattern (``\\`` escapes LIKE's own ``%`` and
    ``_``)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegistryError(f"a query value is longer than {MAX_PATTERN_CHARS} characters")
    if "\0" in pattern:
        raise RegistryError("a query value holds a NUL character")
    while "**" in pattern:
        pattern = pattern.replace("**", "*")
    if pattern.count("*") > MAX_STARS:
        raise RegistryError(f"a query value has more than {MAX_STARS} '*' wildcards")
    escaped = fold(pattern).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _match(patterns: Sequence[str]) -> str:
    """A value filter on ``record_values v``: its name, then any of ``patterns`` (LIKE)."""
    return "v.name = ? AND (" + " OR ".join(["v.value LIKE ? ESCAPE '\\'"] * len(patterns)) + ")"


def common_threshold(limit: int, offset: int, records: int) -> int:
    """How many matches make a value common. Walking the records in page order reads about
    (limit + offset) × records / matches of them; collecting the matches reads and sorts
    ``matches``: the two cost the same at sqrt((limit + offset) × records)."""
    return max(1, min(PROBE_MAX, math.isqrt((limit + offset) * records)))


@dataclass(frozen=True, slots=True)
class Planner:
    """What a query tells the planner. SQLite's is told which index to walk (``INDEXED BY``;
    ``+`` before a column keeps it off an index); PostgreSQL's chooses by its statistics and
    is told nothing."""

    hints: bool

    @classmethod
    def of(cls, dialect: Dialect) -> Planner:
        return cls(hints=dialect == "sqlite")

    def table(self, table: str, index: str) -> str:
        return f"{table} INDEXED BY {index}" if self.hints else table

    def bare(self, column: str) -> str:
        return f"+{column}" if self.hints else column


def _query_sql(
    q: Query, filters: Sequence[tuple[str, list[str]]], common: Sequence[bool], planner: Planner
) -> tuple[str, list[object]]:
    """The SELECT of a query (its arguments after ``now``; ``limit`` and ``offset`` last).

    A rare filter is one uncorrelated IN, run once on record_values_match, whose matches are
    sorted. When the matches are many (every filter common with ``all``, one with ``any``)
    the records are walked in page order on records_created instead, each tested on
    record_values_uri, so the first page of a value half the registry shares costs a page's
    worth of records, not every match. With ``all``, a common filter beside a rare one is
    tested on the rare one's matches the same way."""
    walk = bool(filters) and (all(common) if q.operator == "all" else any(common))
    where: list[str] = [f"{planner.bare('expires')} > ?"]
    args: list[object] = []
    if q.type is not None:
        where.append("type = ?")
        args.append(q.type)
    tests = []
    for (name, patterns), many in zip(filters, common, strict=True):
        if walk or (many and q.operator == "all"):
            values = planner.table("record_values v", "record_values_uri")
            tests.append(
                f"EXISTS (SELECT 1 FROM {values} WHERE v.uri = r.uri AND {_match(patterns)})"
            )
        else:
            tests.append(f"r.uri IN (SELECT v.uri FROM record_values v WHERE {_match(patterns)})")
        args += [name, *patterns]
    if tests:
        where.append("(" + (" AND " if q.operator == "all" else " OR ").join(tests) + ")")
    source = planner.table("records r", "records_created") if walk else "records r"
    sql = (
        f"SELECT {_COLS} FROM {source} WHERE {' AND '.join(where)}"
        " ORDER BY created, rowid LIMIT ? OFFSET ?"
    )
    return sql, args


def _common(db: Store, name: str, patterns: Sequence[str], many: int) -> bool:
    """Whether a filter matches at least ``many`` values (the probe reads no more)."""
    sql = (
        "SELECT count(*) FROM"
        f" (SELECT 1 FROM record_values v WHERE {_match(patterns)} LIMIT ?) AS found"
    )
    return bool(db.execute(sql, [name, *patterns, many]).fetchone()[0] >= many)


def _settings(store: Store) -> None:
    """A connection's own settings (not the schema's: each connection needs them)."""
    if store.dialect == "postgresql":
        # A LIKE pattern walks the index only when planned with its value: psycopg prepares
        # a statement run five times, and PostgreSQL would then plan it without.
        store.execute("SET plan_cache_mode = force_custom_plan")
        return
    store.execute("PRAGMA foreign_keys = ON")  # record_values go with their record
    # A registration touches index pages all over the file (random uris and keys): a longer
    # WAL between checkpoints writes each page once for many registrations, and a larger
    # cache keeps the indexes in memory (at 200,000 records: 150 instead of 90 registrations
    # of 20 items a second).
    store.execute("PRAGMA wal_autocheckpoint = 10000")
    store.execute("PRAGMA cache_size = -65536")


def _chunks(items: Sequence[Any], width: int = 1) -> Iterator[tuple[str, list[Any]]]:
    """``items`` a statement's worth at a time, each with its ``?`` marks ("?,?" for ``IN``;
    with ``width``, "(?, ?), (?, ?)" for a multi-row ``VALUES``). On PostgreSQL a statement
    is a round trip: one per chunk, not one per item."""
    one = "?" if width == 1 else "(" + ", ".join("?" * width) + ")"
    per = max(1, _PER_STATEMENT // width)
    for n in range(0, len(items), per):
        chunk = list(items[n : n + per])
        yield ", ".join([one] * len(chunk)), chunk


def _insert(cur: Cursor, head: str, rows: Sequence[Sequence[object]]) -> None:
    """``rows`` inserted by ``head`` (``INSERT INTO t (a, b)``), many rows a statement."""
    if rows:
        for marks, chunk in _chunks(rows, len(rows[0])):
            cur.execute(f"{head} VALUES {marks}", [v for row in chunk for v in row])


def _adopt_first_release(path: str) -> None:
    """Add the columns a SQLite file of the registry's first release lacks, so that migration
    1 (IF NOT EXISTS throughout) finds today's tables. No PostgreSQL registry is that old."""
    if path == ":memory:" or not os.path.exists(path):
        return
    store = SQLiteStore(path)

    def missing(cur: Cursor) -> list[tuple[str, str]]:
        have = {row[1] for row in cur.execute("PRAGMA table_info(records)").fetchall()}
        return [(n, kind) for n, kind in _ADDED_COLUMNS if have and n not in have]

    try:
        if missing(store.cursor()):
            # Again under the write lock: another process opening it may have added them.
            with store.transaction() as cur:
                for name, kind in missing(cur):
                    cur.execute(f"ALTER TABLE records ADD COLUMN {name} {kind}")
    finally:
        store.close()


class LookupRegistry:
    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        ttl: int = 7200,
        max_ttl: int = 86400,
        max_records_per_registrant: int = 1000,
        max_record_bytes: int = 64 * 1024,
    ) -> None:
        """``path``: a SQLite file, ``":memory:"``, or a ``postgresql://`` URL."""
        self.path = str(path)
        self.ttl, self.max_ttl = ttl, max_ttl
        self.max_records_per_registrant = max_records_per_registrant
        self.max_record_bytes = max_record_bytes
        self._lock = threading.Lock()
        self._db = self._open()
        self.dialect: Dialect = self._db.dialect
        self._planner = Planner.of(self.dialect)
        self._dropped = False  # the connection may be lost: open a new one first

    def _open(self) -> Store:
        """The store, migrated, with its connection's settings; RegistryUnavailable says why
        it cannot be opened."""
        try:
            if not pg.is_url(self.path):
                _adopt_first_release(self.path)
            store = open_store(self.path, COMPONENT, MIGRATIONS)
            try:
                _settings(store)
            except BaseException:
                store.close()
                raise
        except (ArchiveError, OSError) as e:
            shown = pg.shown(self.path) if pg.is_url(self.path) else self.path
            raise RegistryUnavailable(f"cannot open lookup registry {shown}: {e}") from None
        return store

    @contextmanager
    def _conn(self) -> Iterator[Store]:
        """The store, under the lock. On PostgreSQL a statement that failed may have lost the
        connection (the server restarted, or ended it): the next call opens a new one, where
        the dead one would fail every request of this thread from then on."""
        with self._lock:
            if self._dropped:
                old, self._db = self._db, self._open()
                self._dropped = False
                with contextlib.suppress(StoreError):
                    old.close()
            try:
                yield self._db
            except StoreError:
                self._dropped = self.dialect == "postgresql"
                raise

    def close(self) -> None:
        """Close; a SQLite file first gets its WAL written into it (SQLite does that only when
        the last connection closes): the file alone is then the whole registry, to copy or
        back up."""
        with self._lock:
            if self.dialect == "sqlite":
                with contextlib.suppress(StoreError):
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """A write transaction, the only writer of the registry while it runs."""
        with self._conn() as db, contextlib.ExitStack() as stack:
            cur = self._begin(db, stack)
            if self.dialect == "postgresql":
                cur.execute(_WRITER)
            yield cur

    def _begin(self, db: Store, stack: contextlib.ExitStack) -> Cursor:
        """The store's transaction, entered on ``stack``. On SQLite its BEGIN IMMEDIATE is
        polled every millisecond while another process writes: SQLite's own busy wait sleeps
        up to 100 ms a try, so two API workers registering at once left the file idle while
        one slept (p99 of a registration over a second)."""
        if db.dialect != "sqlite":
            return stack.enter_context(db.transaction())
        end = time.monotonic() + _BUSY_SECONDS
        db.cursor().execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    return stack.enter_context(db.transaction())
                except StoreError as e:
                    if "locked" not in str(e) or time.monotonic() >= end:
                        raise
                time.sleep(0.001)
        finally:
            db.cursor().execute(f"PRAGMA busy_timeout = {_BUSY_SECONDS * 1000}")

    def _read(self, sql: str, args: Sequence[object]) -> list[Any]:
        with self._conn() as db:
            return db.execute(sql, args).fetchall()

    # ---- leases ------------------------------------------------------------------------------

    def lease(self, asked: float | None, now: float) -> tuple[int, int]:
        """(now, expires) in whole seconds: ``asked`` (default ``ttl``) capped at ``max_ttl``."""
        if asked is not None and not (math.isfinite(asked) and asked > 0):
            raise RegistryError(f"ttl must be a positive number of seconds, got {asked}")
        seconds = min(self.max_ttl, math.ceil(asked) if asked is not None else self.ttl)
        start = int(check_epoch(now, "now"))
        expires = int(check_epoch(start + seconds, "expires"))
        return start, expires

    def _entry(self, record: RecordIn, stable_key: str | None, xml: str | None) -> _Entry:
        """``record`` ready to upsert; RegistryError beyond ``max_record_bytes``."""
        body = values_json(record.values)
        if any("\0" in v for vs in record.values.values() for v in vs):
            # PostgreSQL's text holds no NUL: refused on both backends alike.
            raise RegistryError("a record value holds a NUL character")
        size = max(len(body.encode()), len(xml.encode()) if xml else 0)
        if size > self.max_record_bytes:
            raise RegistryError(
                f"record of {size} bytes: more than max_record_bytes ({self.max_record_bytes})"
            )
        return _Entry(record, stable_key or record.stable_key(), body, xml)

    def _check_quota(self, cur: Cursor, registrant: str, start: int, adding: int) -> None:
        (held,) = cur.execute(
            "SELECT count(*) FROM records WHERE registrant = ? AND expires > ?",
            (registrant, start),
        ).fetchone()
        if held + adding > self.max_records_per_registrant:
            raise LimitError(
                f"registrant {registrant!r} holds {held} live records: the most"
                f" max_records_per_registrant ({self.max_records_per_registrant}) allows"
            )

    @staticmethod
    def _log(cur: Cursor, docs: Sequence[str], at: int) -> None:
        _insert(cur, "INSERT INTO record_changes (doc, at)", [(d, at) for d in set(docs)])

    def _upsert(
        self,
        cur: Cursor,
        entries: Sequence[_Entry],
        *,
        registrant: str,
        start: int,
        expires: int,
        lease_key: str | None,
    ) -> tuple[list[tuple[Record, bool]], list[str]]:
        """Store ``entries`` (a few statements for all of them): each record stored with
        whether it is new, then the documents they changed. An entry whose stable key is
        registered already (live or expired) updates that record and keeps its uri."""
        latest = {e.stable_key: e for e in entries}  # sent twice: the last, in the first place
        keys = list(latest)
        old: dict[str, tuple[str, int, int, str | None]] = {}
        for marks, chunk in _chunks(keys):
            sql = (
                "SELECT stable_key, uri, created, expires, lease_key FROM records"
                f" WHERE stable_key IN ({marks})"
            )
            old.update((r[0], tuple(r[1:])) for r in cur.execute(sql, chunk).fetchall())
        inserts, updates, stale, values = [], [], [], []
        kept: list[tuple[Record, bool]] = []
        changed: list[str] = []
        for key, e in latest.items():
            found = old.get(key)
            if found is None:
                uri, created = f"lookup/{e.record.type}/{time_ordered_uuid()}", start
                row = (key, lease_key, e.xml, uri, e.record.type, registrant, e.body)
                inserts.append((*row, created, start, expires))
                changed.append(lease_key or uri)
            else:
                uri = found[0]
                created = found[1] if found[2] > start else start  # expired: a new one
                updates.append((registrant, e.body, created, start, expires, lease_key, e.xml, uri))
                stale.append(uri)
                changed += [found[3] or uri, lease_key or uri]
            values += [(uri, k, fold(v)) for k, vs in e.record.values.items() for v in vs]
            record = Record(
                uri, e.record.type, e.record.values, registrant, created, start, expires
            )
            kept.append((record, found is None or found[2] <= start))
        _insert(cur, f"INSERT INTO records (stable_key, lease_key, xml, {_COLS})", inserts)
        cur.executemany(
            "UPDATE records SET registrant = ?, body = ?, created = ?, renewed = ?,"
            " expires = ?, lease_key = ?, xml = ? WHERE uri = ?",
            updates,
        )
        for marks, chunk in _chunks(stale):
            cur.execute(f"DELETE FROM record_values WHERE uri IN ({marks})", chunk)
        _insert(cur, "INSERT INTO record_values (uri, name, value)", values)
        return kept, changed

    def register(
        self,
        record: RecordIn,
        *,
        registrant: str = DEFAULT_REGISTRANT,
        ttl: float | None = None,
        now: float | None = None,
    ) -> Registered:
        """Register ``record``, or renew and update the live-or-expired record of the same
        thing (same uri). Refused beyond ``max_record_bytes`` or the registrant's quota.
        A ``service`` record joins the lease key of its locator (``ls_key``)."""
        entry = self._entry(record, None, None)
        start, expires = self.lease(ttl, time.time() if now is None else now)
        key = entry.stable_key
        locators = record.values.get("service-locator") if record.type == "service" else None
        lease_key = ls_key(locators[0]) if locators else None
        with self._transaction() as cur:
            old = cur.execute(
                "SELECT registrant, expires FROM records WHERE stable_key = ?", (key,)
            ).fetchone()
            if not (old is not None and old[0] == registrant and old[1] > start):
                self._check_quota(cur, registrant, start, 1)
            [(kept, new)], changed = self._upsert(
                cur,
                [entry],
                registrant=registrant,
                start=start,
                expires=expires,
                lease_key=lease_key,
            )
            self._log(cur, changed, start)
        return Registered(kept, new=new)

    # ---- NMWG registrations: records sharing one lease key -------------------------------------

    def _group_live(self, cur: Cursor, lease_key: str, at: int) -> bool:
        found = cur.execute(
            "SELECT 1 FROM records WHERE lease_key = ? AND expires > ? LIMIT 1", (lease_key, at)
        ).fetchone()
        return found is not None

    def group_live(self, lease_key: str, now: float | None = None) -> bool:
        """Whether ``lease_key`` names a live registration."""
        at = _second(time.time() if now is None else now)
        return bool(
            self._read(
                "SELECT 1 FROM records WHERE lease_key = ? AND expires > ? LIMIT 1",
                (lease_key, at),
            )
        )

    def group_service(self, lease_key: str, now: float | None = None) -> Record | None:
        """The live service record of ``lease_key``."""
        at = _second(time.time() if now is None else now)
        rows = self._read(
            f"SELECT {_COLS} FROM records WHERE lease_key = ? AND type = 'service'"
            " AND expires > ? ORDER BY rowid LIMIT 1",
            (lease_key, at),
        )
        return _row(rows[0]) if rows else None

    def register_group(
        self,
        lease_key: str,
        members: Sequence[Member],
        *,
        service: Member | None = None,
        replaces: str | None = None,
        registrant: str = DEFAULT_REGISTRANT,
        ttl: float | None = None,
        now: float | None = None,
    ) -> int | None:
        """Register ``members`` (and ``service``) under ``lease_key``, renewing every record of
        it, in one transaction; how many members, or None when the key is not live.

        ``service`` given: a new registration (or a refresh of the live one); without it the
        key must be live (an append). ``replaces``: a live key whose records are removed first
        (the seed's clobber; None when it is not live). Members already registered (same
        ``stable_key``) are updated, not doubled."""
        entries = [self._entry(m.record, m.stable_key, m.xml) for m in members]
        if service is not None:
            entries.insert(0, self._entry(service.record, service.stable_key, service.xml))
        start, expires = self.lease(ttl, time.time() if now is None else now)
        with self._transaction() as cur:
            changed = [lease_key]
            if replaces is not None:
                if not self._group_live(cur, replaces, start):
                    return None
                cur.execute("DELETE FROM records WHERE lease_key = ?", (replaces,))
                changed.append(replaces)
            elif service is None and not self._group_live(cur, lease_key, start):
                return None
            _, docs = self._upsert(
                cur,
                entries,
                registrant=registrant,
                start=start,
                expires=expires,
                lease_key=lease_key,
            )
            changed += docs
            # The rest of the key's records (those just stored have this lease already).
            cur.execute(
                "UPDATE records SET renewed = ?, expires = ? WHERE lease_key = ? AND expires > ?"
                " AND (renewed != ? OR expires != ?)",
                (start, expires, lease_key, start, start, expires),
            )
            self._check_quota(cur, registrant, start, 0)
            self._log(cur, changed, start)
        return len(members)

    def renew_group(
        self, lease_key: str, ttl: float | None = None, now: float | None = None
    ) -> int:
        """Renew every live record of ``lease_key`` (one statement); how many."""
        start, expires = self.lease(ttl, time.time() if now is None else now)
        with self._transaction() as cur:
            cur.execute(
                "UPDATE records SET renewed = ?, expires = ? WHERE lease_key = ? AND expires > ?",
                (start, expires, lease_key, start),
            )
            return cur.rowcount

    def delete_group(
        self, lease_key: str, stable_keys: Sequence[str] | None = None, now: float | None = None
    ) -> tuple[int, int] | None:
        """Remove the records of ``lease_key`` (only those of ``stable_keys`` when given):
        (live items removed, live service records removed), or None when it is not live."""
        at = _second(time.time() if now is None else now)
        with self._transaction() as cur:
            if not self._group_live(cur, lease_key, at):
                return None
            where, args = "lease_key = ?", [lease_key]
            if stable_keys is not None:
                marks = ",".join("?" * len(stable_keys)) or "NULL"  # none: no record
                where += f" AND stable_key IN ({marks})"
                args += stable_keys
            counts = dict(
                cur.execute(
                    "SELECT type = 'service', count(*) FROM records"
                    f" WHERE {where} AND expires > ? GROUP BY type = 'service'",
                    [*args, at],
                ).fetchall()
            )
            cur.execute(f"DELETE FROM records WHERE {where}", args)
            self._log(cur, [lease_key], at)
        return counts.get(0, 0), counts.get(1, 0)

    def renew(self, uri: str, ttl: float | None = None, now: float | None = None) -> Record | None:
        """The renewed record, or None when ``uri`` is unknown or expired."""
        renewed = self.renew_many([uri], ttl, now)
        return renewed[0] if renewed else None

    def renew_many(
        self, uris: Sequence[str], ttl: float | None = None, now: float | None = None
    ) -> list[Record]:
        """Renew every live record of ``uris`` (one transaction); the renewed, in order."""
        start, expires = self.lease(ttl, time.time() if now is None else now)
        unique = list(dict.fromkeys(uris))
        with self._transaction() as cur:
            for marks, chunk in _chunks(unique):
                cur.execute(
                    "UPDATE records SET renewed = ?, expires = ?"
                    f" WHERE uri IN ({marks}) AND expires > ?",
                    (start, expires, *chunk, start),
                )
        found = {r.uri: r for r in self._get_many(uris, start)}
        return [found[u] for u in dict.fromkeys(uris) if u in found]

    def delete(self, uri: str, now: float | None = None) -> bool:
        """Remove ``uri``; True when it was live (an expired one is removed, too)."""
        at = _second(time.time() if now is None else now)
        with self._transaction() as cur:
            row = cur.execute(
                f"SELECT expires, {_DOC} FROM records WHERE uri = ?", (uri,)
            ).fetchone()
            cur.execute("DELETE FROM records WHERE uri = ?", (uri,))
            if row is not None:
                self._log(cur, [row[1]], at)
        return row is not None and row[0] > at

    def expire(self, now: float | None = None) -> int:
        """Remove every record expired at ``now``; how many (the seed's ``cleanLS``)."""
        at = _second(time.time() if now is None else now)
        with self._transaction() as cur:
            cur.execute("DELETE FROM records WHERE expires <= ?", (at,))
            removed = cur.rowcount
            # Expired records had left the collection already (``Document.expires``); the
            # log only needs its recent past, and its last row, for a mirror to compare.
            cur.execute(
                "DELETE FROM record_changes WHERE at < ?"
                " AND seq < (SELECT max(seq) FROM record_changes)",
                (at - CHANGES_KEPT,),
            )
            return removed

    # ---- reads -------------------------------------------------------------------------------

    def _get_many(self, uris: Sequence[str], now: float) -> list[Record]:
        marks = ",".join("?" * len(uris))
        sql = f"SELECT {_COLS} FROM records WHERE uri IN ({marks}) AND expires > ?"
        return [_row(r) for r in self._read(sql, [*uris, _second(now)])] if uris else []

    def get(self, uri: str, now: float | None = None) -> Record | None:
        found = self._get_many([uri], time.time() if now is None else now)
        return found[0] if found else None

    def query(self, q: Query, now: float | None = None) -> list[Record]:
        """Live records matching ``q``, oldest registration first (then in insertion order),
        so that paging with limit/offset walks them in a stable order."""
        if len(q.filters) > MAX_FILTERS:
            raise RegistryError(f"more than {MAX_FILTERS} keys in one query")
        if not 1 <= q.limit <= MAX_LIMIT or q.offset < 0:
            raise RegistryError(f"limit must be 1 to {MAX_LIMIT} and offset at least 0")
        at = _second(time.time() if now is None else now)
        filters: list[tuple[str, list[str]]] = []
        for name, patterns in q.filters.items():
            if not 1 <= len(patterns) <= MAX_PATTERNS:
                raise RegistryError(f"{name}: give 1 to {MAX_PATTERNS} values")
            filters.append((name, [like_pattern(p) for p in patterns]))
        with self._conn() as db:
            (records,) = db.execute("SELECT coalesce(max(rowid), 0) FROM records").fetchone()
            many = common_threshold(q.limit, q.offset, records)
            common = [_common(db, name, patterns, many) for name, patterns in filters]
            sql, args = _query_sql(q, filters, common, self._planner)
            rows = db.execute(sql, [at, *args, q.limit, q.offset]).fetchall()
        return [_row(r) for r in rows]

    # ---- the XQuery's collection --------------------------------------------------------------

    def changes_since(self, seq: int) -> tuple[int, set[str] | None]:
        """(the last change's number, the documents changed after ``seq``); None instead of the
        documents when the log no longer reaches back to ``seq``: reload everything."""
        with self._conn() as db:
            low, high = db.execute("SELECT min(seq), max(seq) FROM record_changes").fetchone()
            if high is None:
                return 0, (None if seq else set())
            if seq < low - 1 or seq > high:
                return high, None
            rows = db.execute(
                "SELECT doc FROM record_changes WHERE seq > ? AND seq <= ?", (seq, high)
            ).fetchall()
        return high, {r[0] for r in rows}

    def documents(
        self, docs: Sequence[str] | None = None, now: float | None = None
    ) -> dict[str, Document]:
        """The collection's documents named (None: all), as XML; a named document with no live
        record is answered with ``xml`` None. The service record comes first in its document."""
        at = _second(time.time() if now is None else now)
        cols = f"SELECT {_DOC}, type != 'service', rowid, type, body, xml, uri, expires"
        rows: list[Any] = []
        if docs is None:
            rows = self._read(f"{cols} FROM records WHERE expires > ?", (at,))
        for marks, chunk in _chunks(list(docs or ())):
            # By lease key, and by uri for records without one: both indexed.
            sql = (
                f"{cols} FROM records WHERE expires > ? AND lease_key IN ({marks}) UNION ALL"
                f" {cols} FROM records WHERE expires > ? AND lease_key IS NULL"
                f" AND uri IN ({marks})"
            )
            rows += self._read(sql, [at, *chunk, at, *chunk])
        parts: dict[str, list[str]] = {d: [] for d in docs or ()}
        first: dict[str, int] = {}
        for doc, _, _, type_, body, xml, uri, expires in sorted(rows, key=lambda r: r[:3]):
            values = {k: tuple(v) for k, v in json.loads(body).items()}
            parts.setdefault(doc, []).append(xml or render(type_, values, uri))
            first[doc] = min(expires, first.get(doc, expires))
        return {
            d: Document(store_document(p) if p else None, first.get(d, 0)) for d, p in parts.items()
        }

    def document_page(
        self, after: str | int | None, now: float | None = None, limit: int = 200
    ) -> tuple[dict[str, Document], str | int | None]:
        """Up to ``limit`` live documents of the collection, and where the next page starts
        (None: this was the last), so that all of them are read a page at a time.

        ``after`` None starts with the documents of lease keys, in key order (a string: after
        that key); then come the records without one, in rowid order (an int: after that
        rowid). Both walk an index from where the last page stopped."""
        at = _second(time.time() if now is None else now)
        names: list[str]
        if after is None or isinstance(after, str):
            where = "lease_key IS NOT NULL" if after is None else "lease_key > ?"
            rows = self._read(
                f"SELECT DISTINCT lease_key FROM records WHERE {where} AND expires > ?"
                " ORDER BY lease_key LIMIT ?",
                [*([] if after is None else [after]), at, limit],
            )
            names = [r[0] for r in rows]
            following: str | int | None = names[-1] if len(names) == limit else 0
        else:
            # Not by the lease-key or expiry index (SQLite: `+`), by rowid from where the
            # last page stopped (one walk of the table over all the pages).
            bare = self._planner.bare
            rows = self._read(
                f"SELECT rowid, uri FROM records WHERE rowid > ? AND {bare('lease_key')} IS NULL"
                f" AND {bare('expires')} > ? ORDER BY rowid LIMIT ?",
                (after, at, limit),
            )
            names = [r[1] for r in rows]
            following = rows[-1][0] if len(rows) == limit else None
        docs = self.documents(names, at)
        return {d: v for d, v in docs.items() if v.xml is not None}, following

    def __len__(self) -> int:
        """Records stored, expired or not (the cleaner's backlog included)."""
        return int(self._read("SELECT count(*) FROM records", ())[0][0])
