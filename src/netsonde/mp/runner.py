"""Runs one test in a process group of its own, with a hard deadline.

Each run is a child forked from a fork server that has the tools pre-imported (a fork costs
about a millisecond; a fresh interpreter would cost tens). The child makes itself a process
group leader, so everything the tool starts (ping, iperf3, a script's children) is in that
group: at the deadline the whole group gets SIGTERM, then SIGKILL after a grace period, and
the run is recorded as ``timeout``. After any outcome the group is killed once more so a tool
can never leave a straggler behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from netsonde.model import Result, Run, RunState, TestSpec, to_us
from netsonde.mp import tools


def _child_main(spec: TestSpec, deadline: float, conn: Connection) -> None:
    """Entry point of the forked child: sends (time the tool started, result)."""
    os.setpgid(0, 0)
    started = time.time()
    try:
        tool = tools.get(spec.tool)
        result = tool.run(spec.target, spec.params, deadline)
    except Exception as e:  # a tool bug must become a failed run, not a lost one
        result = Result(tool=spec.tool, target=spec.target, error=f"{type(e).__name__}: {e}")
    conn.send((started, result))
    conn.close()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        # The child may not have called setpgid yet, or the group is already empty.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        pass


class Runner:
    def __init__(self, grace: float = 2.0) -> None:
        self.grace = grace
        self._live: dict[int, Any] = {}  # pid → process, for kill_all
        self._stopping = False
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["netsonde.mp.runner"])

    async def execute(self, spec: TestSpec, run: Run) -> Run:
        """Run ``spec`` for ``run``; fills in actual/end times, state, result or error."""
        loop = asyncio.get_running_loop()
        reader, writer = self._ctx.Pipe(duplex=False)
        started = time.time()
        deadline = started + spec.timeout
        proc = self._ctx.Process(
            target=_child_main, args=(spec, deadline, writer), name=f"netsonde-run-{spec.id}"
        )
        run.actual_us = to_us(started)
        try:
            proc.start()
        except OSError as e:
            reader.close()
            writer.close()
            return _ended(run, RunState.FAILED, error=f"cannot start run: {e}")
        writer.close()
        self._live[proc.pid] = proc
        try:
            received = await asyncio.wait_for(_receive(loop, reader, proc), spec.timeout)
        except TimeoutError:
            await self._terminate(loop, proc)
            return _ended(run, RunState.TIMEOUT, error=f"killed at its {spec.timeout:g}s deadline")
        finally:
            reader.close()
            self._live.pop(proc.pid, None)
        await _wait_exit(loop, proc, self.grace)
        _kill_group(proc.pid, signal.SIGKILL)  # stragglers the tool left behind
        if received is None:
            why = "killed: the daemon is stopping" if self._stopping else "run process died"
            return _ended(run, RunState.FAILED, error=f"{why} (exit {proc.exitcode})")
        started, result = received
        run.actual_us, run.result = to_us(started), result
        if result.error:
            return _ended(run, RunState.FAILED, error=result.error)
        return _ended(run, RunState.FINISHED)

    def kill_all(self) -> None:
        """Kill every run in progress (the daemon is stopping and cannot wait any longer)."""
        self._stopping = True
        for pid in list(self._live):
            _kill_group(pid, signal.SIGKILL)

    async def _terminate(self, loop: asyncio.AbstractEventLoop, proc: Any) -> None:
        _kill_group(proc.pid, signal.SIGTERM)
        if not await _wait_exit(loop, proc, self.grace):
            _kill_group(proc.pid, signal.SIGKILL)
            await _wait_exit(loop, proc, self.grace)
        _kill_group(proc.pid, signal.SIGKILL)  # the child may be gone while its children live


def _ended(run: Run, state: RunState, error: str | None = None) -> Run:
    run.state = state
    run.error = error
    run.end_us = to_us(time.time())
    return run


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def _receive(
    loop: asyncio.AbstractEventLoop, reader: Connection, proc: Any
) -> tuple[float, Result] | None:
    """The child's (start time, result), or None if it exited without sending one."""
    data_ready = asyncio.ensure_future(_readable(loop, reader.fileno()))
    exited = asyncio.ensure_future(_readable(loop, proc.sentinel))
    try:
        await asyncio.wait({data_ready, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (data_ready, exited):
            task.cancel()
    if reader.poll():
        try:
            return reader.recv()
        except (EOFError, OSError):
            return None
    return None


async def _wait_exit(loop: asyncio.AbstractEventLoop, proc: Any, timeout: float) -> bool:
    try:
        await asyncio.wait_for(_readable(loop, proc.sentinel), timeout)
    except TimeoutError:
        return False
    proc.join(0)
    return True
