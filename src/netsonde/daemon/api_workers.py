"""The daemon's side of API workers: start N, restart the ones that die (with backoff), stop
them all with the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ApiWorkers:
    def __init__(self, count: int, probe: socket.socket, settings: dict[str, Any]) -> None:
        """``probe``: the daemon's SO_REUSEPORT socket on the address, bound only to report a
        busy address at start-up; it is closed once the workers bind theirs, or it would get
        a share of the connections and never accept them."""
        self.count = count
        self.probe = probe
        self.settings = settings
        self.restarts = 0
        self._procs: list[asyncio.subprocess.Process | None] = [None] * count

    @staticmethod
    def prepare_multiprocess_dir(path: Path) -> None:
        """Counters of a previous daemon's workers must not be summed into ours."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)

    async def _spawn(self, i: int) -> asyncio.subprocess.Process:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.settings["multiprocess_dir"]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "netsonde.api.worker", stdin=asyncio.subprocess.PIPE, env=env
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(self.settings).encode())
        proc.stdin.close()
        self._procs[i] = proc
        return proc

    async def run(self, stop: asyncio.Event) -> None:
        """Keep ``count`` workers alive until ``stop``; then stop them."""
        self.probe.close()
        try:
            await asyncio.gather(*(self._keep(i, stop) for i in range(self.count)))
        finally:
            await self._stop_all()

    async def _keep(self, i: int, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            started = time.monotonic()
            proc = await self._spawn(i)
            stopping = asyncio.ensure_future(stop.wait())
            exited = asyncio.ensure_future(proc.wait())
            await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set():
                exited.cancel()
                return
            self.restarts += 1
            # One that ran a while is restarted at once; one that keeps dying at start backs
            # off (1, 2, 4 … 30 s) instead of burning the CPU in a restart loop.
            ran = time.monotonic() - started
            backoff = 0.0 if ran > 30 else min(max(backoff * 2, 1.0), 30.0)
            log.error(
                "API worker %d (pid %d) exited with %s; restarting", i, proc.pid, proc.returncode
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff or 0.1)

    async def _stop_all(self) -> None:
        live = [p for p in self._procs if p is not None and p.returncode is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in live:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.returncode is None]
