"""An API worker: one process serving the HTTP app on a socket the daemon bound and passed in.

With ``[api] workers = N`` the daemon keeps measuring in its own process and N of these serve
HTTP, so the scheduler never competes with requests for the GIL and requests use every core
(the original perfSONAR-PS daemon forked per request for the same reason). Settings arrive as
JSON on stdin (the token must not show in ``ps``); the live status comes from the file the
daemon rewrites every second, the run metrics from the daemon's metrics file.

Run by the daemon as: python -m netsonde.api.worker  (settings on stdin). Every worker accepts
on the one listening socket the daemon bound and passed in (``fd``): a worker being replaced
leaves its waiting connections to the others, not refused.

A worker is held to its limits from outside the request (``http/bounded.py``): work still
running ``OVERRUN_GRACE`` seconds past its deadline ends the process (the supervisor starts
another), a worker above ``max_worker_rss`` finishes its requests and exits to be replaced,
and at most ``THREADS`` requests' work runs at once (the rest wait, within their deadline),
which bounds its memory.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import anyio.to_thread
import uvicorn
import uvloop

from netsonde.api.app import create_app
from netsonde.api.metrics import Metrics
from netsonde.archive import connections
from netsonde.http.bounded import BoundedRequests, Overruns
from netsonde.http.server import raise_open_files_limit, uvicorn_config
from netsonde.limits import RequestLimits
from netsonde.mp.status import read_status
from netsonde.services import SECTIONS
from netsonde.services.base import Host

log = logging.getLogger("netsonde.api.worker")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


OVERRUN_GRACE = 5.0  # seconds past a deadline before unstoppable work ends its process
THREADS = 4  # request threads at once: CPU-bound work gains nothing from more (the GIL)
# The exit code of a worker that asks to be replaced at once (memory ceiling, or work that would
# not stop): not a failure, so no backoff, which would only lengthen the gap an attacker makes.
REPLACE_ME = 3


def yield_cpu(nice: int, *, idle: bool) -> None:
    """Serving yields the CPU to measuring. At nice 10 alone, 20 busy clients still put the
    p99 start lateness of 50 runs/s at ~300 ms on two cores; under SCHED_IDLE it stays at the
    quiet figure (BENCHMARKS.md, "Attack benchmark")."""
    os.nice(nice)
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _overrun(what: str, late: float) -> None:
    log.error("%s still running %.1fs past its deadline: this worker ends to stop it", what, late)
    logging.shutdown()
    os._exit(REPLACE_ME)


def build(settings: dict[str, Any]) -> Any:
    status_file = Path(settings["status_file"])
    metrics_file = Path(settings["metrics_file"])
    host = Host(
        archive=connections(settings["archive"]),
        name=settings["name"],
        token=settings["token"],
        limits=RequestLimits(**settings["limits"]),
        status=lambda: read_status(status_file),  # None until the daemon has written it
        inline_queries=True,
        sections={
            name: SECTIONS[name].model_validate(section)
            for name, section in settings["sections"].items()
        },
    )
    metrics = Metrics(
        runs=False,
        multiprocess_dir=settings["multiprocess_dir"],
        appended=lambda: _read_bytes(metrics_file),
    )
    return create_app(host, metrics)


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    await server.serve(sockets=[sock])


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = json.load(sys.stdin)
    raise_open_files_limit()
    yield_cpu(settings["nice"], idle=settings["idle"])
    sock = socket.socket(fileno=settings["fd"])
    limits = RequestLimits(**settings["limits"])
    overruns = Overruns(OVERRUN_GRACE, _overrun)
    server: uvicorn.Server | None = None
    recycled = False

    def recycle(rss: int) -> None:
        nonlocal recycled
        recycled = True
        log.warning("memory %d MB above max_worker_rss: replacing this worker", rss >> 20)
        if server is not None:
            server.should_exit = True  # stop accepting, answer what is in progress, exit

    app = BoundedRequests(
        build(settings),
        limits.request_timeout,
        overruns,
        max_rss=settings["max_worker_rss"],
        on_memory=recycle,
    )
    server = uvicorn.Server(uvicorn_config(app, limits))
    overruns.start()
    # uvicorn's own signal handling: SIGTERM from the daemon ends it gracefully.
    uvloop.run(_serve(server, sock))
    if recycled:
        sys.exit(REPLACE_ME)


if __name__ == "__main__":
    main()
