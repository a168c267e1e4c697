"""The HTTP server every serving process runs: uvicorn held to the request limits.

The socket is bound once, by the daemon, before it reports itself ready: "address in use" is a
start-up error with a clear message, and API workers inherit the one listening socket, so a
connection waits in its backlog while a worker is being replaced instead of being refused.
Every connection is held to ``read_timeout`` (the whole request must arrive in time: slow and
half-open clients are dropped) and to ``max_connections`` per process (past it a new
connection gets a 503 and is closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from netsonde.limits import RequestLimits

log = logging.getLogger(__name__)

BACKLOG = 1024
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: 56\r\n\r\n"
    b'{"error": "too many open connections, try again later"}\n'
)


class ListenError(Exception):
    pass


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); IPv6 literals get an IPv6 socket."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this: without it, Nagle + delayed ACK add ~40 ms to
        # every keep-alive response that is written in more than one piece.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(False)
    return sock


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the common soft 1,024 is
    far below what a server with slow clients needs); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


def _bounded_protocol(limits: RequestLimits) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a deadline on reading each request and a connection cap."""

    class BoundedHttp(HttpToolsProtocol):
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning("%d open connections: refusing one", len(self.connections))
                transport.write(_BUSY)
                transport.close()
                return
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # a keep-alive connection's next request: the clock starts again

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(limits.read_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _too_slow(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                log.info("dropped a client that sent no whole request in %gs", limits.read_timeout)
                self.transport.close()

    return BoundedHttp


def uvicorn_config(app: Any, limits: RequestLimits) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=_bounded_protocol(limits),  # a protocol class
        lifespan="off",
        log_config=None,  # keep the process's logging set-up
        access_log=False,
        server_header=False,
        backlog=BACKLOG,
        timeout_graceful_shutdown=5,
    )


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon handles signals itself


async def serve(app: Any, sock: socket.socket, stop: asyncio.Event, limits: RequestLimits) -> None:
    """Serve ``app`` on ``sock`` inside the daemon's loop until ``stop`` is set."""
    server = _EmbeddedServer(uvicorn_config(app, limits))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await task
