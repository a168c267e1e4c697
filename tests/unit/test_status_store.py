"""The link-state store: range semantics (extend, split, out of order), errors, and queries
exact at the edges, on each backend (a SQLite file, a PostgreSQL database); its schema's
versions; writers racing on one link. Every expected history is written out by hand."""

from __future__ import annotations

import itertools
import random
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsonde.archive.stores import StoreError, open_store
from netsonde.services.status.store import (
    COMPONENT,
    MIGRATIONS,
    LinkState,
    LinkStatusStore,
    StatusError,
    Update,
)
from pgcluster import PgCluster

L1 = "urn:ogf:network:domain=example.net:host=r1:port=xe-0/0/0:link=1"
L2 = "urn:ogf:network:domain=example.net:host=r1:port=xe-0/0/0:link=10"  # L1 is its prefix

# Shorthands for observations of L1 and for the ranges expected.
Range = tuple[int, int, str, str, str]  # (start, end, oper, admin, knowledge)


def up(t: int, do_update: bool = True) -> Update:
    return Update(L1, t, "up", "normaloperation", "full", do_update)


def down(t: int, do_update: bool = True) -> Update:
    return Update(L1, t, "down", "normaloperation", "full", do_update)


def obs(t: int, oper: str, admin: str = "normaloperation", knowledge: str = "full") -> Update:
    return Update(L1, t, oper, admin, knowledge)


def U(s: int, e: int) -> Range:
    return (s, e, "up", "normaloperation", "full")


def D(s: int, e: int) -> Range:
    return (s, e, "down", "normaloperation", "full")


def ranges(store: LinkStatusStore, link: str = L1) -> list[Range]:
    return [(r.start, r.end, r.oper, r.admin, r.knowledge) for r in store.history(link)]


@pytest.fixture
def store(store_location: str) -> Iterator[LinkStatusStore]:
    """An empty store on each backend in turn."""
    with LinkStatusStore(store_location) as s:
        yield s


def fill(store: LinkStatusStore, updates: list[Update]) -> LinkStatusStore:
    for u in updates:
        store.update(*u)
    return store


# ---- range semantics ------------------------------------------------------------------------

IN_ORDER = {
    "first store opens [t, t]": ([up(10)], [U(10, 10)]),
    "same state extends": ([up(10), up(20), up(30)], [U(10, 30)]),
    "same state at the same second is a no-op": ([up(10), up(10)], [U(10, 10)]),
    "new state opens a new range, old one stays closed": (
        [up(10), up(20), down(30)],
        [U(10, 20), D(30, 30)],
    ),
    "back to the old state opens a third": (
        [up(10), up(20), down(30), down(40), up(50)],
        [U(10, 20), D(30, 40), U(50, 50)],
    ),
    "admin change is a new state": (
        [obs(10, "up"), obs(20, "up", "maintenance")],
        [U(10, 10), (20, 20, "up", "maintenance", "full")],
    ),
    "knowledge change is a new state": (
        [obs(10, "up"), obs(20, "up", knowledge="partial")],
        [U(10, 10), (20, 20, "up", "normaloperation", "partial")],
    ),
    "aliases and case name the same state": (
        [obs(10, "UP", "normal"), obs(20, "up", "NormalOperation", "FULL")],
        [U(10, 20)],
    ),
    "under-construction is underrepair": (
        [obs(10, "down", "under-construction")],
        [(10, 10, "down", "underrepair", "full")],
    ),
}

