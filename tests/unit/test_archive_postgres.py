"""What the PostgreSQL archive adds to the interface's tests (test_archive.py runs those on both
backends): concurrent writers, monthly partitions, retention, a server that goes away, schema
versions and passwords kept out of errors. Against a real server (tests/pgcluster.py)."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from netsonde.archive import Archive, ArchiveError, open_archive, retention, rollups
from netsonde.archive.postgres import PostgresArchive
from netsonde.archive.sqlite import path_of
from netsonde.archive.stores import SQLiteStore, migrate
from netsonde.archive.writer import BatchWriter
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping
from pgcluster import PgCluster
from waiting import wait

S = 1_000_000
JAN = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
FEB = 1_706_745_600 * S  # 2024-02-01
MAR = 1_709_251_200 * S  # 2024-03-01
APR = 1_711_929_600 * S  # 2024-04-01
DAY = 86_400 * S


def spec(test_id: str = "a", target: str = "127.0.0.1") -> TestSpec:
    return TestSpec(test_id, "ping", target, Schedule(interval=10), ping.Params(count=2))


def run_at(s: TestSpec, planned_us: int, *, finished: bool = True) -> Run:
    result = None
    if finished:
        result = Result(
            tool="ping",
            target=s.target,
            sent=2,
            replies=[PacketSample(1, 1.5, 64, 64, planned_us + 10), PacketSample(2, None)],
            values={"minRtt": 1.5, "lossPercent": 50.0},
        )
    return Run(
        run_id=run_id_for(s.key, planned_us),
        test_id=s.id,
        test_key=s.key,
        slot=planned_us // (10 * S),
        planned_us=planned_us,
        state=RunState.FINISHED if finished else RunState.MISSED,
        actual_us=planned_us + 100 if finished else None,
        end_us=planned_us + S if finished else None,
        error=None if finished else "busy",
        result=result,
    )


def sql(url: str, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on the archive's database, as a third party (psql) would run it."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, args)  # type: ignore[arg-type]  # test SQL
        return cur.fetchall() if cur.description else []


def partitions(url: str, table: str = "runs") -> list[str]:
    rows = sql(
        url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY 1",
        (table,),
    )
    return [r[0] for r in rows]


@pytest.fixture
def archive(pg_url: str) -> Iterator[PostgresArchive]:
    a = PostgresArchive(pg_url)
    a.register_tests([spec()], JAN)
    yield a
    a.close()


# ---- concurrent writers ----------------------------------------------------------------------


def test_concurrent_writers_of_overlapping_batches_store_each_run_once(pg_url: str) -> None:
    """Three writers (own connections, as three netsonde processes would have) store the same
    600 runs of 3 tests in batches cut and shuffled differently, all at once: every run once,
    the new counts add up to exactly the runs, and nobody deadlocks (an error would show)."""
    specs = [spec(f"t{i}", f"127.0.0.{i + 1}") for i in range(3)]
    runs = [run_at(s, JAN + k * 10 * S) for s in specs for k in range(200)]
    PostgresArchive(pg_url).close()  # the schema in place before the race
    barrier = threading.Barrier(3)
    new: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine = runs[:]
        rng.shuffle(mine)
        a = PostgresArchive(pg_url)
        try:
            barrier.wait()
            count = 0
            for start in range(0, len(mine), 50 + 17 * seed):
                batch = mine[start : start + 50 + 17 * seed]
                count += a.store_batch(specs, batch, JAN)
            with lock:
                new.append(count)
        except BaseException as e:
            with lock:
                errors.append(e)
        finally:
            a.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(new) == len(runs)
    (row,) = sql(pg_url, "SELECT count(*), count(DISTINCT run_id) FROM runs")
    assert row == (len(runs), len(runs))
    assert sql(pg_url, "SELECT count(*) FROM results") == [(len(runs),)]
    assert sql(pg_url, "SELECT count(*) FROM rollup_pending") == [(len(runs),)]
    a = PostgresArchive(pg_url)
    try:
        assert a.received() == len(runs)
    finally:
        a.close()


# ---- partitions --------------------------------------------------------------------------------


def test_runs_spanning_months_get_a_partition_each(archive: PostgresArchive, pg_url: str) -> None:
    s = spec()
    times = [JAN + DAY, FEB - 1, FEB, MAR + 5 * DAY, -5 * S, 253_402_300_000 * S]
    assert archive.store_runs([run_at(s, t) for t in times]) == len(times)
    names = set(partitions(pg_url))
    assert {"runs_p2024_01", "runs_p2024_02", "runs_p2024_03", "runs_p9999_12"} <= names
    assert {"runs_before", "runs_after"} <= names and "runs_p2024_04" not in names
    assert set(partitions(pg_url, "results")) == {n.replace("runs", "results") for n in names}
    placed = sql(pg_url, "SELECT tableoid::regclass::text, count(*) FROM runs GROUP BY 1")
    assert dict(placed) == {
        "runs_p2024_01": 2,  # the last µs of January is January's
        "runs_p2024_02": 1,
        "runs_p2024_03": 1,
        "runs_before": 1,  # 1969: no month of its own
        "runs_p9999_12": 1,
    }
    assert [r["planned_us"] for r in archive.runs("a")] == sorted(times)


def test_a_month_is_created_once_under_concurrent_writers(pg_url: str) -> None:
    PostgresArchive(pg_url).close()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        a = PostgresArchive(pg_url)
        try:
            a.register_tests([spec()], JAN)
            barrier.wait()
            a.store_runs([run_at(spec(), APR + k * S)])
        except BaseException as e:
            errors.append(e)
        finally:
            a.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert partitions(pg_url).count("runs_p2024_04") == 1
    assert sql(pg_url, "SELECT count(*) FROM runs_p2024_04") == [(4,)]


# ---- retention ---------------------------------------------------------------------------------


def _direct(store_url: str, statement: str) -> Any:
    """One value from the archive's database, whatever the backend."""
    if store_url.startswith("sqlite"):
        db = sqlite3.connect(path_of(store_url))
        try:
            return db.execute(statement).fetchone()[0]
        finally:
            db.close()
    return sql(store_url, statement)[0][0]


