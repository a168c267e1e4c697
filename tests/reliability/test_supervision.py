"""Fault tests of the supervisor with a real daemon: workers and kept-alive servers killed with
SIGKILL come back within 2 s, a wedged (SIGSTOPped) fork server is replaced, a server that
crashes at start backs off instead of burning the CPU, restart policies hold, and stopping the
daemon leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.conftest import DaemonProcess
from procs import alive, descendants

CONFIG = """
[daemon]
data_dir = "data"
listen = "127.0.0.1:{port}"
stop_timeout = "5s"
heartbeat_timeout = "2s"

[api]
workers = 1

[status]
enabled = false

[[server]]
id = "sleeper"
command = "sleep"
args = ["1000"]

[[server]]
id = "crasher"
command = "false"

[[server]]
id = "once"
command = "true"
restart = "on-failure"

[[server]]
id = "family"
command = "/bin/sh"
args = ["-c", "sleep 1001 & sleep 1002 & wait"]

[[test]]
id = "n"
tool = "noop"
target = "n"
interval = "200ms"
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def find(root: int, pattern: str) -> list[int]:
    """The daemon's own children matching ``pattern`` (a run, forked by the fork server, has
    the fork server's command line but another parent)."""
    return sorted(p for p in descendants(root) if parent(p) == root and pattern in cmdline(p))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(d: DaemonProcess, name: str) -> dict[str, Any]:
    return d.cli_json("status")["workers"][name]


@pytest.fixture
def daemon(daemon_factory: Callable[[str], DaemonProcess]) -> DaemonProcess:
    port = _free_port()
    d = daemon_factory(CONFIG.replace("{port}", str(port)))
    d.port = port  # type: ignore[attr-defined]
    d.start()
    d.wait_for(lambda: d.cli_json("status").get("workers"), 15)
    return d


def _restarted_within(d: DaemonProcess, pattern: str, limit: float = 2.0) -> float:
    """SIGKILL the one process matching ``pattern`` below the daemon; how long until another
    one runs."""
    assert d.proc is not None
    (old,) = d.wait_for(
        lambda: len(find(d.proc.pid, pattern)) == 1 and find(d.proc.pid, pattern), 10
    )
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < limit + 3:
        new = [p for p in find(d.proc.pid, pattern) if p != old]
        if new:
            return time.monotonic() - killed
        time.sleep(0.02)
    raise AssertionError(f"no new {pattern!r} within {limit + 3}s:\n{d.output()}")


def test_killed_workers_and_servers_come_back_within_2s(daemon: DaemonProcess) -> None:
    d = daemon
    # Workers that ran a while are restarted at once (backoff is for those dying at start).
    time.sleep(10.5)
    took = {
        "runner": _restarted_within(d, "netsonde.mp.forkserver"),
        "api-0": _restarted_within(d, "netsonde.api.worker"),
        "server:sleeper": _restarted_within(d, "sleep 1000"),
    }
    print(f"restart times (s): {took}")
    assert all(t < 2.0 for t in took.values()), took
    status = d.wait_for(
        lambda: (
            all(
                (s := d.cli_json("status"))["workers"][n]["restarts"] == 1
                and s["workers"][n]["state"] == "running"
                for n in took
            )
            and s
        ),
        5,
    )
    # Runs go on through the new fork server and the new API worker answers.
    runs = status["runs"].get("finished", 0)
    d.wait_for(lambda: d.cli_json("status")["runs"].get("finished", 0) > runs + 5, 10)
    metrics = httpx.get(f"http://127.0.0.1:{d.port}/metrics", timeout=10).text  # type: ignore[attr-defined]
    for name in took:
        assert f'netsonde_worker_restarts_total{{worker="{name}"}} 1.0' in metrics


def test_a_server_crashing_at_start_backs_off_and_policies_hold(daemon: DaemonProcess) -> None:
    d = daemon
    assert d.proc is not None
    cpu_before = cpu_seconds(d.proc.pid)
    time.sleep(6)
    cpu = cpu_seconds(d.proc.pid) - cpu_before
    crasher = worker(d, "server:crasher")
    # Delays 0.5, 1, 2, 4 s: about 4 restarts in ~7 s; without backoff, thousands.
    assert 2 <= crasher["restarts"] <= 6, crasher
    assert crasher["last_exit"] == "server exited with exit code 1"
    assert cpu < 2.0, f"the daemon used {cpu:.2f}s of CPU in 6 s"
    once = worker(d, "server:once")  # on-failure, and it succeeded: left exited
    assert once["state"] == "exited" and once["restarts"] == 0


def test_a_wedged_fork_server_is_replaced(daemon: DaemonProcess) -> None:
    d = daemon
    assert d.proc is not None
    (old,) = d.wait_for(lambda: find(d.proc.pid, "netsonde.mp.forkserver"), 10)
    os.kill(old, signal.SIGSTOP)  # alive but not answering: only the heartbeat can tell
    stopped = time.monotonic()
    new = d.wait_for(
        lambda: [p for p in find(d.proc.pid, "netsonde.mp.forkserver") if p != old], 10
    )
    took = time.monotonic() - stopped
    # heartbeat_timeout = 2 s counts from its last answer (pinged every 0.5 s), then at once
    assert 1.0 <= took < 5.0, took
    assert not alive(old) and len(new) == 1
    w = d.wait_for(lambda: (w := worker(d, "runner"))["restarts"] == 1 and w, 5)
    assert "stopped beating" in w["last_exit"]


def test_stopping_the_daemon_leaves_no_process(daemon: DaemonProcess) -> None:
    d = daemon
    assert d.proc is not None
    d.wait_for(
        lambda: (
            len([p for p in descendants(d.proc.pid) if re.search(r"(^|/)sleep 100\d$", cmdline(p))])
            == 3
        ),
        10,
    )  # the sleeper and the family's two
    tree = descendants(d.proc.pid)
    assert len(tree) >= 6  # fork server, API worker, sleeper, family's sh and its two sleeps
    assert d.stop() < 15
    assert d.proc.returncode == 0, d.output()
    left = [p for p in tree if alive(p)]
    assert not left, [cmdline(p) for p in left]


def test_servers_and_api_workers_die_with_a_killed_daemon(daemon: DaemonProcess) -> None:
    """kill -9 of the daemon alone (the OOM killer): what it supervised must not live on
    holding its ports, or the restarted daemon's servers could not bind them."""
    d = daemon
    assert d.proc is not None
    supervised = d.wait_for(
        lambda: (
            len(s := find(d.proc.pid, "sleep 1000") + find(d.proc.pid, "netsonde.api.worker")) == 2
            and s
        ),
        10,
    )
    tree = descendants(d.proc.pid)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    end = time.monotonic() + 2
    while any(alive(p) for p in supervised) and time.monotonic() < end:
        time.sleep(0.05)
    left = [cmdline(p) for p in supervised if alive(p)]
    for p in tree:  # the family's sleeps, orphaned by design (only direct children get it)
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    assert not left
