"""Hung probes against a real daemon: a `command` probe that ignores SIGTERM and leaves a
grandchild that ignores it too — in the run's process group, or in a session of its own
(setsid) where no group signal reaches it. Both must be gone within the grace period (+1 s)
after the deadline, the run recorded as ``timeout``, and, the daemon being a child subreaper,
neither left as a zombie. A run's process adopts what its probe daemonizes and ends it with the
run (test_run_leftovers.py); one that dies abruptly leaves that child to the daemon: the cleanup
list's case, the reaper kills it once it is older than the rule allows."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.conftest import DaemonProcess
from netsonde import proctree
from netsonde.proctree import ProcInfo
from reliability.command_probe import command_probe_config

TIMEOUT = 2.0
GRACE = 2.0  # the daemon's Runner() default

# argv: pidfile, "group" | "setsid". Both processes ignore SIGTERM; the grandchild is a plain
# fork (no exec), so it inherits SIG_IGN. The probe then stops its parent, the command tool:
# a tool that cannot keep its own deadline (as a wedged one would not), so that the runner's
# hard deadline has to act.
HUNG_PROBE = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:
    if sys.argv[2] == "setsid":
        os.setsid()
    time.sleep(600)
    os._exit(0)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
os.kill(os.getppid(), signal.SIGSTOP)
time.sleep(600)
"""

# argv: pidfile, marker. Leaves a daemonized grandchild (double fork, setsid, stdio closed), which
# the run's process (a subreaper) adopts; then SIGKILLs that process, its parent, as a crash
# would: the run's process cannot end what it adopted, which falls to the daemon.
LEAVES_A_DAEMON = """\
import os, signal, sys
middle = os.fork()
if middle == 0:
    os.setsid()
    child = os.fork()
    if child == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        sleep = "import time; time.sleep(600)"
        os.execv(sys.executable, [sys.executable, "-c", sleep, sys.argv[2]])
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(child))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    os._exit(0)
os.waitpid(middle, 0)
os.kill(os.getppid(), signal.SIGKILL)
"""


def config(script: Path, args: list[str], extra: str = "", timeout: float = TIMEOUT) -> str:
    return command_probe_config(sys.executable, [str(script), *args], timeout=timeout, extra=extra)


def pids_of(d: DaemonProcess, pidfile: Path) -> list[ProcInfo]:
    d.wait_for(pidfile.exists, 15, step=0.02)
    infos = [proctree.read_proc(int(p)) for p in pidfile.read_text().split()]
    assert all(infos), "the probe's processes must be running when they write their pids"
    return [i for i in infos if i is not None]


def wait_gone(procs: list[ProcInfo], timeout: float) -> float:
    """Poll until none of ``procs`` runs; returns the time (epoch) they were seen gone."""
    end = time.monotonic() + timeout
    while any(proctree.is_alive(p) for p in procs):
        assert time.monotonic() < end, f"still running after {timeout}s: {procs}"
        time.sleep(0.02)
    return time.time()


def wait_reaped(procs: list[ProcInfo], timeout: float) -> None:
    """Not even a zombie is left (the daemon, their subreaper, has reaped them)."""
    end = time.monotonic() + timeout
    while any(proctree.same_process(p) for p in procs):
        assert time.monotonic() < end, f"not reaped after {timeout}s: {procs}"
        time.sleep(0.05)


@pytest.mark.parametrize("escape", ["group", "setsid"])
def test_hung_probe_and_its_grandchild_are_killed_at_the_deadline(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path, escape: str
) -> None:
    script = tmp_path / "hung.py"
    script.write_text(HUNG_PROBE)
    pidfile = tmp_path / "pids"
    d = daemon_factory(config(script, [str(pidfile), escape]))
    d.start()
    probe, grandchild = procs = pids_of(d, pidfile)
    if escape == "setsid":
        d.wait_for(lambda: proctree.read_proc(grandchild.pid).sid == grandchild.pid, 5, 0.02)
        assert probe.sid != grandchild.pid, "the grandchild is out of the probe's session"
    else:
        assert grandchild.pgid == probe.pgid
    gone_at = wait_gone(procs, TIMEOUT + GRACE + 10)

    rows = d.wait_for(lambda: d.cli_json("results", "probe", missing=[]), 15)
    (row,) = rows
    assert row["state"] == "timeout", row
    assert "deadline" in row["error"]
    deadline = row["actual_us"] / 1e6 + TIMEOUT  # the run's start is a hair after its deadline
    assert gone_at <= deadline + GRACE + 1, f"gone {gone_at - deadline:.2f}s after the deadline"
    # The daemon is their subreaper: its reaper reaps them (it scans once a second).
    wait_reaped(procs, 5)
    d.stop()


def test_stop_during_a_hung_run_leaves_neither_process_nor_zombie(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    script = tmp_path / "hung.py"
    script.write_text(HUNG_PROBE)
    pidfile = tmp_path / "pids"
    d = daemon_factory(config(script, [str(pidfile), "setsid"], timeout=60))
    d.start()
    procs = pids_of(d, pidfile)
    d.wait_for(lambda: proctree.read_proc(procs[1].pid).sid == procs[1].pid, 5, 0.02)
    d.stop()  # the run is killed after stop_timeout (1 s); the daemon reaps before it exits
    assert not [p for p in procs if proctree.same_process(p)], d.output()
    assert "final sweep" not in d.output(), "the runner itself must have killed the tree"


def test_cleanup_rule_kills_a_daemonized_leftover_of_a_run_that_died(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    marker = f"leftover-{uuid.uuid4().hex[:12]}"
    script = tmp_path / "leaves.py"
    script.write_text(LEAVES_A_DAEMON)
    pidfile = tmp_path / "pid"
    rule = f'\n[[cleanup]]\npattern = "{marker}$"\nmax_minutes = 0.02\n'  # 1.2 s
    d = daemon_factory(config(script, [str(pidfile), marker], rule))
    d.start()
    rows = d.wait_for(lambda: d.cli_json("results", "probe", missing=[]), 15)
    assert rows[0]["state"] == "failed" and "run process died" in rows[0]["error"], rows
    (leftover,) = pids_of(d, pidfile)
    assert d.proc is not None and leftover.sid != os.getsid(d.proc.pid)  # a session of its own
    assert leftover.ppid == d.proc.pid, "orphaned, it is adopted by the daemon (a subreaper)"
    wait_gone([leftover], 10)
    assert time.time() - leftover.start >= 0.02 * 60
    wait_reaped([leftover], 5)
    d.stop()
    assert f"cleanup: SIGTERM pid {leftover.pid}" in d.output()
