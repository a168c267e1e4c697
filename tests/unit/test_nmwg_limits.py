"""Every NMWG request is bounded (issue 11): each of the ``[api]`` request limits, just reached
and just passed, through the real parser, dispatch and services; the attacks that used to take
tens of seconds (merging 20,000 children, 25,000 namespace declarations) answered correctly; and
a cancelled request stops its work in every phase, not only its reply."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from starlette.applications import Starlette
from test_nmwg_soap import MA, NMWG, error_of, md, message_of, request, results, trigger
from test_status_service import A, datums, result_codes, topoid_request

from hosting import sqlite_url, status_state
from netsonde.archive import connections, open_archive
from netsonde.http.soap import soap_routes
from netsonde.limits import RequestLimits
from netsonde.model import Result, Run, RunState, Schedule, TestSpec, to_us
from netsonde.nmwg import build, codes, ns, parse
from netsonde.nmwg.message import Message, Unit
from netsonde.nmwg.parse import parse_message
from netsonde.nmwg.service import Cancelled, NMWGService, RequestContext, handle
from netsonde.probes import ping
from netsonde.services.pinger.ma import PingerState, pinger_ma
from netsonde.services.status.nmwg import status_ma

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

UNLIMITED = dict(
    max_elements=10**8,
    max_namespaces=10**8,
    max_units=10**8,
    max_event_types=10**8,
    max_response_datums=10**8,
)


def ok(unit: Unit, message: Message, rctx: RequestContext[None]) -> Sequence[etree._Element]:
    return build.result_pair(rctx.ids, "success.ok", "ok", unit.ref)


# Takes every unit and echoes its (merged) request metadata after the result pair.
ECHOING = NMWGService(name="echoing", handlers={"SetupDataRequest": ok}, event_types=None)


def client(services: Sequence[NMWGService[Any]] = (ECHOING,), **limits: Any) -> TestClient:
    routes = soap_routes(RequestLimits(**limits), {MA: list(services)})
    return TestClient(Starlette(routes=routes))


def post(body: bytes, **limits: Any) -> etree._Element:
    return message_of(client(**limits).post(MA, content=body))


def elements(body: bytes) -> int:
    return sum(1 for _ in etree.fromstring(body).iter())


# --- the document: elements and namespace declarations (whole message, parse_error) -------


def test_max_elements() -> None:
    body = request("SetupDataRequest", md("a", "e", extra="<n:x/>" * 50) + trigger("a"))
    n = elements(body)
    assert results(post(body, max_elements=n))[0][1] == "success.ok"
    assert error_of(client(max_elements=n - 1).post(MA, content=body)) == (
        codes.PARSE_ERROR,
        f"Error parsing request: request has more than {n - 1} elements (max_elements)",
    )


def declaring(k: int) -> str:
    """``k`` elements, each declaring one more namespace."""
    return "".join(f'<q{i}:x xmlns:q{i}="urn:q:{i}"/>' for i in range(k))


def test_max_namespaces() -> None:
    body = request("SetupDataRequest", md("a", "e", extra=declaring(10)) + trigger("a"))
    n = 2 + 10  # request() declares n: and p:
    assert results(post(body, max_namespaces=n))[0][1] == "success.ok"
    assert error_of(client(max_namespaces=n - 1).post(MA, content=body)) == (
        codes.PARSE_ERROR,
        f"Error parsing request: request has more than {n - 1} namespace declarations"
        " (max_namespaces)",
    )


def twenty_five_thousand_namespaces() -> bytes:
    """The attack: 25,000 declarations on the message, each used by one element."""
    decls = " ".join(f'xmlns:p{i}="urn:x:{i}"' for i in range(25_000))
    kids = "".join(f"<p{i}:x/>" for i in range(25_000))
    return (
        f'<n:message xmlns:n="{ns.NMWG}" {decls} type="SetupDataRequest" id="r">'
        f'<n:metadata id="a"><n:subject id="s">{kids}</n:subject></n:metadata>'
        f'<n:data id="d" metadataIdRef="a"/></n:message>'
    ).encode()


def test_twenty_five_thousand_namespaces_are_refused_by_default() -> None:
    code, text = error_of(client().post(MA, content=twenty_five_thousand_namespaces()))
    assert code == codes.PARSE_ERROR
    limit = RequestLimits().max_namespaces
    assert text == (
        f"Error parsing request: request has more than {limit} namespace declarations"
        " (max_namespaces)"
    )


def test_namespaces_up_to_the_limit_are_answered() -> None:
    # As many declarations as allowed (request() makes two), used by 20,000 elements.
    k = RequestLimits().max_namespaces - 2
    decls = " ".join(f'xmlns:q{i}="urn:q:{i}"' for i in range(k))
    kids = "".join(f"<q{i % k}:x/>" for i in range(20_000))
    body = request(
        "SetupDataRequest",
        f'<n:metadata id="a" {decls}><n:subject id="s">{kids}</n:subject></n:metadata>'
        + trigger("a"),
    )
    message = post(body)
    assert results(message)[0][1] == "success.ok"
    (subject,) = message.iter(f"{NMWG}subject")
    found = list(subject)
    assert len(found) == 20_000
    # Each keeps its namespace and the prefix it was written with.
    assert [(x.prefix, etree.QName(x).namespace) for x in (found[0], found[k], found[-1])] == [
        ("q0", "urn:q:0"),
        ("q0", "urn:q:0"),
        (f"q{19_999 % k}", f"urn:q:{19_999 % k}"),
    ]
    one_more = body.replace(b'id="a" ', b'id="a" xmlns:extra="urn:extra" ')
    assert str(error_of(client().post(MA, content=one_more))[1]).endswith("(max_namespaces)")


# --- the message: units, chains, eventTypes -------------------------------------------------


def test_max_units() -> None:
    body = request(
        "SetupDataRequest", md("a", "e") + "".join(trigger("a", f"d{i}") for i in range(9))
    )
    assert [r[1] for r in results(post(body, max_units=10))] == ["success.ok"] * 9
    assert error_of(client(max_units=9).post(MA, content=body)) == (
        codes.STRUCTURE,
        "message has more than 9 metadata and data elements (max_units)",
    )


def test_a_hundred_thousand_data_triggers_are_refused() -> None:
    # The attack that built an unbounded answer (3.7 GB and growing): refused whole.
    body = request("SetupDataRequest", md("a", "e") + trigger("a", "d") * 100_000)
    code, text = error_of(client().post(MA, content=body))
    assert (code, text) == (
        codes.STRUCTURE,
        f"message has more than {RequestLimits().max_units} metadata and data elements (max_units)",
    )


def merge_chain(length: int) -> str:
    """Metadata m0 … m{length-1}, each inheriting from the one before; data on the last."""
    mds = md("m0", "e") + "".join(
        f'<n:metadata id="m{i}" metadataIdRef="m{i - 1}"/>' for i in range(1, length)
    )
    return mds + trigger(f"m{length - 1}")


def test_max_chain() -> None:
    assert results(post(request("SetupDataRequest", merge_chain(4)), max_chain=4))[0][1] == (
        "success.ok"
    )
    over = results(post(request("SetupDataRequest", merge_chain(5)), max_chain=4))
    assert over == [
        ("m4", codes.MERGE, "Metadata chain from m4 is longer than 4 elements (max_chain)")
    ]


def test_max_event_types_fails_its_unit_only() -> None:
    body = request(
        "SetupDataRequest",
        md("few", *(f"e{i}" for i in range(5)))
        + md("many", *(f"e{i}" for i in range(6)))
        + trigger("few")
        + trigger("many"),
    )
    assert results(post(body, max_event_types=5)) == [
        ("few", "success.ok", "ok"),
        ("many", codes.STRUCTURE, "Metadata many has more than 5 eventTypes (max_event_types)"),
    ]


def test_event_types_are_bounded_before_merging() -> None:
    # Merged eventTypes are a subset of one side's: an oversized parent fails the child too.
    body = request(
        "SetupDataRequest",
        md("parent", *(f"e{i}" for i in range(6)))
        + '<n:metadata id="child" metadataIdRef="parent"><n:eventType>e1</n:eventType>'
        "</n:metadata>" + trigger("child"),
    )
    assert results(post(body, max_event_types=5)) == [
        ("child", codes.STRUCTURE, "Metadata parent has more than 5 eventTypes (max_event_types)")
    ]


def fan_out(children: int, size: int) -> str:
    """One parent whose subject holds ``size`` elements, inherited by ``children`` metadata."""
    parent = md("p", "e", extra=f'<n:subject id="s">{"<n:x/>" * size}</n:subject>')
    kids = "".join(f'<n:metadata id="c{i}" metadataIdRef="p"/>' for i in range(children))
    return parent + kids + "".join(trigger(f"c{i}") for i in range(children))


def test_merging_cannot_multiply_a_parent_past_max_elements() -> None:
    # Each child inherits a copy of the parent: 10 children of a 30-element parent would
    # create some 330 elements from a request of 56.
    body = request("SetupDataRequest", fan_out(10, 30))
    found = results(post(body, max_elements=200))
    assert [code for _, code, _ in found[:5]] == ["success.ok"] * 5
    assert found[-1] == (
        "c9",
        codes.MERGE,
        "merged metadata would have more than 200 elements (max_elements)",
    )


# --- merging is linear: the 20,000-children attack ----------------------------------------


def twenty_thousand_children(order: Callable[[range], Any]) -> bytes:
    a = "".join(f'<n:c{i} v="a"/>' for i in range(20_000))
    b = "".join(f'<n:c{i} w="b"/>' for i in order(range(20_000)))
    return request(
        "SetupDataRequest",
        f'<n:metadata id="a"><n:subject id="sa">{a}</n:subject></n:metadata>'
        f'<n:metadata id="b" metadataIdRef="a"><n:subject id="sb">{b}</n:subject></n:metadata>'
        + trigger("b"),
    )


def test_two_metadata_of_twenty_thousand_children_merge() -> None:
    # The child's children in reverse order: each matched the parent's last unmatched one,
    # a scan per child (over 20 s of CPU for such a request).
    message = post(twenty_thousand_children(reversed))
    assert results(message)[0][1] == "success.ok"
    (merged,) = message.iter(f"{NMWG}subject")
    assert merged.get("id") == "sb"
    kids = list(merged)
    assert [etree.QName(k).localname for k in kids] == [f"c{i}" for i in range(20_000)]
    assert all(dict(k.attrib) == {"v": "a", "w": "b"} for k in kids)


def test_same_tags_merge_in_order() -> None:
    parent = md(
        "p", "e", extra='<n:subject id="s"><n:x n="1"/><n:x n="2"/><n:x n="3"/></n:subject>'
    )
    child = (
        '<n:metadata id="c" metadataIdRef="p"><n:subject id="s">'
        '<n:x m="a"/><n:x m="b"/><n:y/></n:subject></n:metadata>'
    )
    message = post(request("SetupDataRequest", parent + child + trigger("c")))
    (echoed,) = (m for m in message.iter(f"{NMWG}metadata") if m.get("id") == "c")
    subject = echoed.find(f"{NMWG}subject")
    assert subject is not None
    assert [dict(x.attrib) for x in subject] == [
        {"n": "1", "m": "a"},
        {"n": "2", "m": "b"},
        {"n": "3"},
        {},
    ]
    assert [etree.QName(x).localname for x in subject] == ["x", "x", "x", "y"]


def test_event_types_of_twenty_thousand_merge() -> None:
    ets = "".join(f"<n:eventType>e{i}</n:eventType>" for i in range(20_000))
    body = request(
        "SetupDataRequest",
        f'<n:metadata id="a">{ets}</n:metadata>'
        f'<n:metadata id="b" metadataIdRef="a">{ets}<n:eventType>only-b</n:eventType>'
        "</n:metadata>" + trigger("b"),
    )
    assert results(post(body))[0][1:] == (
        codes.STRUCTURE,
        f"Metadata b has more than {RequestLimits().max_event_types} eventTypes (max_event_types)",
    )
    message = post(body, **UNLIMITED)
    (merged,) = (m for m in message.iter(f"{NMWG}metadata") if m.get("id") == "b")
    kept = [e.text for e in merged.iter(f"{NMWG}eventType")]
    assert kept == [f"e{i}" for i in range(20_000)]  # only-b is not the parent's: dropped


# --- the answer: datums and bytes -------------------------------------------------------------

NOW = 1_700_000_000
ROWS = 30
SPEC = TestSpec(
    id="t",
    tool="ping",
    target="127.0.0.1",
    schedule=Schedule(interval=60),
    params=ping.Params(count=10),
)


def populate(path: Path, rows: int) -> None:
    """``rows`` finished runs of SPEC, a minute apart, the last at NOW."""
    values = {"minRtt": 1.0, "maxRtt": 2.0, "meanRtt": 1.5, "lossPercent": 0.0}
    runs = []
    for i in range(rows):
        us = to_us(NOW - 60 * (rows - 1 - i))
        result = Result(tool="ping", target=SPEC.target, sent=10, values=values)
        runs.append(
            Run.of(
                SPEC, us, state=RunState.FINISHED, actual_us=us, end_us=us + 10**7, result=result
            )
        )
    archive = open_archive(sqlite_url(path))
    try:
        archive.store_batch([SPEC], runs, to_us(NOW))
    finally:
        archive.close()


@pytest.fixture
def pinger(tmp_path: Path) -> NMWGService[PingerState]:
    path = tmp_path / "archive.sqlite"
    populate(path, ROWS)
    return pinger_ma(PingerState(archive=connections(sqlite_url(path)), name="mp"))


def setup_data(*windows: tuple[int, int]) -> bytes:
    """A PingER SetupDataRequest with one unit per (startTime, endTime) window."""
    units = ""
    for i, (start, end) in enumerate(windows):
        params = "".join(
            f'<n:parameter name="{name}">{value}</n:parameter>'
            for name, value in (("startTime", start), ("endTime", end))
        )
        units += (
            f'<n:metadata id="m{i}"><p:subject id="s{i}"><t:endPointPair xmlns:t="{ns.NMWGT}">'
            '<t:dst type="ipv4" value="127.0.0.1"/></t:endPointPair></p:subject>'
            f'<n:parameters id="ps{i}">{params}</n:parameters>'
            f"<n:eventType>{ns.PINGER}</n:eventType></n:metadata>" + trigger(f"m{i}")
        )
    return request("SetupDataRequest", units)


def common_times(message: etree._Element) -> int:
    return sum(1 for _ in message.iter(f"{NMWG}commonTime"))


def failures(message: etree._Element) -> list[str | None]:
    return [
        m.findtext(f"{NMWG}eventType")
        for m in message.iter(f"{NMWG}metadata")
        if (m.findtext(f"{NMWG}eventType") or "").startswith(("error.", "http://schemas"))
    ]


def texts(message: etree._Element) -> list[str | None]:
    return [d.text for d in message.iter(f"{{{ns.NMWGR}}}datum")]


HUGE_WINDOW = (0, 4_102_444_800)  # 1970 to 2100


def test_max_response_datums_pinger(pinger: NMWGService[PingerState]) -> None:
    body = setup_data(HUGE_WINDOW)
    enough = message_of(client([pinger], max_response_datums=ROWS).post(MA, content=body))
    assert common_times(enough) == ROWS and failures(enough) == []
    short = message_of(client([pinger], max_response_datums=ROWS - 1).post(MA, content=body))
    assert common_times(short) == 0
    assert failures(short) == [codes.MA_SELECT]
    assert texts(short) == [
        f"the answer would have more than {ROWS - 1} datums; narrow the select"
        " (max_response_datums)"
    ]


def test_max_response_datums_counts_the_whole_answer(pinger: NMWGService[PingerState]) -> None:
    ten = (NOW - 9 * 60, NOW)
    body = setup_data(ten, HUGE_WINDOW, ten)
    message = message_of(client([pinger], max_response_datums=25).post(MA, content=body))
    # 10 fit; 30 more do not (and are not counted); the last 10 fit again.
    assert common_times(message) == 20
    assert failures(message) == [codes.MA_SELECT]


def test_max_response_datums_status(tmp_path: Path) -> None:
    state = status_state(tmp_path / "status.sqlite")
    store = state.store.get()
    for t, oper in ((100, "up"), (200, "up"), (300, "down"), (400, "up")):
        store.update(A, t, oper, "normaloperation")
    body = topoid_request(A, {"time": "-1"}).encode()

    def answer(limit: int) -> etree._Element:
        app = Starlette(
            routes=soap_routes(
                RequestLimits(max_response_datums=limit), {"/status": [status_ma(state)]}
            )
        )
        return message_of(TestClient(app).post("/status", content=body))

    assert len(datums(answer(3))) == 3
    refused = answer(2)
    assert datums(refused) == [] and result_codes(refused) == [codes.MA_SELECT]


def test_max_response_bytes() -> None:
    body = request("SetupDataRequest", md("a", "e", extra="<n:x/>" * 100) + trigger("a"))
    size = len(client().post(MA, content=body).content)
    assert results(post(body, max_response_bytes=size))[0][1] == "success.ok"
    assert error_of(client(max_response_bytes=size - 1).post(MA, content=body)) == (
        codes.TRANSPORT,
        f"the answer is larger than {size - 1} bytes (max_response_bytes)",
    )


# --- cancellation: the work stops, in every phase ---------------------------------------------


class Counting:
    """A check that counts its calls and raises Cancelled from call ``stop_at`` on."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls = 0
        self.stop_at = stop_at

    def __call__(self) -> None:
        self.calls += 1
        if self.stop_at is not None and self.calls >= self.stop_at:
            raise Cancelled


