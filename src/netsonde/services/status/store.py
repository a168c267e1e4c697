"""The Status MA's link-state store: for each link, which state it was in from when to when.

One SQLite file (WAL), ``":memory:"``, or a table in a PostgreSQL database (a fleet's archive),
through ``archive.stores``, its schema the versioned ``MIGRATIONS``. A row is a *range*
``[start_time, end_time]`` during which a link's operational state, administrative state and
knowledge level were constant, as in the 2008 ``link_status`` table. Times are **integer unix
seconds** (not the µs of the results archive; BIGINT on PostgreSQL): the Status MA protocol
speaks seconds (``timeType="unix"``) and so does this store.

States are stored under their wire names (PROTOCOL.md §4.6), matched case-insensitively:
oper ``up|down|degraded|unknown``; admin ``normaloperation|maintenance|troubleshooting|
underrepair|unknown``, with ``normal`` and ``under-construction`` (the issue's names) accepted
as aliases; knowledge ``full|partial``.

Semantics of a store at time ``t`` (``update``):

* The ranges of one link never overlap; edges are inclusive, so ``[10, 20]`` answers 10 and 20,
  and 21 is not covered (``at`` gives None there: nothing is known, not "unknown" state).
* "Same state" means same oper, admin *and* knowledge: a change of knowledge is a new range.
* ``do_update=False`` (2008 ``update=no``): a ``t`` covered by a range is an error ("already
  have information on LINK at T"); otherwise a new ``[t, t]`` range, never merged.
* ``do_update=True`` (2008 ``update=yes``):
  - no range yet → ``[t, t]``;
  - same state as the link's *latest* range: ``t >= end`` extends it to ``t``; ``t < end`` is
    an error ("update in the past"), as in 2008 — re-sending an old sample of the current state
    is a client bug worth hearing about;
  - a different state at ``t > end`` → a new ``[t, t]`` (the old range stays closed at its last
    observation; nothing in the past is rewritten);
  - otherwise the store is *out of order* (``t <= end`` of the latest range, other state) and is
    put into history so that ranges still never overlap:
    · ``t`` inside a range of the same state → nothing to do (already known);
    · ``t`` inside a range of another state → that range is split around ``t``:
      ``[s, t-1]``, ``[t, t]``, ``[t+1, e]`` (empty pieces dropped); the newer observation wins
      its second;
    · ``t`` in a gap → ``[t, t]``, merged with the range just before and/or just after it when
      that range has the same state (what "same state again extends the range" means in the
      middle of history).
* ``update_many`` applies its updates in order in one transaction: all or none.

Writers in several processes (the daemon's feed, API workers storing via NMWG) are serialised
per link, so the rules above hold whatever interleaves: SQLite's write lock takes the whole
file; on PostgreSQL a transaction first takes an advisory lock per link it touches.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

from netsonde.archive import pg
from netsonde.archive.base import ArchiveError
from netsonde.archive.stores import Cursor, Migration, Store, StoreError, open_store
from netsonde.units import TIME_MAX, TIME_MIN, check_epoch

OPER_STATES = frozenset({"up", "down", "degraded", "unknown"})
ADMIN_STATES = frozenset(
    {"normaloperation", "maintenance", "troubleshooting", "underrepair", "unknown"}
)
KNOWLEDGE = frozenset({"full", "partial"})
_ADMIN_ALIASES = {"normal": "normaloperation", "under-construction": "underrepair"}

_TABLE = """
CREATE TABLE IF NOT EXISTS link_status (
    link_id TEXT NOT NULL,
    start_time {time} NOT NULL,
    end_time {time} NOT NULL,
    oper_state TEXT NOT NULL,
    admin_state TEXT NOT NULL,
    knowledge TEXT NOT NULL,
    PRIMARY KEY (link_id, start_time),
    CHECK (start_time <= end_time)
){suffix}
"""
# Version 1 is the table netsonde made before stores were versioned: IF NOT EXISTS lets such a
# file open unchanged.
MIGRATIONS = (
    Migration(
        1,
        sqlite=_TABLE.format(time="INTEGER", suffix=" WITHOUT ROWID"),
        postgresql=_TABLE.format(time="BIGINT", suffix=""),
    ),
)
COMPONENT = "status"
# Ranges of a link never overlap, so end_time grows with start_time and the primary key
# (link_id, start_time) serves point, range and latest-range lookups alike: no second index.

_COLS = "link_id, start_time, end_time, oper_state, admin_state, knowledge"
_LATEST = f"SELECT {_COLS} FROM link_status WHERE link_id = ? ORDER BY start_time DESC LIMIT 1"
_AT_OR_BEFORE = (
    f"SELECT {_COLS} FROM link_status WHERE link_id = ? AND start_time <= ?"
    " ORDER BY start_time DESC LIMIT 1"
)
_AFTER = (
    f"SELECT {_COLS} FROM link_status WHERE link_id = ? AND start_time > ?"
    " ORDER BY start_time LIMIT 1"
)
# Arguments: (link, end, start, link, start, start).
_BETWEEN = (
    f"SELECT {_COLS} FROM link_status WHERE link_id = ? AND start_time <= ?"
    " AND end_time >= ? AND start_time >= coalesce((SELECT start_time FROM link_status"
    " WHERE link_id = ? AND start_time <= ? ORDER BY start_time DESC LIMIT 1), ?)"
    " ORDER BY start_time"
)
_HISTORY = f"SELECT {_COLS} FROM link_status WHERE link_id = ? ORDER BY start_time"
# The latest range of each link. Sorted by the caller: ORDER BY would follow the PostgreSQL
# database's collation, and answers must not change order with the backend.
_LINKS = (
    f"SELECT {', '.join('s.' + c for c in _COLS.split(', '))} FROM link_status s JOIN"
    " (SELECT link_id, max(start_time) AS latest FROM link_status GROUP BY link_id) m"
    " ON s.link_id = m.link_id AND s.start_time = m.latest"
)
_INSERT = f"INSERT INTO link_status ({_COLS}) VALUES (?, ?, ?, ?, ?, ?)"
_SET_END = "UPDATE link_status SET end_time = ? WHERE link_id = ? AND start_time = ?"
_DELETE = "DELETE FROM link_status WHERE link_id = ? AND start_time = ?"
# PostgreSQL advisory locks, (space, key): this space is the link status store's; a key is a
# link id's hash (two links sharing one only wait for each other).
_LOCK_SPACE = 7101
_LOCK = "SELECT pg_advisory_xact_lock(?, CAST(? AS INTEGER))"

T = TypeVar("T")


class StatusError(ValueError):
    """A store the link-state store refuses; the message says why, in one line."""


class States(NamedTuple):
    oper: str
    admin: str
    knowledge: str


@dataclass(frozen=True, slots=True)
class LinkState:
    """One range: the link was in these states from ``start`` to ``end`` (unix s, inclusive)."""

    link_id: str
    start: int
    end: int
    oper: str
    admin: str
    knowledge: str

    @property
    def states(self) -> States:
        return States(self.oper, self.admin, self.knowledge)

    def covers(self, t: int) -> bool:
        return self.start <= t <= self.end


class Update(NamedTuple):
    """One observation of a link, as the poller or a MeasurementArchiveStoreRequest gives it."""

    link_id: str
    time: int
    oper: str
    admin: str
    knowledge: str = "full"
    do_update: bool = True


def normalize_states(oper: str, admin: str, knowledge: str = "full") -> States:
    """The canonical (wire) names of the states, or StatusError naming the bad value."""
    o, a, k = oper.strip().lower(), admin.strip().lower(), knowledge.strip().lower()
    a = _ADMIN_ALIASES.get(a, a)
    if o not in OPER_STATES:
        raise StatusError(f"invalid operational state: {oper!r} (one of {sorted(OPER_STATES)})")
    if a not in ADMIN_STATES:
        raise StatusError(
            f"invalid administrative state: {admin!r} (one of {sorted(ADMIN_STATES)})"
        )
    if k not in KNOWLEDGE:
        raise StatusError(f"invalid knowledge level: {knowledge!r} (one of {sorted(KNOWLEDGE)})")
    return States(o, a, k)


def _check_time(t: object) -> int:
    # bool is an int to Python but never a time someone meant.
    if not isinstance(t, int) or isinstance(t, bool):
        raise StatusError(f"invalid time: {t!r} (integer unix seconds expected)")
    return t


def _check_stored_time(t: object) -> int:
    """A time to store: one every answer can print (``units.check_epoch``)."""
    t = _check_time(t)
    try:
        check_epoch(t)
    except ValueError as e:
        raise StatusError(str(e)) from None
    return t


def _row(r: tuple) -> LinkState:
    return LinkState(*r)


def _readable(r: LinkState) -> LinkState:
    """A range as readers get it: its times inside what ISO 8601 can say. Stores refuse any
    other time, but a row stored before they did must not break every answer that prints it
    (``[t, 253402300800]`` once made ``/api/v1/links`` fail for every link)."""
    start, end = (min(max(x, TIME_MIN), TIME_MAX) for x in (r.start, r.end))
    return r if (start, end) == (r.start, r.end) else dataclasses.replace(r, start=start, end=end)


class LinkStatusStore:
    """The ranges at ``location``: a SQLite path, ``":memory:"``, or a ``postgresql://`` URL.

    StatusError when it cannot be opened or refuses an update; StoreError when the database
    fails under a call (locked, gone): the connection is then opened afresh by the next call,
    so a server that restarts is used again when it is back."""

    def __init__(self, location: str | Path = ":memory:") -> None:
        self.location = str(location)
        self.shown = pg.shown(self.location) if pg.is_url(self.location) else self.location
        try:
            self._db: Store | None = self._open()
        except (ArchiveError, OSError) as e:
            raise StatusError(f"cannot open link status store {self.shown}: {e}") from None

    def _open(self) -> Store:
        return open_store(self.location, COMPONENT, MIGRATIONS)

    def _call(self, work: Callable[[Store], T]) -> T:
        """``work`` on the connection. On PostgreSQL a driver error drops the connection (it
        may be lost) and the next call opens a new one; a SQLite connection is kept (it is
        never lost, and ``:memory:`` would lose its data)."""
        try:
            if self._db is None:
                self._db = self._open()
            return work(self._db)
        except StoreError:
            self._drop()
            raise
        except ArchiveError as e:  # reopening failed: the server is still away
            raise StoreError(str(e)) from None

    def _drop(self) -> None:
        if pg.is_url(self.location) and self._db is not None:
            self._db.close()
            self._db = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> LinkStatusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------------

    def update(
        self,
        link_id: str,
        time: int,
        oper: str,
        admin: str,
        knowledge: str = "full",
        do_update: bool = True,
    ) -> None:
        """Store one observation (semantics in the module docstring)."""
        self.update_many([Update(link_id, time, oper, admin, knowledge, do_update)])

    def update_many(self, updates: Iterable[Update | tuple]) -> int:
        """Apply observations in order, in one transaction (all or none); returns how many."""
        batch = [Update(*u) for u in updates]

        def write(db: Store) -> int:
            with db.transaction() as cur:
                if db.dialect == "postgresql":
                    _lock_links(cur, {u.link_id for u in batch})
                for u in batch:
                    _apply(cur, u)
            return len(batch)

        return self._call(write)

    # ---- reading -------------------------------------------------------------------------

    def at(self, link_ids: Iterable[str], t: int | None = None) -> dict[str, LinkState | None]:
        """The range covering ``t`` for each link (None: nothing known at ``t``); with
        ``t=None`` ("now") the latest range of each link."""
        if t is not None:
            t = _check_time(t)

        def read(db: Store) -> dict[str, LinkState | None]:
            cur = db.cursor()
            if t is None:
                return {link: _fetch(cur, _LATEST, (link,)) for link in link_ids}
            return {link: _covering(cur, link, t) for link in link_ids}

        found = self._call(read)
        return {link: None if r is None else _readable(r) for link, r in found.items()}

    def between(self, link_ids: Iterable[str], start: int, end: int) -> dict[str, list[LinkState]]:
        """The ranges of each link that intersect ``[start, end]`` (edges inclusive), oldest
        first, not clipped: the caller clips if its protocol asks for it."""
        start, end = _check_time(start), _check_time(end)
        if start > end:
            raise StatusError(f"start {start} is after end {end}")

        def read(db: Store) -> dict[str, list[LinkState]]:
            cur = db.cursor()
            return {
                link: [
                    _readable(_row(r))
                    for r in cur.execute(
                        _BETWEEN, (link, end, start, link, start, start)
                    ).fetchall()
                ]
                for link in link_ids
            }

        return self._call(read)

    def history(self, link_id: str) -> list[LinkState]:
        """Every range of one link, oldest first."""
        rows = self._call(lambda db: db.cursor().execute(_HISTORY, (link_id,)).fetchall())
        return [_readable(_row(r)) for r in rows]

    def __len__(self) -> int:
        """How many ranges are stored, over all links."""
        row = self._call(
            lambda db: db.cursor().execute("SELECT count(*) FROM link_status").fetchone()
        )
        return int(row[0])

    def links(self) -> list[LinkState]:
        """Every link with its latest range, ordered by link id."""
        rows = self._call(lambda db: db.cursor().execute(_LINKS).fetchall())
        return sorted((_readable(_row(r)) for r in rows), key=lambda r: r.link_id)


# ---- the writer's paths, on a cursor inside its transaction ---------------------------------


def _lock_key(link_id: str) -> int:
    """A link id's advisory lock key: a stable 32-bit hash, as a signed int4."""
    return zlib.crc32(link_id.encode()) - 2**31


