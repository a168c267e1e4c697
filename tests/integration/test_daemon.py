"""The measurement point end to end: real `netsonde run`, real ping, real SQLite, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from integration.conftest import DaemonProcess
from procs import alive, descendants

PING_EVERY_SECOND = """
[daemon]
data_dir = "data"

[[test]]
id = "lo4"
tool = "ping"
target = "127.0.0.1"
interval = "1s"
params = { count = 3, interval = 0.05 }
"""


def finished_with_rtts(d: DaemonProcess) -> list[dict]:
    rows = d.cli_json("results", "lo4", "--since", "5m", missing=[])
    return [r for r in rows if r["state"] == "finished" and r["values"].get("minRtt") is not None]


def test_measures_stores_refuses_second_and_stops_clean(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    d = daemon_factory(PING_EVERY_SECOND)
    started = time.monotonic()
    d.start()
    runs = d.wait_for(lambda: (r := finished_with_rtts(d)) and len(r) >= 3 and r, timeout=10)
    assert time.monotonic() - started < 10
    for r in runs:
        v = r["values"]
        assert 0 < v["minRtt"] <= v["medianRtt"] <= v["maxRtt"] < 100  # loopback, milliseconds
        assert v["lossPercent"] == 0.0
        assert r["sent"] == 3
        assert r["actual_us"] >= r["planned_us"] - 1000  # never started before its plan
    assert len({r["run_id"] for r in runs}) == len(runs)

    # Status tells pid, uptime and what comes next.
    status = d.cli_json("status")
    assert status["running"] is True
    assert d.proc is not None and status["pid"] == d.proc.pid
    assert status["upcoming"] and status["upcoming"][0]["test_id"] == "lo4"
    # Not a stale plan: the next run is at most a publish interval (1 s) in the past, read by a
    # CLI that itself takes a moment to start on a busy machine (1.1 s seen in a fresh clone).
    assert status["upcoming"][0]["planned_us"] > (time.time() - 3) * 1e6

    # A second instance on the same pidfile is refused, in one line.
    second = d.cli("run")
    assert second.returncode != 0
    assert "already running" in second.stderr and str(d.proc.pid) in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr

    # SIGTERM: out in < 5 s, nothing left behind, pidfile gone.
    tree = descendants(d.proc.pid)
    assert tree, "the daemon should have its fork server (and runs) below it"
    took = d.stop()
    assert took < 5, f"stop took {took:.1f}s"
    assert d.proc.returncode == 0, d.output()
    deadline = time.monotonic() + 3
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in tree if alive(p)], "processes left running after stop"
    assert not (tmp_path / "data" / "netsonde.pid").exists()
    stopped = d.cli("status")
    assert stopped.returncode == 3 and "not running" in stopped.stdout


def test_stale_pidfile_is_taken_over(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "netsonde.pid").write_text(f"{dead.pid}\n")
    d = daemon_factory(PING_EVERY_SECOND)
    d.start()
    status = d.wait_for(lambda: (s := d.cli_json("status"))["running"] and "pid" in s and s, 10)
    assert d.proc is not None and status["pid"] == d.proc.pid
    assert (tmp_path / "data" / "netsonde.pid").read_text().strip() == str(d.proc.pid)
    d.stop()


def test_sighup_reloads_keeping_unchanged_schedule(
    daemon_factory: Callable[[str], DaemonProcess],
) -> None:
    slow = PING_EVERY_SECOND.replace('interval = "1s"', 'interval = "30s"')
    d = daemon_factory(slow)
    d.start()
    before = d.wait_for(lambda: (s := d.cli_json("status")).get("upcoming") and s, 10)
    planned_lo4 = before["upcoming"][0]["planned_us"]
    assert d.proc is not None

    d.config.write_text(
        slow
        + """
[[test]]
id = "lo6"
tool = "ping"
target = "::1"
interval = "1s"
params = { count = 2, interval = 0.05 }
"""
    )
    os.kill(d.proc.pid, signal.SIGHUP)
    after = d.wait_for(lambda: (s := d.cli_json("status"))["reloads"] == 1 and s, 10)
    assert after["tests"] == 2
    lo4 = [u["planned_us"] for u in after["upcoming"] if u["test_id"] == "lo4"]
    assert lo4 == [planned_lo4], "an unchanged test must keep its place in the calendar"
    d.wait_for(
        lambda: any(r["state"] == "finished" for r in d.cli_json("results", "lo6", missing=[])), 10
    )

    # A broken config on reload is refused; the daemon keeps running the old one. (The CLI
    # cannot read the broken file either, so look at the status file the daemon publishes.)
    d.config.write_text(slow + "\n[[test]]\nid = 'bad'\n")
    os.kill(d.proc.pid, signal.SIGHUP)
    status_file = d.config.parent / "data" / "status.json"
    refused = d.wait_for(
        lambda: (s := json.loads(status_file.read_text()))["reload_error"] and s, 10
    )
    assert "netsonde.toml" in refused["reload_error"] and refused["tests"] == 2
    assert d.proc.poll() is None
    d.stop()


def test_daemon_mode_detaches_and_stops(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    d = daemon_factory(PING_EVERY_SECOND)
    started = d.cli("run", "--daemon")
    assert started.returncode == 0, started.stderr
    assert "started in the background" in started.stdout
    status = d.cli_json("status")
    pid = status["pid"]
    try:
        assert status["running"] and pid != os.getpid()
        # Double fork: a session of its own, but not its leader, so it can never regain a tty.
        assert os.getsid(pid) != os.getsid(0) and os.getsid(pid) != pid
        again = d.cli("run", "--daemon")
        assert again.returncode != 0 and "already running" in again.stderr
        d.wait_for(lambda: len(finished_with_rtts(d)) >= 1, 10)
    finally:
        os.kill(pid, signal.SIGTERM)
    d.wait_for(lambda: not alive(pid), 10)
    assert "stopped" in (tmp_path / "data" / "netsonde.log").read_text()
    assert not (tmp_path / "data" / "netsonde.pid").exists()