def big_document(n: int) -> bytes:
    return request("SetupDataRequest", md("a", "e", extra="<n:x/>" * n) + trigger("a"))


def test_parsing_and_normalising_check_for_cancellation() -> None:
    body = big_document(100_000)
    counted = Counting()
    parse_message(body, len(body), limits=RequestLimits(), check=counted)
    chunks = len(body) // parse.CHUNK
    # Between chunks of both passes, and every CHECK_EVERY elements copied (twice: two passes).
    assert counted.calls >= 2 * chunks + 2 * 100_000 // parse.CHECK_EVERY
    for stop_at in (2, counted.calls - 1):  # in the first pass; near the end of normalise
        with pytest.raises(Cancelled):
            parse_message(body, len(body), limits=RequestLimits(), check=Counting(stop_at))


def test_resolving_checks_per_unit() -> None:
    body = request("SetupDataRequest", md("a", "e") + trigger("a", "d") * 500)
    message = Message.from_element(parse_message(body, len(body)))
    counted = Counting()
    assert len(message.resolve(check=counted)) == 500
    assert counted.calls >= 500
    with pytest.raises(Cancelled):
        message.resolve(check=Counting(250))


def cancel_while_running(
    body: bytes, services: Sequence[NMWGService[Any]], limits: RequestLimits
) -> tuple[bytes | None, float]:
    """Run ``handle`` in a thread as the endpoint does, cancel it 0.3 s in, as the endpoint does
    at the deadline: (what it returned, seconds it took to stop after the cancel)."""
    rctx: RequestContext[Any] = RequestContext(endpoint=MA, limits=limits)
    out: list[bytes | None] = []
    worker = threading.Thread(target=lambda: out.append(handle(body, services, rctx)))
    worker.start()
    time.sleep(0.3)
    cancelled_at = time.monotonic()
    rctx.cancel()
    worker.join(10)
    stopped = time.monotonic() - cancelled_at
    assert not worker.is_alive()
    return out[0], stopped


