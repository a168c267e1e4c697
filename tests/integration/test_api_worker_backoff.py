"""An API worker that dies at start is restarted with backoff, not in a loop that burns CPU."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from netsonde.daemon.api_workers import ApiWorkers
from netsonde.daemon.supervisor import Supervisor


def test_crashing_worker_backs_off(tmp_path: Path) -> None:
    # The port is held by a socket without SO_REUSEPORT, so every worker fails to bind it and
    # exits at once.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    probe = socket.socket()  # what the daemon would have bound; run() closes it
    settings = {
        "multiprocess_dir": str(tmp_path / "prom"),
        "host": "127.0.0.1",
        "port": blocker.getsockname()[1],
    }
    ApiWorkers.prepare_multiprocess_dir(Path(settings["multiprocess_dir"]))
    workers = ApiWorkers(1, probe, settings)

    async def for_a_while() -> float:
        stop = asyncio.Event()
        supervisor = Supervisor()
        workers.supervise(supervisor)
        supervisor.start(stop)
        started = time.monotonic()
        await asyncio.sleep(4.5)
        stop.set()
        await asyncio.wait_for(workers.stop(), 15)
        return time.monotonic() - started

    try:
        took = asyncio.run(for_a_while())
    finally:
        blocker.close()
    assert took < 20
    # Waits of 1, 2, 4 s between attempts: at most 3 restarts in 4.5 s (each start also costs
    # an interpreter's start-up); a restart loop without backoff would make dozens.
    assert 1 <= workers.restarts <= 3
    assert workers.pids == []