OUT_OF_ORDER = {
    "other state inside the latest range splits it in three": (
        [up(10), up(30), down(20)],
        [U(10, 19), D(20, 20), U(21, 30)],
    ),
    "other state at the latest range's end second": (
        [up(10), up(30), down(30)],
        [U(10, 29), D(30, 30)],
    ),
    "other state at the latest range's start second": (
        [up(10), up(30), down(10)],
        [D(10, 10), U(11, 30)],
    ),
    "one-second range replaced, then joined with the same state after it": (
        [up(10), down(20), up(30), down(10)],
        [D(10, 20), U(30, 30)],
    ),
    "other state inside an older range splits it": (
        [up(10), up(20), down(30), up(40), down(15)],
        [U(10, 14), D(15, 15), U(16, 20), D(30, 30), U(40, 40)],
    ),
    "gap: joins the range before with the same state": (
        [up(10), up(20), down(30), down(40), up(25)],
        [U(10, 25), D(30, 40)],
    ),
    "gap: joins the range after with the same state": (
        [up(10), up(20), down(30), down(40), up(50), down(25)],
        [U(10, 20), D(25, 40), U(50, 50)],
    ),
    "gap: joins both neighbours into one range": (
        [up(10, do_update=False), up(30, do_update=False), down(50), up(20)],
        [U(10, 30), D(50, 50)],
    ),
    "gap between other states: a range of its own": (
        [up(10), down(30), obs(50, "degraded"), obs(20, "unknown")],
        [
            U(10, 10),
            (20, 20, "unknown", "normaloperation", "full"),
            D(30, 30),
            (50, 50, "degraded", "normaloperation", "full"),
        ],
    ),
    "inside a range of the same state: already known, nothing changes": (
        [up(10), up(20), down(30), up(15)],
        [U(10, 20), D(30, 30)],
    ),
    "before the first range, same state as it: joins it": (
        [down(10), down(20), up(30), down(5)],
        [D(5, 20), U(30, 30)],
    ),
    "before the first range, other state: a range of its own": (
        [down(10), up(30), obs(5, "unknown")],
        [(5, 5, "unknown", "normaloperation", "full"), D(10, 10), U(30, 30)],
    ),
}

NO_UPDATE = {
    "no-update stores are never merged": (
        [up(10, False), up(20, False)],
        [U(10, 10), U(20, 20)],
    ),
    "no-update into a gap of the history": (
        [up(10), up(20), down(40), up(30, False)],
        [U(10, 20), U(30, 30), D(40, 40)],
    ),
    "update after no-update extends the latest": (
        [up(10, False), up(20)],
        [U(10, 20)],
    ),
}

CASES = {**IN_ORDER, **OUT_OF_ORDER, **NO_UPDATE}


@pytest.mark.parametrize(("updates", "expected"), CASES.values(), ids=CASES.keys())
def test_range_semantics(
    store: LinkStatusStore, updates: list[Update], expected: list[Range]
) -> None:
    assert ranges(fill(store, updates)) == expected


@pytest.mark.parametrize(("updates", "expected"), CASES.values(), ids=CASES.keys())
def test_batch_equals_single_updates(
    store: LinkStatusStore, updates: list[Update], expected: list[Range]
) -> None:
    assert store.update_many(updates) == len(updates)
    assert ranges(store) == expected


@pytest.mark.parametrize("seed", range(5))
def test_random_stores_keep_every_observation(store: LinkStatusStore, seed: int) -> None:
    """Random in- and out-of-order stores: ranges never overlap, and every second ever
    observed still answers the newest state accepted for that very second."""
    rnd = random.Random(seed)
    seen = {}
    for _ in range(300):
        u = Update(
            L1,
            rnd.randrange(60),
            rnd.choice(["up", "down"]),
            "normaloperation",
            do_update=rnd.random() < 0.9,
        )
        try:
            store.update(*u)
        except StatusError:
            continue
        seen[u.time] = u.oper
        got = store.history(L1)
        assert all(a.end < b.start for a, b in itertools.pairwise(got))
        assert {t: store.at([L1], t)[L1].oper for t in seen} == seen


# ---- refused stores -------------------------------------------------------------------------

