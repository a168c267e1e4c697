"""The archive, through its interface: every backend stores and answers alike.

Tests that take ``archive_url`` (or ``archive``) run once per backend (the ``backend`` and
``store_url`` fixtures of conftest.py); the facts of one backend alone (SQLite's WAL file, its
URLs) carry that backend's marker.
"""

from __future__ import annotations

import inspect
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netsonde.archive import (
    Archive,
    ArchiveError,
    UnknownTestError,
    connections,
    default_url,
    open_archive,
    resolve_url,
)
from netsonde.archive.postgres import PostgresArchive
from netsonde.archive.sqlite import SQLiteArchive
from netsonde.archive.writer import BatchWriter
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping

T0 = 1_700_000_000_000_000  # epoch µs; 20 s past a multiple of 30 s
STEP = 10_000_000  # µs between slots


@pytest.fixture
def archive_url(store_url: str) -> str:
    """A fresh, empty archive, once per backend."""
    return store_url


def spec(test_id: str = "a", target: str = "127.0.0.1", count: int = 3) -> TestSpec:
    return TestSpec(
        id=test_id,
        tool="ping",
        target=target,
        schedule=Schedule(interval=10),
        params=ping.Params(count=count),
    )


def run_of(
    s: TestSpec,
    slot: int,
    *,
    rtt: float = 1.0,
    state: RunState = RunState.FINISHED,
    values: dict[str, float] | None = None,
) -> Run:
    planned = T0 + slot * STEP
    result = None
    if state is RunState.FINISHED:
        result = Result(
            tool="ping",
            target=s.target,
            sent=2,
            replies=[PacketSample(1, rtt, 64, 64, planned + 10), PacketSample(2, None)],
            values={"minRtt": rtt, "lossPercent": 50.0} if values is None else values,
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
def archive(archive_url: str) -> Iterator[Archive]:
    a = open_archive(archive_url)
    a.register_tests([spec()], T0)
    yield a
    a.close()


# ---- the interface itself ------------------------------------------------------------------


def _protocol_methods() -> list[str]:
    return [n for n, v in vars(Archive).items() if callable(v) and not n.startswith("_")]


@pytest.mark.parametrize("backend_class", [SQLiteArchive, PostgresArchive])
@pytest.mark.parametrize("name", _protocol_methods())
def test_every_backend_has_every_method_of_the_interface(name: str, backend_class: type) -> None:
    """Same parameters (names, kinds, defaults) as the Protocol says: a caller written against
    Archive gets what it asked for. (Annotations are mypy's to check: see the next test.)"""

    def shape(f: Callable[..., object]) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert shape(getattr(backend_class, name)) == shape(getattr(Archive, name))


def test_the_interface_has_the_methods_the_services_call() -> None:
    """The runtime check above is not vacuous: it sees the Protocol's methods."""
    assert {"store_batch", "find_runs", "aggregate", "interrupt", "close"} <= set(
        _protocol_methods()
    )


# mypy sees what inspect cannot: argument and return types. The control proves it is asked.
_TYPE_CHECK = """\
from netsonde.archive import Archive
from netsonde.archive.postgres import PostgresArchive
from netsonde.archive.sqlite import SQLiteArchive

def conforms(a: SQLiteArchive) -> Archive:
    return a

def conforms_too(a: PostgresArchive) -> Archive:
    return a

class Partial:
    url: str

def control(a: Partial) -> Archive:
    return a
"""


def test_every_backend_satisfies_the_protocol_for_mypy(monkeypatch: pytest.MonkeyPatch) -> None:
    api = pytest.importorskip("mypy.api")  # not installed by the dev extra: checked where it is
    monkeypatch.setenv("MYPYPATH", str(Path(__file__).resolve().parents[2] / "src"))
    out, err, _ = api.run(
        ["--config-file=", "--no-incremental", "--cache-dir=/dev/null", "-c", _TYPE_CHECK]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, (out, err)
    assert errors[0].startswith("<string>:15:") and "Partial" in errors[0], errors


def test_an_opened_archive_says_its_url(archive_url: str) -> None:
    a = open_archive(archive_url)
    try:
        assert a.url == archive_url
    finally:
        a.close()


def test_unknown_scheme_fails_at_open_and_at_start() -> None:
    for fail in (open_archive, connections):
        with pytest.raises(ArchiveError, match="unsupported archive URL scheme 'nosuch'"):
            fail("nosuch://host/db")
    with pytest.raises(ArchiveError, match="not an archive URL"):
        open_archive("a.sqlite")


# ---- writing -------------------------------------------------------------------------------


def test_store_is_idempotent_by_run_id(archive: Archive) -> None:
    runs = [run_of(spec(), slot) for slot in range(5)]
    assert archive.store_runs(runs) == 5
    assert archive.store_runs(runs[2:]) == 0  # a re-delivery stores nothing new
    assert len(archive.runs("a")) == 5


def missed_then_finished(slot: int) -> tuple[Run, Run]:
    """One run id stored twice: first as missed, then (a confused or hostile sender) finished."""
    missed = run_of(spec(), slot, state=RunState.MISSED)
    finished = run_of(spec(), slot, rtt=9.0)
    assert missed.run_id == finished.run_id
    return missed, finished


def assert_still_missed(archive: Archive, slot: int) -> None:
    (row,) = [r for r in archive.runs("a") if r["slot"] == slot]
    assert (row["state"], row["error"]) == ("missed", "not started")
    assert row["values"] == {} and row["samples"] == [] and row["sent"] is None
    assert slot not in [r["slot"] for r in archive.find_runs(results_only=True)]


def test_a_run_id_is_stored_once_entirely_by_store_runs(archive: Archive) -> None:
    missed, finished = missed_then_finished(0)
    assert archive.store_runs([missed]) == 1
    assert archive.store_runs([finished]) == 0  # first write wins: no result attached
    assert_still_missed(archive, 0)


def test_a_run_id_is_stored_once_entirely_by_store_batch(archive: Archive) -> None:
    missed, finished = missed_then_finished(1)
    assert archive.store_batch([spec()], [missed], T0) == 1
    assert archive.store_batch([spec()], [finished, run_of(spec(), 2)], T0) == 1
    assert_still_missed(archive, 1)
    assert [r["slot"] for r in archive.runs("a")] == [1, 2]


def test_the_first_of_one_run_id_in_a_batch_wins(archive: Archive) -> None:
    missed, finished = missed_then_finished(3)
    assert archive.store_runs([missed, finished]) == 1
    assert_still_missed(archive, 3)


def test_store_batch_registers_and_stores_in_one_go(archive: Archive) -> None:
    new = spec("b", "127.0.0.2")
    runs = [run_of(new, 0), run_of(spec(), 0)]
    assert archive.store_batch([new], runs, T0) == 2
    assert archive.store_batch([new], runs, T0) == 0
    assert [t["test_id"] for t in archive.tests()] == ["a", "b"]


def test_received_counts_the_new_runs_of_store_batch_only(archive: Archive) -> None:
    """What `status` shows of a central archive: counted in the archive, whatever process
    stores; a duplicate, a refused batch or the daemon's own store_runs is not received."""
    new = spec("b", "127.0.0.2")
    assert archive.received() == 0
    archive.store_batch([new], [run_of(new, 0), run_of(new, 1)], T0)
    archive.store_batch([new], [run_of(new, 1), run_of(new, 2)], T0)
    archive.store_runs([run_of(spec(), 0)])
    with pytest.raises(UnknownTestError):
        archive.store_batch([], [run_of(new, 3), run_of(spec("x", "127.0.0.9"), 0)], T0)
    assert archive.received() == 3


def test_store_batch_with_an_unknown_key_writes_nothing(archive: Archive) -> None:
    stranger, new = spec("x", "127.0.0.9"), spec("c", "127.0.0.3")
    with pytest.raises(UnknownTestError) as info:
        archive.store_batch([new], [run_of(new, 0), run_of(stranger, 0)], T0)
    assert info.value.keys == [stranger.key]
    assert [t["test_id"] for t in archive.tests()] == ["a"]  # not even the new definition
    assert archive.runs() == []


def test_changed_params_make_a_new_key_under_the_same_id(archive: Archive) -> None:
    changed = spec(count=7)
    assert changed.key != spec().key
    archive.register_tests([changed], T0 + 1)
    archive.store_runs([run_of(spec(), 0), run_of(changed, 0)])
    tests = archive.tests()
    assert [t["key"] for t in tests] == [spec().key, changed.key]
    assert tests[1]["params"]["count"] == 7
    assert len(archive.runs("a")) == 2  # the id finds runs under both keys
    assert archive.runs("other") == []


def test_batch_writer_stores_every_run_once(archive: Archive) -> None:
    writer = BatchWriter(archive, max_batch=7, max_delay=0.01)
    runs = [run_of(spec(), slot) for slot in range(30)]
    for r in [*runs, *runs[:5]]:  # a re-submission is harmless
        writer.submit(r)
    writer.close()
    assert [r["run_id"] for r in archive.runs("a")] == [r.run_id for r in runs]
    assert writer.last_error is None


# ---- reading -------------------------------------------------------------------------------


def test_query_by_time_range_is_half_open_and_ordered(archive: Archive) -> None:
    archive.store_runs([run_of(spec(), slot, rtt=float(slot)) for slot in range(10)])
    got = archive.runs("a", since_us=T0 + 20_000_000, until_us=T0 + 50_000_000)
    assert [r["slot"] for r in got] == [2, 3, 4]
    assert [r["values"]["minRtt"] for r in got] == [2.0, 3.0, 4.0]
    latest = archive.runs("a", limit=2)
    assert [r["slot"] for r in latest] == [8, 9]  # the latest, oldest first


def test_samples_and_missed_runs_round_trip(archive: Archive) -> None:
    archive.store_runs([run_of(spec(), 0, rtt=0.25), run_of(spec(), 1, state=RunState.MISSED)])
    done, missed = archive.runs("a")
    assert done["state"] == "finished" and done["sent"] == 2
    assert done["samples"] == [
        {"seq": 1, "rtt_ms": 0.25, "ttl": 64, "size": 64, "recv_us": T0 + 10},
        {"seq": 2, "rtt_ms": None, "ttl": None, "size": None, "recv_us": None},
    ]
    assert missed["state"] == "missed" and missed["error"] == "not started"
    assert missed["values"] == {} and missed["samples"] == []


def test_last_slots_is_the_highest_slot_of_any_state(archive: Archive) -> None:
    b, silent = spec("b", "127.0.0.2"), spec("silent", "127.0.0.3")
    archive.register_tests([b, silent], T0)
    archive.store_runs(
        [
            run_of(spec(), 4),
            run_of(spec(), 6, state=RunState.MISSED),
            run_of(spec(), 5),
            run_of(b, 2, state=RunState.TIMEOUT),
        ]
    )
    keys = [spec().key, b.key, silent.key, spec().key]
    assert archive.last_slots(keys) == {spec().key: 6, b.key: 2}  # no runs: left out


def test_tests_count_their_runs(archive: Archive) -> None:
    archive.register_tests([spec("b", "127.0.0.2")], T0)
    archive.store_runs([run_of(spec(), 0), run_of(spec(), 3, state=RunState.MISSED)])
    a, b = archive.tests()
    assert (a["test_id"], a["runs"], a["last_run_us"]) == ("a", 2, T0 + 3 * STEP)
    assert (b["test_id"], b["runs"], b["last_run_us"]) == ("b", 0, None)


def test_tests_of_tool(archive: Archive) -> None:
    other = TestSpec(id="n", tool="noop", target="x", schedule=Schedule(interval=10), params={})
    b = spec("b", "127.0.0.2")
    archive.register_tests([b, other], T0)
    assert [t["test_id"] for t in archive.tests_of_tool("ping")] == ["a", "b"]
    (only,) = archive.tests_of_tool("ping", b.key)
    assert (only["key"], only["target"], only["params"]["count"]) == (b.key, "127.0.0.2", 3)
    assert archive.tests_of_tool("noop", b.key) == []


def test_summaries_are_of_finished_runs_in_the_range(archive: Archive) -> None:
    archive.store_runs(
        [
            run_of(spec(), 0, rtt=0.5),
            run_of(spec(), 1, state=RunState.MISSED),
            run_of(spec(), 2, rtt=2.5),
            run_of(spec(), 3, rtt=3.5),
        ]
    )
    got = archive.summaries(spec().key, T0, T0 + 3 * STEP, limit=10)
    assert [us for us, _ in got] == [T0, T0 + 2 * STEP]
    assert json.loads(got[1][1])["minRtt"] == 2.5
    assert len(archive.summaries(spec().key, T0, T0 + 9 * STEP, limit=2)) == 2


def test_find_tests_filters_and_pages_by_keyset(archive: Archive) -> None:
    more = [spec("a%b", "127.0.0.3"), spec("axb", "127.0.0.4"), spec("b", "127.0.0.2")]
    archive.register_tests(more, T0)
    assert [t["test_id"] for t in archive.find_tests(test_id_contains="%")] == ["a%b"]  # literal
    assert [t["test_id"] for t in archive.find_tests(target="127.0.0.2")] == ["b"]
    assert [t["test_id"] for t in archive.find_tests(key=more[1].key)] == ["axb"]
    first = archive.find_tests(tool="ping", limit=2)
    assert [t["test_id"] for t in first] == ["a", "a%b"]
    after = (first[-1]["test_id"], first[-1]["key"])
    archive.register_tests([spec("0a", "127.0.0.5")], T0)  # sorts before the cursor: no shift
    rest = archive.find_tests(tool="ping", after=after, limit=10)
    assert [t["test_id"] for t in rest] == ["axb", "b"]


def test_find_runs_filters_orders_and_pages(archive: Archive) -> None:
    runs = [run_of(spec(), k) for k in range(6)]
    runs[2] = run_of(spec(), 2, state=RunState.MISSED)
    archive.store_runs(runs)
    assert [r["slot"] for r in archive.find_runs(states=["missed"])] == [2]
    assert [r["slot"] for r in archive.find_runs(results_only=True)] == [0, 1, 3, 4, 5]
    lean, full = archive.find_runs(limit=1), archive.find_runs(samples=True, limit=1)
    assert lean[0]["samples"] == [] and len(full[0]["samples"]) == 2  # samples only on request
    page = archive.find_runs(test_id="a", since_us=T0 + STEP, descending=True, limit=2)
    assert [r["slot"] for r in page] == [5, 4]
    cursor = (page[-1]["planned_us"], page[-1]["run_id"])
    page = archive.find_runs(test_id="a", since_us=T0 + STEP, descending=True, after=cursor)
    assert [r["slot"] for r in page] == [3, 2, 1]
    assert archive.find_runs(test_key="nope") == []


def test_aggregate_per_window(archive: Archive) -> None:
    window = 30 * 10**6  # T0 is 20 s into a window: slots 1-3 share the next one
    archive.store_runs(
        [
            run_of(spec(), 1, rtt=3.0),
            run_of(spec(), 2, rtt=1.0),
            run_of(spec(), 3, rtt=2.0),
            run_of(spec(), 4, values={"lossPercent": 100.0}),  # no minRtt: a run, no value
            run_of(spec(), 5, state=RunState.MISSED),  # no result: not counted
        ]
    )
    first, second = archive.aggregate("minRtt", window, test_id="a")
    digests = first.pop("digest"), second.pop("digest")
    assert digests[0].values == [1.0, 2.0, 3.0] and digests[1] is None  # for percentiles
    assert first == {
        "start_us": T0 + STEP,
        "runs": 3,
        "count": 3,
        "min": 1.0,
        "mean": 2.0,
        "max": 3.0,
        "mean_loss": 50.0,
    }
    assert (second["start_us"], second["runs"], second["count"]) == (T0 + 4 * STEP, 1, 0)
    assert second["mean_loss"] == 100.0
    assert archive.aggregate("minRtt", window, test_id="a", limit=1) == [
        {**first, "digest": digests[0]}
    ]
    with pytest.raises(ValueError):
        archive.aggregate("min'Rtt", window)


# ---- connections ---------------------------------------------------------------------------


def test_reader_sees_writer_commits_while_open(archive: Archive, archive_url: str) -> None:
    reader = open_archive(archive_url, readonly=True)
    archive.store_runs([run_of(spec(), 0)])
    assert len(reader.runs("a")) == 1
    archive.store_runs([run_of(spec(), 1)])
    assert len(reader.runs("a")) == 2
    reader.close()


def test_interrupt_with_nothing_running_leaves_the_connection_usable(archive: Archive) -> None:
    """A request's time limit may fire just after its query ended."""
    archive.interrupt()
    archive.store_runs([run_of(spec(), 0)])
    assert len(archive.runs("a")) == 1


def test_per_thread_connections_are_one_per_thread(archive_url: str) -> None:
    conns = connections(archive_url)
    mine = conns.get()
    assert conns.get() is mine
    theirs: list[Archive] = []
    t = threading.Thread(target=lambda: theirs.append(conns.get()))
    t.start()
    t.join()
    assert theirs[0] is not mine
    for c in (mine, theirs[0]):
        c.close()


# ---- SQLite alone --------------------------------------------------------------------------


@pytest.mark.sqlite
def test_sqlite_readonly_open_of_missing_archive_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"has `netsonde run` stored anything yet\?"):
        open_archive(f"sqlite:///{tmp_path / 'missing.sqlite'}", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()  # looking created nothing


@pytest.mark.sqlite
def test_sqlite_archive_is_in_wal_mode(tmp_path: Path) -> None:
    """Readers (the API) never wait for the writer, nor the writer for them."""
    open_archive(f"sqlite:///{tmp_path / 'a.sqlite'}").close()
    db = sqlite3.connect(tmp_path / "a.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


@pytest.mark.sqlite
def test_sqlite_urls_resolve_against_the_config_directory(tmp_path: Path) -> None:
    assert resolve_url("sqlite:///d/a.sqlite", tmp_path) == f"sqlite:///{tmp_path}/d/a.sqlite"
    assert resolve_url("sqlite:////srv/a.sqlite", tmp_path) == "sqlite:////srv/a.sqlite"
    assert resolve_url("sqlite:///~/a.sqlite", tmp_path) == f"sqlite:///{Path.home()}/a.sqlite"
    assert default_url(tmp_path) == f"sqlite:///{tmp_path}/archive.sqlite"
    for bad in ("sqlite://a.sqlite", "sqlite:///"):
        with pytest.raises(ArchiveError, match=r"use sqlite:///PATH"):
            resolve_url(bad, tmp_path)


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
