"""Serving the ASGI app from inside the daemon's own event loop.

The socket is bound before the daemon reports itself ready, so "address in use" is a start-up
error with a clear message rather than a log line from a background task. uvicorn is told not
to touch signal handlers: the daemon owns SIGTERM/SIGINT/SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


class ListenError(Exception):
    pass


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on (host, port); IPv6 literals get an IPv6 socket.

    ``reuse_port``: for API workers, each binding its own socket: the kernel then spreads new
    connections evenly over them (one shared socket lets whichever worker wakes first take a
    whole burst of keep-alive connections)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted sockets inherit this: without it, Nagle + delayed ACK add ~40 ms to
        # every keep-alive response that is written in more than one piece.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(False)
    return sock


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon handles signals itself


async def serve(app: Any, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # keep the daemon's logging set-up
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await task
