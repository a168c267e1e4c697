"""The supervisor with real asyncio tasks and threads: restarts on death and on a stale
heartbeat, backoff, restart policies, ordered stop, and the event-loop watchdog."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest

from netsonde.archive.writer import BatchWriter
from netsonde.daemon.supervisor import Backoff, Exited, Heartbeat, LoopWatchdog, Supervisor
from netsonde.model import Run


def aio(fn):  # type: ignore[no-untyped-def]
    """Run an async test in a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        return asyncio.run(fn(*args, **kwargs))

    return run


def test_backoff_doubles_to_the_cap_and_resets_after_a_healthy_run() -> None:
    b = Backoff(first=0.5, cap=4.0, healthy_after=10.0)
    assert [b.next(0.1) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.next(10.0) == 0.0  # it ran long enough: restart at once
    assert b.next(0.1) == 0.5  # and the doubling starts over


async def _until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.02)


@aio
async def test_a_worker_that_dies_is_restarted_and_counted() -> None:
    starts: list[float] = []

    async def body(hb: Heartbeat) -> None:
        starts.append(time.monotonic())
        if len(starts) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    sup = Supervisor(check_every=0.02)
    w = sup.add("w", body, backoff=Backoff(first=0.05, cap=1.0))
    stop = asyncio.Event()
    sup.start(stop)
    await _until(lambda: len(starts) == 3 and w.state == "running")
    assert w.restarts == 2 and sup.restarts == 2
    assert "RuntimeError: boom" in (w.last_exit or "")
    # the second restart waited twice as long as the first
    assert starts[2] - starts[1] >= 0.09 and starts[1] - starts[0] >= 0.045
    stop.set()
    await sup.stop_all()
    assert w.state == "stopped" and len(starts) == 3


@aio
async def test_a_stale_heartbeat_gets_the_worker_cancelled_and_restarted() -> None:
    runs = 0
    cancelled = 0
    abandoned: list[int] = []

    async def body(hb: Heartbeat) -> None:
        nonlocal runs, cancelled
        runs += 1
        try:
            if runs == 1:
                await asyncio.Event().wait()  # wedged: never beats
            while True:
                hb.beat()
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    sup = Supervisor(stale_after=0.2, check_every=0.02)
    w = sup.add("w", body, backoff=Backoff(first=0.01), on_stale=lambda: abandoned.append(runs))
    stop = asyncio.Event()
    sup.start(stop)
    await _until(lambda: runs == 2)
    await asyncio.sleep(0.5)  # the second one beats: it is left alone
    assert runs == 2 and cancelled == 1 and abandoned == [1] and w.restarts == 1
    assert "stopped beating" in (w.last_exit or "")
    stop.set()
    await sup.stop_all()
    assert cancelled == 2


@aio
async def test_restart_policy_can_leave_a_worker_exited() -> None:
    async def body(hb: Heartbeat) -> None:
        raise Exited("server exited with exit code 0", 0)

    sup = Supervisor(check_every=0.02)
    w = sup.add("w", body, restart=lambda code: code != 0)
    stop = asyncio.Event()
    sup.start(stop)
    await _until(lambda: w.state == "exited")
    assert w.restarts == 0 and w.last_exit == "server exited with exit code 0"
    stop.set()
    await sup.stop_all()


@aio
async def test_no_restart_once_stop_is_set() -> None:
    started = 0

    async def body(hb: Heartbeat) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(0.05)

    sup = Supervisor(check_every=0.01)
    sup.add("w", body, backoff=Backoff(first=0.01))
    stop = asyncio.Event()
    sup.start(stop)
    await _until(lambda: started >= 2)
    stop.set()
    await asyncio.sleep(0.2)
    seen = started
    await asyncio.sleep(0.2)
    assert started == seen
    await sup.stop_all()


class _Store:
    def __init__(self) -> None:
        self.runs: list[Run] = []

    def store_runs(self, runs: list[Run]) -> int:
        if any(r.test_id == "crash" for r in runs):
            raise SystemExit  # escapes the writer's retry: its thread dies
        self.runs += runs
        return len(runs)


def _run(test_id: str, slot: int) -> Run:
    return Run(run_id=f"{test_id}-{slot}", test_id=test_id, test_key="k", slot=slot, planned_us=0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@aio
async def test_a_dead_writer_thread_is_restarted_with_its_queue() -> None:
    store = _Store()
    writer = BatchWriter(store, max_delay=0.01)
    sup = Supervisor(check_every=0.02)
    w = sup.add_thread("archive-writer", writer)
    stop = asyncio.Event()
    sup.start(stop)
    writer.submit(_run("crash", 0))
    await _until(lambda: w.restarts == 1)
    assert w.last_exit == "thread died"
    writer.submit(_run("ok", 1))
    await _until(lambda: len(store.runs) == 1)
    assert store.runs[0].run_id == "ok-1" and writer.is_alive()
    stop.set()
    await sup.stop_all()
    writer.close()


@aio
async def test_a_stuck_writer_thread_is_abandoned_for_a_new_one() -> None:
    release = threading.Event()

    class Stuck(_Store):
        def store_runs(self, runs: list[Run]) -> int:
            if runs[0].test_id == "stuck":
                release.wait(10)
            return super().store_runs(runs)

    store = Stuck()
    writer = BatchWriter(store, max_delay=0.01)
    sup = Supervisor(stale_after=0.3, check_every=0.02)
    w = sup.add_thread("archive-writer", writer)
    stop = asyncio.Event()
    sup.start(stop)
    writer.submit(_run("stuck", 0))
    await _until(lambda: w.restarts == 1)
    assert "stopped beating" in (w.last_exit or "")
    writer.submit(_run("ok", 1))  # the new thread writes while the old one is stuck
    await _until(lambda: [r.run_id for r in store.runs] == ["ok-1"])
    release.set()  # the old one wakes up: what it held is written, then it stops
    await _until(lambda: len(store.runs) == 2)
    stop.set()
    await sup.stop_all()
    writer.close()
    assert sorted(r.run_id for r in store.runs) == ["ok-1", "stuck-0"]


@pytest.mark.parametrize("block_s", [0.8])
@aio
async def test_the_loop_watchdog_sees_a_blocked_event_loop(block_s: float) -> None:
    dog = LoopWatchdog(stall_after=0.2)
    beating = asyncio.create_task(dog.beat_forever())
    dog.start()
    await asyncio.sleep(0.3)
    assert dog.stalls == 0
    time.sleep(block_s)  # blocks the loop, as a buggy synchronous call would
    await asyncio.sleep(0.1)
    assert dog.stalls == 1 and dog.longest_stall_s >= 0.3
    beating.cancel()
    dog.stop()
