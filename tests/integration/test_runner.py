"""The runner against real processes: deadlines kill whole process groups."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.conftest import DaemonProcess
from netsonde.model import Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.mp.runner import Runner
from netsonde.probes import command, noop, ping
from netsonde.probes import deadline as deadlines
from procs import alive

# Ignores SIGTERM, starts a grandchild that ignores it too, writes both pids, then hangs, and
# stops its parent, the tool: a tool that cannot keep its own deadline, as a wedged one would
# not, so the runner's hard deadline has to act.
HANGING_PROBE = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
os.kill(os.getppid(), signal.SIGSTOP)
time.sleep(600)
"""

# Sleeps past any deadline, with a child in its process group and one in a session of its own
# (out of reach of the run's group); writes the three pids.
SLEEPING_PROBE = """\
import os, subprocess, sys, time
sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
group = subprocess.Popen(sleep)
own = subprocess.Popen(sleep, start_new_session=True)
open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {group.pid} {own.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def spec_for(tool: str, params: object, timeout: float, target: str = "127.0.0.1") -> TestSpec:
    return TestSpec(
        id=f"t-{tool}",
        tool=tool,
        target=target,
        schedule=Schedule(interval=60),
        params=params,
        timeout=timeout,
    )


def execute(spec: TestSpec, grace: float = 0.5) -> Run:
    run = Run(
        run_id=run_id_for(spec.key, 0), test_id=spec.id, test_key=spec.key, slot=0, planned_us=0
    )

    async def once() -> Run:
        runner = Runner(grace=grace)
        try:
            await runner.start()  # as the daemon does: its start-up is not the run's time
            return await runner.execute(spec, run)
        finally:
            await runner.close()

    return asyncio.run(once())


def write_probe(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "hang.py"
    script.write_text(HANGING_PROBE)
    return script, tmp_path / "pids"


def test_hung_tool_is_killed_with_its_group_and_recorded_as_timeout(tmp_path: Path) -> None:
    script, pids = write_probe(tmp_path)
    params = command.Params(program=sys.executable, args=(str(script), str(pids)))
    started = time.monotonic()
    run = execute(spec_for("command", params, timeout=2.0))
    took = time.monotonic() - started
    assert run.state is RunState.TIMEOUT
    assert "deadline" in (run.error or "")
    assert 2.0 <= took < 2.0 + 0.5 + 3, f"took {took:.2f}s"  # deadline + grace + slack
    probe_pid, grandchild_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 2
    while (alive(probe_pid) or alive(grandchild_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(probe_pid), "the probe ignored SIGTERM and must have got SIGKILL"
    assert not alive(grandchild_pid), "the probe's child is in the same group and must be gone"


def _sleeping(tmp_path: Path) -> tuple[command.Params, Path]:
    script, pids = tmp_path / "sleep.py", tmp_path / "pids"
    script.write_text(SLEEPING_PROBE)
    return command.Params(program=sys.executable, args=(str(script), str(pids))), pids


def _all_gone(pids: Path, within: float = 1.0) -> None:
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 3
    end = time.monotonic() + within
    while any(map(alive, found)) and time.monotonic() < end:
        time.sleep(0.02)
    assert not [p for p in found if alive(p)], "the program and both its children must be gone"


def test_command_past_its_deadline_ends_itself_with_its_processes(tmp_path: Path) -> None:
    params, pids = _sleeping(tmp_path)
    started = time.time()
    result = command.run("127.0.0.1", params, deadline=started + 2.0)
    took = time.time() - started
    assert result.error is not None and "did not finish" in result.error, result
    assert 2.0 - deadlines.MARGIN - 0.1 <= took < 2.0, f"took {took:.2f}s"
    _all_gone(pids)  # killed by the tool itself: no runner here


def test_command_past_its_deadline_is_a_failed_run_not_a_killed_one(tmp_path: Path) -> None:
    params, pids = _sleeping(tmp_path)
    run = execute(spec_for("command", params, timeout=2.0))
    assert run.state is RunState.FAILED and "did not finish" in (run.error or ""), run
    assert run.actual_us is not None and run.end_us is not None
    took = (run.end_us - run.actual_us) / 1e6  # the run itself, not the fork server's start
    assert took < 2.0, f"took {took:.2f}s: the runner's deadline had to act"
    _all_gone(pids)


def test_ping_run_finishes_with_samples() -> None:
    run = execute(spec_for("ping", ping.Params(count=3, interval=0.05), timeout=10))
    assert run.state is RunState.FINISHED, run.error
    assert run.result is not None and run.result.sent == 3
    assert [p.seq for p in run.result.replies] == [1, 2, 3]
    assert all(p.ttl == 64 and p.rtt_ms is not None and p.rtt_ms > 0 for p in run.result.replies)
    assert run.actual_us is not None and run.end_us is not None and run.end_us > run.actual_us


def test_tool_error_is_a_failed_run_not_a_crash() -> None:
    params = command.Params(program="/nonexistent/probe")
    run = execute(spec_for("command", params, timeout=5))
    assert run.state is RunState.FAILED
    assert "cannot run /nonexistent/probe" in (run.error or "")


def test_ping_that_refuses_to_run_fails_cleanly() -> None:
    # An IPv6 literal with IPv4 forced: ping refuses before sending anything (checked with
    # strace: no connect/sendto). A host name that does not resolve would ask the network's
    # DNS resolver, and tests send nothing beyond loopback.
    params = ping.Params(count=1, family="ipv4")
    run = execute(spec_for("ping", params, timeout=10, target="::1"))
    assert run.state is RunState.FAILED
    assert run.error is not None and run.error.endswith(
        "::1: Address family for hostname not supported"
    )


@pytest.mark.parametrize("sleep", [0.0, 0.2])
def test_noop_runs_in_a_child_process(sleep: float) -> None:
    run = execute(spec_for("noop", noop.Params(sleep=sleep), timeout=5))
    assert run.state is RunState.FINISHED
    assert run.result is not None and run.result.values == {"slept": sleep}
    assert run.end_us is not None and run.actual_us is not None
    assert run.end_us - run.actual_us >= sleep * 1e6


def test_daemon_records_hung_run_as_timeout(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    script, pids = write_probe(tmp_path)
    d = daemon_factory(
        f"""
[daemon]
data_dir = "data"

[[test]]
id = "hang"
tool = "command"
target = "127.0.0.1"
interval = "3s"
timeout = "2s"
max_runs = 1
params = {{ program = "{sys.executable}", args = ["{script}", "{pids}"] }}
"""
    )
    d.start()
    rows = d.wait_for(
        lambda: [r for r in d.cli_json("results", "hang", missing=[]) if r["state"] == "timeout"],
        15,
    )
    assert "deadline" in rows[0]["error"]
    probe_pid, grandchild_pid = map(int, pids.read_text().split())
    assert not alive(probe_pid) and not alive(grandchild_pid)
    d.stop()
