"""Crash recovery with real processes: kill -9 the whole tree (daemon, fork server, runs),
restart on the same config, and check the archive: every result acknowledged (committed)
before the kill is still there unchanged, no slot ran twice, and the slots that passed while
the daemon was down are recorded as missed with the reason."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import DaemonProcess
from netsonde.mp.scheduler import DOWN_REASON
from procs import alive, descendants

CONFIG = """
[daemon]
data_dir = "data"
stop_timeout = "5s"

[api]
enabled = false

[status]
enabled = false

[[test]]
id = "ping"
tool = "ping"
target = "127.0.0.1"
interval = "1s"
params = { count = 1 }

[[test]]
id = "n1"
tool = "noop"
target = "n1"
interval = "200ms"

[[test]]
id = "n2"
tool = "noop"
target = "n2"
interval = "200ms"

[[test]]
id = "n3"
tool = "noop"
target = "n3"
interval = "200ms"

[[test]]
id = "n4"
tool = "noop"
target = "n4"
interval = "200ms"
"""
# 4 tests every 200 ms and one every second: 1,260 results a minute.
NOOPS = ("n1", "n2", "n3", "n4")

Row = tuple  # (run_id, test_id, slot, state, planned_us, actual_us, end_us, error, summary)

_ROWS = (
    "SELECT r.run_id, t.test_id, r.slot, r.state, r.planned_us, r.actual_us, r.end_us, r.error,"
    " res.summary FROM runs r JOIN tests t ON t.key = r.test_key"
    " LEFT JOIN results res ON res.run_id = r.run_id"
)


def stored(db: Path) -> dict[str, Row]:
    """What the archive has committed, by run id (an empty dict before it exists)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0]: row for row in con.execute(_ROWS)}
    except sqlite3.OperationalError:  # the schema is not in yet
        return {}
    finally:
        con.close()


def by_test(rows: dict[str, Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows.values():
        out[row[1]].append(row)
    for runs in out.values():
        runs.sort(key=lambda r: r[2])
    return out


def kill_tree(root: int) -> set[int]:
    """SIGKILL ``root`` and everything below it, as a power cut would: freeze the tree first
    (a stopped process cannot fork), so that nothing escapes, then kill it all at once."""
    os.kill(root, signal.SIGSTOP)
    frozen = {root}
    while new := descendants(root) - frozen:
        for pid in new:
            os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        os.kill(pid, signal.SIGKILL)
    return frozen


@pytest.fixture
def daemon(netsonde_bin: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    config = tmp_path / "netsonde.toml"
    config.write_text(CONFIG)
    d = DaemonProcess(netsonde_bin, config)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        kill_tree(d.proc.pid)
        d.proc.wait()


def test_kill_9_of_the_whole_tree_then_restart_resumes_the_schedule(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    d = daemon
    db = tmp_path / "data" / "archive.sqlite"
    pidfile = tmp_path / "data" / "netsonde.pid"
    first = d.start()

    def enough() -> bool:
        counts = {t: len(rs) for t, rs in by_test(stored(db)).items()}
        return counts.get("ping", 0) >= 4 and min(counts.get(t, 0) for t in NOOPS) >= 15

    d.wait_for(enough, 20)
    assert descendants(first.pid), "the fork server (at least) runs below the daemon"
    acknowledged = stored(db)  # committed before the kill: must survive it
    finished = sorted(r[4] for r in acknowledged.values() if r[3] == "finished")
    per_minute = 60 * (len(finished) - 1) / ((finished[-1] - finished[0]) / 1e6)
    assert per_minute >= 1000, f"only {per_minute:.0f} results a minute"
    killed = kill_tree(first.pid)
    killed_at = time.time()
    first.wait(timeout=10)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in killed if alive(p)], "something survived kill -9"
    assert pidfile.read_text().strip() == str(first.pid), "a stale pidfile is left behind"

    time.sleep(3)
    restarted_at = time.time()
    second = d.start()
    d.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(second.pid), 10)

    def resumed() -> bool:  # every test has run again, well after the restart
        since = (restarted_at + 1.5) * 1e6
        runs = by_test(stored(db))
        return all(
            any(r[3] == "finished" and r[4] > since for r in runs.get(t, []))
            for t in ("ping", *NOOPS)
        )

    d.wait_for(resumed, 15)
    d.stop()
    after = stored(db)

    # Every result acknowledged before the kill is still there, with the same values.
    lost_or_changed = {k: v for k, v in acknowledged.items() if after.get(k) != v}
    assert not lost_or_changed

    for test_id, runs in by_test(after).items():
        slots = [r[2] for r in runs]
        assert len(slots) == len(set(slots)), f"{test_id}: a slot was recorded twice"
        assert slots == list(range(slots[0], slots[-1] + 1)), f"{test_id}: gaps in the slots"
        down = [r for r in runs if r[7] == DOWN_REASON]
        assert down, f"{test_id}: no slot recorded as missed while down"
        assert all(r[3] == "missed" and r[5] is None and r[8] is None for r in down)
        last_before = max(r[2] for r in acknowledged.values() if r[1] == test_id)
        ran_after = [r for r in runs if r[5] is not None and r[4] > restarted_at * 1e6]
        # Nothing was run again: the runs after the restart are of slots after the down time.
        assert min(r[2] for r in ran_after) > max(r[2] for r in down) > last_before
        # Every slot due while nothing was running is recorded as missed for that reason.
        margin = 0.5e6
        while_down = [r for r in runs if killed_at * 1e6 + margin < r[4] < restarted_at * 1e6]
        assert while_down and all(r[7] == DOWN_REASON for r in while_down), test_id
