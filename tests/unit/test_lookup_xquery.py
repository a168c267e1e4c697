"""The lookup service's sandboxed XQuery (services/lookup/xquery.py): the seed's rewrite, the
collection kept in step with the registry (changed documents only, expired records never
answered), and hostile queries answered with an NMWG error, never a hang, after which the LS
keeps answering."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from lxml import etree
from test_lookup_nmwg import (
    AP,
    KEY,
    TestClient,
    client_for,
    codes,
    item,
    message,
    post,
    query,
    texts,
)

from netsonde.nmwg import codes as nmwg_codes
from netsonde.services.lookup import xquery
from netsonde.services.lookup.records import RecordIn, record_in
from netsonde.services.lookup.registry import LookupRegistry
from netsonde.services.lookup.xquery import NS, XQueryEngine, XQueryError, rewrite

MB = 1 << 20


# ---- the rewrite --------------------------------------------------------------------------


def test_rewrite_binds_slashes_after_whitespace_and_collection_calls_to_the_registry() -> None:
    q = 'declare namespace a="urn:a";\n  /a:store[@x = "a /b"]/a:m'
    out = rewrite(q)
    prolog, _, body = out.partition(f"declare variable $Q{{{NS}}}collection")
    assert prolog == 'declare namespace a="urn:a";'  # the user's setters stay first
    assert f' $Q{{{NS}}}collection/a:store[@x = "a $Q{{{NS}}}collection/b"]' in body  # as LS.pm
    assert rewrite("/x").endswith(f"$Q{{{NS}}}collection/x")  # a query opening with "/"
    assert rewrite("count(/x)").endswith(f"count($Q{{{NS}}}collection/x)")  # an argument
    assert rewrite("(1,/x)").endswith(f"(1,$Q{{{NS}}}collection/x)")  # a sequence member
    assert "1 div 2" in rewrite("1 div 2") and "a/b" in rewrite("a/b")
    calls = rewrite("collection('c')/x, fn:doc('d'), my-doc(1), doc-available('e'), x:doc(2)")
    assert f"Q{{{NS}}}collection('c')" in calls and f"Q{{{NS}}}doc('d')" in calls
    assert "my-doc(1)" in calls and "doc-available('e')" in calls and "x:doc(2)" in calls


def test_rewrite_keeps_line_numbers() -> None:
    assert rewrite("xquery version '3.1';\n1 +\n2").count("\n") == 2


# ---- the collection -----------------------------------------------------------------------


@pytest.fixture
def registry(store_location: str) -> Iterator[LookupRegistry]:
    """On each backend in turn (tests of the worker alone: ``WORKER_ONLY``)."""
    r = LookupRegistry(store_location)
    yield r
    r.close()


# The worker, not the registry's SQL, is under test: one backend is enough.
WORKER_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def engine() -> Iterator[XQueryEngine]:
    e = XQueryEngine(timeout=20, memory=512 * MB)
    yield e
    e.close()


def run(engine: XQueryEngine, registry: LookupRegistry, q: str, max_bytes: int = MB) -> str:
    return engine.run(registry, q, deadline=time.monotonic() + 30, max_bytes=max_bytes)


def host(name: str) -> RecordIn:
    return record_in("host", {"host-name": [name]})


HOSTS = (
    'declare namespace n="http://netsonde.org/ns/lookup/record/1.0/";'
    ' string-join(sort( /nmwg:store/n:record/n:value[@name="host-name"]), ",")'
)


def test_only_changed_documents_are_sent_and_expired_ones_leave(
    engine: XQueryEngine, registry: LookupRegistry
) -> None:
    registry.register(host("a.example.org"))
    assert run(engine, registry, HOSTS) == "a.example.org"
    assert (engine.started, engine.sent) == (1, 0)
    assert run(engine, registry, HOSTS) == "a.example.org"
    assert (engine.started, engine.sent) == (1, 0)  # nothing changed: nothing sent
    time.sleep(1 - time.time() % 1)  # leases are whole seconds: b lives this one out
    registry.register(host("b.example.org"), ttl=1)
    assert run(engine, registry, HOSTS) == "a.example.org,b.example.org"
    assert (engine.started, engine.sent) == (1, 1)  # the new one only
    time.sleep(2.1)
    assert run(engine, registry, HOSTS) == "a.example.org"  # expired: never answered
    assert engine.sent == 2
    assert run(engine, registry, "count( /nmwg:store)") == "1"


def test_deleted_records_leave_and_a_new_worker_loads_everything(
    engine: XQueryEngine, registry: LookupRegistry
) -> None:
    a = registry.register(host("a.example.org"))
    registry.register(host("b.example.org"))
    assert run(engine, registry, HOSTS) == "a.example.org,b.example.org"
    registry.delete(a.record.uri)
    assert run(engine, registry, HOSTS) == "b.example.org"
    engine.close()
    assert run(engine, registry, HOSTS) == "b.example.org"
    assert engine.started == 2


def test_the_collection_goes_to_the_worker_a_page_at_a_time(
    engine: XQueryEngine, registry: LookupRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load and an update larger than a page arrive whole, in several frames."""
    monkeypatch.setattr(xquery, "PAGE", 4)
    for n in range(10):
        registry.register(host(f"h{n}.example.org"))
    assert run(engine, registry, "count( /nmwg:store)") == "10"
    assert engine.pages >= 3
    loaded = engine.pages
    for n in range(10, 19):
        registry.register(host(f"h{n}.example.org"))
    assert run(engine, registry, "count( /nmwg:store)") == "19"
    assert (engine.started, engine.sent) == (1, 9)  # the new ones only, in 3 pages
    assert engine.pages - loaded == 3
    names = run(engine, registry, HOSTS).split(",")
    assert sorted(names) == sorted(f"h{n}.example.org" for n in range(19))


