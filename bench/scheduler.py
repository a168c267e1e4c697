"""Scheduler benchmark: how late do runs start when many tests share one measurement point?

What is measured
    N ``noop`` tests (a tool that does nothing, so only scheduling and process start-up are
    timed) with interval ``N / rate`` seconds, offset 0, background class, each test placed in
    the interval by the scheduler's own stable phase, so together they ask for ``rate``
    dispatches per second. For every run planned inside the measurement window
    ``[t0, t0 + seconds)`` we record the start lateness ``actual - planned``: in the fork modes
    ``actual`` is when the tool started in the forked child (the child reports it), so the
    fork's cost, and whatever the child does before the tool, is included. Runs planned before
    ``t0`` (a warm-up, while 10,000 tests are installed) are ignored; no run is planned at or
    after the end of the window (``Schedule.until``).

Why
    The issue's target is p99 lateness < 10 ms at 100 dispatches/s on the 2-core MP host, and a
    number only means something next to a peer measured in the same run on the same machine.
    The modes, all run by one invocation, are:

    ``netsonde+fork``    MeasurementPoint + the real Runner, as in production: every run is a
                         child forked by netsonde's own fork server (``netsonde.mp.forkserver``,
                         a small process that has the tools imported), stopped at the end with
                         ``Runner.close()``.
    ``mp-forkserver``    MeasurementPoint + the previous Runner, kept here as
                         ``MpForkserverExecutor``: a ``multiprocessing`` "forkserver" Process per
                         run (``netsonde.probes`` preloaded), result sent through a Pipe.
    ``netsonde-inproc``  MeasurementPoint with an executor that calls ``noop.run`` in process:
                         the scheduler's own cost, without the fork.
    ``stdlib-sched``     the peer: ``sched.scheduler(time.time, time.sleep)``, each test
                         re-arming itself at the same planned times (same phases), calling
                         ``noop.run`` in process: the naive "sleep until the next one" loop of
                         the PingER MP.

    Why netsonde has its own fork server, and what the ``mp-forkserver`` row shows: a child of
    multiprocessing's fork server re-runs the parent's ``__main__`` (``runpy.run_path``,
    compiled afresh, importing whatever the fork server has not preloaded) before the tool
    starts, on every run. In the daemon ``__main__`` is the ``netsonde`` console script, i.e.
    the whole CLI (typer, rich); ``set_forkserver_preload(["__main__"])`` does not avoid it on
    3.11. Here it is this benchmark, which imports less than the CLI, so the row understates
    what the daemon paid per run. netsonde's fork server forks from a process that already has
    everything imported and has nothing to re-run.

    CPU is user+system seconds of this process and its children over the window (from ``t0``
    until the last run of the window has ended): ``resource.getrusage`` for this process and
    reaped children, plus the ``/proc/PID/stat`` counters of live children (their own CPU and
    that of the children they reaped). A fork server (netsonde's, or multiprocessing's and its
    resource tracker) is a live child of this process until its mode stops it, and it is the
    parent of every run process and reaps them itself, so the runs' CPU is in its cutime and
    cstime. Each mode stops its fork server when it ends; the last line of the report checks
    that no child process is left.

Usage: python bench/scheduler.py [--tests 10000] [--seconds 60] [--rate 100] [--modes ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import platform
import resource
import sched
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from netsonde import probes as tools
from netsonde.model import Result, Run, RunState, SchedClass, Schedule, TestSpec, to_us
from netsonde.mp.point import MeasurementPoint
from netsonde.mp.runner import Runner, kill_group
from netsonde.mp.scheduler import phase_of
from netsonde.probes import noop

MODES = ("netsonde+fork", "mp-forkserver", "netsonde-inproc", "stdlib-sched")
BURST_MS = 10.0  # the p99 target; runs later than this are counted per mode
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- measurement helpers -----------------------------------------------------------------


def _proc_stat(pid: str) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def live_children(parent: int | None = None) -> list[int]:
    """Pids of the live (or not yet reaped) children of ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(entry.name)
            if fields is not None and int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


