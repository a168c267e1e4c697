"""Hostile requests through the HTTP route: each gets HTTP 200 and an NMWG ErrorResponse with
the expected code, leaks nothing, reaches nothing on the network and stays within the request
time limit (a hang or a slow parse would surface as error.common.timeout instead). Every other
way XML comes in (an archive's answer to the spool, an NMWG client's answer, the link definitions
file) goes through the same hardened parser and refuses an entity bomb alike."""

from __future__ import annotations

import asyncio
import http.server
import re
import socket
import threading
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from netsonde.http.soap import soap_routes
from netsonde.limits import RequestLimits
from netsonde.mp.spool.db import Row
from netsonde.mp.spool.outcome import nmwg_outcome
from netsonde.nmwg import build, codes, ns
from netsonde.nmwg.client import ClientError, exchange
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import Message, Unit
from netsonde.nmwg.parse import parse_message
from netsonde.nmwg.service import NMWGService, RequestContext
from netsonde.services.status.definitions import LinkDefinitionsError, parse_link_definitions

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ENDPOINT = "/perfSONAR_PS/services/pinger/ma"
LIMIT = 1 << 20  # 1 MiB body limit for these tests
CHUNK = 64 * 1024
HUNDRED_MB = 100 * 1024 * 1024
SECRET = "netsonde-secret-3f9c2a"
NMWG = f"{{{ns.NMWG}}}"


def ok(unit: Unit, message: Message, rctx: RequestContext[None]) -> Sequence[etree._Element]:
    return build.result_pair(rctx.ids, "success.ok", "ok", unit.ref)


# Echoes its request metadata: whatever a request smuggles into metadata comes back out.
ECHOING = NMWGService(name="echoing", handlers={"SetupDataRequest": ok}, event_types=None)


@pytest.fixture
def app() -> Starlette:
    limits = RequestLimits(request_timeout=20, max_body_bytes=LIMIT)
    return Starlette(routes=soap_routes(limits, {ENDPOINT: [ECHOING]}))


