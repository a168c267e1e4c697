"""Runs one test in a process group of its own, with a hard deadline.

Each run is a child forked by the fork server (``forkserver.py``), which has the tools
imported. The child makes itself a process-group leader, so everything the tool starts (ping,
iperf3, a script's children) is in that group: at the deadline the whole group gets SIGTERM,
then SIGKILL after a grace period, and the run is recorded as ``timeout``. After any outcome the
group is killed once more so a tool can never leave a straggler behind.

A process group does not reach a child that called setsid(), and once the run's child is dead
its children are reparented, so at the deadline the run's tree is read from /proc *before* the
first signal and every process in it is signalled along with the group (``proctree``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from netsonde import proctree
from netsonde.model import Result, Run, RunState, TestSpec, to_us
from netsonde.mp.forkserver import encode

_Done = tuple[int, bytes]  # wait status, payload
READY_TIMEOUT = 30.0  # seconds for a new fork server to import the tools and answer


class ForkServerGone(Exception):
    pass


class _ForkServer:
    """The daemon's end of the fork server: sends run requests, routes the replies."""

    def __init__(self) -> None:
        self._tokens = itertools.count(1)
        self._started: dict[int, asyncio.Future[int]] = {}
        self._done: dict[int, asyncio.Future[_Done]] = {}
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self.closed = False

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "netsonde.mp.forkserver", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._reading = asyncio.create_task(self._read_loop())
        # Ready once it answers: it imports every tool first (~0.5 s), and a run asked for
        # before that would start late by as much.
        try:
            await asyncio.wait_for(self.ping(), READY_TIMEOUT)
        except TimeoutError:
            self.kill()
            raise ForkServerGone(
                f"the fork server did not start within {READY_TIMEOUT:g}s"
            ) from None

    async def run(self, spec: TestSpec, deadline: float) -> tuple[int, asyncio.Future[_Done]]:
        """Ask for a run; returns the child's pid and a future of its (status, payload)."""
        if self.closed:
            raise ForkServerGone("the fork server is not running")
        loop = asyncio.get_running_loop()
        token = next(self._tokens)
        started = self._started[token] = loop.create_future()
        done = self._done[token] = loop.create_future()
        self._writer.write(encode(("run", token, spec, deadline)))
        return await started, done

    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(4)
                message = pickle.loads(await self._reader.readexactly(int.from_bytes(header)))
                if message[0] == "started":
                    _, token, pid = message
                    self._started.pop(token).set_result(pid)
                elif message[0] == "done":
                    _, token, status, payload = message
                    self._done.pop(token).set_result((status, payload))
                elif message[0] == "pong":
                    fut = self._pongs.pop(message[1], None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            pending: list[asyncio.Future[Any]] = [
                *self._started.values(),
                *self._done.values(),
                *self._pongs.values(),
            ]
            for fut in pending:
                if not fut.done():
                    fut.set_exception(ForkServerGone("the fork server died"))
            self._started.clear()
            self._done.clear()
            self._pongs.clear()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)

    async def ping(self) -> None:
        """Returns when the server answers: its loop is turning. Raises ForkServerGone."""
        if self.closed:
            raise ForkServerGone("the fork server is not running")
        token = next(self._tokens)
        pong = self._pongs[token] = asyncio.get_running_loop().create_future()
        self._writer.write(encode(("ping", token)))
        await pong

    @property
    def pid(self) -> int:
        return self._proc.pid

    def kill(self) -> None:
        """SIGKILL it (wedged); its read loop then fails what waits on it."""
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reading, 5)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        # The child may not have called setpgid yet, or the group is already empty.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        pass


def kill_stragglers(pid: int) -> None:
    """SIGKILL what is left of a run that has ended: its group, and what members of the group
    started in sessions of their own. Cheap when nothing is left (the usual case): no scan."""
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return  # the group is empty; orphans that left it are the reaper's (daemon/reaper.py)
    tree = proctree.group_tree(pid)
    kill_group(pid, signal.SIGKILL)
    proctree.signal_all(tree, signal.SIGKILL)


def _kill_tree(pid: int, seen: list[proctree.ProcInfo]) -> None:
    """SIGKILL ``seen`` (the tree as it was at the deadline) and whatever its survivors or the
    group have started since."""
    table = proctree.snapshot(cmdline=False)
    now = {p.pid: p for p in proctree.group_tree(pid, table)}
    survivors = [p for p in seen if proctree.same_process(p)]
    for p in [*survivors, *proctree.descendants_of([s.pid for s in survivors], table)]:
        now.setdefault(p.pid, p)
    proctree.signal_all(now.values(), signal.SIGKILL)