ERRORS = {
    "update in the past, inside the latest range": (
        [up(10), up(20)],
        up(15),
        "update in the past",
    ),
    "update in the past, before the latest range": (
        [up(10), up(20)],
        up(5),
        "update in the past",
    ),
    "no-update duplicate inside a range": (
        [up(10), up(20)],
        down(15, False),
        f"already have information on {L1} at 15",
    ),
    "no-update duplicate at the start edge": (
        [up(10), up(20)],
        down(10, False),
        f"already have information on {L1} at 10",
    ),
    "no-update duplicate at the end edge": (
        [up(10), up(20)],
        up(20, False),
        f"already have information on {L1} at 20",
    ),
    "invalid oper": ([up(10)], obs(20, "sideways"), "invalid operational state: 'sideways'"),
    "invalid admin": (
        [up(10)],
        obs(20, "up", "broken"),
        "invalid administrative state: 'broken'",
    ),
    "invalid knowledge": (
        [up(10)],
        obs(20, "up", knowledge="some"),
        "invalid knowledge level: 'some'",
    ),
    "time as text": ([up(10)], Update(L1, "20", "up", "normal"), "invalid time: '20'"),
    "time as float": ([up(10)], Update(L1, 20.5, "up", "normal"), "invalid time: 20.5"),
    "time as bool": ([up(10)], Update(L1, True, "up", "normal"), "invalid time: True"),
    # Past 9999-12-31T23:59:59Z: no answer could print it (it once broke /api/v1/links).
    "time after year 9999": ([up(10)], up(253_402_300_800), "time 253402300800 is out of range"),
    "time of 2^63-1": ([up(10)], up(2**63 - 1), "time 9.22337e+18 is out of range"),
    "time beyond 64 bits": ([up(10)], up(2**64), "time 1.84467e+19 is out of range"),
    "time before year 1": ([up(10)], down(-62_135_596_801), "time -62135596801 is out of range"),
}


