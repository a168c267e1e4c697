"""A run's double-forked grandchild (``( setsid sleep 300 & ) &``) against a real daemon: its
parent exits at once, so it is below no process of the run and in no group of the run; the run's
process, a child subreaper, adopts it. It must be gone, and reaped, by the run's deadline (the
runner's hard kill, or the tool's own time limit) or as soon as the run ends normally — not
left running until the daemon stops, one per run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from integration.conftest import DaemonProcess
from netsonde import proctree
from reliability.command_probe import command_probe_config
from reliability.test_hung_probe import GRACE, pids_of, wait_gone, wait_reaped

TIMEOUT = 5.0

# $1: the pidfile; $2: redirections for the grandchild's stdio ("": inherited, so the command
# tool waits for its output until the tool's time is up). The grandchild writes its own pid,
# then sleeps; the subshell that started it exits at once.
DOUBLE_FORK = """
( eval "exec $2"; setsid sh -c 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 300' sh "$1" & ) &
while [ ! -e "$1" ]; do sleep 0.02; done
"""
QUIET = ">/dev/null 2>&1 </dev/null"
ENDINGS = {
    # The command tool stopped (SIGSTOP): it cannot keep its deadline, the runner kills the run.
    "deadline": (QUIET, 'kill -STOP "$PPID"; exec sleep 600', "timeout"),
    # The grandchild holds the tool's stdout: the tool gives up at its own time limit.
    "tool time limit": ("", "exit 0", "failed"),
    # The script ends after a second, and the run with a result.
    "finished": (QUIET, """sleep 1; echo '{"ok": 1}'""", "finished"),
}


def config(script: str, pidfile: Path, redirect: str, *, every: str = "2s", runs: int = 1) -> str:
    args = ["-c", script, "sh", str(pidfile), redirect]
    return command_probe_config("/bin/sh", args, timeout=TIMEOUT, every=every, runs=runs)


def adopter(info: proctree.ProcInfo) -> str:
    """The command line of the process above the parent of ``info``."""
    now = proctree.read_proc(info.pid, cmdline=False)
    parent = proctree.read_proc(now.ppid, cmdline=False) if now else None
    return proctree.read_cmdline(parent.ppid) if parent else ""


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_double_forked_grandchild_ends_with_its_run(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path, ending: str
) -> None:
    redirect, tail, state = ENDINGS[ending]
    pidfile = tmp_path / "grandchild"
    d = daemon_factory(config(DOUBLE_FORK + tail, pidfile, redirect))
    d.start()
    (grandchild,) = pids_of(d, pidfile)
    assert grandchild.sid == grandchild.pid, "in a session of its own"
    # Its parents are gone: the run's process (a child of the fork server) adopted it.
    d.wait_for(lambda: "netsonde.mp.forkserver" in adopter(grandchild), 5, 0.02)

    gone_at = wait_gone([grandchild], TIMEOUT + GRACE + 10)
    (row,) = d.wait_for(lambda: d.cli_json("results", "probe", missing=[]), 15)
    assert row["state"] == state, row
    started = row["actual_us"] / 1e6
    deadline = started + TIMEOUT
    if ending == "deadline":
        assert gone_at <= deadline + GRACE + 1, f"gone {gone_at - deadline:.2f}s after it"
    elif ending == "tool time limit":
        assert "did not finish" in row["error"], row
        assert gone_at <= deadline, f"gone {gone_at - deadline:.2f}s after the deadline"
    else:
        assert gone_at <= started + 2.5, f"gone {gone_at - started:.2f}s after the start"
    wait_reaped([grandchild], 5)  # not even a zombie is left
    d.stop()
    assert "final sweep" not in d.output(), "nothing of the run may be left for the daemon"


def test_grandchildren_do_not_pile_up_run_after_run(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    """A run every 200 ms, each leaving a grandchild: none is left a second later."""
    pidfile = tmp_path / "grandchild"
    script = DOUBLE_FORK + """rm -f "$1"; echo '{"ok": 1}'"""
    d = daemon_factory(config(script, pidfile, QUIET, every="200ms", runs=1000))
    d.start()
    d.wait_for(lambda: len(d.cli_json("results", "probe", missing=[])) >= 10, 30)
    assert d.proc is not None
    old = [
        p
        for p in proctree.descendants(d.proc.pid)
        if p.cmdline == "sleep 300" and not p.dead and p.age() > 1.0
    ]
    assert not old, old
    d.stop()