def test_a_load_cut_short_while_sending_pages_goes_on_at_the_next_query(
    engine: XQueryEngine, registry: LookupRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xquery, "PAGE", 5)
    text = "x" * 4000
    for n in range(100):  # some 6 MB in 20 pages: the pipe fills while the worker parses
        values = {"host-name": [f"h{n}.example.org"], "host-os": [text] * 14}
        registry.register(record_in("host", values))
    with pytest.raises(XQueryError) as loading:
        engine.run(registry, HOSTS, deadline=time.monotonic() + 0.05, max_bytes=MB)
    assert loading.value.code == nmwg_codes.LS_QUERY_TIMEOUT
    assert engine.pages < 20  # cut short while sending
    assert run(engine, registry, "count( /nmwg:store)") == "100"
    assert engine.started == 1 and engine.pages == 20  # the same load, finished


def test_doc_reads_a_registration_by_key(engine: XQueryEngine, registry: LookupRegistry) -> None:
    registry.register(record_in("service", {"service-locator": [AP]}))
    found = run(engine, registry, f'doc("dbxml:/ls/{KEY}")//psservice:accessPoint/string()')
    assert found == AP


# ---- hostile queries ----------------------------------------------------------------------

HOSTILE = [
    ('doc("file:///etc/passwd")', nmwg_codes.LS_XMLDB),
    ('doc("http://127.0.0.1:1/")', nmwg_codes.LS_XMLDB),
    ('Q{http://www.w3.org/2005/xpath-functions}doc("file:///etc/passwd")', nmwg_codes.LS_XMLDB),
    ('Q{http://www.w3.org/2005/xpath-functions}collection("file:///etc/")', nmwg_codes.LS_XMLDB),
    ('unparsed-text("/etc/passwd")', nmwg_codes.LS_XMLDB),
    ('unparsed-text("http://127.0.0.1:1/")', nmwg_codes.LS_XMLDB),
    ('import module namespace m="urn:m" at "http://127.0.0.1:1/m.xq"; 1', nmwg_codes.LS_XMLDB),
    ("declare function local:f($x) { local:f($x + 1) + 1 }; local:f(1)", nmwg_codes.LS_XMLDB),
    ("count(1 to 10e12)", nmwg_codes.LS_XMLDB),
    ("(1 to 10000000000000)[. = -1]", nmwg_codes.LS_XMLDB),
    ("(1 to 2000000000)[. = -1]", nmwg_codes.LS_QUERY_TIMEOUT),
    ('string-join(for $i in 1 to 100000000 return "aaaaaaaaaa")', None),  # time or memory
]


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("ls")
    with client_for(tmp, query_timeout=3, query_memory="256MiB") as c:
        body = message("LSRegisterRequest", SERVICE, [item("10.0.0.2")])
        assert codes(post(c, body)) == ["success.ls.register"]
        yield c


SERVICE = (
    "<perfsonar:subject><psservice:service>"
    f"<psservice:accessPoint>{AP}</psservice:accessPoint>"
    "</psservice:service></perfsonar:subject>"
)


