"""API worker processes (``[api] workers = N``), each a supervised worker of the daemon:
started with the settings on stdin, restarted when it dies (with backoff: 1, 2, 4 … 30 s for
one that keeps dying at start), stopped with the daemon."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from netsonde.api.worker import REPLACE_ME
from netsonde.daemon.supervisor import (
    Backoff,
    Heartbeat,
    Supervisor,
    die_with_parent,
    stop_process,
    watch_process,
)

# A worker that served for 10 s is healthy: restart it at once; one that dies at start waits.
BACKOFF = {"first": 1.0, "cap": 30.0, "healthy_after": 10.0}


class ApiWorkers:
    def __init__(self, count: int, listener: socket.socket, settings: dict[str, Any]) -> None:
        """``listener``: the daemon's listening socket, passed to every worker (the daemon
        never accepts on it; it keeps it open so that connections wait in its backlog
        while workers start or are replaced)."""
        self.count = count
        self.listener = listener
        self.settings = {**settings, "fd": listener.fileno()}
        self._procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._names = [f"api-{i}" for i in range(count)]
        self._supervisor: Supervisor | None = None

    @staticmethod
    def prepare_multiprocess_dir(path: Path) -> None:
        """Counters of a previous daemon's workers must not be summed into ours."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)

    def supervise(self, supervisor: Supervisor) -> None:
        """Add the workers to ``supervisor`` (they start with it)."""
        self._supervisor = supervisor
        for i, name in enumerate(self._names):
            supervisor.add(
                name,
                functools.partial(self._body, i),
                pid=functools.partial(self._pid, i),
                backoff=Backoff(**BACKOFF),
                replace_me=REPLACE_ME,
            )

    async def stop(self) -> None:
        assert self._supervisor is not None
        for name in self._names:
            await self._supervisor.stop_worker(name)

    async def _body(self, i: int, hb: Heartbeat) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.settings["multiprocess_dir"]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "netsonde.api.worker",
            stdin=asyncio.subprocess.PIPE,
            env=env,
            preexec_fn=die_with_parent,
            pass_fds=(self.listener.fileno(),),
        )
        self._procs[i] = proc
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(self.settings).encode())
        proc.stdin.close()
        try:
            await watch_process(proc, hb, f"API worker {i} (pid {proc.pid})")
        finally:
            await stop_process(proc, 10.0)

    def _pid(self, i: int) -> int | None:
        proc = self._procs[i]
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def pids(self) -> list[int]:
        return [pid for i in range(self.count) if (pid := self._pid(i)) is not None]

    @property
    def restarts(self) -> int:
        if self._supervisor is None:
            return 0
        return sum(self._supervisor.workers[n].restarts for n in self._names)
