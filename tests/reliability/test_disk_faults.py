"""Disk full and read-only data directory, for real: the data directory is a small tmpfs the
test mounts, filled up or remounted read-only under a running daemon. The error must show in
``status`` and the log, measuring must go on, and once the disk is fixed every result measured
meanwhile must reach the archive (slots contiguous, none lost)."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.conftest import DaemonProcess

CONFIG = """
[daemon]
data_dir = "data"
pidfile = "run/netsonde.pid"
stop_timeout = "5s"

[api]
enabled = false

[status]
enabled = false

[[test]]
id = "n"
tool = "noop"
targets = ["a", "b", "c"]
interval = "200ms"
"""


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if not _can_mount():
        if os.environ.get("CI"):
            pytest.fail("CI must run these as root with mount(8)")
        pytest.skip("needs root and mount(8) for a tmpfs")
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "run").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full. Unbuffered: a buffered file keeps the part
    of a short write that did not fit and fails again when it is closed."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def slots_by_test(db: Path) -> dict[str, list[int]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT t.test_id, r.slot FROM runs r JOIN tests t ON t.key = r.test_key"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[int]] = {}
    for test_id, slot in rows:
        out.setdefault(test_id, []).append(slot)
    return {k: sorted(v) for k, v in out.items()}


def _error(d: DaemonProcess, *words: str) -> str | None:
    err = d.cli_json("status").get("archive_error") or ""
    return err if all(w in err.lower() for w in words) else None


def _recovers(d: DaemonProcess) -> None:
    before = d.cli_json("status")["stored"]
    d.wait_for(lambda: (s := d.cli_json("status"))["archive_error"] is None and s, 25)
    d.wait_for(lambda: d.cli_json("status")["stored"] > before + 30, 20)


def _no_slot_lost(d: DaemonProcess, db: Path, at_least: int) -> None:
    assert d.stop() < 20
    for test_id, slots in slots_by_test(db).items():
        assert slots == list(range(slots[0], slots[-1] + 1)), f"{test_id}: a slot is missing"
        assert len(slots) >= at_least


def test_disk_full_is_reported_and_nothing_is_lost(
    small_disk: Path, daemon_factory: Callable[[str], DaemonProcess]
) -> None:
    d = daemon_factory(CONFIG)
    d.start()
    d.wait_for(lambda: d.cli_json("status").get("stored", 0) > 20, 20)
    filler = fill(small_disk)
    message = d.wait_for(lambda: _error(d, "full"), 20)
    assert "database or disk is full" in message
    assert "archive write failed" in d.output() and "full" in d.output()
    running = d.cli_json("status")["runs"]["finished"]
    d.wait_for(lambda: d.cli_json("status")["runs"]["finished"] > running + 15, 10)  # measuring
    filler.unlink()
    _recovers(d)
    _no_slot_lost(d, small_disk / "archive.sqlite", 25)  # before, during and after the fault


def test_read_only_data_dir_is_a_clear_error_and_the_next_start_works(
    small_disk: Path, daemon_factory: Callable[[str], DaemonProcess]
) -> None:
    """Linux refuses to remount a file system read-only while files on it are open for writing,
    so a running daemon cannot be put on a read-only disk here; what can be tested is the start
    on one: one clear line and a failing exit (for systemd's Restart=), then a normal start once
    the disk is writable again."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    d = daemon_factory(CONFIG)
    try:
        proc = d.start()
        assert proc.wait(timeout=20) != 0
        last = d.output().strip().splitlines()[-1]
        assert last.startswith(f"netsonde: [daemon] data_dir {small_disk}: ")
        assert "read-only file system" in last.lower() and "Traceback" not in d.output()
        detached = d.cli("run", "--daemon")
        assert detached.returncode != 0
        assert "Read-only file system" in detached.stderr and "Traceback" not in detached.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    d.start()
    d.wait_for(lambda: d.cli_json("status").get("stored", 0) > 20, 20)
    _no_slot_lost(d, small_disk / "archive.sqlite", 5)