@pytest.mark.parametrize(("hostile", "code"), HOSTILE, ids=[h for h, _ in HOSTILE])
def test_a_hostile_query_gets_an_error_and_the_ls_answers_on(
    ls: TestClient, hostile: str, code: str | None
) -> None:
    started = time.monotonic()
    m = query(ls, hostile)
    assert time.monotonic() - started < 15
    (got,) = codes(m)
    if code is None:
        assert got in (nmwg_codes.LS_QUERY_TIMEOUT, nmwg_codes.LS_XMLDB)
    else:
        assert got == code, texts(m)
    assert "root:" not in texts(m)[0]  # /etc/passwd's first line never comes back
    after = query(ls, f'/nmwg:store/nmwg:metadata[@id="{KEY}"]/@id/string()')
    assert codes(after) == [nmwg_codes.SUCCESS_LS_QUERY]
    assert after.findtext(f".//{{{ETREE_PS}}}datum") == KEY


ETREE_PS = "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/1.0/"


@WORKER_ONLY
def test_the_worker_sees_no_environment(engine: XQueryEngine, registry: LookupRegistry) -> None:
    names = run(engine, registry, 'string-join(available-environment-variables(), ",")')
    assert names in ("", "LC_CTYPE")  # Python's own locale coercion at most: no token, no path


@WORKER_ONLY
def test_an_answer_past_max_bytes_is_refused(
    engine: XQueryEngine, registry: LookupRegistry
) -> None:
    big = 'string-join(for $i in 1 to 200 return "aaaaaaaaaa")'
    assert len(run(engine, registry, big, max_bytes=2000)) == 2000
    with pytest.raises(XQueryError) as refused:
        run(engine, registry, big, max_bytes=1999)
    assert refused.value.code == nmwg_codes.LS_QUERY_TOO_LARGE
    assert "max_response_bytes" in refused.value.text
    assert run(engine, registry, "1 + 1") == "2"


@WORKER_ONLY
def test_the_deadline_bounds_waiting_and_running(
    engine: XQueryEngine, registry: LookupRegistry
) -> None:
    with pytest.raises(XQueryError) as past:
        engine.run(registry, "1", deadline=time.monotonic() - 1, max_bytes=MB)
    assert past.value.code == nmwg_codes.LS_QUERY_TIMEOUT
    started = time.monotonic()
    with pytest.raises(XQueryError) as slow:
        engine.run(
            registry, "(1 to 2000000000)[. = -1]", deadline=time.monotonic() + 1, max_bytes=MB
        )
    assert slow.value.code == nmwg_codes.LS_QUERY_TIMEOUT
    assert time.monotonic() - started < 5
    assert run(engine, registry, "1 + 1") == "2"


def test_native_output_of_atomic_values_is_text(ls: TestClient) -> None:
    m = query(ls, "(1, 2, 3)")
    datum = m.find(f".//{{{ETREE_PS}}}datum")
    assert datum is not None and datum.text == "1 2 3" and len(datum) == 0
    assert isinstance(m, etree._Element)


@WORKER_ONLY
def test_a_load_past_the_deadline_is_not_killed_but_collected_next_time(
    engine: XQueryEngine, registry: LookupRegistry
) -> None:
    text = "x" * 4000
    for n in range(300):  # some 17 MB of XML: more than a moment to parse
        values = {"host-name": [f"h{n}.example.org"], "host-os": [text] * 14}
        registry.register(record_in("host", values))
    with pytest.raises(XQueryError) as loading:
        engine.run(registry, HOSTS, deadline=time.monotonic() + 0.01, max_bytes=MB)
    assert loading.value.code == nmwg_codes.LS_QUERY_TIMEOUT
    assert "still taking in the registry" in loading.value.text
    assert run(engine, registry, "count( /nmwg:store)") == "300"
    assert engine.started == 1  # the same worker: its load was collected, not redone


@WORKER_ONLY
def test_an_orphaned_worker_ends_itself_a_second_past_the_deadline(
    engine: XQueryEngine, registry: LookupRegistry
) -> None:
    """Were the service gone (nobody to kill the worker), the query's alarm still ends it."""
    assert run(engine, registry, "1") == "1"
    process = engine._process
    assert process is not None
    query = {"op": "query", "query": "(1 to 2000000000)[. = -1]", "max_bytes": MB, "alarm": 1}
    process.send(query, time.monotonic() + 5)
    started = time.monotonic()
    assert process.popen.wait(timeout=10) == -signal.SIGALRM
    assert time.monotonic() - started < 5
