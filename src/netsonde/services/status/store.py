"""The Status MA's link-state store: for each link, which state it was in from when to when.

One SQLite file (WAL) or ``":memory:"``. A row is a *range* ``[start_time, end_time]`` during
which a link's operational state, administrative state and knowledge level were constant, as in
the 2008 ``link_status`` table. Times are **integer unix seconds** (not the µs of the results
archive): the Status MA protocol speaks seconds (``timeType="unix"``) and so does this store.

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
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from netsonde.archive.sqlite import open_store
from netsonde.units import TIME_MAX, TIME_MIN, check_epoch

OPER_STATES = frozenset({"up", "down", "degraded", "unknown"})
ADMIN_STATES = frozenset(
    {"normaloperation", "maintenance", "troubleshooting", "underrepair", "unknown"}
)
KNOWLEDGE = frozenset({"full", "partial"})
_ADMIN_ALIASES = {"normal": "normaloperation", "under-construction": "underrepair"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS link_status (
    link_id TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    end_time INTEGER NOT NULL,
    oper_state TEXT NOT NULL,
    admin_state TEXT NOT NULL,
    knowledge TEXT NOT NULL,
    PRIMARY KEY (link_id, start_time),
    CHECK (start_time <= end_time)
) WITHOUT ROWID;
"""
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
_BETWEEN = (
    f"SELECT {_COLS} FROM link_status WHERE link_id = :link AND start_time <= :end"
    " AND end_time >= :start AND start_time >= coalesce((SELECT start_time FROM link_status"
    " WHERE link_id = :link AND start_time <= :start ORDER BY start_time DESC LIMIT 1), :start)"
    " ORDER BY start_time"
)
_HISTORY = f"SELECT {_COLS} FROM link_status WHERE link_id = ? ORDER BY start_time"
# SQLite returns the other columns of the row holding max(): the latest range of each link.
_LINKS = (
    "SELECT link_id, max(start_time), end_time, oper_state, admin_state, knowledge"
    " FROM link_status GROUP BY link_id ORDER BY link_id"
)
_INSERT = f"INSERT INTO link_status ({_COLS}) VALUES (?, ?, ?, ?, ?, ?)"
_SET_END = "UPDATE link_status SET end_time = ? WHERE link_id = ? AND start_time = ?"
_DELETE = "DELETE FROM link_status WHERE link_id = ? AND start_time = ?"


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
    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        try:
            self._db = open_store(self.path, _SCHEMA)
        except sqlite3.Error as e:
            raise StatusError(f"cannot open link status store {self.path}: {e}") from None

    def close(self) -> None:
        self._db.close()

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
        n = 0
        with self._transaction() as cur:
            for u in updates:
                self._apply(cur, Update(*u))
                n += 1
        return n

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._db.cursor()
        try:
            with self._db:  # commits, or rolls back on any exception
                yield cur
        finally:
            cur.close()

    def _apply(self, cur: sqlite3.Cursor, u: Update) -> None:
        t = _check_stored_time(u.time)
        new = normalize_states(u.oper, u.admin, u.knowledge)
        if not u.do_update:
            self._insert_new(cur, u.link_id, t, new)
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

    @staticmethod
    def _insert_new(cur: sqlite3.Cursor, link_id: str, t: int, new: States) -> None:
        covering = _covering(cur, link_id, t)
        if covering is not None:
            raise StatusError(
                f"already have information on {link_id} at {t}"
                f" (range [{covering.start}, {covering.end}])"
            )
        _insert(cur, link_id, t, t, new)

    # ---- reading -------------------------------------------------------------------------

    def at(self, link_ids: Iterable[str], t: int | None = None) -> dict[str, LinkState | None]:
        """The range covering ``t`` for each link (None: nothing known at ``t``); with
        ``t=None`` ("now") the latest range of each link."""
        cur = self._db.cursor()
        if t is None:
            found = {link: _fetch(cur, _LATEST, (link,)) for link in link_ids}
        else:
            t = _check_time(t)
            found = {link: _covering(cur, link, t) for link in link_ids}
        return {link: None if r is None else _readable(r) for link, r in found.items()}

    def between(self, link_ids: Iterable[str], start: int, end: int) -> dict[str, list[LinkState]]:
        """The ranges of each link that intersect ``[start, end]`` (edges inclusive), oldest
        first, not clipped: the caller clips if its protocol asks for it."""
        start, end = _check_time(start), _check_time(end)
        if start > end:
            raise StatusError(f"start {start} is after end {end}")
        cur = self._db.cursor()
        return {
            link: [
                _readable(_row(r))
                for r in cur.execute(_BETWEEN, {"link": link, "start": start, "end": end})
            ]
            for link in link_ids
        }

    def history(self, link_id: str) -> list[LinkState]:
        """Every range of one link, oldest first."""
        return [_readable(_row(r)) for r in self._db.execute(_HISTORY, (link_id,))]

    def __len__(self) -> int:
        """How many ranges are stored, over all links."""
        return self._db.execute("SELECT count(*) FROM link_status").fetchone()[0]

    def links(self) -> list[LinkState]:
        """Every link with its latest range, ordered by link id."""
        return [_readable(_row(r)) for r in self._db.execute(_LINKS)]


# ---- helpers on a cursor (shared by the writer's paths) ----------------------------------


def _fetch(cur: sqlite3.Cursor, sql: str, args: tuple) -> LinkState | None:
    r = cur.execute(sql, args).fetchone()
    return None if r is None else _row(r)


def _covering(cur: sqlite3.Cursor, link_id: str, t: int) -> LinkState | None:
    r = _fetch(cur, _AT_OR_BEFORE, (link_id, t))
    return r if r is not None and r.covers(t) else None


def _insert(cur: sqlite3.Cursor, link_id: str, start: int, end: int, s: States) -> None:
    cur.execute(_INSERT, (link_id, start, end, s.oper, s.admin, s.knowledge))


def _insert_out_of_order(cur: sqlite3.Cursor, link_id: str, t: int, new: States) -> None:
    """Put an observation at ``t`` into history without overlapping ranges."""
    covering = _covering(cur, link_id, t)
    if covering is not None:
        if covering.states == new:
            return  # already known
        _cut_out(cur, covering, t)
    _insert_merged(cur, link_id, t, new)


def _cut_out(cur: sqlite3.Cursor, r: LinkState, t: int) -> None:
    """Remove second ``t`` from range ``r``, keeping the non-empty pieces either side."""
    cur.execute(_DELETE, (r.link_id, r.start))
    if r.start < t:
        _insert(cur, r.link_id, r.start, t - 1, r.states)
    if t < r.end:
        _insert(cur, r.link_id, t + 1, r.end, r.states)


def _insert_merged(cur: sqlite3.Cursor, link_id: str, t: int, new: States) -> None:
    """Insert ``[t, t]`` into a gap, joined with same-state neighbours either side."""
    start = end = t
    before = _fetch(cur, _AT_OR_BEFORE, (link_id, t))
    after = _fetch(cur, _AFTER, (link_id, t))
    for r in (before, after):
        if r is not None and r.states == new:
            cur.execute(_DELETE, (link_id, r.start))
            start, end = min(start, r.start), max(end, r.end)
    _insert(cur, link_id, start, end, new)
