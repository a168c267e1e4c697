"""The archive's upkeep worker (archive/maintenance.py): it rolls up what arrived, applies the
retention, and survives an archive that is away."""

from __future__ import annotations

import time
from pathlib import Path

from netsonde.archive import Archive, ArchiveError, open_archive
from netsonde.archive.maintenance import Maintenance
from netsonde.model import Run, RunState, Schedule, TestSpec
from netsonde.probes import ping

S = 1_000_000
DAY_S = 86400
NOW_S = 1_760_000_000
SPEC = TestSpec("up", "ping", "127.0.0.1", Schedule(interval=60), ping.Params(count=1))


def missed_runs(days_ago: list[int]) -> list[Run]:
    return [
        Run.of(SPEC, (NOW_S - d * DAY_S) * S, state=RunState.MISSED, error="late") for d in days_ago
    ]


def runs_left(archive: Archive) -> int:
    return len(archive.find_runs(test_key=SPEC.key, limit=1000))


def test_a_turn_rolls_up_everything_and_applies_the_retention(store_url: str) -> None:
    archive = open_archive(store_url)
    archive.register_tests([SPEC], NOW_S * S)
    archive.store_runs(missed_runs([1, 2, 40, 41, 400]))
    up = Maintenance(lambda: open_archive(store_url), retention=30 * DAY_S, clock=lambda: NOW_S)
    up.turn()
    assert up.last_error is None
    assert up.rolled_up == 5 and up.backlog == 0
    assert up.expired == 3  # 40, 41 and 400 days old
    assert runs_left(archive) == 2
    # Rolled up before it went: the windows still count the expired runs.
    assert archive.rollup_backlog() == 0
    up.turn()  # retention is hourly: not again now
    assert up.expired == 3
    up.close()
    archive.close()


def test_an_archive_that_cannot_be_opened_is_an_error_kept_and_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    opens = {"n": 0}

    def flaky() -> Archive:
        opens["n"] += 1
        if opens["n"] == 1:
            raise ArchiveError("archive away")
        return open_archive(url)

    up = Maintenance(flaky, retention=None)
    up.turn()
    assert up.last_error is not None and "archive away" in up.last_error
    up.turn()
    assert up.last_error is None and opens["n"] == 2
    up.close()


def test_the_thread_beats_and_stops(tmp_path: Path) -> None:
    up = Maintenance(lambda: open_archive(f"sqlite:///{tmp_path / 'a.sqlite'}"), retention=None,
                     every=0.05)  # fmt: skip
    before = up.beat
    up.start()
    deadline = time.monotonic() + 5
    while up.beat == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.beat > before and up.is_alive()
    up.close()
    assert not up.is_alive()
