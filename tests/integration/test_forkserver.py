"""The fork server under stress: big results, its own death, and the daemon's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from netsonde.model import Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.mp.forkserver import encode
from netsonde.mp.runner import Runner
from netsonde.probes import command, noop
from procs import alive


def spec_of(tool: str, params: object, timeout: float = 10) -> TestSpec:
    return TestSpec(
        id=tool, tool=tool, target="127.0.0.1", schedule=Schedule(interval=60), params=params,
        timeout=timeout,
    )  # fmt: skip


def new_run(spec: TestSpec, n: int = 0) -> Run:
    return Run(run_id_for(spec.key, n), spec.id, spec.key, n, 0)


def test_result_larger_than_a_pipe_buffer_arrives_whole(tmp_path: Path) -> None:
    big = {f"m{i}": i * 0.5 for i in range(20_000)}  # ~400 kB, pipes hold 64 kB
    out = tmp_path / "big.json"
    out.write_text(json.dumps(big))
    spec = spec_of("command", command.Params(program="/bin/cat", args=(str(out),)))

    async def go() -> Run:
        runner = Runner()
        try:
            return await runner.execute(spec, new_run(spec))
        finally:
            await runner.close()

    run = asyncio.run(go())
    assert run.state is RunState.FINISHED, run.error
    assert run.result is not None and run.result.values == big


def test_runs_fail_cleanly_when_the_fork_server_dies_and_it_comes_back() -> None:
    slow = spec_of("noop", noop.Params(sleep=30), timeout=60)
    quick = spec_of("noop", noop.Params(sleep=0))

    async def go() -> tuple[Run, int, int, Run]:
        runner = Runner()
        try:
            task = asyncio.create_task(runner.execute(slow, new_run(slow)))
            while not runner._live:
                await asyncio.sleep(0.01)
            (child,) = runner._live
            assert runner._server is not None
            server = runner._server._proc.pid
            os.kill(server, signal.SIGKILL)
            failed = await asyncio.wait_for(task, 10)
            again = await runner.execute(quick, new_run(quick, 1))
            return failed, child, server, again
        finally:
            await runner.close()

    failed, child, server, again = asyncio.run(go())
    assert failed.state is RunState.FAILED and "fork server died" in (failed.error or "")
    deadline = time.monotonic() + 3
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the orphaned run must be killed with its group"
    assert not alive(server)
    assert again.state is RunState.FINISHED, "a new fork server must take over"


def test_closing_the_runner_stops_the_server_and_its_runs() -> None:
    slow = spec_of("noop", noop.Params(sleep=30), timeout=60)

    async def go() -> tuple[int, int]:
        runner = Runner()
        task = asyncio.create_task(runner.execute(slow, new_run(slow)))
        while not runner._live:
            await asyncio.sleep(0.01)
        assert runner._server is not None
        pids = next(iter(runner._live)), runner._server._proc.pid
        await runner.close()
        run = await asyncio.wait_for(task, 10)
        assert run.state is RunState.FAILED  # recorded, not lost
        return pids

    child, server = asyncio.run(go())
    deadline = time.monotonic() + 3
    while (alive(child) or alive(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(server) and not alive(child)


def test_a_daemon_that_hangs_up_mid_answer_ends_the_server_quietly() -> None:
    """The daemon closes its end while pings are being answered (it is stopping): the server
    exits 0 with nothing on stderr, not a BrokenPipeError traceback."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "netsonde.mp.forkserver", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stderr=subprocess.PIPE,
    )
    theirs.close()
    ours.sendall(b"".join(encode(("ping", n)) for n in range(20_000)))  # answers fill the socket
    ours.shutdown(socket.SHUT_RD)
    ours.close()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()


def test_start_returns_once_the_server_has_imported_the_tools() -> None:
    """Runs asked for right after start() must not wait for the tools' imports (~0.5 s): the
    server is ready (its tools imported, pydantic's extension mapped) when start() returns."""

    async def go() -> str:
        runner = Runner()
        try:
            await runner.start()
            assert runner.fork_server_pid is not None
            return Path(f"/proc/{runner.fork_server_pid}/maps").read_text()
        finally:
            await runner.close()

    assert "_pydantic_core" in asyncio.run(go())
