"""The daemon's status, typed: what ``netsonde run`` publishes every second in ``status.json``,
serves to ``/metrics``, and what ``netsonde status`` and the API worker processes read back.

The daemon is the measurement point's process, so its status lives here, below ``services/``
(``Host.status``), ``api/`` and the CLI that read it and the ``daemon/`` that writes it.

A field's name is its JSON key, and the point's own figures (``PointStatus``) sit at the top
level beside the daemon's: that file and ``netsonde status --json`` are a published format.
Every field has a default, so a status written by another version still reads (a missing key
takes its default, an unknown one is ignored); ``read_status`` gives None for a file that is not
there yet (the daemon starting) or cannot be read, and ``stale`` says when the file has not been
written for a while (a full or read-only disk, a hung daemon): its age and the likely cause.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from netsonde import filesystem

STALE_AFTER_S = 5.0  # the daemon writes its status every second


@dataclass(frozen=True)
class Lateness:
    """Start lateness (actual minus planned start) of the recent runs, ms."""

    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True)
class Upcoming:
    test_id: str = ""
    planned_us: int = 0


@dataclass(frozen=True)
class PointStatus:
    """The measurement point's calendar and counts (``MeasurementPoint.status``)."""

    tests: int = 0
    in_progress: int = 0
    waiting: int = 0  # due, but no free slot yet
    runs: dict[str, int] = field(default_factory=dict)  # recorded, by run state
    lateness: Lateness | None = None  # None before the first run
    upcoming: tuple[Upcoming, ...] = ()


@dataclass(frozen=True)
class WorkerStatus:
    """One supervised worker (``daemon/supervisor.py``)."""

    state: str = "starting"  # starting | running | backoff | stopped | exited
    pid: int | None = None  # of the process it watches, if any
    restarts: int = 0
    heartbeat_age_s: float = 0.0
    up_s: float | None = None  # while running
    last_exit: str | None = None  # why it last ended
    last_exit_at: float | None = None  # epoch seconds


@dataclass(frozen=True)
class SpoolStats:
    """The outbox to a remote archive (``mp/spool.py``)."""

    backlog: int = 0  # in the outbox, not delivered
    oldest_age_s: float | None = None
    delivered: int = 0
    dead_letters: int = 0  # refused for good
    last_error: str | None = None
    last_delivery_us: int | None = None
    retrying: bool = False
    next_attempt_in_s: float | None = None
    queued: int = 0  # submitted, not yet in the outbox
    protocol: str = ""


@dataclass(frozen=True)
class FeedStats:
    """A service's feed of runs (``services.base.Feed``)."""

    stored: int = 0
    backlog: int = 0
    rejected: int = 0  # refused by its store, dropped
    error: str | None = None  # of the last write, retried


@dataclass(frozen=True)
class RegistrationStatus:
    """One service's registration with a lookup service (``registration/``, ``[registration]``)."""

    access_point: str = ""  # what it registers as
    url: str | None = None  # the lookup service holding it; None: not registered now
    key: str | None = None  # the key that lookup service gave
    items: int = 0  # things registered (tests, metadata)
    last_success: float | None = None  # epoch seconds of the last answered exchange
    last_error: str | None = None
    last_error_at: float | None = None  # epoch seconds
    failures: int = 0  # failed exchanges since the start
    next_due: float | None = None  # epoch seconds of the next keepalive or attempt


@dataclass(frozen=True)
class ReaperStats:
    """The cleanup list and the orphans reaped (``daemon/reaper.py``)."""

    kills_term: int = 0
    kills_kill: int = 0
    reaped: int = 0
    last_kill: float | None = None  # epoch seconds of the last signal sent
    scans: int = 0
    last_scan_seconds: float = 0.0  # how long the last scan took


@dataclass(frozen=True)
class UpkeepStatus:
    """The archive's upkeep (``archive/maintenance.py``)."""

    rolled_up: int = 0  # runs rolled up since the start
    rollup_backlog: int = 0  # runs stored but not yet in the rollups
    expired: int = 0  # runs removed by [archive] retention since the start
    error: str | None = None  # of the last pass, retried


@dataclass(frozen=True)
class DaemonStatus:
    pid: int = 0
    started_us: int = 0
    config: str | None = None  # the config file's path; None: the embedded default
    archive: str = ""  # its URL
    url: str | None = None  # of the HTTP API; None when disabled
    reloads: int = 0
    reload_error: str | None = None  # why the last reload was refused
    stored: int = 0  # runs written to the archive
    received: int = 0  # runs other points stored in it over the API since the start
    archive_backlog: int = 0  # runs waiting for the archive writer
    archive_error: str | None = None  # of the last archive write, retried
    upkeep: UpkeepStatus = field(default_factory=UpkeepStatus)
    api_workers: tuple[int, ...] | None = None  # their pids; None: HTTP served in the daemon
    api_worker_restarts: int = 0
    feeds: dict[str, FeedStats] = field(default_factory=dict)  # by service name
    workers: dict[str, WorkerStatus] = field(default_factory=dict)  # by worker name
    worker_restarts: int = 0
    loop_stalls: int = 0
    spool: SpoolStats | None = None  # None: no [spool]
    reaper: ReaperStats | None = None
    registration: dict[str, RegistrationStatus] = field(default_factory=dict)  # by service
    restart_every_s: float | None = None
    point: PointStatus = field(default_factory=PointStatus)  # flattened in the JSON

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _adapter().dump_python(self, mode="json")
        point = data.pop("point")
        return {**data, **point}

    @classmethod
    def from_json(cls, data: object) -> DaemonStatus:
        """Raises ValueError when ``data`` is not a status (not an object, a wrong type)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a daemon status is a JSON object, not {type(data).__name__}")
        return _adapter().validate_python({**data, "point": data})


@functools.cache
def _adapter() -> TypeAdapter[DaemonStatus]:
    """Built on first use (~50 ms): a process that never reads or writes a status skips it."""
    return TypeAdapter(DaemonStatus)


# The live status where a daemon runs alongside: ``Host.status``, read by ``/metrics``. None:
# not known (yet).
StatusSource = Callable[[], DaemonStatus | None]


def read_status(path: Path) -> DaemonStatus | None:
    """The status the daemon last published at ``path``; None when there is none to read."""
    try:
        return DaemonStatus.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError):  # a JSONDecodeError or a ValidationError is a ValueError
        return None


def status_age(path: Path, now: float | None = None) -> float | None:
    """Seconds since the daemon last wrote ``path``; None when there is no such file."""
    try:
        written = path.stat().st_mtime
    except OSError:
        return None
    return max(0.0, (time.time() if now is None else now) - written)


def stale(path: Path, now: float | None = None) -> str | None:
    """None while the daemon keeps ``path`` up to date; otherwise one line for whoever reads
    it: how old it is and why it is likely not written any more."""
    age = status_age(path, now)
    if age is None or age < STALE_AFTER_S:
        return None
    cause = filesystem.trouble(path.parent)
    why = f"cannot write {path.name}: {cause}" if cause else "not written since (see the log)"
    return f"status written {age:.0f} s ago; {why}"
