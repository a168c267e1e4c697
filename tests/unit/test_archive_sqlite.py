"""The SQLite archive: idempotent stores, queries by test and time range."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from netsonde.archive.sqlite import ArchiveError, SQLiteArchive
from netsonde.archive.writer import BatchWriter
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping

T0 = 1_700_000_000_000_000  # epoch µs


def spec(test_id: str = "a", target: str = "127.0.0.1", count: int = 3) -> TestSpec:
    return TestSpec(
        id=test_id,
        tool="ping",
        target=target,
        schedule=Schedule(interval=10),
        params=ping.Params(count=count),
    )


def run_of(s: TestSpec, slot: int, *, rtt: float = 1.0, state: RunState = RunState.FINISHED) -> Run:
    planned = T0 + slot * 10_000_000
    result = None
    if state is RunState.FINISHED:
        result = Result(
            tool="ping",
            target=s.target,
            sent=2,
            replies=[PacketSample(1, rtt, 64, 64, planned + 10), PacketSample(2, None)],
            values={"minRtt": rtt, "lossPercent": 50.0},
        )
    return Run(
        run_id=run_id_for(s.key, slot),
        test_id=s.id,
        test_key=s.key,
        slot=slot,
        planned_us=planned,
        state=state,
        actual_us=planned + 500 if result else None,
        end_us=planned + 2_000_000 if result else None,
        error=None if result else "not started",
        result=result,
    )


@pytest.fixture
def archive(tmp_path: Path) -> SQLiteArchive:
    a = SQLiteArchive(tmp_path / "a.sqlite")
    a.register_tests([spec()], T0)
    return a


def test_store_is_idempotent_by_run_id(archive: SQLiteArchive) -> None:
    runs = [run_of(spec(), slot) for slot in range(5)]
    assert archive.store_runs(runs) == 5
    assert archive.store_runs(runs[2:]) == 0  # a re-delivery stores nothing new
    assert len(archive.runs("a")) == 5


def test_query_by_time_range_is_half_open_and_ordered(archive: SQLiteArchive) -> None:
    archive.store_runs([run_of(spec(), slot, rtt=float(slot)) for slot in range(10)])
    got = archive.runs("a", since_us=T0 + 20_000_000, until_us=T0 + 50_000_000)
    assert [r["slot"] for r in got] == [2, 3, 4]
    assert [r["values"]["minRtt"] for r in got] == [2.0, 3.0, 4.0]
    latest = archive.runs("a", limit=2)
    assert [r["slot"] for r in latest] == [8, 9]  # the latest, oldest first


def test_samples_and_missed_runs_round_trip(archive: SQLiteArchive) -> None:
    archive.store_runs([run_of(spec(), 0, rtt=0.25), run_of(spec(), 1, state=RunState.MISSED)])
    done, missed = archive.runs("a")
    assert done["state"] == "finished" and done["sent"] == 2
    assert done["samples"] == [
        {"seq": 1, "rtt_ms": 0.25, "ttl": 64, "size": 64, "recv_us": T0 + 10},
        {"seq": 2, "rtt_ms": None, "ttl": None, "size": None, "recv_us": None},
    ]
    assert missed["state"] == "missed" and missed["error"] == "not started"
    assert missed["values"] == {} and missed["samples"] == []


def test_changed_params_make_a_new_key_under_the_same_id(archive: SQLiteArchive) -> None:
    changed = spec(count=7)
    assert changed.key != spec().key
    archive.register_tests([changed], T0 + 1)
    archive.store_runs([run_of(spec(), 0), run_of(changed, 0)])
    tests = archive.tests()
    assert [t["key"] for t in tests] == [spec().key, changed.key]
    assert tests[1]["params"]["count"] == 7
    assert len(archive.runs("a")) == 2  # the id finds runs under both keys
    assert archive.runs("other") == []


def test_readonly_open_of_missing_archive_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="no archive at"):
        SQLiteArchive(tmp_path / "missing.sqlite", readonly=True)


def test_reader_sees_writer_commits_while_open(archive: SQLiteArchive, tmp_path: Path) -> None:
    reader = SQLiteArchive(tmp_path / "a.sqlite", readonly=True)
    archive.store_runs([run_of(spec(), 0)])
    assert len(reader.runs("a")) == 1
    archive.store_runs([run_of(spec(), 1)])
    assert len(reader.runs("a")) == 2


class FlakyStore:
    """Fails the first ``failures`` writes, as a full disk would, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.stored: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def store_runs(self, runs: list[Run]) -> int:
        with self.lock:
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise OSError("No space left on device")
            self.stored += [r.run_id for r in runs]
            return len(runs)


def test_batch_writer_batches_and_retries_without_losing() -> None:
    store = FlakyStore(failures=2)
    writer = BatchWriter(store, max_batch=50, max_delay=0.05)
    runs = [run_of(spec(), slot) for slot in range(120)]
    for r in runs:
        writer.submit(r)
    writer.close()
    assert store.stored == [r.run_id for r in runs]  # all, once, in order
    assert store.calls <= 2 + 10  # batched: far fewer writes than runs
    assert writer.stored == 120 and writer.last_error is None
