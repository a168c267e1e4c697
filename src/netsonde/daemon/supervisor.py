"""Keeps the daemon's workers alive: each runs supervised, beats a heartbeat, and is restarted
when it dies or its heartbeat goes stale, with backoff; restarts are counted for ``status`` and
``/metrics``.

A worker is an ``async`` body that runs until cancelled. Returning or raising means it died. A
body that drives a thread or a process beats on their behalf (``ThreadWorker``, or its own
watch loop), so the supervisor sees one kind of thing. Everything runs in the daemon's event
loop; what that loop cannot watch (the loop itself stalling) ``LoopWatchdog`` watches from a
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NoReturn

from netsonde.mp.status import WorkerStatus
from netsonde.restartable import Restartable

log = logging.getLogger(__name__)


class Heartbeat:
    """When a worker last showed it was making progress (monotonic seconds); any thread may
    beat (a float assignment is atomic under the GIL)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = time.monotonic()

    def beat(self) -> None:
        self.at = time.monotonic()

    @property
    def age(self) -> float:
        return time.monotonic() - self.at


Body = Callable[[Heartbeat], Coroutine[Any, Any, None]]


class Backoff:
    """Restart delays: none after a worker that ran for ``healthy_after`` seconds; otherwise
    ``first``, doubling to ``cap`` — a worker that dies at start never burns the CPU."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, healthy_after: float = 10.0) -> None:
        self.first, self.cap, self.healthy_after = first, cap, healthy_after
        self._delay = 0.0

    def next(self, ran_for: float) -> float:
        if ran_for >= self.healthy_after:
            self._delay = 0.0
        else:
            self._delay = min(max(self._delay * 2, self.first), self.cap)
        return self._delay


@dataclass
class WorkerState:
    name: str
    body: Body
    stale_after: float | None
    pid: Callable[[], int | None] | None
    backoff: Backoff
    on_stale: Callable[[], None] | None = None
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    restarts: int = 0
    state: str = "starting"  # running | backoff | stopped | exited
    started: float = 0.0  # epoch seconds of the current start
    last_exit: str | None = None
    last_exit_at: float | None = None

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            state=self.state,
            pid=self.pid() if self.pid else None,
            restarts=self.restarts,
            heartbeat_age_s=round(self.heartbeat.age, 3),
            up_s=round(time.time() - self.started, 3) if self.state == "running" else None,
            last_exit=self.last_exit,
            last_exit_at=self.last_exit_at,
        )


class Supervisor:
    """Runs workers until ``stop`` (see ``run``); restarts the ones that die or go stale."""

    def __init__(self, *, stale_after: float = 10.0, check_every: float = 0.25) -> None:
        self.stale_after = stale_after
        self.check_every = check_every
        self.workers: dict[str, WorkerState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restart_policy: dict[str, Callable[[int | None], bool] | None] = {}
        self._replace_me: dict[str, int | None] = {}
        self._stop: asyncio.Event | None = None

    def add(
        self,
        name: str,
        body: Body,
        *,
        stale_after: float | None = -1.0,
        pid: Callable[[], int | None] | None = None,
        backoff: Backoff | None = None,
        restart: Callable[[int | None], bool] | None = None,
        on_stale: Callable[[], None] | None = None,
        replace_me: int | None = None,
    ) -> WorkerState:
        """Supervise ``body`` as ``name``. ``stale_after``: -1 for the supervisor's default,
        None for a body that does not beat. ``restart(exit_code)`` decides whether to restart
        (default: always). ``on_stale`` is called when the body is given up for a stale
        heartbeat (after it is cancelled). ``replace_me``: the exit code by which a process
        asks to be replaced (an API worker above its memory ceiling): restarted at once, no
        backoff, not an error. Added while running, it starts at once."""
        if name in self.workers:
            raise ValueError(f"worker {name!r} already exists")
        w = WorkerState(
            name=name,
            body=body,
            stale_after=self.stale_after if stale_after == -1.0 else stale_after,
            pid=pid,
            backoff=backoff or Backoff(),
            on_stale=on_stale,
        )
        self.workers[name] = w
        self._restart_policy[name] = restart
        self._replace_me[name] = replace_me
        if self._stop is not None:
            self._tasks[name] = asyncio.create_task(self._keep(w, self._stop), name=name)
        return w

    def start(self, stop: asyncio.Event) -> None:
        """Start every worker; they are kept alive until ``stop`` is set (restarts stop then)
        and each is ended by ``stop_worker`` or ``stop_all``, in the order the caller needs."""
        self._stop = stop
        for w in self.workers.values():
            if w.name not in self._tasks:
                self._tasks[w.name] = asyncio.create_task(self._keep(w, stop), name=w.name)

    async def stop_worker(self, name: str, timeout: float = 10.0, *, wait: float = 0.0) -> None:
        """Stop one worker for good: give it ``wait`` seconds to end by itself (it watches the
        stop event), then cancel and await it."""
        task = self._tasks.pop(name, None)
        if task is None:
            return
        if wait:
            await asyncio.wait({task}, timeout=wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout)
        self.workers[name].state = "stopped"

    async def stop_all(self) -> None:
        for name in reversed(list(self._tasks)):
            await self.stop_worker(name)

    async def _keep(self, w: WorkerState, stop: asyncio.Event) -> None:
        while not stop.is_set():
            w.heartbeat.beat()
            w.started, w.state = time.time(), "running"
            started = time.monotonic()
            body = asyncio.create_task(w.body(w.heartbeat), name=f"{w.name}-body")
            try:
                why, code = await self._watch(w, body)
            except asyncio.CancelledError:
                await _cancel(body)
                raise
            w.last_exit, w.last_exit_at = why, time.time()
            policy = self._restart_policy.get(w.name)
            if stop.is_set():
                return
            if policy is not None and not policy(code):
                w.state = "exited"
                log.warning("%s %s; not restarted (restart policy)", w.name, why)
                return
            w.restarts += 1
            if code is not None and code == self._replace_me.get(w.name):
                log.info("%s %s: replaced (restart %d)", w.name, why, w.restarts)
                continue
            delay = w.backoff.next(time.monotonic() - started)
            w.state = "backoff"
            log.error("%s %s; restart %d in %.1fs", w.name, why, w.restarts, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _watch(self, w: WorkerState, body: asyncio.Task[None]) -> tuple[str, int | None]:
        """Wait until the body ends or goes stale; returns why, and its exit code if any."""
        while True:
            done, _ = await asyncio.wait({body}, timeout=self.check_every)
            if done:
                return _describe_end(body)
            if w.stale_after is not None and w.heartbeat.age > w.stale_after:
                age = w.heartbeat.age
                await _cancel(body)
                if w.on_stale is not None:
                    w.on_stale()
                return f"stopped beating ({age:.1f}s since its last heartbeat)", None

    def add_thread(self, name: str, component: Restartable) -> WorkerState:
        """Supervise a component that works in a thread: restarted when the thread dies, and
        abandoned (if it can be: ``abandon()``) for a fresh one when its heartbeat goes stale."""
        return self.add(name, thread_body(component), on_stale=getattr(component, "abandon", None))

    def status(self) -> dict[str, WorkerStatus]:
        return {name: w.status() for name, w in self.workers.items()}

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers.values())


class Exited(Exception):
    """A worker's body ends with this when what it watches (a process) exited."""

    def __init__(self, what: str, code: int | None) -> None:
        super().__init__(what)
        self.code = code


