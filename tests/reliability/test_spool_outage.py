"""The remote archive goes down for 60 s while the measurement point keeps measuring: the
results wait in the durable spool (backlog and its age in ``status``), and once the archive is
back every result arrives exactly once, the backlog in order of run time. Two real daemons: the
MP (spooling to the other over REST) and the remote archive."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integration.conftest import DaemonProcess

TOKEN = "spool-outage-test-token-0123456789"
OUTAGE_S = 60.0

REMOTE = """
[daemon]
data_dir = "remote"
listen = "127.0.0.1:{port}"
stop_timeout = "5s"

[api]
token = "{token}"

[status]
enabled = false
"""

MP = """
[daemon]
name = "mp-outage"
data_dir = "mp"
stop_timeout = "5s"

[api]
enabled = false

[status]
enabled = false

[spool]
url = "http://127.0.0.1:{port}"
token = "{token}"
max_backoff = "2s"

[[test]]
id = "n"
tool = "noop"
targets = ["a", "b", "c", "d", "e"]
interval = "200ms"
max_runs = {max_runs}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runs(db: Path) -> list[tuple[int, str, str, int]]:
    """(rowid, run_id, test_id, planned_us) in the order the archive stored them."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(
            "SELECT r.rowid, r.run_id, t.test_id, r.planned_us FROM runs r"
            " JOIN tests t ON t.key = r.test_key ORDER BY r.rowid"
        ).fetchall()
    finally:
        con.close()


def spool(d: DaemonProcess) -> dict[str, Any]:
    return d.cli_json("status").get("spool") or {}


def test_remote_archive_down_60s_every_result_arrives_once_in_order(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    port = _free_port()
    remote = daemon_factory(
        REMOTE.replace("{port}", str(port)).replace("{token}", TOKEN), "remote.toml"
    )
    # Enough runs to measure through the outage and a little after it, then stop by themselves.
    max_runs = int((OUTAGE_S + 25) / 0.2)
    mp = daemon_factory(
        MP.replace("{port}", str(port))
        .replace("{token}", TOKEN)
        .replace("{max_runs}", str(max_runs)),
        "mp.toml",
    )
    remote.start()
    remote.wait_for(lambda: remote.cli_json("status").get("url"), 15)
    mp.start()
    mp.wait_for(lambda: spool(mp).get("delivered", 0) > 50, 20)

    assert remote.stop() < 15
    down_at = time.time()
    time.sleep(OUTAGE_S - 5)
    s = spool(mp)
    assert s["backlog"] > 1000 and s["retrying"], s  # 25 results/s wait in the outbox
    assert s["oldest_age_s"] > OUTAGE_S - 10, s
    assert "connect" in (s["last_error"] or "").lower(), s
    time.sleep(5)

    remote.start()
    up_at = time.time()
    remote.wait_for(lambda: remote.cli_json("status").get("url"), 15)
    # The tests end by themselves (max_runs); then the spool drains to empty.
    mp.wait_for(
        lambda: (
            (st := mp.cli_json("status"))["upcoming"] == []
            and st["in_progress"] == 0
            and st["spool"]["backlog"] == 0
            and st["spool"]["queued"] == 0
        ),
        60,
    )
    delivered = spool(mp)
    assert delivered["last_error"] is None and delivered["dead_letters"] == 0
    mp.stop()
    remote.stop()

    local = runs(tmp_path / "mp" / "archive.sqlite")
    there = runs(tmp_path / "remote" / "archive.sqlite")
    assert len(local) == 5 * max_runs
    # Exactly once: the same runs, each stored once (the run id is the remote's primary key,
    # and the count matches what the MP measured).
    assert sorted(r[1] for r in there) == sorted(r[1] for r in local)
    # In order of run time: per test throughout, and the whole backlog of the outage.
    for test_id in {r[2] for r in there}:
        times = [r[3] for r in there if r[2] == test_id]
        assert times == sorted(times), f"{test_id}: delivered out of order"
    backlog = [r for r in there if down_at * 1e6 + 1e6 < r[3] < up_at * 1e6 - 1e6]
    assert len(backlog) > 5 * (OUTAGE_S - 5) * 4
    assert [r[3] for r in backlog] == sorted(r[3] for r in backlog)
