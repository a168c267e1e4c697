"""An API worker: one process serving the HTTP app on a socket the daemon bound and passed in.

With ``[api] workers = N`` the daemon keeps measuring in its own process and N of these serve
HTTP, so the scheduler never competes with requests for the GIL and requests use every core
(the original perfSONAR-PS daemon forked per request for the same reason). Settings arrive as
JSON on stdin (the token must not show in ``ps``); the live status comes from the file the
daemon rewrites every second, the run metrics from the daemon's metrics file.

Run by the daemon as: python -m netsonde.api.worker  (settings on stdin). Each worker binds its
own SO_REUSEPORT socket on the daemon's address, so the kernel balances connections.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from netsonde.api.app import create_app
from netsonde.api.metrics import Metrics
from netsonde.archive import connections
from netsonde.http.server import bind
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


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = json.load(sys.stdin)
    sock = bind(settings["host"], settings["port"], reuse_port=True)
    app = build(settings)
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False
    )
    # uvicorn's own signal handling: SIGTERM from the daemon ends it gracefully.
    uvloop.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
