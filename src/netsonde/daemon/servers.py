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
import signal

from netsonde.config import ServerSpec
from netsonde.daemon.supervisor import Exited, Heartbeat

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
            env={**os.environ, **dict(spec.env)},
        )
        self.pid = proc.pid
        log.info("server %s started (pid %d): %s", spec.id, proc.pid, " ".join(spec.argv))
        relay = asyncio.create_task(self._relay(proc))
        try:
            while proc.returncode is None:
                hb.beat()  # its heartbeat is being alive
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 0.25)
            code = proc.returncode
            raise Exited(f"server exited with {_describe(code)}", code)
        finally:
            await self._stop(proc)
            relay.cancel()
            self.pid = None

    async def _relay(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, ConnectionError):  # ValueError: line too long
            async for line in proc.stdout:
                text = line.decode(errors="replace").rstrip()
                if text:
                    log.info("server %s: %s", self.spec.id, text[:MAX_LINE])

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM its whole session's group, SIGKILL after ``stop_timeout``; then reap."""
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.spec.stop_timeout)
            except TimeoutError:
                log.warning("server %s ignored SIGTERM; killing it", self.spec.id)
        # Also for a server that exited by itself: what it started may still run.
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _describe(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
