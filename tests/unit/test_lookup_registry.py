"""The lookup registry on a real SQLite file and a real PostgreSQL database: leases, upserts,
queries, limits, expiry, the schema's versions, writers in several processes."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from netsonde.archive.stores import StoreError, open_store
from netsonde.services.lookup import registry as registry_module
from netsonde.services.lookup.records import RecordError, RecordIn, record_in
from netsonde.services.lookup.registry import (
    LimitError,
    LookupRegistry,
    Member,
    Query,
    RegistryError,
    RegistryUnavailable,
    like_pattern,
    time_ordered_uuid,
)

T0 = 1_700_000_000


def service(locator: str, **more: list[str]) -> RecordIn:
    return record_in("service", {"service-locator": [locator], **more})


@pytest.fixture
def reg(store_location: str) -> LookupRegistry:
    """A registry on each backend in turn."""
    return LookupRegistry(store_location, ttl=7200, max_ttl=86400)


def test_registering_the_same_thing_twice_is_an_upsert_keeping_the_uri(
    reg: LookupRegistry,
) -> None:
    first = reg.register(service("http://a:8075/", **{"service-name": ["A"]}), now=T0)
    again = reg.register(service("http://a:8075/", **{"service-name": ["A2"]}), now=T0 + 10)
    assert first.new and not again.new
    assert again.record.uri == first.record.uri and first.record.uri.startswith("lookup/service/")
    assert len(reg) == 1
    got = reg.get(first.record.uri, now=T0 + 20)
    assert got is not None and got.values["service-name"] == ("A2",)  # updated in place
    assert (got.created, got.renewed, got.expires) == (T0, T0 + 10, T0 + 10 + 7200)
    other = reg.register(service("http://b:8075/"), now=T0)
    assert other.new and other.record.uri != first.record.uri


def test_a_type_without_locator_keys_is_keyed_by_its_whole_content(reg: LookupRegistry) -> None:
    a = reg.register(record_in("thing", {"x": ["1"], "y": ["2"]}), now=T0)
    same = reg.register(record_in(["thing"], {"y": ["2"], "x": "1"}), now=T0)
    other = reg.register(record_in("thing", {"x": ["1"]}), now=T0)
    assert a.record.uri == same.record.uri != other.record.uri


def test_ttl_defaults_and_is_capped_at_max_ttl(reg: LookupRegistry) -> None:
    assert reg.register(service("http://a/"), now=T0).record.expires == T0 + 7200
    assert reg.register(service("http://b/"), ttl=60, now=T0).record.expires == T0 + 60
    assert reg.register(service("http://c/"), ttl=10**9, now=T0).record.expires == T0 + 86400
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(RegistryError, match="ttl"):
            reg.register(service("http://d/"), ttl=bad, now=T0)
    with pytest.raises(ValueError, match="out of range"):
        reg.register(service("http://e/"), now=1e13)


def test_an_expired_record_is_never_answered_even_before_the_cleaner_runs(
    reg: LookupRegistry,
) -> None:
    uri = reg.register(service("http://a/"), ttl=60, now=T0).record.uri
    assert reg.get(uri, now=T0 + 59) is not None
    assert reg.get(uri, now=T0 + 60) is None  # expires is the first second it is gone
    assert reg.query(Query({}), now=T0 + 60) == []
    assert reg.query(Query({"service-locator": ["*"]}), now=T0 + 61) == []
    assert reg.renew(uri, now=T0 + 61) is None  # too late to renew
    assert len(reg) == 1  # still stored: the cleaner has not run
    # Registering it again revives the same uri as a new registration.
    again = reg.register(service("http://a/"), now=T0 + 100)
    assert again.new and again.record.uri == uri and again.record.created == T0 + 100


def test_wildcards_match_case_insensitively_and_like_metacharacters_are_literal(
    reg: LookupRegistry,
) -> None:
    names = ["ps1.example.org", "ps2.example.org", "psx.other.net", "100%_sure"]
    for n in names:
        reg.register(record_in("host", {"host-name": [n]}), now=T0)

    def hosts(pattern: str) -> list[str]:
        found = reg.query(Query({"host-name": [pattern]}), now=T0)
        return sorted(r.values["host-name"][0] for r in found)

    assert hosts("ps?.example.org") == names[:2]
    assert hosts("PS*") == sorted(names[:3])
    assert hosts("*.net") == ["psx.other.net"]
    assert hosts("ps1.example.org") == ["ps1.example.org"]
    assert hosts("100%_sure") == ["100%_sure"]
    assert hosts("100__sure") == []  # `_` is a character here, not LIKE's wildcard
    assert hosts("1%") == []
    assert like_pattern("a**b") == "a%b"
    # Case is folded for ASCII letters only, as SQLite's NOCASE does, on both backends.
    reg.register(record_in("host", {"host-name": ["Ärger.Example"]}), now=T0)
    assert hosts("ÄRGER.example") == ["Ärger.Example"]
    assert hosts("ärger.example") == []
    with pytest.raises(RegistryError, match="NUL"):
        hosts("a\0b")
    with pytest.raises(RegistryError, match="NUL"):  # PostgreSQL's text holds none
        reg.register(record_in("host", {"host-name": ["a\0b"]}), now=T0)
    with pytest.raises(RegistryError, match="wildcards"):
        hosts("*a" * 9)
    with pytest.raises(RegistryError, match="characters"):
        hosts("a" * 257)


def test_all_and_any_operators_and_the_type_filter(reg: LookupRegistry) -> None:
    reg.register(service("http://a/", **{"service-type": ["owamp"]}), now=T0)
    reg.register(service("http://b/", **{"service-type": ["bwctl"]}), now=T0)
    reg.register(record_in("host", {"host-name": ["a"], "service-type": ["owamp"]}), now=T0)

    def locators(q: Query) -> list[str]:
        return sorted(r.values.get("service-locator", ("-",))[0] for r in reg.query(q, now=T0))

    both = {"service-type": ["owamp"], "service-locator": ["http://b/"]}
    assert locators(Query(both, "all")) == []
    assert locators(Query(both, "any")) == ["-", "http://a/", "http://b/"]
    assert locators(Query(both, "any", type="service")) == ["http://a/", "http://b/"]
    # One key with two values: either matches.
    assert locators(Query({"service-type": ["owamp", "bwctl"]}, type="service")) == [
        "http://a/",
        "http://b/",
    ]
    assert locators(Query({"no-such-key": ["*"]})) == []


def test_paging_walks_every_record_once_in_a_stable_order(reg: LookupRegistry) -> None:
    for i in range(25):
        reg.register(service(f"http://h{i}/"), now=T0 + i)
    pages = [reg.query(Query({}, limit=10, offset=o), now=T0 + 30) for o in (0, 10, 20, 30)]
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    seen = [r.values["service-locator"][0] for p in pages for r in p]
    assert seen == [f"http://h{i}/" for i in range(25)]  # oldest first
    with pytest.raises(RegistryError, match="limit"):
        reg.query(Query({}, limit=0))


def test_a_registrant_may_hold_only_so_many_live_records(store_location: str) -> None:
    reg = LookupRegistry(store_location, max_records_per_registrant=2)
    reg.register(service("http://a/"), registrant="alice", ttl=100, now=T0)
    reg.register(service("http://b/"), registrant="alice", now=T0)
    with pytest.raises(LimitError, match="max_records_per_registrant"):
        reg.register(service("http://c/"), registrant="alice", now=T0)
    reg.register(service("http://b/"), registrant="alice", now=T0)  # an upsert is not one more
    reg.register(service("http://c/"), registrant="bob", now=T0)  # others have their own
    reg.register(service("http://d/"), registrant="alice", now=T0 + 100)  # a/ expired


def test_a_record_larger_than_max_record_bytes_is_refused(store_location: str) -> None:
    reg = LookupRegistry(store_location, max_record_bytes=1024)
    with pytest.raises(RegistryError, match="max_record_bytes"):
        reg.register(service("http://a/", **{"k": ["x" * 2000]}), now=T0)
    assert len(reg) == 0


def test_renew_bulk_renew_and_delete(reg: LookupRegistry) -> None:
    a = reg.register(service("http://a/"), ttl=60, now=T0).record.uri
    b = reg.register(service("http://b/"), ttl=60, now=T0).record.uri
    renewed = reg.renew(a, ttl=300, now=T0 + 30)
    assert renewed is not None and (renewed.renewed, renewed.expires) == (T0 + 30, T0 + 330)
    assert reg.renew("lookup/service/nope", now=T0) is None
    many = reg.renew_many([b, "nope", b, a], ttl=10**9, now=T0 + 50)
    assert [r.uri for r in many] == [b, a] and {r.expires for r in many} == {T0 + 50 + 86400}
    assert reg.delete(a, now=T0 + 60) is True
    assert reg.get(a, now=T0 + 60) is None and reg.delete(a, now=T0 + 60) is False
    assert reg.query(Query({"service-locator": ["http://a/"]}), now=T0 + 60) == []


def test_expire_removes_only_what_expired_and_counts_it(reg: LookupRegistry) -> None:
    for i, ttl in enumerate((10, 20, 30, 1000)):
        reg.register(service(f"http://h{i}/", **{"k": ["v"]}), ttl=ttl, now=T0)
    assert reg.expire(now=T0 + 20) == 2
    assert reg.expire(now=T0 + 20) == 0
    assert len(reg) == 2
    assert len(reg.query(Query({"k": ["v"]}), now=T0)) == 2  # their values went with them
    assert reg.expire(now=T0 + 10_000) == 2 and len(reg) == 0


def test_one_registry_shared_by_threads(reg: LookupRegistry) -> None:
    def register(k: int) -> None:
        for i in range(20):
            reg.register(service(f"http://t{k}-{i}/"), registrant=f"r{k}", now=T0)

    threads = [threading.Thread(target=register, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg.query(Query({}, limit=1000), now=T0)) == 80


def test_record_checks_name_what_is_wrong() -> None:
    cases = [
        ("Service", {}, "type"),
        (["a", "b"], {}, "type"),
        ("service", {"uri": ["x"]}, "uri"),
        ("service", {"bad key": ["x"]}, "'bad key'"),
        ("service", {"k": [1]}, "k[0]"),
        ("service", {"k": {"deep": ["x"]}}, "k"),
        ("service", {"k": ["x"] * 257}, "k"),
        ("service", {f"k{i}": [] for i in range(257)}, "record"),
    ]
    for kind, values, field in cases:
        with pytest.raises(RecordError) as e:
            record_in(kind, values)
        assert e.value.field == field, (kind, field)


def test_document_pages_walk_every_live_document_once(reg: LookupRegistry) -> None:
    """The XQuery's collection read a page at a time: lease-keyed documents, then records
    without a key; together exactly ``documents()``, expired ones nowhere."""
    for n in range(7):
        key = f"k{n:02d}"
        svc = Member(service(f"http://s{n}/"), f"<m id='{key}'/>")
        items = [
            Member(record_in("psmetadata", {"x": [f"{n}.{i}"]}), f"<d n='{i}'/>") for i in range(3)
        ]
        reg.register_group(key, items, service=svc, ttl=100 if n else 10, now=T0)
    for n in range(5):
        reg.register(record_in("host", {"host-name": [f"h{n}"]}), ttl=100 if n else 10, now=T0)
    at = T0 + 50  # k00 and h0 expired
    pages, after, seen = [], None, {}
    while True:
        docs, after = reg.document_page(after, now=at, limit=2)
        pages.append(len(docs))
        assert not seen.keys() & docs.keys()  # each document once
        seen.update(docs)
        if after is None:
            break
    assert max(pages) == 2 and len(pages) >= 6
    assert seen == reg.documents(now=at)
    assert len(seen) == 6 + 4 and "k00" not in seen and "k01" in seen
    assert all(d.xml and d.expires == T0 + 100 for d in seen.values())
    assert seen["k03"].xml.count("<d n=") == 3  # a document whole within its page


def test_uris_are_time_ordered_uuids(reg: LookupRegistry) -> None:
    """UUIDv7: records registered together sort together (few index pages per registration)."""
    early, late = time_ordered_uuid(T0), time_ordered_uuid(T0 + 0.002)
    assert early.version == late.version == 7 and str(early) < str(late)
    assert str(time_ordered_uuid(T0 + 1)) > str(time_ordered_uuid(T0 + 0.999))
    first = reg.register(service("http://a/"), now=T0).record.uri
    time.sleep(0.002)
    second = reg.register(service("http://b/"), now=T0).record.uri
    assert uuid.UUID(first.rsplit("/", 1)[1]).version == 7 and first < second


def test_a_group_upserts_every_member_in_one_go(reg: LookupRegistry) -> None:
    """Members sent twice count once (the last wins); a member registered before keeps its
    uri, and its created time while it was live; one that had expired starts anew."""

    def item(dst: str, note: str = "") -> Member:
        values = {"psmetadata-dst-address": [dst], **({"note": [note]} if note else {})}
        return Member(record_in("psmetadata", values), f"<d dst='{dst}'/>", f"ls:k/{dst}")

    svc = Member(service("http://s/"), "<m id='k'/>")
    assert reg.register_group("k", [item("a"), item("b", "x"), item("b", "y")], service=svc,
                              ttl=100, now=T0) == 3  # fmt: skip
    b = reg.query(Query({"psmetadata-dst-address": ["b"]}), now=T0)
    assert len(b) == 1 and b[0].values["note"] == ("y",)
    assert len(reg) == 3
    reg.register_group("k", [item("c")], service=svc, ttl=10, now=T0 + 50)  # renews a and b
    again = reg.register_group("k", [item("b", "z"), item("a")], service=svc, ttl=100,
                               now=T0 + 200)  # fmt: skip
    assert again == 2
    after = reg.query(Query({"psmetadata-dst-address": ["b"]}), now=T0 + 200)
    assert [r.uri for r in after] == [b[0].uri] and after[0].values["note"] == ("z",)
    assert after[0].created == T0 + 200  # it had expired at T0 + 60: a new registration
    assert reg.query(Query({"note": ["y"]}), now=T0 + 200) == []  # old values gone
    svc_rec = reg.group_service("k", now=T0 + 200)
    assert svc_rec is not None and svc_rec.renewed == T0 + 200
    reg.register_group("k", [item("b", "w")], service=svc, ttl=100, now=T0 + 250)
    live = reg.query(Query({"psmetadata-dst-address": ["b"]}), now=T0 + 250)
    assert live[0].created == T0 + 200 and live[0].uri == b[0].uri  # live: created kept
    c = reg.query(Query({"psmetadata-dst-address": ["c"]}), now=T0 + 250)
    assert c == []  # expired at T0 + 60 and not sent again


def test_closing_writes_the_wal_into_the_file(tmp_path: Path) -> None:  # SQLite only
    """Another connection still open (an API worker's), the file alone holds every record
    once a registry is closed: it can be copied as the whole registry."""
    path = tmp_path / "lookup.sqlite"
    other = LookupRegistry(path)
    for n in range(50):
        other.register(service(f"http://s{n}/"), now=T0)
    mine = LookupRegistry(path)
    mine.close()
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(path.read_bytes())  # the file only, not its -wal
    assert len(LookupRegistry(copy)) == 50
    other.close()


def test_a_write_takes_the_file_as_soon_as_another_process_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: another writer (an API worker's connection) holds the file: a registration
    polls for it, rather than SQLite's busy wait (asleep up to 100 ms a try), and gives up
    after the busy timeout."""
    path = tmp_path / "lookup.sqlite"
    reg = LookupRegistry(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released: list[float] = []

    def release() -> None:
        other.execute("COMMIT")
        released.append(time.monotonic())

    threading.Timer(0.23, release).start()
    reg.register(service("http://a/"), now=T0)
    assert released and time.monotonic() - released[0] < 0.05
    monkeypatch.setattr(registry_module, "_BUSY_SECONDS", 0.2)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreError, match="locked"):
        reg.register(service("http://b/"), now=T0)
    assert 0.2 <= time.monotonic() - started < 2
    other.execute("ROLLBACK")
    assert reg.register(service("http://b/"), now=T0).new  # the file free again


def test_a_common_value_walks_the_records_and_answers_as_a_rare_one_would(
    reg: LookupRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two plans (a value many records share: walk the records in page order; a rare one:
    collect its matches): the same records, in the same order, whichever runs."""
    for i in range(40):
        kinds = ["ping", "owamp"] if i % 2 else ["ping"]
        reg.register(service(f"http://h{i}/", **{"service-type": kinds}), now=T0 + i)
    reg.register(record_in("host", {"host-name": ["h1"], "service-type": ["ping"]}), now=T0)
    reg.register(service("http://gone/", **{"service-type": ["ping"]}), ttl=5, now=T0)
    queries = [
        Query({"service-type": ["ping"]}, limit=7, offset=3),
        Query({"service-type": ["PING"]}, type="service", limit=50),
        Query({"service-type": ["owamp"], "service-locator": ["http://h1/"]}, "all"),
        Query({"service-type": ["owamp"], "host-name": ["h1"]}, "any", limit=100),
        Query({"service-type": ["ow*"]}, limit=5, offset=15),
    ]

    def answers() -> list[list[str]]:
        return [[r.uri for r in reg.query(q, now=T0 + 100)] for q in queries]

    collected = answers()
    plans: list[list[bool]] = []
    real_sql = registry_module._query_sql

    def spy(q: Query, filters: list[tuple[str, list[str]]], common: list[bool], *more: Any) -> Any:
        plans.append(list(common))
        return real_sql(q, filters, common, *more)

    monkeypatch.setattr(registry_module, "_query_sql", spy)
    # every value here is common now (a threshold of 3 matches)
    monkeypatch.setattr(registry_module, "common_threshold", lambda *_: 3)
    walked = answers()
    assert walked == collected
    assert plans == [[True], [True], [True, False], [True, False], [True]]
    assert len(collected[0]) == 7 and len(collected[1]) == 40 and len(collected[4]) == 5
    assert len(collected[2]) == 1 and len(collected[3]) == 21  # h1; 20 owamp and the host
    gone = reg.query(Query({"service-locator": ["http://gone/"]}), now=T0 + 100)
    assert gone == []  # expired: never answered, whichever plan


def test_a_value_is_common_where_walking_the_records_costs_less_than_sorting_its_matches() -> None:
    # 210,000 records, the first page of 100: walking ~100 × 210,000 / m records against
    # sorting m matches: equal at m = 4,582.
    assert registry_module.common_threshold(100, 0, 210_000) == 4582
    assert registry_module.common_threshold(100, 50_000, 210_000) == registry_module.PROBE_MAX
    assert registry_module.common_threshold(1, 0, 0) == 1


def test_the_schema_is_versioned_and_a_newer_one_is_refused(store_location: str) -> None:
    LookupRegistry(store_location).close()
    store = open_store(store_location, "lookup", registry_module.MIGRATIONS)
    row = store.execute("SELECT version FROM netsonde_schema WHERE component = 'lookup'")
    assert row.fetchone()[0] == len(registry_module.MIGRATIONS) == 1
    store.execute("UPDATE netsonde_schema SET version = 99 WHERE component = 'lookup'")
    store.close()
    with pytest.raises(RegistryUnavailable, match="newer than this netsonde knows") as e:
        LookupRegistry(store_location)
    assert isinstance(e.value, StoreError)  # REST answers it 503, NMWG "could not be opened"


def test_a_file_of_the_last_unversioned_netsonde_opens_with_its_records(tmp_path: Path) -> None:
    """A registry file made before stores were versioned (today's tables, no netsonde_schema)
    is adopted as version 1 with its records, leases and change log."""
    path = tmp_path / "lookup.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        registry_module._SQLITE_V1
        + """
        INSERT INTO records VALUES ('lookup/service/1', 'k', 'service', 'token',
            '{"service-locator":["http://a/"]}', 1, 1, 4000000000, 'key1', '<m/>');
        INSERT INTO record_values VALUES ('lookup/service/1', 'service-locator', 'http://a/');
        INSERT INTO record_changes (doc, at) VALUES ('key1', 1);
        """
    )
    db.commit()
    db.close()
    reg = LookupRegistry(path)
    assert reg.group_live("key1") and reg.changes_since(0) == (1, {"key1"})
    found = reg.query(Query({"service-locator": ["HTTP://A/"]}))
    assert [r.uri for r in found] == ["lookup/service/1"]
    reg.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM netsonde_schema").fetchall() == [(1,)]


def test_two_writers_on_postgresql_share_lease_keys_without_loss_or_deadlock(pg_url: str) -> None:
    """Two API workers (each its own connection) register and renew the same lease keys at
    once, in opposite orders, their items in opposite orders: nothing fails or waits on the
    other forever, and every key ends with its service and items once each."""
    regs = [LookupRegistry(pg_url) for _ in range(2)]
    keys = [f"k{n}" for n in range(6)]
    errors: list[BaseException] = []

    def work(me: int) -> None:
        try:
            for rnd in range(12):
                for key in keys if me == 0 else reversed(keys):
                    svc = Member(service(f"http://{key}/"), f"<m id='{key}'/>")
                    items = [
                        Member(
                            record_in("psmetadata", {"x": [f"{key}.{i}"]}),
                            f"<d n='{i}'/>",
                            f"ls:{key}/{i}",
                        )
                        for i in range(5)
                    ]
                    if me:
                        items.reverse()
                    got = regs[me].register_group(key, items, service=svc, now=T0 + rnd)
                    assert got == 5
                    assert regs[me].renew_group(key, now=T0 + rnd) == 6
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(me,)) for me in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads) and errors == []
    reg = regs[0]
    assert len(reg) == len(keys) * 6
    for key in keys:
        found = reg.query(Query({"x": [f"{key}.*"]}), now=T0 + 20)
        assert sorted(r.values["x"][0] for r in found) == [f"{key}.{i}" for i in range(5)]
        assert reg.group_service(key, now=T0 + 20) is not None
    high, changed = reg.changes_since(0)
    assert changed == set(keys) and high >= len(keys) * 2 * 12
    for r in regs:
        r.close()


def test_the_change_log_is_numbered_in_commit_order_on_postgresql(pg_url: str) -> None:
    """A mirror that has read the log up to n never misses a change numbered below n: a
    writer whose transaction is open holds the others back, so a number is never taken
    before an earlier one is committed."""
    first, second, reader = (LookupRegistry(pg_url) for _ in range(3))
    svc = Member(service("http://a/"), "<m id='a'/>")
    done = threading.Event()

    def register() -> None:
        second.register_group("a", [], service=svc)
        done.set()

    with first._transaction() as cur:  # a writer between its statements
        cur.execute("INSERT INTO record_changes (doc, at) VALUES ('held', 1)")
        t = threading.Thread(target=register)
        t.start()
        assert not done.wait(0.5)  # the other writer waits for this one's commit
        assert reader.changes_since(0) == (0, set())  # nothing committed yet
    t.join(10)
    assert done.is_set()
    high, changed = reader.changes_since(0)
    assert changed == {"held", "a"}
    low = reader._read("SELECT min(seq) FROM record_changes", ())[0][0]
    held = reader._read("SELECT seq FROM record_changes WHERE doc = 'held'", ())[0][0]
    assert held == low < high  # the held one was numbered, and committed, first
    for r in (first, second, reader):
        r.close()


def test_a_registry_on_postgresql_reconnects_after_losing_its_connection(pg_url: str) -> None:
    """The server ended the connection (a restart): the request that meets the dead
    connection fails (REST: 503), the next one is answered on a new connection."""
    reg = LookupRegistry(pg_url)
    uri = reg.register(service("http://a/"), now=T0).record.uri
    (pid,) = reg._read("SELECT pg_backend_pid()", ())[0]
    other = open_store(pg_url, "lookup", registry_module.MIGRATIONS)
    other.execute("SELECT pg_terminate_backend(?)", (pid,))
    other.close()
    with pytest.raises(StoreError):
        reg.get(uri, now=T0)
    assert reg.get(uri, now=T0) is not None
    assert reg.register(service("http://b/"), now=T0).new  # writes too
    assert reg._read("SELECT pg_backend_pid()", ())[0][0] != pid
    reg.close()
