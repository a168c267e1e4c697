"""http/bounded.py: one deadline per request, abandoned work tracked, memory watched; and the
server's read deadline and connection cap (http/server.py) on a real uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from netsonde.http.bounded import DEADLINE, BoundedRequests, Overruns, resident_bytes, tracked
from netsonde.http.server import bind, raise_open_files_limit, uvicorn_config
from netsonde.limits import RequestLimits


def _app(release: threading.Event) -> Starlette:
    def slow(request: Request) -> PlainTextResponse:  # sync: runs in a thread
        release.wait(10)
        return PlainTextResponse("late")

    async def deadline(request: Request) -> JSONResponse:
        return JSONResponse({"left": request.scope[DEADLINE] - time.monotonic()})

    async def body(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    return Starlette(
        routes=[
            Route("/slow", slow),
            Route("/deadline", deadline),
            Route("/body", body, methods=["POST"]),
        ]
    )


def test_a_request_past_its_deadline_gets_a_504_and_its_work_stays_tracked() -> None:
    release = threading.Event()
    overruns = Overruns(grace=60, on_overrun=lambda what, late: None)
    app = BoundedRequests(_app(release), request_timeout=0.3, overruns=overruns)
    with TestClient(app) as client:
        assert 0.2 < client.get("/deadline").json()["left"] <= 0.3
        started = time.monotonic()
        r = client.get("/slow")
        assert r.status_code == 504
        assert "request_timeout (0.3 s)" in r.json()["error"]
        assert time.monotonic() - started < 5  # not after the thread's 10 s
        assert overruns.in_progress == 1  # the abandoned request still runs
        release.set()
        deadline = time.monotonic() + 5
        while overruns.in_progress and time.monotonic() < deadline:
            time.sleep(0.02)
        assert overruns.in_progress == 0


def test_work_running_past_its_deadline_and_grace_is_reported_once() -> None:
    reports: list[tuple[str, float]] = []
    overruns = Overruns(grace=0.2, on_overrun=lambda what, late: reports.append((what, late)),
                        every=0.05)  # fmt: skip
    overruns.start()
    with overruns.running("kept in time", time.monotonic() + 60):
        time.sleep(0.4)
        assert reports == []
        with overruns.running("/runaway", time.monotonic()):
            time.sleep(0.5)
    time.sleep(0.2)
    assert len(reports) == 1 and reports[0][0] == "/runaway" and reports[0][1] > 0.2


def test_tracked_wraps_a_thread_function_only_for_a_bounded_request() -> None:
    overruns = Overruns(grace=1, on_overrun=lambda what, late: None)
    seen: list[int] = []
    fn = lambda: seen.append(overruns.in_progress)  # noqa: E731
    assert tracked({}, "x", fn) is fn
    tracked({DEADLINE: time.monotonic() + 5, "netsonde.overruns": overruns}, "x", fn)()
    assert seen == [1] and overruns.in_progress == 0


def test_memory_above_the_ceiling_is_reported_after_a_request() -> None:
    reported: list[int] = []
    rss = resident_bytes()
    assert 10 * 2**20 < rss < 4 * 2**30
    app = BoundedRequests(_app(threading.Event()), 5, max_rss=rss // 2, on_memory=reported.append)
    with TestClient(app) as client:
        client.get("/deadline")
        client.get("/deadline")
    assert len(reported) == 1 and reported[0] > rss // 2  # once, not per request
    quiet: list[int] = []
    app = BoundedRequests(_app(threading.Event()), 5, max_rss=64 * 2**30, on_memory=quiet.append)
    with TestClient(app) as client:
        client.get("/deadline")
    assert quiet == []


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    now = raise_open_files_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == now
    assert hard == resource.RLIM_INFINITY or soft == hard


# ---- the server's connection bounds, on a real uvicorn --------------------------------------


@contextmanager
def _serving(limits: RequestLimits) -> Iterator[int]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = BoundedRequests(_app(threading.Event()), limits.request_timeout)
    server = uvicorn.Server(uvicorn_config(app, limits))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _recv_all(conn: socket.socket, timeout: float) -> tuple[bytes, float]:
    conn.settimeout(timeout)
    started, data = time.monotonic(), b""
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except TimeoutError:
        pass  # still open when the test gave up waiting: data says what arrived
    return data, time.monotonic() - started


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /deadline HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",  # body short
    ],
)
def test_a_client_that_does_not_send_its_whole_request_in_time_is_dropped(partial: bytes) -> None:
    with _serving(RequestLimits(read_timeout=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(partial)
            data, took = _recv_all(conn, 5)
        assert data == b"" and 0.4 < took < 4  # closed by the server, without an answer
        # A whole request in time, and a keep-alive second one after a pause, are served.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.post("/body", content=b"x" * 1000).text == "1000"
            time.sleep(0.7)  # longer than read_timeout, idle between requests
            assert client.post("/body", content=b"y").text == "1"


def test_connections_past_the_cap_get_a_503_and_are_closed() -> None:
    with _serving(RequestLimits(max_connections=8, read_timeout=30)) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        time.sleep(0.2)
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        answers = [_recv_all(c, 5)[0] for c in extra]
        assert all(a.startswith(b"HTTP/1.1 503") and b"too many open connections" in a
                   for a in answers)  # fmt: skip
        for c in idle + extra:
            c.close()
        time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/deadline").status_code == 200


def test_an_nmwg_thread_abandoned_at_the_deadline_stays_tracked_until_it_ends() -> None:
    from netsonde.http.soap import soap_routes
    from netsonde.nmwg.service import NMWGService

    release = threading.Event()

    def stuck(*_: object) -> list[object]:
        release.wait(10)  # ignores cancellation, as unknown slow code might
        return []

    service: NMWGService[None] = NMWGService("stuck", {"EchoRequest": stuck}, event_types=None)
    limits = RequestLimits(request_timeout=0.3)
    overruns = Overruns(grace=60, on_overrun=lambda what, late: None)
    app = BoundedRequests(Starlette(routes=soap_routes(limits, {"/x": [service]})), 0.3, overruns)
    request = (
        b'<nmwg:message xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/" type="EchoRequest" '
        b'id="r"><nmwg:metadata id="m"/><nmwg:data id="d" metadataIdRef="m"/></nmwg:message>'
    )
    with TestClient(app) as client:
        started = time.monotonic()
        r = client.post("/x", content=request)
        assert b"error.common.timeout" in r.content and time.monotonic() - started < 5
        assert overruns.in_progress == 1
        release.set()
        deadline = time.monotonic() + 5
        while overruns.in_progress and time.monotonic() < deadline:
            time.sleep(0.02)
        assert overruns.in_progress == 0


def test_a_worker_whose_work_overran_ends_asking_to_be_replaced() -> None:
    import subprocess
    import sys

    from netsonde.api.worker import REPLACE_ME

    code = "from netsonde.api.worker import _overrun; _overrun('NMWG request on /x', 6.25)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == REPLACE_ME
    assert "NMWG request on /x still running 6.2s past its deadline" in done.stderr