def _lock_links(cur: Cursor, link_ids: Iterable[str]) -> None:
    """Wait for every other writer of these links (until this transaction ends); keys in
    ascending order, so two batches sharing links never wait for each other in a cycle."""
    for key in sorted({_lock_key(link) for link in link_ids}):
        cur.execute(_LOCK, (_LOCK_SPACE, key))


def _apply(cur: Cursor, u: Update) -> None:
    t = _check_stored_time(u.time)
    new = normalize_states(u.oper, u.admin, u.knowledge)
    if not u.do_update:
        _insert_new(cur, u.link_id, t, new)
        return
    latest = _fetch(cur, _LATEST, (u.link_id,))
    if latest is None or (t > latest.end and latest.states != new):
        _insert(cur, u.link_id, t, t, new)
    elif latest.states == new:
        if t < latest.end:
            raise StatusError(
                f"update in the past: {u.link_id} at {t} is before the end of its latest"
                f" range [{latest.start}, {latest.end}]"
            )
        cur.execute(_SET_END, (t, u.link_id, latest.start))
    else:
        _insert_out_of_order(cur, u.link_id, t, new)


def _insert_new(cur: Cursor, link_id: str, t: int, new: States) -> None:
    covering = _covering(cur, link_id, t)
    if covering is not None:
        raise StatusError(
            f"already have information on {link_id} at {t}"
            f" (range [{covering.start}, {covering.end}])"
        )
    _insert(cur, link_id, t, t, new)


