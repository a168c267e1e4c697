"""The lookup registry: records with leases, in one SQLite file (WAL) or ``":memory:"``.

A record lives until its ``expires`` (unix seconds); every read filters on ``expires > now``
itself, so an expired record is never answered, whenever the cleaner last ran (the sLS kept
them visible up to an hour). Registering the same thing again (same type and locator values,
``records.RecordIn.stable_key``) is an upsert that keeps the record's uri, not an error.

Values are kept twice: the record as JSON (what is answered) and one row per value (what
queries match). Queries match values case-insensitively, ``*`` and ``?`` as wildcards.
One connection, guarded by a lock: an instance may be shared by threads.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from netsonde.archive.sqlite import open_store
from netsonde.services.lookup.records import RecordIn, values_json
from netsonde.units import check_epoch

DEFAULT_REGISTRANT = "token"  # who registered, when the client names nobody
MAX_FILTERS = 32  # keys in one query
MAX_PATTERNS = 32  # values of one key in one query
MAX_PATTERN_CHARS = 256
MAX_STARS = 8  # each `*` multiplies the work of matching a value
MAX_LIMIT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    uri TEXT PRIMARY KEY,
    stable_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    registrant TEXT NOT NULL,
    body TEXT NOT NULL,
    created INTEGER NOT NULL,
    renewed INTEGER NOT NULL,
    expires INTEGER NOT NULL
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
"""
_COLS = "uri, type, registrant, body, created, renewed, expires"


class RegistryError(ValueError):
    """A request the registry refuses; the message names the limit."""


class LimitError(RegistryError):
    """A registrant holds as many live records as it may."""


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
class Query:
    """``filters``: key → patterns (a key matches when any of its patterns does); ``operator``
    all: every key must match, any: one is enough. ``type`` always applies."""

    filters: Mapping[str, Sequence[str]]
    operator: Literal["all", "any"] = "all"
    type: str | None = None
    limit: int = 100
    offset: int = 0


def _row(r: tuple) -> Record:
    body = {k: tuple(v) for k, v in json.loads(r[3]).items()}
    return Record(r[0], r[1], body, r[2], r[4], r[5], r[6])


