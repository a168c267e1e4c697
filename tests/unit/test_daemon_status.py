"""The daemon's typed status: its JSON is the published format (``status.json``, ``netsonde
status --json``), it reads back whole, and a reader copes with a file that is missing, broken or
written by another version."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from netsonde.mp.spool import Spool
from netsonde.mp.status import (
    DaemonStatus,
    FeedStats,
    Lateness,
    PointStatus,
    ReaperStats,
    SpoolStats,
    Upcoming,
    WorkerStatus,
    read_status,
)

FULL = DaemonStatus(
    pid=4242,
    started_us=1_700_000_000_000_000,
    config="/etc/netsonde/netsonde.toml",
    archive="sqlite:///var/lib/netsonde/archive.sqlite",
    url="http://127.0.0.1:8085/",
    reloads=2,
    reload_error=None,
    stored=40,
    received=12,
    archive_backlog=1,
    archive_error="OperationalError: disk I/O error",
    api_workers=(101, 102),
    api_worker_restarts=1,
    feeds={"status": FeedStats(stored=5, backlog=0, rejected=1, error=None)},
    workers={
        "scheduler": WorkerStatus(state="running", restarts=0, heartbeat_age_s=0.1, up_s=9.5),
        "runner": WorkerStatus(
            state="backoff", pid=77, restarts=3, last_exit="exited 1", last_exit_at=1.7e9
        ),
    },
    worker_restarts=3,
    loop_stalls=1,
    spool=SpoolStats(backlog=3, oldest_age_s=2.5, delivered=9, protocol="rest", retrying=True),
    reaper=ReaperStats(kills_term=1, reaped=2, last_kill=1.7e9, scans=10),
    restart_every_s=86400.0,
    point=PointStatus(
        tests=2,
        in_progress=1,
        waiting=0,
        runs={"finished": 38, "missed": 2},
        lateness=Lateness(p50_ms=0.4, p99_ms=3.0, max_ms=5.5),
        upcoming=(Upcoming("lo4", 1_700_000_001_000_000), Upcoming("lo6", 1_700_000_002_000_000)),
    ),
)

# The top-level keys of status.json as published before the status was typed: readers (and
# users' scripts on ``netsonde status --json``) rely on them. Added since: received, upkeep.
PUBLISHED_KEYS = {
    "pid", "started_us", "config", "archive", "url", "reloads", "reload_error", "stored",
    "archive_backlog", "archive_error", "api_workers", "api_worker_restarts", "feeds",
    "workers", "worker_restarts", "loop_stalls", "spool", "reaper", "restart_every_s",
    "received", "registration", "upkeep", "tests", "in_progress", "waiting", "runs", "lateness",
    "upcoming",
}  # fmt: skip


def test_json_keeps_the_published_keys_with_the_point_at_the_top_level() -> None:
    data = FULL.to_json()
    assert set(data) == PUBLISHED_KEYS
    assert data["tests"] == 2 and data["runs"] == {"finished": 38, "missed": 2}
    assert data["upcoming"][0] == {"test_id": "lo4", "planned_us": 1_700_000_001_000_000}
    assert data["lateness"] == {"p50_ms": 0.4, "p99_ms": 3.0, "max_ms": 5.5}
    assert data["api_workers"] == [101, 102]
    assert data["workers"]["runner"] == {
        "state": "backoff",
        "pid": 77,
        "restarts": 3,
        "heartbeat_age_s": 0.0,
        "up_s": None,
        "last_exit": "exited 1",
        "last_exit_at": 1.7e9,
    }
    assert data["feeds"]["status"] == {"stored": 5, "backlog": 0, "rejected": 1, "error": None}
    assert data["reaper"]["kills_term"] == 1 and data["spool"]["retrying"] is True


def test_a_published_status_reads_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(FULL.to_json(), indent=1))
    assert read_status(path) == FULL


def test_a_status_without_spool_reaper_or_lateness_reads_back() -> None:
    bare = DaemonStatus(pid=1, point=PointStatus(tests=1))
    data = bare.to_json()
    assert data["spool"] is None and data["reaper"] is None and data["lateness"] is None
    assert DaemonStatus.from_json(json.loads(json.dumps(data))) == bare


@pytest.mark.parametrize("content", [None, "", '{"pid": 12, "tes', "[1, 2]", '{"tests": "many"}'])
def test_no_status_to_read_gives_none(tmp_path: Path, content: str | None) -> None:
    """Not written yet (the daemon starting), cut short, or not a status at all."""
    path = tmp_path / "status.json"
    if content is not None:
        path.write_text(content)
    assert read_status(path) is None


def test_missing_keys_take_their_default_and_unknown_ones_are_ignored(tmp_path: Path) -> None:
    """A status written by another version of the daemon still reads."""
    path = tmp_path / "status.json"
    path.write_text(
        json.dumps(
            {
                "pid": 12,
                "tests": 3,
                "workers": {"runner": {"state": "running", "restarts": 1, "cpu": 0.5}},
                "added_later": {"anything": True},
            }
        )
    )
    status = read_status(path)
    assert status == DaemonStatus(
        pid=12,
        workers={"runner": WorkerStatus(state="running", restarts=1)},
        point=PointStatus(tests=3),
    )


def test_the_spool_reports_exactly_the_fields_of_spool_stats(tmp_path: Path) -> None:
    """The daemon builds ``SpoolStats(**spool.stats)``: a key added to, renamed in or dropped
    from the spool's stats must show here, not as a silent default in status.json."""
    spool = Spool(tmp_path / "spool.sqlite", "http://127.0.0.1:9/", protocol="nmwg")
    assert set(spool.stats) == {f.name for f in fields(SpoolStats)}
    assert SpoolStats(**spool.stats) == SpoolStats(protocol="nmwg")