def cpu_seconds() -> float:
    """User+system CPU of this process, its reaped children, and its live children together
    with everything those have reaped (the fork server's run processes)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for pid in live_children():
        fields = _proc_stat(str(pid))
        if fields is not None:  # utime, stime, cutime, cstime are stat fields 14..17
            total += sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in [0, 1])."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


@dataclass(slots=True)
class Window:
    """The measurement window and what was collected in it."""

    t0: float
    t_end: float
    runs: list[Run] = field(default_factory=list)
    cpu_start: float = math.nan
    cpu_end: float = math.nan
    setup_s: float = 0.0  # time to install the tests (must end before t0)
    note: str = ""

    def snapshot_start(self) -> None:
        self.cpu_start = cpu_seconds()

    def snapshot_end(self) -> None:
        self.cpu_end = cpu_seconds()


@dataclass(frozen=True, slots=True)
class Row:
    mode: str
    dispatches: int
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float
    late: int
    missed: int | None
    states: str


def summarise(mode: str, window: Window, seconds: float, has_missed: bool) -> Row:
    inside = [r for r in window.runs if window.t0 <= r.planned_us / 1e6 < window.t_end]
    started = [r for r in inside if r.actual_us is not None]
    late_ms = sorted(r.lateness_us / 1000 for r in started if r.lateness_us is not None)
    states = Counter(str(r.state) for r in inside)
    return Row(
        mode=mode,
        dispatches=len(started),
        rate=len(started) / seconds,
        p50_ms=percentile(late_ms, 0.50),
        p99_ms=percentile(late_ms, 0.99),
        max_ms=late_ms[-1] if late_ms else math.nan,
        cpu_s=window.cpu_end - window.cpu_start,
        late=sum(1 for ms in late_ms if ms > BURST_MS),
        missed=states.get(str(RunState.MISSED), 0) if has_missed else None,
        states=", ".join(f"{k}={v}" for k, v in sorted(states.items())) or "-",
    )


# ---- the workload ------------------------------------------------------------------------


def build_specs(n: int, rate: float, until: float) -> list[TestSpec]:
    """N noop tests whose aggregate rate is ``rate``. Targets differ so that every test has
    its own key, hence its own phase (and its own run ids)."""
    params = noop.Params()
    interval = n / rate
    return [
        TestSpec(
            id=f"noop-{i:05d}",
            tool=noop.NAME,
            target=f"bench-{i:05d}",
            schedule=Schedule(interval=interval, offset=0.0, until=until),
            params=params,
            sched_class=SchedClass.BACKGROUND,
            timeout=noop.default_timeout(params),
        )
        for i in range(n)
    ]


def _ended(run: Run, state: RunState, error: str | None = None) -> Run:
    run.state = state
    run.error = error
    run.end_us = to_us(time.time())
    return run


class InProcExecutor:
    """Runs the noop tool in the daemon's own process: no fork, so only the scheduler and
    the event loop are timed."""

    async def execute(self, spec: TestSpec, run: Run) -> Run:
        now = time.time()
        run.actual_us = to_us(now)
        run.result = noop.run(spec.target, spec.params, now + spec.timeout)
        return _ended(run, RunState.FINISHED)

    def kill_all(self) -> None:
        pass

    async def close(self) -> None:
        pass


# The previous Runner (multiprocessing's fork server), as the ``mp-forkserver`` peer.


def _mp_child_main(spec: TestSpec, deadline: float, conn: Connection) -> None:
    """In the forkserver child, after it has re-run ``__main__``: sends (tool start, result)."""
    os.setpgid(0, 0)
    started = time.time()
    try:
        result = tools.get(spec.tool).run(spec.target, spec.params, deadline)
    except Exception as e:  # a tool bug must become a failed run, not a lost one
        result = Result(tool=spec.tool, target=spec.target, error=f"{type(e).__name__}: {e}")
    conn.send((started, result))
    conn.close()


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def _mp_receive(reader: Connection, sentinel: int) -> Any:
    """The child's (start time, result), or None if it exited without sending one."""
    waiting = [asyncio.ensure_future(_readable(fd)) for fd in (reader.fileno(), sentinel)]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()
    if reader.poll():
        with contextlib.suppress(EOFError, OSError):
            return reader.recv()
    return None