@pytest.mark.parametrize(("before", "bad", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_refused_store_changes_nothing(
    store: LinkStatusStore, before: list[Update], bad: Update, message: str
) -> None:
    fill(store, before)
    kept = ranges(store)
    with pytest.raises(StatusError, match="^" + re.escape(message)):
        store.update(*bad)
    assert ranges(store) == kept


@pytest.mark.parametrize(("before", "bad", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_batch_is_all_or_nothing(
    store: LinkStatusStore, before: list[Update], bad: Update, message: str
) -> None:
    fill(store, before)
    kept = ranges(store)
    later = Update(L2, 100, "up", "normal")
    with pytest.raises(StatusError, match=re.escape(message)):
        store.update_many([later, bad, later])
    assert ranges(store) == kept
    assert store.history(L2) == []


# ---- queries, exact at the edges ------------------------------------------------------------

R1 = LinkState(L1, 10, 20, "up", "normaloperation", "full")
R2 = LinkState(L1, 30, 40, "down", "maintenance", "full")
R3 = LinkState(L1, 50, 50, "up", "normaloperation", "partial")


@pytest.fixture
def edges(store: LinkStatusStore) -> LinkStatusStore:
    """L1: [10,20] up, [30,40] down, [50,50] up (latest); L2: [15,45] degraded."""
    store.update_many(
        [
            (L1, 10, "up", "normal"),
            (L1, 20, "up", "normal"),
            (L1, 30, "down", "maintenance"),
            (L1, 40, "down", "maintenance"),
            (L1, 50, "up", "normal", "partial"),
            (L2, 15, "degraded", "troubleshooting"),
            (L2, 45, "degraded", "troubleshooting"),
        ]
    )
    return store


R_L2 = LinkState(L2, 15, 45, "degraded", "troubleshooting", "full")

POINTS = {
    "before everything": (9, None),
    "start edge": (10, R1),
    "inside": (15, R1),
    "end edge": (20, R1),
    "one past the end: not covered": (21, None),
    "gap": (25, None),
    "next start edge": (30, R2),
    "next end edge": (40, R2),
    "one-second range": (50, R3),
    "after the latest": (51, None),
    "now: the latest range": (None, R3),
}


@pytest.mark.parametrize(("t", "expected"), POINTS.values(), ids=POINTS.keys())
def test_point_query(edges: LinkStatusStore, t: int | None, expected: LinkState | None) -> None:
    assert edges.at([L1], t) == {L1: expected}


RANGES = {
    "before everything": (0, 9, []),
    "touches the start edge": (0, 10, [R1]),
    "end edge to next start edge": (20, 30, [R1, R2]),
    "strictly inside a gap": (21, 29, []),
    "gap to the next start edge": (21, 30, [R2]),
    "across two ranges": (15, 35, [R1, R2]),
    "inside one range": (15, 15, [R1]),
    "a single second at the end edge": (40, 40, [R2]),
    "end edge to the one-second range": (40, 50, [R2, R3]),
    "after everything": (51, 100, []),
    "everything": (0, 100, [R1, R2, R3]),
}


@pytest.mark.parametrize(("start", "end", "expected"), RANGES.values(), ids=RANGES.keys())
def test_range_query(
    edges: LinkStatusStore, start: int, end: int, expected: list[LinkState]
) -> None:
    assert edges.between([L1], start, end) == {L1: expected}


def test_range_query_refuses_start_after_end(edges: LinkStatusStore) -> None:
    with pytest.raises(StatusError, match="start 20 is after end 10"):
        edges.between([L1], 20, 10)


def test_history_and_links(edges: LinkStatusStore) -> None:
    assert edges.history(L1) == [R1, R2, R3]
    assert edges.history(L2) == [R_L2]
    assert edges.history("urn:ogf:network:domain=nowhere") == []
    assert edges.links() == [R3, R_L2]


def test_many_links_are_isolated(edges: LinkStatusStore) -> None:
    """Ids where one is a prefix of the other, queried together, answer independently."""
    assert edges.at([L1, L2, "urn:x"], 15) == {L1: R1, L2: R_L2, "urn:x": None}
    assert edges.at([L1, L2], 25) == {L1: None, L2: R_L2}
    assert edges.between([L1, L2], 41, 49) == {L1: [], L2: [R_L2]}
    # an out-of-order store into L1 leaves L2 alone
    edges.update(L1, 25, "unknown", "unknown")
    assert edges.history(L2) == [R_L2]
    assert edges.at([L1], 25)[L1] == LinkState(L1, 25, 25, "unknown", "unknown", "full")


def test_many_links_interleaved(store: LinkStatusStore) -> None:
    links = [f"urn:ogf:network:domain=d:host=h:port=p{i}:link=l{i}" for i in range(5)]
    store.update_many(
        Update(link, t, "down" if (i == 2 and t >= 30) else "up", "normal")
        for t in (10, 20, 30)
        for i, link in enumerate(links)
    )
    for i, link in enumerate(links):
        expected = (
            [
                LinkState(link, 10, 20, "up", "normaloperation", "full"),
                LinkState(link, 30, 30, "down", "normaloperation", "full"),
            ]
            if i == 2
            else [LinkState(link, 10, 30, "up", "normaloperation", "full")]
        )
        assert store.history(link) == expected
    assert [r.link_id for r in store.links()] == sorted(links)


def test_file_store_uses_wal_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "status.sqlite"
    with LinkStatusStore(path) as store:
        store.update(L1, 10, "up", "normal")
        store.update(L1, 20, "up", "normal")
    with LinkStatusStore(path) as store:
        assert store.history(L1) == [LinkState(L1, 10, 20, "up", "normaloperation", "full")]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_the_edges_of_the_time_range_are_stored(store: LinkStatusStore) -> None:
    fill(store, [up(-62_135_596_800), up(253_402_300_799)])
    assert ranges(store) == [U(-62_135_596_800, 253_402_300_799)]


def test_a_row_out_of_range_stored_before_the_check_is_read_inside_it(
    store_location: str,
) -> None:
    """A store written by an older version may hold times past 9999: readers get them clamped
    to what can be printed, and the other links are untouched."""
    with LinkStatusStore(store_location) as store:
        store.update(L1, 10, "up", "normal")
        store.update(L2, 10, "up", "normal")
    raw = open_store(store_location, COMPONENT, MIGRATIONS)  # what the older version wrote
    raw.execute("UPDATE link_status SET end_time = 253402300800 WHERE link_id = ?", (L1,))
    raw.execute(
        "INSERT INTO link_status VALUES (?, 999999999999, 999999999999, 'down',"
        " 'normaloperation', 'full')",
        (L1,),
    )
    raw.close()
    end = 253_402_300_799
    with LinkStatusStore(store_location) as store:
        first = LinkState(L1, 10, end, "up", "normaloperation", "full")
        last = LinkState(L1, end, end, "down", "normaloperation", "full")
        assert store.history(L1) == [first, last]
        assert store.links() == [last, LinkState(L2, 10, 10, "up", "normaloperation", "full")]
        assert store.at([L1])[L1] == last
        assert store.at([L1], 20)[L1] == first
        assert store.between([L1], 0, end)[L1] == [first]  # the other starts later


# ---- the schema's versions ------------------------------------------------------------------

# The table exactly as netsonde made it before stores were versioned (no netsonde_schema).
UNVERSIONED = """
CREATE TABLE link_status (
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


def test_a_file_from_before_versioning_opens_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite"
    db = sqlite3.connect(path)
    db.executescript(UNVERSIONED)
    with db:
        db.execute(
            "INSERT INTO link_status VALUES (?, 10, 20, 'up', 'normaloperation', 'full')", (L1,)
        )
    db.close()
    with LinkStatusStore(path) as store:
        assert ranges(store) == [U(10, 20)]
        store.update(L1, 30, "up", "normal")
        assert ranges(store) == [U(10, 30)]
    db = sqlite3.connect(path)
    assert db.execute("SELECT component, version FROM netsonde_schema").fetchall() == [
        (COMPONENT, 1)
    ]
    db.close()


def test_a_store_persists_and_records_its_version(store_location: str) -> None:
    with LinkStatusStore(store_location) as store:
        store.update_many([up(10), up(20)])
    with LinkStatusStore(store_location) as store:
        assert ranges(store) == [U(10, 20)]
    raw = open_store(store_location, COMPONENT, MIGRATIONS)
    row = raw.execute("SELECT version FROM netsonde_schema WHERE component = ?", (COMPONENT,))
    assert row.fetchone()[0] == max(m.version for m in MIGRATIONS)
    raw.close()


def test_a_schema_newer_than_this_netsonde_is_refused(store_location: str) -> None:
    LinkStatusStore(store_location).close()
    raw = open_store(store_location, COMPONENT, MIGRATIONS)
    raw.execute("UPDATE netsonde_schema SET version = 99 WHERE component = ?", (COMPONENT,))
    raw.close()
    with pytest.raises(StatusError, match="status schema is version 99, newer than this"):
        LinkStatusStore(store_location)


# ---- PostgreSQL: writers racing, a connection lost --------------------------------------------


def test_concurrent_writers_of_one_link_never_overlap(pg_url: str) -> None:
    """Two writers on their own connections (the daemon's feed and an API worker storing via
    NMWG) store alternate seconds of the same two links at once, in batches naming the links
    in opposite orders: no batch fails (no deadlock, no key clash), ranges never overlap, and
    every second answers the state its writer stored there."""
    seconds = 80
    start = threading.Barrier(2)
    failed: list[BaseException] = []

    def writer(first: int, oper: str, links: list[str]) -> None:
        try:
            with LinkStatusStore(pg_url) as store:
                start.wait()
                for t in range(first, seconds, 2):
                    store.update_many([Update(link, t, oper, "normal") for link in links])
        except BaseException as e:  # the assertion below names it
            failed.append(e)

    threads = [
        threading.Thread(target=writer, args=(0, "up", [L1, L2])),
        threading.Thread(target=writer, args=(1, "down", [L2, L1])),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert failed == []
    expected = {t: "up" if t % 2 == 0 else "down" for t in range(seconds)}
    with LinkStatusStore(pg_url) as store:
        for link in (L1, L2):
            got = store.history(link)
            assert all(a.end < b.start for a, b in itertools.pairwise(got)), got
            assert {t: store.at([link], t)[link].oper for t in range(seconds)} == expected


def test_a_lost_connection_is_opened_again(pg_cluster: PgCluster, pg_url: str) -> None:
    """The server drops the connection (a restart, an admin): that call fails with
    StoreError (the feed retries it), and the next one works on a new connection."""
    with LinkStatusStore(pg_url) as store:
        store.update(L1, 10, "up", "normal")
        pg_cluster.disconnect(pg_url)
        with pytest.raises(StoreError):
            store.update(L1, 20, "up", "normal")
        store.update(L1, 20, "up", "normal")
        assert ranges(store) == [U(10, 20)]


def test_a_database_that_is_not_there_cannot_be_opened(pg_url: str) -> None:
    parts = urllib.parse.urlsplit(pg_url)
    missing = urllib.parse.urlunsplit(parts._replace(path="/no_such_db"))
    with pytest.raises(StatusError, match=r"^cannot open link status store postgresql://") as e:
        LinkStatusStore(missing)
    assert 'database "no_such_db" does not exist' in str(e.value)
    assert "host=" not in str(e.value)  # the URL as shown: user, host and database only