def _fetch(cur: Cursor, sql: str, args: tuple) -> LinkState | None:
    r = cur.execute(sql, args).fetchone()
    return None if r is None else _row(r)


def _covering(cur: Cursor, link_id: str, t: int) -> LinkState | None:
    r = _fetch(cur, _AT_OR_BEFORE, (link_id, t))
    return r if r is not None and r.covers(t) else None


def _insert(cur: Cursor, link_id: str, start: int, end: int, s: States) -> None:
    cur.execute(_INSERT, (link_id, start, end, s.oper, s.admin, s.knowledge))


def _insert_out_of_order(cur: Cursor, link_id: str, t: int, new: States) -> None:
    """Put an observation at ``t`` into history without overlapping ranges."""
    covering = _covering(cur, link_id, t)
    if covering is not None:
        if covering.states == new:
            return  # already known
        _cut_out(cur, covering, t)
    _insert_merged(cur, link_id, t, new)


def _cut_out(cur: Cursor, r: LinkState, t: int) -> None:
    """Remove second ``t`` from range ``r``, keeping the non-empty pieces either side."""
    cur.execute(_DELETE, (r.link_id, r.start))
    if r.start < t:
        _insert(cur, r.link_id, r.start, t - 1, r.states)
    if t < r.end:
        _insert(cur, r.link_id, t + 1, r.end, r.states)


def _insert_merged(cur: Cursor, link_id: str, t: int, new: States) -> None:
    """Insert ``[t, t]`` into a gap, joined with same-state neighbours either side."""
    start = end = t
    before = _fetch(cur, _AT_OR_BEFORE, (link_id, t))
    after = _fetch(cur, _AFTER, (link_id, t))
    for r in (before, after):
        if r is not None and r.states == new:
            cur.execute(_DELETE, (link_id, r.start))
            start, end = min(start, r.start), max(end, r.end)
    _insert(cur, link_id, start, end, new)