class MpForkserverExecutor:
    """netsonde's previous Runner: a ``multiprocessing`` forkserver Process per run; the parent
    awaits the result pipe or the process sentinel with ``loop.add_reader``."""

    def __init__(self, grace: float = 2.0) -> None:
        self.grace = grace
        self._live: set[int] = set()
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["netsonde.probes"])

    async def execute(self, spec: TestSpec, run: Run) -> Run:
        reader, writer = self._ctx.Pipe(duplex=False)
        started = time.time()
        deadline = started + spec.timeout
        proc = self._ctx.Process(
            target=_mp_child_main, args=(spec, deadline, writer), name=f"netsonde-run-{spec.id}"
        )
        run.actual_us = to_us(started)  # replaced by the child's own start time
        try:
            proc.start()
        except OSError as e:
            reader.close()
            writer.close()
            return _ended(run, RunState.FAILED, error=f"cannot start run: {e}")
        writer.close()
        pid = proc.pid
        assert pid is not None
        self._live.add(pid)
        try:
            received = await asyncio.wait_for(
                _mp_receive(reader, proc.sentinel), max(0.0, deadline - time.time())
            )
        except TimeoutError:
            kill_group(pid, signal.SIGKILL)
            return _ended(run, RunState.TIMEOUT, error=f"killed at its {spec.timeout:g}s deadline")
        finally:
            reader.close()
            self._live.discard(pid)
            # Wait for the fork server to reap it (the sentinel then reports the exit code).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_readable(proc.sentinel), self.grace)
            proc.join(0)
            kill_group(pid, signal.SIGKILL)  # stragglers the tool left behind
        if received is None:
            return _ended(run, RunState.FAILED, error=f"run process died (exit {proc.exitcode})")
        started, result = received
        run.actual_us, run.result = to_us(started), result
        if result.error:
            return _ended(run, RunState.FAILED, error=result.error)
        return _ended(run, RunState.FINISHED)

    def kill_all(self) -> None:
        for pid in list(self._live):
            kill_group(pid, signal.SIGKILL)

    async def close(self) -> None:
        """Stop (and reap) multiprocessing's fork server and the resource tracker it started."""
        for holder in (
            getattr(multiprocessing.forkserver, "_forkserver", None),
            getattr(multiprocessing.resource_tracker, "_resource_tracker", None),
        ):
            stop = getattr(holder, "_stop", None)
            if stop is not None:
                with contextlib.suppress(OSError, ChildProcessError):
                    stop()


Executor = InProcExecutor | MpForkserverExecutor | Runner


async def _watch(mp: MeasurementPoint, window: Window, stop: asyncio.Event) -> None:
    """Snapshot CPU at t0; after the window, wait for its last runs to end, snapshot, stop."""
    await asyncio.sleep(max(0.0, window.t0 - time.time()))
    window.snapshot_start()
    await asyncio.sleep(max(0.0, window.t_end - time.time()))
    grace = 60.0 + (window.t_end - window.t0)  # a saturated MP may lag by up to the slip
    give_up = time.monotonic() + grace
    while mp.scheduler.next_wakeup() is not None or mp.scheduler.running:
        if time.monotonic() > give_up:
            window.note = f"runs still waiting or running {grace:g} s after the window: stopped"
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # margin: every run has been reaped by its fork server by now
    window.snapshot_end()  # before the fork server is stopped: it is a live child until then
    stop.set()


async def _netsonde(executor: Executor, args: argparse.Namespace) -> Window:
    try:
        # Warm up: start the fork server (and its preload) before the window.
        spec = build_specs(1, 1.0, until=time.time() + 3600)[0]
        warm = Run(run_id="warm-up", test_id=spec.id, test_key=spec.key, slot=0, planned_us=0)
        await executor.execute(spec, warm)
        if warm.state != RunState.FINISHED:
            raise RuntimeError(f"warm-up run {warm.state}: {warm.error}")

        t0 = time.time() + args.warmup
        window = Window(t0=t0, t_end=t0 + args.seconds)
        specs = build_specs(args.tests, args.rate, until=window.t_end)
        started = time.time()
        mp = MeasurementPoint(
            specs, executor=executor, sink=window.runs.append, max_children=args.max_children
        )
        window.setup_s = time.time() - started
        if time.time() > t0:
            window.note = (
                f"installing the tests took {window.setup_s:.2f}s, past t0: raise --warmup"
            )
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch(mp, window, stop))
        await mp.serve(stop)
        await watcher
        # Run processes are children of the fork server, not of this process.
        left = {pid: kids for pid in live_children() if (kids := live_children(pid))}
        if left:
            window.note += f" run processes left under the fork server: {left}"
        return window
    finally:
        await executor.close()


def run_netsonde_fork(args: argparse.Namespace) -> Window:
    return asyncio.run(_netsonde(Runner(), args))


def run_mp_forkserver(args: argparse.Namespace) -> Window:
    return asyncio.run(_netsonde(MpForkserverExecutor(), args))


