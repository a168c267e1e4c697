"""The NMWG endpoint framework: routing by eventType, result codes, echo of request metadata,
paths and methods, and the per-request time limit."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from netsonde.http.soap import canonical_path, soap_routes
from netsonde.limits import RequestLimits
from netsonde.nmwg import build, codes, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import Message, Unit
from netsonde.nmwg.service import NMWGService, RequestContext

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

MA = "/perfSONAR_PS/services/pinger/ma"
MP = "/perfSONAR_PS/services/pinger/mp"
SLASHED = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
NMWG = f"{{{ns.NMWG}}}"


def probe(unit: Unit, message: Message, rctx: RequestContext[None]) -> Sequence[etree._Element]:
    """Answers with what it was given, so tests can see the routing."""
    if unit.subject.get("id") == "boom":
        raise RuntimeError("secret internal detail")
    if unit.subject.get("id") == "junk":
        return ["not an element"]  # type: ignore[list-item]
    if unit.subject.get("id") == "refuse":
        raise NMWGError(codes.MA_STORAGE, "Database returned 0 results for search")
    text = f"{unit.event_type}|{message.parameters.get('setLimit', '')}"
    return build.result_pair(rctx.ids, "success.probe", text, unit.ref)


PROBE = NMWGService(
    name="probe",
    handlers={"SetupDataRequest": probe},
    event_types=frozenset({SLASHED, "http://example.net/key/1"}),
)
ECHOING = NMWGService(
    name="echoing", handlers={"MetadataKeyRequest": probe}, event_types=frozenset({SLASHED})
)
ANY = NMWGService(name="any", handlers={"StoreRequest": probe}, event_types=None)


def context(tmp_path: Path, request_timeout: float = 30.0) -> RequestLimits:
    return RequestLimits(request_timeout=request_timeout)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    routes = soap_routes(context(tmp_path), {MA: [PROBE, ECHOING, ANY], MP: []})
    return TestClient(Starlette(routes=routes))


def request(type_: str, body: str, msg_id: str | None = "req") -> bytes:
    id_attr = f' id="{msg_id}"' if msg_id else ""
    return (
        f'<n:message xmlns:n="{ns.NMWG}" xmlns:p="{ns.PINGER}" type="{type_}"{id_attr}>'
        f"{body}</n:message>"
    ).encode()


def md(md_id: str, *event_types: str, extra: str = "") -> str:
    ets = "".join(f"<n:eventType>{e}</n:eventType>" for e in event_types)
    return f'<n:metadata id="{md_id}">{extra}{ets}</n:metadata>'


def trigger(ref: str, data_id: str = "") -> str:
    return f'<n:data id="{data_id or "d-" + ref}" metadataIdRef="{ref}"/>'


def message_of(response: httpx.Response) -> etree._Element:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    root = etree.fromstring(response.content)
    (message,) = root.iter(f"{NMWG}message")
    return message


def results(message: etree._Element) -> list[tuple[str | None, str | None, str | None]]:
    """(metadataIdRef of the result metadata, eventType, datum text) per result pair."""
    out = []
    for meta in message.iterchildren(f"{NMWG}metadata"):
        data = message.find(f"{NMWG}data[@metadataIdRef='{meta.get('id')}']")
        if data is not None:
            datum = data.findtext(f"{{{ns.NMWGR}}}datum")
            out.append((meta.get("metadataIdRef"), meta.findtext(f"{NMWG}eventType"), datum))
    return out


def error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    message = message_of(response)
    assert message.get("type") == "ErrorResponse"
    ((_, code, text),) = results(message)
    return code, text


def all_ids(message: etree._Element) -> list[str]:
    return [el.get("id", "") for el in message.iter() if el.get("id")]


# --- routing --------------------------------------------------------------------------------


def test_event_types_match_exactly_after_removing_whitespace(client: TestClient) -> None:
    body = (
        md("a", SLASHED)
        + md("b", SLASHED.rstrip("/"))
        + md("c", "\n   http://ggf.org/ns/nmwg/tools/\n   pinger/2.0/  ")
        + trigger("a")
        + trigger("b")
        + trigger("c")
    )
    message = message_of(client.post(MA, content=request("SetupDataRequest", body)))
    assert message.get("type") == "SetupDataResponse" and message.get("messageIdRef") == "req"
    assert results(message) == [
        ("a", "success.probe", f"{SLASHED}|"),
        (
            "b",
            codes.EVENT_TYPE_NOT_SUPPORTED,
            'No supported event types for message of type "SetupDataRequest"',
        ),
        ("c", "success.probe", f"{SLASHED}|"),
    ]


def test_first_supported_event_type_wins(client: TestClient) -> None:
    body = md("a", "urn:unknown", SLASHED) + trigger("a")
    assert results(message_of(client.post(MA, content=request("SetupDataRequest", body)))) == [
        ("a", "success.probe", f"{SLASHED}|")
    ]


def test_key_event_type_routes_the_unit(client: TestClient) -> None:
    def keyed(md_id: str, key_event_type: str) -> str:
        key = (
            '<n:key><n:parameters id="kp">'
            f'<n:parameter name="eventType">{key_event_type}</n:parameter>'
            "</n:parameters></n:key>"
        )
        return md(md_id, SLASHED, extra=key)

    body = (
        keyed("k1", "http://example.net/key/1")
        + keyed("k2", "http://example.net/key/2")
        + trigger("k1")
        + trigger("k2")
    )
    message = message_of(client.post(MA, content=request("SetupDataRequest", body)))
    ((_, ok, text), (_, refused, _)) = results(message)
    assert (ok, text) == ("success.probe", "http://example.net/key/1|")
    # The key decides: the metadata's own (supported) eventType is not a fallback.
    assert refused == codes.EVENT_TYPE_NOT_SUPPORTED


def test_unit_without_event_type(client: TestClient) -> None:
    untyped = md("a") + trigger("a")
    taken = message_of(client.post(MA, content=request("StoreRequest", untyped)))
    assert results(taken) == [("a", "success.probe", "None|")]
    refused = message_of(client.post(MA, content=request("SetupDataRequest", untyped)))
    assert results(refused) == [
        (
            "a",
            codes.EVENT_TYPE_NOT_SUPPORTED,
            'Event type "" is not yet supported for messages with type "SetupDataRequest"',
        )
    ]


def test_message_parameters_reach_the_handler(client: TestClient) -> None:
    params = '<n:parameters id="mp"><n:parameter name="setLimit">7</n:parameter></n:parameters>'
    body = params + md("a", SLASHED) + trigger("a")
    message = message_of(client.post(MA, content=request("SetupDataRequest", body)))
    assert results(message)[0][2] == f"{SLASHED}|7"


def test_unsupported_and_missing_message_type(client: TestClient) -> None:
    body = md("a", SLASHED) + trigger("a")
    assert error_of(client.post(MA, content=request("FooRequest", body))) == (
        codes.ACTION_NOT_SUPPORTED,
        "Messages of type FooRequest are unsupported",
    )
    no_type = client.post(MA, content=request("", body))
    assert error_of(no_type) == (codes.ACTION_NOT_SUPPORTED, "No message type specified")
    assert message_of(no_type).get("messageIdRef") == "req"


def test_no_pairs_is_an_error_response(client: TestClient) -> None:
    response = client.post(MA, content=request("SetupDataRequest", md("a", SLASHED), msg_id=None))
    assert error_of(response) == (
        codes.NO_METADATA_DATA_PAIR,
        "There were no metadata/data pairs found in the message",
    )
    assert "messageIdRef" not in message_of(response).attrib


def test_failures_stay_in_their_unit(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    body = (
        md("boom", SLASHED)
        + md("refuse", SLASHED)
        + md("fine", SLASHED)
        + md("junk", SLASHED)
        + trigger("boom")
        + trigger("refuse")
        + trigger("junk")
        + trigger("fine")
        + trigger("missing")
    )
    with caplog.at_level(logging.ERROR, logger="netsonde.http.soap"):
        response = client.post(MA, content=request("SetupDataRequest", body))
    assert results(message_of(response)) == [
        ("boom", codes.INTERNAL_ERROR, codes.INTERNAL_ERROR_TEXT),
        ("refuse", codes.MA_STORAGE, "Database returned 0 results for search"),
        ("junk", codes.INTERNAL_ERROR, codes.INTERNAL_ERROR_TEXT),
        ("fine", "success.probe", f"{SLASHED}|"),
        ("missing", codes.STRUCTURE, 'Data trigger with id "d-missing" has no matching metadata'),
    ]
    assert b"secret internal detail" not in response.content
    assert b"Traceback" not in response.content
    assert "secret internal detail" in caplog.text  # the traceback goes to the log


def test_request_metadata_echoed_once_with_canonical_prefixes(client: TestClient) -> None:
    # metadata.1/data.1 are taken by the request: response ids must step around them.
    subject = md("metadata.1", SLASHED, extra='<p:subject id="s"/>')
    body = (
        subject
        + '<n:metadata id="f"><n:subject id="fs" metadataIdRef="metadata.1"/></n:metadata>'
        + trigger("metadata.1", "data.1")
        + trigger("f", "data.2")
    )
    message = message_of(client.post(MA, content=request("MetadataKeyRequest", body)))
    children = [(el.tag.split("}")[1], el.get("id")) for el in message]
    assert children[:3] == [
        ("metadata", "metadata.2"),
        ("data", "data.3"),
        ("metadata", "metadata.1"),
    ]
    # Second unit: its result pair, then only the filter (the subject was echoed already).
    assert children[3:5] == [("metadata", "metadata.3"), ("data", "data.4")]
    assert children[5:] == [("metadata", "f")]
    ids = all_ids(message)
    assert len(ids) == len(set(ids))
    wire = etree.tostring(message)
    assert b"<pinger:subject" in wire and b"<n:" not in wire and b"<p:" not in wire


# --- HTTP -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        MA,
        MA + "/",
        "http://testserver//perfSONAR_PS/services/pinger/ma",
        "http://testserver/perfSONAR_PS//services/pinger/ma//",
    ],
)
def test_path_normalisation(client: TestClient, url: str) -> None:
    body = request("EchoRequest", md("e", "echo.ma") + trigger("e"))
    assert results(message_of(client.post(url, content=body)))[0][1] == codes.SUCCESS_ECHO


def test_canonical_path() -> None:
    assert canonical_path("perfSONAR_PS//services/x/") == "/perfSONAR_PS/services/x"
    assert canonical_path("///") == "/"


def test_echo_is_on_every_endpoint(client: TestClient) -> None:
    ok = request(
        "EchoRequest", md("e", "http://schemas.perfsonar.net/tools/admin/echo/2.0") + trigger("e")
    )
    wrong = request("EchoRequest", md("e", "http://example.net/not-echo") + trigger("e"))
    for path in (MA, MP):
        assert results(message_of(client.post(path, content=ok)))[0][1] == codes.SUCCESS_ECHO
        assert results(message_of(client.post(path, content=wrong)))[0][1] == (
            codes.EVENT_TYPE_NOT_SUPPORTED
        )


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"])
def test_only_post(client: TestClient, method: str) -> None:
    response = client.request(method, MA)
    assert response.status_code == 200
    if method != "HEAD":
        assert error_of(response) == (
            codes.TRANSPORT,
            "Received message with an invalid HTTP request, are you using a web browser?",
        )


def test_unknown_endpoint(client: TestClient) -> None:
    response = client.post("/perfSONAR_PS/services/nope/", content=b"<x/>")
    assert error_of(response) == (
        codes.TRANSPORT,
        "Received message with an invalid endpoint: /perfSONAR_PS/services/nope",
    )
    assert client.post("/elsewhere", content=b"<x/>").status_code == 404  # not ours


def test_routes_mount_on_fastapi(tmp_path: Path) -> None:
    app = FastAPI()
    app.router.routes.extend(soap_routes(context(tmp_path), {"perfSONAR_PS/services/status": []}))
    body = request("EchoRequest", md("e", "echo.ma") + trigger("e"))
    response = TestClient(app).post("/perfSONAR_PS/services/status", content=body)
    assert results(message_of(response))[0][1] == codes.SUCCESS_ECHO


def test_duplicate_endpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="configured twice"):
        soap_routes(context(tmp_path), {MA: [], MA + "/": []})


# --- time limit -----------------------------------------------------------------------------


class Stalling:
    """A handler that blocks until its request is cancelled (or 10 s pass)."""

    def __init__(self) -> None:
        self.hook_called = threading.Event()
        self.saw_cancelled = threading.Event()
        self.finished = threading.Event()

    def __call__(
        self, unit: Unit, message: Message, rctx: RequestContext[None]
    ) -> list[etree._Element]:
        rctx.on_cancel(self.hook_called.set)
        if self.hook_called.wait(10) and rctx.cancelled:
            self.saw_cancelled.set()
        self.finished.set()
        return build.result_pair(rctx.ids, "success.late", "too late", unit.ref)


def stalling_app(tmp_path: Path, handler: Stalling) -> Starlette:
    slow = NMWGService(
        name="slow", handlers={"SetupDataRequest": handler}, event_types=frozenset({"slow"})
    )
    ctx = context(tmp_path, request_timeout=0.5)
    return Starlette(routes=soap_routes(ctx, {MA: [slow]}))


def test_timeout_answers_and_cancels_the_worker(tmp_path: Path) -> None:
    handler = Stalling()
    client = TestClient(stalling_app(tmp_path, handler))
    response = client.post(MA, content=request("SetupDataRequest", md("a", "slow") + trigger("a")))
    assert error_of(response) == (
        codes.TIMEOUT,
        "Timeout occurred, current limit is 0.5 seconds. "
        "Try decreasing the breadth of your search if possible.",
    )
    assert b"too late" not in response.content
    assert handler.finished.wait(5), "the cancellation hook did not release the worker"
    assert handler.saw_cancelled.is_set()


def test_cancellation_interrupts_a_sqlite_query(tmp_path: Path) -> None:
    interrupted = threading.Event()

    def endless_query(
        unit: Unit, message: Message, rctx: RequestContext[None]
    ) -> list[etree._Element]:
        db = sqlite3.connect(":memory:")
        rctx.on_cancel(db.interrupt)
        try:
            db.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                "SELECT count(*) FROM n"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            interrupted.set()
            raise NMWGError(codes.MA_STORAGE, str(exc)) from exc
        return []

    service = NMWGService(
        name="sql", handlers={"SetupDataRequest": endless_query}, event_types=frozenset({"q"})
    )
    app = Starlette(routes=soap_routes(context(tmp_path, request_timeout=0.3), {MA: [service]}))
    response = TestClient(app).post(
        MA, content=request("SetupDataRequest", md("a", "q") + trigger("a"))
    )
    assert error_of(response)[0] == codes.TIMEOUT
    assert interrupted.wait(5), "the query was not interrupted"


def test_late_callbacks_run_at_once(tmp_path: Path) -> None:
    rctx: RequestContext[None] = RequestContext(endpoint=MA)
    rctx.cancel()
    called = threading.Event()
    rctx.on_cancel(called.set)
    assert called.is_set() and rctx.cancelled


def test_a_stalled_request_does_not_hold_up_others(tmp_path: Path) -> None:
    handler = Stalling()
    app = stalling_app(tmp_path, handler)
    echo = request("EchoRequest", md("e", "echo.ma") + trigger("e"))
    slow = request("SetupDataRequest", md("a", "slow") + trigger("a"))
    finished: dict[str, float] = {}

    async def post(name: str, body: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nmwg") as http:
            response = await http.post(MA, content=body)
        finished[name] = time.monotonic()
        return response

    async def both() -> tuple[httpx.Response, httpx.Response]:
        slow_task = asyncio.create_task(post("slow", slow))
        await asyncio.sleep(0.05)  # the slow request is in its worker thread by now
        fast = await post("echo", echo)
        return await slow_task, fast

    slow_response, echo_response = asyncio.run(both())
    assert results(message_of(echo_response))[0][1] == codes.SUCCESS_ECHO
    assert error_of(slow_response)[0] == codes.TIMEOUT
    assert finished["echo"] < finished["slow"]