def like_pattern(pattern: str) -> str:
    """``*`` / ``?`` wildcards → a LIKE pattern (``\\`` escapes LIKE's own ``%`` and ``_``)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegistryError(f"a query value is longer than {MAX_PATTERN_CHARS} characters")
    while "**" in pattern:
        pattern = pattern.replace("**", "*")
    if pattern.count("*") > MAX_STARS:
        raise RegistryError(f"a query value has more than {MAX_STARS} '*' wildcards")
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


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
        self.path = str(path)
        self.ttl, self.max_ttl = ttl, max_ttl
        self.max_records_per_registrant = max_records_per_registrant
        self.max_record_bytes = max_record_bytes
        self._lock = threading.Lock()
        try:
            self._db = open_store(self.path, "PRAGMA foreign_keys=ON;\n" + _SCHEMA)
        except sqlite3.Error as e:
            raise RegistryError(f"cannot open lookup registry {self.path}: {e}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    def _read(self, sql: str, args: Sequence[object] | Mapping[str, object]) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- leases ------------------------------------------------------------------------------

    def lease(self, asked: float | None, now: float) -> tuple[int, int]:
        """(now, expires) in whole seconds: ``asked`` (default ``ttl``) capped at ``max_ttl``."""
        if asked is not None and not (math.isfinite(asked) and asked > 0):
            raise RegistryError(f"ttl must be a positive number of seconds, got {asked}")
        seconds = min(self.max_ttl, math.ceil(asked) if asked is not None else self.ttl)
        start = int(check_epoch(now, "now"))
        expires = int(check_epoch(start + seconds, "expires"))
        return start, expires

    def register(
        self,
        record: RecordIn,
        *,
        registrant: str = DEFAULT_REGISTRANT,
        ttl: float | None = None,
        now: float | None = None,
    ) -> Registered:
        """Register ``record``, or renew and update the live-or-expired record of the same
        thing (same uri). Refused beyond ``max_record_bytes`` or the registrant's quota."""
        size = record.size()
        if size > self.max_record_bytes:
            raise RegistryError(
                f"record of {size} bytes: more than max_record_bytes ({self.max_record_bytes})"
            )
        start, expires = self.lease(ttl, time.time() if now is None else now)
        key = record.stable_key()
        with self._transaction() as cur:
            old = cur.execute(
                "SELECT uri, registrant, created, expires FROM records WHERE stable_key = ?",
                (key,),
            ).fetchone()
            live_here = old is not None and old[1] == registrant and old[3] > start
            if not live_here:
                (held,) = cur.execute(
                    "SELECT count(*) FROM records WHERE registrant = ? AND expires > ?",
                    (registrant, start),
                ).fetchone()
                if held >= self.max_records_per_registrant:
                    raise LimitError(
                        f"registrant {registrant!r} holds {held} live records: the most"
                        f" max_records_per_registrant ({self.max_records_per_registrant}) allows"
                    )
            body = values_json(record.values)
            if old is None:
                uri = f"lookup/{record.type}/{uuid.uuid4()}"
                created = start
                cur.execute(
                    f"INSERT INTO records (stable_key, {_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, uri, record.type, registrant, body, created, start, expires),
                )
            else:
                uri = old[0]
                created = old[2] if old[3] > start else start  # expired: a new registration
                cur.execute(
                    "UPDATE records SET registrant = ?, body = ?, created = ?, renewed = ?,"
                    " expires = ? WHERE uri = ?",
                    (registrant, body, created, start, expires, uri),
                )
                cur.execute("DELETE FROM record_values WHERE uri = ?", (uri,))
            cur.executemany(
                "INSERT INTO record_values (uri, name, value) VALUES (?, ?, ?)",
                [(uri, k, v) for k, vs in record.values.items() for v in vs],
            )
        kept = Record(uri, record.type, record.values, registrant, created, start, expires)
        return Registered(kept, new=old is None or old[3] <= start)

    def renew(self, uri: str, ttl: float | None = None, now: float | None = None) -> Record | None:
        """The renewed record, or None when ``uri`` is unknown or expired."""
        renewed = self.renew_many([uri], ttl, now)
        return renewed[0] if renewed else None

    def renew_many(
        self, uris: Sequence[str], ttl: float | None = None, now: float | None = None
    ) -> list[Record]:
        """Renew every live record of ``uris`` (one transaction); the renewed, in order."""
        start, expires = self.lease(ttl, time.time() if now is None else now)
        with self._transaction() as cur:
            for uri in uris:
                cur.execute(
                    "UPDATE records SET renewed = ?, expires = ? WHERE uri = ? AND expires > ?",
                    (start, expires, uri, start),
                )
        found = {r.uri: r for r in self._get_many(uris, start)}
        return [found[u] for u in dict.fromkeys(uris) if u in found]

    def delete(self, uri: str, now: float | None = None) -> bool:
        """Remove ``uri``; True when it was live (an expired one is removed, too)."""
        at = time.time() if now is None else now
        with self._transaction() as cur:
            row = cur.execute("SELECT expires FROM records WHERE uri = ?", (uri,)).fetchone()
            cur.execute("DELETE FROM records WHERE uri = ?", (uri,))
        return row is not None and row[0] > at

    def expire(self, now: float | None = None) -> int:
        """Remove every record expired at ``now``; how many (the seed's ``cleanLS``)."""
        at = time.time() if now is None else now
        with self._transaction() as cur:
            cur.execute("DELETE FROM records WHERE expires <= ?", (at,))
            return cur.rowcount

    # ---- reads -------------------------------------------------------------------------------

    def _get_many(self, uris: Sequence[str], now: float) -> list[Record]:
        marks = ",".join("?" * len(uris))
        sql = f"SELECT {_COLS} FROM records WHERE uri IN ({marks}) AND expires > ?"
        return [_row(r) for r in self._read(sql, [*uris, now])] if uris else []

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
        args: list[object] = [time.time() if now is None else now]
        where = ["expires > ?"]
        if q.type is not None:
            where.append("type = ?")
            args.append(q.type)
        matches = []
        for name, patterns in q.filters.items():
            if not 1 <= len(patterns) <= MAX_PATTERNS:
                raise RegistryError(f"{name}: give 1 to {MAX_PATTERNS} values")
            ors = " OR ".join(["v.value LIKE ? ESCAPE '\\'"] * len(patterns))
            # Uncorrelated, so SQLite runs it once on record_values_match: the correlated
            # EXISTS it replaces searched that index again for every record (quadratic).
            matches.append(
                f"r.uri IN (SELECT v.uri FROM record_values v WHERE v.name = ? AND ({ors}))"
            )
            args += [name, *(like_pattern(p) for p in patterns)]
        if matches:
            where.append("(" + (" AND " if q.operator == "all" else " OR ").join(matches) + ")")
        sql = (
            f"SELECT {_COLS} FROM records r WHERE {' AND '.join(where)}"
            " ORDER BY created, rowid LIMIT ? OFFSET ?"
        )
        return [_row(r) for r in self._read(sql, [*args, q.limit, q.offset])]

    def __len__(self) -> int:
        """Records stored, expired or not (the cleaner's backlog included)."""
        return int(self._read("SELECT count(*) FROM records", ())[0][0])
