"""Helper servers kept alive by the daemon — IEPM-BW's ``keep-servers-alive`` and its
``servers.alive`` list: ``iperf3 -s``, a TWAMP reflector, anything a test needs running.

Each ``[[server]]`` is one supervised worker: started without a shell in a session of its own
(so stopping it reaches everything it started), its output relayed line by line to the log, and
restarted by the supervisor according to its restart policy when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from netsonde.config import ServerSpec
from netsonde.daemon.supervisor import (
    Heartbeat,
    die_with_parent,
    stop_process,
    watch_process,
)

log = logging.getLogger(__name__)

MAX_LINE = 1000  # characters of one output line that reach the log


def restart_policy(spec: ServerSpec) -> bool | None:
    """always → True, never → False, on-failure → None (decided by the exit code)."""
    return {"always": True, "never": False}.get(spec.restart)


def should_restart(spec: ServerSpec, code: int | None) -> bool:
    policy = restart_policy(spec)
    if policy is not None:
        return policy
    return code != 0  # on-failure: a signal (None or negative) or a non-zero exit


class KeptServer:
    """One ``[[server]]``: ``body`` is its supervised worker."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.pid: int | None = None

    async def body(self, hb: Heartbeat) -> None:
        spec = self.spec
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env={**os.environ, **dict(spec.env)},
        )
        self.pid = proc.pid
        log.info("server %s started (pid %d): %s", spec.id, proc.pid, " ".join(spec.argv))
        relay = asyncio.create_task(self._relay(proc))
        try:
            await watch_process(proc, hb, "server")
        finally:
            if not await stop_process(proc, spec.stop_timeout, group=True):
                log.warning("server %s ignored SIGTERM; killed", spec.id)
            relay.cancel()
            self.pid = None

    async def _relay(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, ConnectionError):  # ValueError: line too long
            async for line in proc.stdout:
                text = line.decode(errors="replace").rstrip()
                if text:
                    log.info("server %s: %s", self.spec.id, text[:MAX_LINE])