class Runner:
    def __init__(self, grace: float = 2.0) -> None:
        self.grace = grace
        self._server: _ForkServer | None = None
        self._starting: asyncio.Lock | None = None
        self._live: set[int] = set()  # pids of runs in progress, for kill_all
        self._stopping = False

    async def _fork_server(self) -> _ForkServer:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is None or self._server.closed:
                self._server = _ForkServer()
                await self._server.start()
        return self._server

    async def start(self) -> None:
        """Start the fork server now and wait until it is ready, so the first runs do not pay
        its start-up (the tools' imports, ~0.5 s)."""
        await self._fork_server()

    async def execute(self, spec: TestSpec, run: Run) -> Run:
        """Run ``spec`` for ``run``; fills in actual/end times, state, result or error."""
        run.actual_us = to_us(time.time())  # replaced by the child's own start time
        deadline = time.time() + spec.timeout
        try:
            server = await self._fork_server()
            pid, done = await server.run(spec, deadline)
        except (ForkServerGone, OSError) as e:
            return _ended(run, RunState.FAILED, error=f"cannot start run: {e}")
        self._live.add(pid)
        try:
            try:
                status, payload = await asyncio.wait_for(
                    asyncio.shield(done), max(0.0, deadline - time.time())
                )
            except TimeoutError:
                await self._terminate(pid, done)
                return _ended(
                    run, RunState.TIMEOUT, error=f"killed at its {spec.timeout:g}s deadline"
                )
        except ForkServerGone as e:
            kill_stragglers(pid)
            return _ended(run, RunState.FAILED, error=str(e))
        finally:
            self._live.discard(pid)
        kill_stragglers(pid)  # what the tool left behind
        if not payload:
            why = "killed: the daemon is stopping" if self._stopping else "run process died"
            return _ended(run, RunState.FAILED, error=f"{why} ({_describe(status)})")
        started, result = pickle.loads(payload)
        assert isinstance(result, Result)
        run.actual_us, run.result = to_us(started), result
        if result.error:
            return _ended(run, RunState.FAILED, error=result.error)
        return _ended(run, RunState.FINISHED)

    async def _terminate(self, pid: int, done: asyncio.Future[_Done]) -> None:
        # The snapshot must come first: the SIGTERM kills the run's child, and its children
        # (a setsid()'d one among them) are then no longer below it. A scan costs ~3 ms per 500
        # processes; it blocks the loop, but only when a run hits its deadline.
        tree = proctree.group_tree(pid)
        kill_group(pid, signal.SIGTERM)
        proctree.signal_all(tree, signal.SIGTERM)
        end = time.monotonic() + self.grace
        with contextlib.suppress(TimeoutError, ForkServerGone):
            await asyncio.wait_for(asyncio.shield(done), self.grace)
        # The grace period is for the whole tree, not only for the run's child.
        while time.monotonic() < end and any(map(proctree.is_alive, tree)):
            await asyncio.sleep(0.05)
        kill_group(pid, signal.SIGKILL)  # the child, or what it left in its group
        _kill_tree(pid, tree)
        with contextlib.suppress(TimeoutError, ForkServerGone):
            await asyncio.wait_for(asyncio.shield(done), self.grace)

    @property
    def fork_server_pid(self) -> int | None:
        server = self._server
        return server.pid if server is not None and not server.closed else None

    async def ping(self, timeout: float) -> None:
        """Check the fork server answers within ``timeout`` (TimeoutError), or raise
        ForkServerGone if it died."""
        if self._server is None:
            raise ForkServerGone("the fork server is not running")
        await asyncio.wait_for(self._server.ping(), timeout)

    def kill_fork_server(self) -> None:
        """For the supervisor: kill a fork server that stopped answering; the next start
        (or run) starts a new one."""
        if self._server is not None:
            self._server.kill()

    def kill_all(self) -> None:
        """Kill every run in progress (the daemon is stopping and cannot wait any longer)."""
        self._stopping = True
        table = proctree.snapshot(cmdline=False) if self._live else {}
        for pid in list(self._live):
            kill_group(pid, signal.SIGKILL)
            proctree.signal_all(proctree.group_tree(pid, table), signal.SIGKILL)

    async def close(self) -> None:
        """Stop the fork server (it kills any run it still has)."""
        if self._server is not None:
            await self._server.close()
            self._server = None


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"signal {signal.Signals(sig).name if sig in signal.valid_signals() else sig}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def _ended(run: Run, state: RunState, error: str | None = None) -> Run:
    run.state = state
    run.error = error
    run.end_us = to_us(time.time())
    return run