def run_netsonde_inproc(args: argparse.Namespace) -> Window:
    return asyncio.run(_netsonde(InProcExecutor(), args))


def run_stdlib_sched(args: argparse.Namespace) -> Window:
    """The peer: one ``sched`` event per test, re-armed at the next slot after each call."""
    t0 = time.time() + args.warmup
    window = Window(t0=t0, t_end=t0 + args.seconds)
    specs = build_specs(args.tests, args.rate, until=window.t_end)
    interval = args.tests / args.rate
    calendar = sched.scheduler(time.time, time.sleep)

    def fire(spec: TestSpec, planned: float) -> None:
        now = time.time()
        run = Run(run_id="", test_id=spec.id, test_key="", slot=0, planned_us=to_us(planned))
        run.actual_us = to_us(now)
        run.result = noop.run(spec.target, spec.params, now + spec.timeout)
        run.state = RunState.FINISHED
        window.runs.append(run)
        following = planned + interval
        if following < window.t_end:
            calendar.enterabs(following, 0, fire, (spec, following))

    started = time.time()
    for spec in specs:
        anchor = phase_of(spec.key, interval)
        first = anchor + max(0, math.ceil((time.time() - anchor) / interval)) * interval
        if first < window.t_end:
            calendar.enterabs(first, 0, fire, (spec, first))
    window.setup_s = time.time() - started
    if time.time() > t0:
        window.note = f"installing the tests took {window.setup_s:.2f}s, past t0: raise --warmup"
    calendar.enterabs(t0, -1, window.snapshot_start)
    calendar.run()
    window.snapshot_end()
    return window


RUNNERS: dict[str, Callable[[argparse.Namespace], Window]] = {
    "netsonde+fork": run_netsonde_fork,
    "mp-forkserver": run_mp_forkserver,
    "netsonde-inproc": run_netsonde_inproc,
    "stdlib-sched": run_stdlib_sched,
}


# ---- report ------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"- machine: nproc {len(os.sched_getaffinity(0))} ({os.cpu_count()} CPUs), {model}, "
        f"{platform.system()} {platform.release()}\n"
        f"- python: {platform.python_implementation()} {platform.python_version()}\n"
        f"- commit: {commit}\n"
        f"- load average at start: {load}"
    )


def table(rows: list[Row]) -> str:
    def ms(x: float) -> str:
        return f"{x:.2f}"

    lines = [
        "| mode | dispatches | dispatches/s | lateness p50 ms | p99 ms | max ms | CPU s "
        f"| late > {BURST_MS:g} ms | missed | states |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.dispatches} | {r.rate:.1f} | {ms(r.p50_ms)} | {ms(r.p99_ms)} "
            f"| {ms(r.max_ms)} | {r.cpu_s:.2f} | {r.late} "
            f"| {'n/a' if r.missed is None else r.missed} | {r.states} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=10_000, help="number of noop tests")
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument("--rate", type=float, default=100.0, help="aggregate dispatches/s")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds between installing tests and t0"
    )
    parser.add_argument("--max-children", type=int, default=32, help="as the daemon's config")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args(argv)
    if args.tests < 1 or args.rate <= 0 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--tests, --rate and --seconds must be positive, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # One warning per missed run would flood the output; they are counted in the table.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("netsonde.mp.point").setLevel(logging.ERROR)
    print(f"## Scheduler benchmark\n\n- command: `{shlex.join(sys.orig_argv)}`")
    print(machine())
    print(
        f"- workload: {args.tests} noop tests, interval {args.tests / args.rate:g} s, offset 0, "
        f"background class, max_children {args.max_children} → {args.rate:g} dispatches/s; "
        f"window {args.seconds:g} s after a {args.warmup:g} s warm-up; "
        "lateness = tool start − planned start\n",
        flush=True,
    )
    rows: list[Row] = []
    notes: list[str] = []
    for mode in args.modes:
        print(f"running {mode} ({args.warmup + args.seconds:g} s)…", file=sys.stderr, flush=True)
        gc.collect()
        window = RUNNERS[mode](args)
        rows.append(summarise(mode, window, args.seconds, has_missed=mode != "stdlib-sched"))
        notes.append(f"- {mode}: tests installed in {window.setup_s:.2f} s. {window.note}".strip())
        window.runs.clear()
    print(table(rows))
    print()
    print("\n".join(notes))
    leftovers = live_children()
    print(f"- leftover child processes at exit: {leftovers or 'none'}")
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