def test_expire_removes_runs_before_the_cutoff_with_their_results(store_url: str) -> None:
    """Three months of runs (one a day, every other one missed), a cutoff in mid-February:
    January and the first half of February go with their results and pending rollups; the
    rest stays. On PostgreSQL January's partition is dropped whole and February's kept."""
    a: Archive = open_archive(store_url)
    try:
        s = spec()
        a.register_tests([s], JAN)
        times = [JAN + d * DAY for d in range((APR - JAN) // DAY)]
        a.store_runs([run_at(s, t, finished=i % 2 == 0) for i, t in enumerate(times)])
        cutoff = FEB + 14 * DAY + 1
        old = [t for t in times if t < cutoff]
        assert len(old) == 31 + 15
        assert a.expire(cutoff) == len(old)
        kept = [r["planned_us"] for r in a.find_runs(limit=1000)]
        assert kept == [t for t in times if t >= cutoff]
        assert _direct(store_url, "SELECT count(*) FROM results") == len(
            [i for i, t in enumerate(times) if t >= cutoff and i % 2 == 0]
        )
        assert _direct(store_url, "SELECT min(planned_us) FROM rollup_pending") >= cutoff
        assert _direct(store_url, "SELECT count(*) FROM rollup_pending") == len(kept)
        assert a.expire(cutoff) == 0  # nothing left to do
        if not store_url.startswith("sqlite"):
            names = partitions(store_url)
            assert "runs_p2024_01" not in names and "results_p2024_01" not in partitions(
                store_url, "results"
            )
            assert {"runs_p2024_02", "runs_p2024_03"} <= set(names)
        assert a.store_runs([run_at(s, JAN + 3 * DAY)]) == 1  # an old run may come again
        assert a.expire(cutoff) == 1
    finally:
        a.close()


def test_retention_deletes_in_batches_of_the_size_asked(tmp_path: Path) -> None:
    """SQLite's path (and PostgreSQL's straddling month): batches of 3 runs, runs sharing a
    planned time going together, every run before the cutoff and none after."""
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    a = open_archive(url)
    s, other = spec(), spec("b", "127.0.0.2")
    a.register_tests([s, other], JAN)
    a.store_runs([run_at(x, JAN + k * S) for k in range(10) for x in (s, other)])
    a.close()
    db = sqlite3.connect(path_of(url))
    try:
        store = SQLiteStore.over(db, str(tmp_path))
        migrate(store, "rollups", rollups.MIGRATIONS)
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        assert retention.expire(store, JAN + 7 * S, batch=3) == 14
        db.set_trace_callback(None)
        left = db.execute("SELECT planned_us FROM runs ORDER BY planned_us").fetchall()
        assert [t for (t,) in left] == [JAN + k * S for k in (7, 7, 8, 8, 9, 9)]
        assert db.execute("SELECT count(*) FROM results").fetchone() == (6,)
        # 14 runs in pairs, 3 per batch → 2 pairs (4 runs) per batch: 4 batches, 4 commits.
        assert sum(s.startswith("DELETE FROM runs") for s in statements) == 4
        with pytest.raises(ValueError):
            retention.expire(store, JAN, batch=0)
    finally:
        db.close()


# ---- a server that goes away -----------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A server of this test's own, to kill and restart (the suite's is shared); its commits
    are written before they are acknowledged, so a kill loses none of them."""
    cluster = PgCluster(extra=("synchronous_commit=on",))
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_server_that_restarts_fails_one_call_then_works_again(
    own_cluster: PgCluster, tmp_path: Path
) -> None:
    secret = "pw-0123456789-never-shown"
    (tmp_path / "pw").write_text(secret + "\n")
    url = own_cluster.database() + f"&password_file={tmp_path / 'pw'}"
    a = PostgresArchive(url)
    a.register_tests([spec()], JAN)
    assert a.store_runs([run_at(spec(), JAN)]) == 1
    own_cluster.kill()
    messages = []
    for call in (lambda: a.store_runs([run_at(spec(), JAN + S)]), lambda: a.runs("a")):
        with pytest.raises(ArchiveError) as info:
            call()
        messages.append(str(info.value))
    assert messages[0].startswith(f"archive postgresql://netsonde@{own_cluster.socket_dir}/")
    assert messages[1].startswith("cannot connect to postgresql://netsonde@")  # still down
    own_cluster.restart()
    assert a.store_runs([run_at(spec(), JAN + S)]) == 1  # the same object, connected again
    assert [r["planned_us"] for r in a.runs("a")] == [JAN, JAN + S]
    a.close()
    for m in messages:
        assert "\n" not in m and secret not in m and "password" not in m, m


def test_the_batch_writer_keeps_runs_through_an_outage(own_cluster: PgCluster) -> None:
    """The daemon's path: batches that fail while the server is down are kept and retried;
    once it is back every run is stored, once."""
    a = PostgresArchive(own_cluster.database())
    a.register_tests([spec()], JAN)
    writer = BatchWriter(a, max_batch=10, max_delay=0.01)
    runs = [run_at(spec(), JAN + k * S) for k in range(30)]
    for r in runs[:10]:
        writer.submit(r)
    wait(lambda: writer.stored == 10, 10, "the first runs stored")
    own_cluster.kill()
    for r in runs[10:]:
        writer.submit(r)
    wait(lambda: writer.last_error, 10, "a failed write")
    assert writer.last_error is not None and "ArchiveError" in writer.last_error
    own_cluster.restart()
    for r in runs[:5]:
        writer.submit(r)  # a re-submission on top: harmless
    wait(lambda: writer.stored == 30 and writer.backlog == 0, 30, "every run stored")
    writer.close()
    assert [r["planned_us"] for r in a.find_runs(limit=100)] == [r.planned_us for r in runs]
    a.close()


def test_interrupt_aborts_a_waiting_query_and_the_connection_goes_on(
    archive: PostgresArchive, pg_url: str
) -> None:
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("LOCK TABLE tests IN ACCESS EXCLUSIVE MODE")  # until its rollback
        got: list[BaseException | object] = []
        t = threading.Thread(target=lambda: _catch(got, archive.tests))
        t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _waiting(pg_url):
            time.sleep(0.02)
        archive.interrupt()
        t.join(10)
        blocker.rollback()
    assert not t.is_alive()
    assert isinstance(got[0], ArchiveError) and "cancel" in str(got[0]), got
    assert [t["test_id"] for t in archive.tests()] == ["a"]


def _catch(into: list[BaseException | object], call: Any) -> None:
    try:
        into.append(call())
    except BaseException as e:
        into.append(e)


def _waiting(url: str) -> bool:
    rows = sql(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    return bool(rows[0][0])


# ---- schema versions, read-only ----------------------------------------------------------------


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PostgresArchive(pg_url).close()
    sql(pg_url, "UPDATE netsonde_schema SET version = 99 WHERE component = 'archive'")
    for readonly in (False, True):
        with pytest.raises(ArchiveError, match=r"version 99, newer than this netsonde knows"):
            open_archive(pg_url, readonly=readonly)


def test_readonly_needs_an_archive_and_writes_nothing(pg_url: str) -> None:
    with pytest.raises(
        ArchiveError, match=r"no archive at postgresql://netsonde@.*stored anything"
    ):
        open_archive(pg_url, readonly=True)
    assert sql(pg_url, "SELECT to_regclass('netsonde_schema')") == [(None,)]  # created nothing
    PostgresArchive(pg_url).close()
    reader = open_archive(pg_url, readonly=True)
    try:
        with pytest.raises(ArchiveError, match="read-only"):
            reader.register_tests([spec()], JAN)
        assert reader.tests() == []
    finally:
        reader.close()


def test_a_database_that_cannot_be_reached_never_shows_the_password(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    (tmp_path / "pw").write_text("hunter2-secret\n")
    url = pg_cluster.url("no_such_db") + f"&password_file={tmp_path / 'pw'}"
    with pytest.raises(ArchiveError) as info:
        open_archive(url)
    text = str(info.value)
    assert text.startswith("cannot connect to postgresql://netsonde@") and "no_such_db" in text
    assert "hunter2" not in text and str(tmp_path) not in text


def test_a_run_id_sent_again_at_another_time_is_not_stored_twice(
    archive: PostgresArchive, pg_url: str
) -> None:
    """The key of runs is (run_id, planned_us); a remote store that reuses a run id with
    another planned time is still a duplicate, as on SQLite (first write wins)."""
    first = run_at(spec(), JAN)
    again = run_at(spec(), FEB)
    again.run_id = first.run_id
    assert archive.store_batch([], [first], JAN) == 1
    assert archive.store_batch([], [again, run_at(spec(), FEB + S)], JAN) == 1
    assert [r["planned_us"] for r in archive.runs("a")] == [JAN, FEB + S]
    assert sql(pg_url, "SELECT count(*) FROM rollup_pending") == [(2,)]