@pytest.fixture
def client(app: Starlette) -> TestClient:
    return TestClient(app)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that records whether anything connected to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def assert_no_connection(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


def echo_request(event_type: str = "echo.ma", prolog: str = "") -> bytes:
    return (
        f'{prolog}<nmwg:message xmlns:nmwg="{ns.NMWG}" type="EchoRequest" id="m">'
        f'<nmwg:metadata id="md"><nmwg:eventType>{event_type}</nmwg:eventType></nmwg:metadata>'
        '<nmwg:data id="d" metadataIdRef="md"/></nmwg:message>'
    ).encode()


def error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    (message,) = etree.fromstring(response.content).iter(f"{NMWG}message")
    assert message.get("type") == "ErrorResponse"
    return (
        message.findtext(f"{NMWG}metadata/{NMWG}eventType"),
        message.findtext(f"{NMWG}data/{{{ns.NMWGR}}}datum"),
    )


def test_control_request_succeeds(client: TestClient) -> None:
    response = client.post(ENDPOINT, content=echo_request())
    assert response.status_code == 200 and b"success.echo" in response.content


def test_xxe_file_entity(client: TestClient, secret_file: Path) -> None:
    prolog = f'<!DOCTYPE m [<!ENTITY xxe SYSTEM "file://{secret_file}">]>'
    response = client.post(ENDPOINT, content=echo_request("&xxe;", prolog))
    code, text = error_of(response)
    assert code == codes.PARSE_ERROR and text is not None and "DOCTYPE" in text
    assert SECRET.encode() not in response.content


def test_xxe_parameter_entity(client: TestClient, secret_file: Path) -> None:
    prolog = f'<!DOCTYPE m [<!ENTITY % p SYSTEM "file://{secret_file}"> %p;<!ENTITY e "x">]>'
    response = client.post(ENDPOINT, content=echo_request("&e;", prolog))
    assert error_of(response)[0] == codes.PARSE_ERROR
    assert SECRET.encode() not in response.content


def test_external_dtd_is_never_fetched(client: TestClient, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    prolog = f'<!DOCTYPE m SYSTEM "http://127.0.0.1:{port}/evil.dtd">'
    response = client.post(ENDPOINT, content=echo_request(prolog=prolog))
    assert error_of(response)[0] == codes.PARSE_ERROR
    assert_no_connection(listener)


def test_external_entity_is_never_fetched(client: TestClient, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    prolog = f'<!DOCTYPE m [<!ENTITY ext SYSTEM "http://127.0.0.1:{port}/x">]>'
    response = client.post(ENDPOINT, content=echo_request("&ext;", prolog))
    assert error_of(response)[0] == codes.PARSE_ERROR
    assert_no_connection(listener)


def test_billion_laughs(client: TestClient) -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    prolog = f"<!DOCTYPE m [{''.join(entities)}]>"
    response = client.post(ENDPOINT, content=echo_request("&lol9;", prolog))
    assert error_of(response)[0] == codes.PARSE_ERROR
    assert len(response.content) < 4096


def test_undeclared_entity(client: TestClient) -> None:
    assert error_of(client.post(ENDPOINT, content=echo_request("&nope;")))[0] == codes.PARSE_ERROR


def test_xinclude_is_not_processed(client: TestClient, secret_file: Path) -> None:
    body = (
        f'<nmwg:message xmlns:nmwg="{ns.NMWG}" xmlns:xi="http://www.w3.org/2001/XInclude"'
        ' type="SetupDataRequest" id="m"><nmwg:metadata id="md">'
        f'<xi:include href="file://{secret_file}" parse="text"/></nmwg:metadata>'
        '<nmwg:data id="d" metadataIdRef="md"/></nmwg:message>'
    ).encode()
    response = client.post(ENDPOINT, content=body)
    assert b"success.ok" in response.content and b"xi:include" in response.content
    assert SECRET.encode() not in response.content


def test_ten_thousand_levels(client: TestClient) -> None:
    deep = "<x>" * 10_000 + "</x>" * 10_000
    body = echo_request().replace(b"<nmwg:data ", f"{deep}<nmwg:data ".encode())
    code, text = error_of(client.post(ENDPOINT, content=body))
    assert code == codes.PARSE_ERROR and text is not None and "nested deeper than 64" in text


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello, world",
        b"\xff\xfe\x00<\x00a\x00",
        echo_request().replace(b"echo.ma", b"echo.\xc3\x28"),  # invalid UTF-8 sequence
        echo_request()[:-20],  # truncated
        b"<a/><b/>",  # two roots
    ],
    ids=["empty", "not-xml", "garbage", "invalid-utf8", "truncated", "two-roots"],
)
def test_malformed_bodies(client: TestClient, body: bytes) -> None:
    assert error_of(client.post(ENDPOINT, content=body))[0] == codes.PARSE_ERROR


def test_get(client: TestClient) -> None:
    assert error_of(client.get(ENDPOINT))[0] == codes.TRANSPORT


def test_content_type_and_soapaction_are_not_required(client: TestClient) -> None:
    headers = {"Content-Type": "application/octet-stream"}
    response = client.post(ENDPOINT, content=echo_request(), headers=headers)
    assert b"success.echo" in response.content


# --- size limit: a 100 MB body is refused by its header or while streaming -----------------


class Body:
    """100 MB produced lazily, counting what the server actually pulled."""

    def __init__(self, total: int = HUNDRED_MB) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"<x>" + b" " * (CHUNK - 7) + b"</x>"
        while self.sent < self.total:
            self.sent += len(chunk)
            yield chunk


def post_stream(app: Starlette, body: Body, headers: dict[str, str]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nmwg") as http:
            return await http.post(ENDPOINT, content=body, headers=headers)

    return asyncio.run(send())


def test_large_body_refused_by_content_length(app: Starlette) -> None:
    body = Body()
    response = post_stream(app, body, {"Content-Length": str(HUNDRED_MB)})
    assert error_of(response) == (
        codes.TRANSPORT,
        f"Request body exceeds the limit of {LIMIT} bytes",
    )
    assert body.sent <= CHUNK  # refused before the body was read


def test_large_body_refused_while_streaming(app: Starlette) -> None:
    body = Body()  # no Content-Length: chunked
    response = post_stream(app, body, {})
    assert error_of(response)[0] == codes.TRANSPORT
    assert LIMIT < body.sent <= LIMIT + 2 * CHUNK


def test_understated_content_length_is_caught_by_counting(app: Starlette) -> None:
    body = Body()
    response = post_stream(app, body, {"Content-Length": "100"})
    assert error_of(response)[0] == codes.TRANSPORT
    assert body.sent <= LIMIT + 2 * CHUNK


def test_invalid_content_length(app: Starlette) -> None:
    response = post_stream(app, Body(total=10), {"Content-Length": "lots"})
    assert error_of(response) == (codes.TRANSPORT, "Invalid Content-Length header")


# --- every other way XML comes in: the same hardened parser ------------------------------------

SRC = Path(__file__).resolve().parents[2] / "src" / "netsonde"
LAUGHS = "".join(
    ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
)


def bomb(document: str) -> bytes:
    """``document`` behind a DOCTYPE declaring a billion laughs and ``&ok;`` = "success"."""
    return f'<!DOCTYPE x [{LAUGHS}<!ENTITY ok "success.ma.added">]>{document}'.encode()


def test_the_request_parser_refuses_entity_expansion() -> None:
    with pytest.raises(NMWGError) as info:
        parse_message(bomb(echo_request("&lol9;").decode()), LIMIT)
    assert info.value.code == codes.PARSE_ERROR and "DOCTYPE" in info.value.text


def test_the_spool_refuses_entity_expansion_in_an_archive_answer() -> None:
    # Expanded, &ok; would make this a success for the run: the row would be dropped as stored.
    answer = (
        f'<nmwg:message xmlns:nmwg="{ns.NMWG}" type="MeasurementArchiveStoreResponse" id="a">'
        f'<nmwg:metadata id="r" metadataIdRef="m-run"><nmwg:eventType>&ok;</nmwg:eventType>'
        "</nmwg:metadata><nmwg:data id='d' metadataIdRef='r'>&lol9;</nmwg:data></nmwg:message>"
    )
    rows = [Row(1, 0, "run", "key", b"")]
    outcome = nmwg_outcome(rows, httpx.Response(200, content=bomb(answer)))
    assert outcome.delivered == [] and outcome.dead == {}
    assert outcome.retry is not None and "DOCTYPE declarations are not allowed" in outcome.retry
    plain = answer.replace("&ok;", "success.ma.added").replace("&lol9;", "")
    assert nmwg_outcome(rows, httpx.Response(200, content=plain.encode())).delivered == [
        1
    ]  # the same answer without the DOCTYPE is read


def test_the_link_definitions_reader_refuses_entity_expansion() -> None:
    with pytest.raises(LinkDefinitionsError, match=r"links\.conf: XML refused: DOCTYPE"):
        parse_link_definitions(bomb("<config><domain>&lol9;</domain></config>"), "links.conf")
    assert parse_link_definitions("<config><domain>D</domain></config>").domain == "D"


def test_the_nmwg_client_refuses_entity_expansion_in_an_answer() -> None:
    answer = bomb(echo_request("&lol9;").decode())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ClientError, match="DOCTYPE declarations are not allowed"):
            exchange(f"http://127.0.0.1:{server.server_port}/ma", echo_request(), timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_only_the_hardened_parser_builds_an_xml_parser() -> None:
    """Every other module goes through nmwg.parse.parse_xml (or parse_message)."""
    calls = re.compile(r"XMLParser\(|etree\.(fromstring|parse|XML|iterparse)\(|ElementTree|minidom")
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).as_posix() != "nmwg/parse.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if calls.search(line)
    ]
    assert found == []
