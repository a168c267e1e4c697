"""The measurement point: drives the scheduler with the real clock and the runner.

One asyncio task sleeps until the calendar's next decision (asyncio sleeps on the monotonic
clock, and signals are delivered through the loop, so neither wall-clock steps nor signals
derail it), starts what is due, and hands every finished or missed run to ``sink``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from netsonde.model import Run, RunState, TestSpec, to_us
from netsonde.mp.scheduler import Dispatch, Scheduler
from netsonde.mp.status import Lateness, PointStatus, Upcoming

log = logging.getLogger(__name__)

MAX_SLEEP = 1.0  # the loop turns at least this often, to beat its heartbeat


class Executor(Protocol):
    async def execute(self, spec: TestSpec, run: Run) -> Run: ...

    def kill_all(self) -> None: ...


class LatenessWindow:
    """Start lateness of the last ``size`` runs, in microseconds, for status and benchmarks."""

    def __init__(self, size: int = 1000) -> None:
        self._size = size
        self._recent: list[int] = []
        self._sorted: list[int] = []

    def add(self, us: int) -> None:
        self._recent.append(us)
        bisect.insort(self._sorted, us)
        if len(self._recent) > self._size:
            old = self._recent.pop(0)
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def summary(self) -> Lateness | None:
        s = self._sorted
        if not s:
            return None

        def ms_at(q: float) -> float:  # nearest rank
            return s[min(len(s) - 1, int(q * len(s)))] / 1000

        return Lateness(p50_ms=ms_at(0.5), p99_ms=ms_at(0.99), max_ms=s[-1] / 1000)


class MeasurementPoint:
    def __init__(
        self,
        specs: Iterable[TestSpec],
        *,
        executor: Executor,
        sink: Callable[[Run], None],
        max_children: int = 32,
        clock: Callable[[], float] = time.time,
        resume: Mapping[str, int] | None = None,
    ) -> None:
        """``resume``: the last stored slot by test key, to continue after a restart (see
        ``Scheduler``); the slots missed while down go to ``sink`` when ``serve`` starts."""
        self._clock = clock
        self.scheduler = Scheduler(specs, now=clock(), max_children=max_children, resume=resume)
        self._executor = executor
        self._sink = sink
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()
        self.lateness = LatenessWindow()
        self._recovered_recorded = False

    def reload(self, specs: Iterable[TestSpec]) -> None:
        self.scheduler.set_tests(specs, now=self._clock())
        self._wake.set()

    async def serve(self, stop: asyncio.Event, *, stop_timeout: float = 10.0) -> None:
        """Run until ``stop`` is set, then let in-flight runs end (or kill them after
        ``stop_timeout``) so that nothing is left running."""
        try:
            await self.run(stop)
        finally:
            await self.drain(stop_timeout)

    async def run(self, stop: asyncio.Event, beat: Callable[[], None] = lambda: None) -> None:
        """Dispatch what is due until ``stop`` is set; calls ``beat`` at least once a second
        (the supervisor's heartbeat). Called again after a crash, it continues the calendar."""
        if not self._recovered_recorded:
            self._recovered_recorded = True
            self._record_recovered()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                beat()
                for decision in self.scheduler.poll(self._clock()):
                    self._dispatch(decision)
                wake = self.scheduler.next_wakeup()
                timeout = MAX_SLEEP if wake is None else min(MAX_SLEEP, wake - self._clock())
                self._wake.clear()
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {woken, stopping}, timeout=max(0.0, timeout), return_when="FIRST_COMPLETED"
                )
                woken.cancel()
        finally:
            stopping.cancel()

    def _record_recovered(self) -> None:
        missed = self.scheduler.recovered()
        if missed:
            log.warning(
                "recording %d slot(s) of %d test(s) missed while the daemon was down",
                len(missed),
                len({r.test_key for r in missed}),
            )
        for run in missed:
            self._record(run)

    async def drain(self, stop_timeout: float) -> None:
        """Let the runs in progress end; kill those still running after ``stop_timeout``."""
        if not self._tasks:
            return
        log.info("waiting for %d run(s) in progress", len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=stop_timeout)
        if pending:
            log.warning("killing %d run(s) still in progress at stop", len(pending))
            self._executor.kill_all()
            await asyncio.wait(pending, timeout=10)

    def _dispatch(self, decision: Dispatch) -> None:
        if decision.action == "missed":
            log.warning("missed %s: %s", decision.spec.id, decision.run.error)
            self._record(decision.run)
            return
        task = asyncio.create_task(self._execute(decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, decision: Dispatch) -> None:
        run = decision.run
        try:
            await self._executor.execute(decision.spec, run)
        except Exception as e:  # the record of a run must never be lost to a bug
            log.exception("run of %s crashed", decision.spec.id)
            run.state, run.error, run.end_us = (
                RunState.FAILED,
                f"internal error: {e}",
                to_us(time.time()),
            )
        finally:
            self.scheduler.finished(run.run_id)
            self._wake.set()
        if run.lateness_us is not None:
            self.lateness.add(run.lateness_us)
        self._record(run)

    def _record(self, run: Run) -> None:
        self.counts[str(run.state)] += 1
        self._sink(run)

    def status(self, upcoming: int = 10) -> PointStatus:
        """Counts, lateness and the next ``upcoming`` runs, for the daemon's status."""
        return PointStatus(
            tests=len(self.scheduler.specs),
            in_progress=self.scheduler.running,
            waiting=self.scheduler.waiting,
            runs=dict(self.counts),
            lateness=self.lateness.summary(),
            upcoming=tuple(
                Upcoming(test_id=test_id, planned_us=to_us(at))
                for at, test_id in self.scheduler.upcoming(upcoming)
            ),
        )
