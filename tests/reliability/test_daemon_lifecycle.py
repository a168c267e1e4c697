"""Months unattended: the nightly restart (``restart_every``) re-executes in place and loses
no slot; a detached daemon's log rotates by size and its stdout/stderr follow the new file."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from integration.conftest import DaemonProcess

RESTARTING = """
[daemon]
data_dir = "data"
stop_timeout = "5s"
restart_every = "3s"

[api]
enabled = false

[status]
enabled = false

[[test]]
id = "n"
tool = "noop"
target = "n"
interval = "200ms"
"""


def test_restart_every_reexecutes_in_place_and_keeps_the_calendar(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    d = daemon_factory(RESTARTING)
    proc = d.start()
    first = d.wait_for(lambda: d.cli_json("status").get("started_us"), 15)
    again = d.wait_for(
        lambda: (s := d.cli_json("status")).get("started_us", first) > first and s, 15
    )
    assert again["pid"] == proc.pid  # the same process: systemd and the pidfile see no change
    third = d.wait_for(
        lambda: (s := d.cli_json("status")).get("started_us", 0) > again["started_us"] and s, 15
    )
    assert third["pid"] == proc.pid
    assert d.output().count("restart_every 3s reached: restarting") >= 2
    d.stop()
    assert proc.returncode == 0, d.output()
    con = sqlite3.connect(tmp_path / "data" / "archive.sqlite")
    rows = con.execute("SELECT slot, state FROM runs ORDER BY slot").fetchall()
    con.close()
    slots = [s for s, _ in rows]
    assert slots == list(range(slots[0], slots[-1] + 1))  # none twice, none lost
    assert sum(1 for _, state in rows if state == "finished") > 20


ROTATING = """
[daemon]
data_dir = "data"
log_file = "logs/netsonde.log"
log_max_bytes = 4000
log_backups = 2

[api]
enabled = false

[status]
enabled = false

[[server]]
id = "chatty"
command = "/bin/sh"
args = ["-c", "while :; do echo 'a line of output from the chatty server'; sleep 0.02; done"]
"""


def test_a_detached_daemons_log_rotates_and_stderr_follows(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    d = daemon_factory(ROTATING)
    started = d.cli("run", "--daemon")
    assert started.returncode == 0, started.stderr
    logs = tmp_path / "logs"
    try:
        d.wait_for(lambda: (logs / "netsonde.log.2").exists(), 20)
        time.sleep(1)
        names = sorted(p.name for p in logs.iterdir())
        assert names == ["netsonde.log", "netsonde.log.1", "netsonde.log.2"]
        for p in logs.iterdir():
            assert p.stat().st_size < 4000 + 200, (p.name, p.stat().st_size)
        assert "server chatty: a line of output" in (logs / "netsonde.log.1").read_text()
        pid = d.cli_json("status")["pid"]
        for fd in (1, 2):  # what a child or a stray print writes lands in the current file
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == str(logs / "netsonde.log")
    finally:
        stopped = d.cli("stop")
        assert stopped.returncode == 0, stopped.stderr