def _describe_end(body: asyncio.Task[None]) -> tuple[str, int | None]:
    if body.cancelled():
        return "was cancelled", None
    e = body.exception()
    if e is None:
        return "returned", None
    if isinstance(e, Exited):
        return str(e), e.code
    log.error("worker crashed", exc_info=e)
    return f"crashed: {type(e).__name__}: {e}", None


async def _cancel(task: asyncio.Task[None], timeout: float = 10.0) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
        await asyncio.wait_for(task, timeout)


# ---- bodies for threads -----------------------------------------------------------------------


def thread_body(component: Restartable, poll: float = 0.25) -> Body:
    """A worker body that (re)starts ``component``'s thread and relays its heartbeat."""

    async def body(hb: Heartbeat) -> None:
        component.start()
        while component.is_alive():
            hb.at = component.beat
            await asyncio.sleep(poll)
        raise Exited("thread died", None)

    return body


async def watch_task(work: Awaitable[None], hb: Heartbeat) -> None:
    """A body for work that cannot beat itself (a server's task): beat while it runs; it
    ending before the daemon stops is a death."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            hb.beat()
            await asyncio.wait({task}, timeout=0.5)
    finally:
        task.cancel()
    task.result()  # raises what it raised


# ---- bodies for processes --------------------------------------------------------------------


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A ``preexec_fn`` for supervised processes: SIGKILL them when the daemon dies (kill -9,
    the OOM killer) so that a restarted daemon does not find the old ones still holding their
    ports. Called between fork and exec, in the child."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the daemon died before the prctl took effect
        os._exit(1)


async def watch_process(proc: asyncio.subprocess.Process, hb: Heartbeat, what: str) -> NoReturn:
    """Beat while ``proc`` lives (a process's heartbeat is being alive); raise ``Exited``
    with its exit status when it ends."""
    while proc.returncode is None:
        hb.beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), 0.25)
    code = proc.returncode
    raise Exited(f"{what} exited with {describe_exit(code)}", code)


async def stop_process(
    proc: asyncio.subprocess.Process, timeout: float, *, group: bool = False
) -> bool:
    """SIGTERM ``proc`` (its whole process group with ``group``), SIGKILL after ``timeout``,
    then reap it. Returns False when it had to be killed."""
    polite = True
    if proc.returncode is None:
        _signal(proc, signal.SIGTERM, group)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout)
        except TimeoutError:
            polite = False
    if group or proc.returncode is None:
        # With ``group``, also after a clean exit: what it started may still run.
        _signal(proc, signal.SIGKILL, group)
    await proc.wait()
    return polite


def _signal(proc: asyncio.subprocess.Process, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# ---- the event loop itself --------------------------------------------------------------------


class LoopWatchdog:
    """Watches the event loop from a thread: a loop that has not turned for ``stall_after``
    seconds is blocked (a bug, a synchronous call that hangs), which no task in it can see.
    It logs the stacks of every thread once per stall, so the cause can be found, and counts
    stalls for status; systemd's watchdog or ``restart_every`` can then act."""

    def __init__(self, stall_after: float = 10.0) -> None:
        self.stall_after = stall_after
        self.heartbeat = Heartbeat()
        self.stalls = 0
        self.longest_stall_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def beat_forever(self) -> None:
        while True:
            self.heartbeat.beat()
            await asyncio.sleep(self.stall_after / 10)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        in_stall = False
        while not self._stop.wait(self.stall_after / 4):
            age = self.heartbeat.age
            if age <= self.stall_after:
                in_stall = False
                continue
            self.longest_stall_s = max(self.longest_stall_s, age)
            if not in_stall:
                in_stall = True
                self.stalls += 1
                log.critical("the event loop has not run for %.1fs; thread stacks follow", age)
                with contextlib.suppress(Exception):
                    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