# Each workload takes many seconds uncancelled (a 9 MB document: about 15 s; 40 PingER units
# of 5,000 rows: about 10 s); a cancelled one returns None, which shows it was cut off
# mid-work, and stops well within the bound, which shows it checks as it goes.
STOP_BOUND = 2.0


def test_a_cancelled_parse_stops() -> None:
    body = big_document(1_500_000)  # 9 MB: parsing and copying 1.5 million elements
    result, stopped = cancel_while_running(body, [ECHOING], RequestLimits(**UNLIMITED))
    assert result is None and stopped < STOP_BOUND


def test_dispatch_checks_per_unit() -> None:
    # The deadline passes while the first of 1,000 units runs: none of the others starts.
    ran: list[str] = []

    def first_one_overruns(
        unit: Unit, message: Message, rctx: RequestContext[None]
    ) -> Sequence[etree._Element]:
        ran.append(unit.ref)
        rctx.cancel()
        return ok(unit, message, rctx)

    service = NMWGService(
        name="slow", handlers={"SetupDataRequest": first_one_overruns}, event_types=None
    )
    body = request("SetupDataRequest", md("a", "e") + trigger("a", "d") * 999)
    assert handle(body, [service], RequestContext(endpoint=MA)) is None
    assert ran == ["a"]


def test_a_cancelled_handler_stops_in_its_row_loop(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    populate(path, 5_000)
    service = pinger_ma(PingerState(archive=connections(sqlite_url(path)), name="mp"))
    body = setup_data(*[HUGE_WINDOW] * 40)
    result, stopped = cancel_while_running(body, [service], RequestLimits(**UNLIMITED))
    assert result is None and stopped < STOP_BOUND
