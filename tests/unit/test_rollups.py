"""Rollups on both backends: what the rollup worker writes equals what the raw runs say, and a
window is answered alike before, during and after rolling up (never a run twice or missed)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest

from netsonde.archive import Archive, ArchiveError, open_archive, rollups, stores
from netsonde.archive.sqlite import path_of
from netsonde.metrics.digest import ACCURACY, Bucket, Digest, RunRow, bucket_of
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping
from netsonde.services.pinger import views

S = 1_000_000
MIN5, HOUR, DAY = rollups.RESOLUTIONS_US
T0 = 1_700_006_400 * S  # a day's start (2023-11-15T00:00:00Z)
STEP = 397 * S  # one run every 397 s: runs fall anywhere in the buckets
SPAN = 2 * DAY + 5 * HOUR  # ~460 runs per test: a day's bucket holds more than 64 values

A = TestSpec("a", "ping", "127.0.0.1", Schedule(interval=397), ping.Params(count=5))
A2 = TestSpec("a", "ping", "127.0.0.1", Schedule(interval=397), ping.Params(count=6))  # same id
B = TestSpec("b", "ping", "127.0.0.2", Schedule(interval=397), ping.Params(count=5))


def make_run(spec: TestSpec, k: int, rng: random.Random) -> Run:
    planned = T0 + k * STEP + (spec is A2) * 11 * S
    state = rng.choices([RunState.FINISHED, RunState.MISSED, RunState.FAILED], weights=[12, 1, 1])[
        0
    ]
    result = None
    if state is RunState.FINISHED:
        sent = 5
        replies = [
            PacketSample(seq, round(rng.lognormvariate(2, 0.5), 3), 64, 64)
            for seq in range(1, sent + 1)
            if rng.random() > 0.2
        ]
        if replies and rng.random() < 0.3:
            replies.append(PacketSample(replies[0].seq, 99.0))  # a duplicate: not a new RTT
        rtts = sorted(r.rtt_ms for r in replies[:sent] if r.rtt_ms is not None)
        result = Result(
            spec.tool,
            spec.target,
            sent=sent,
            replies=replies,
            values={
                "minRtt": rtts[0] if rtts else None,
                "meanRtt": sum(rtts) / len(rtts) if rtts else None,
                "maxRtt": rtts[-1] if rtts else None,
                "lossPercent": 100.0 * (sent - len({r.seq for r in replies})) / sent,
                "duplicates": len(replies) - len({r.seq for r in replies}),
                "outOfOrder": int(rng.random() < 0.1),
            },
        )
    elif state is RunState.FAILED:
        result = Result(spec.tool, spec.target, error="unreachable")
    return Run(
        run_id=run_id_for(spec.key, planned),
        test_id=spec.id,
        test_key=spec.key,
        slot=k,
        planned_us=planned,
        state=state,
        actual_us=None if state is RunState.MISSED else planned,
        end_us=None if state is RunState.MISSED else planned + S,
        result=result,
    )


def runs_of(spec: TestSpec, seed: int, ks: Iterable[int]) -> list[Run]:
    rng = random.Random(seed)
    every = [make_run(spec, k, rng) for k in range(SPAN // STEP)]
    return [every[k] for k in ks]


ALL = range(SPAN // STEP)


@pytest.fixture
def archive(store_url: str) -> Iterator[Archive]:
    a = open_archive(store_url)
    a.register_tests([A, A2, B], T0)
    yield a
    a.close()


# ---- the reference: digests computed here from the runs in memory -----------------------------


def as_row(run: Run) -> RunRow:
    r = run.result
    if r is None:
        return (run.planned_us, str(run.state), False, 0, {}, ())
    replies = [(p.seq, p.rtt_ms) for p in r.replies]
    return (run.planned_us, str(run.state), True, r.sent, r.values, replies)


def expected(
    runs: Sequence[Run], window: int, since: int | None = None, until: int | None = None
) -> dict[int, Bucket]:
    groups: dict[int, list[RunRow]] = {}
    for run in runs:
        if (since is None or run.planned_us >= since) and (until is None or run.planned_us < until):
            groups.setdefault(run.planned_us - run.planned_us % window, []).append(as_row(run))
    buckets = {w: bucket_of(rows) for w, rows in sorted(groups.items())}
    return {w: b for w, b in buckets.items() if b.results}


def same_digest(got: Digest | None, want: Digest | None) -> None:
    assert (got is None) == (want is None)
    if got is None or want is None:
        return
    assert (got.n, got.sum, got.min, got.max, got.last_t, got.last_v) == (
        want.n,
        want.sum,
        want.min,
        want.max,
        want.last_t,
        want.last_v,
    )
    if got.exact:
        assert got.values == want.values
    for p in (5, 25, 50, 75, 95):
        assert abs(got.percentile(p) - want.percentile(p)) <= ACCURACY * abs(want.percentile(p))


def same(got: list[tuple[int, Bucket]], want: dict[int, Bucket]) -> None:
    assert [w for w, _ in got] == list(want)
    for w, b in got:
        e = want[w]
        assert (b.runs, b.results, b.finished, b.sent, b.received) == (
            e.runs,
            e.results,
            e.finished,
            e.sent,
            e.received,
        )
        assert sorted(b.metrics) == sorted(e.metrics)
        for name in e.metrics:
            same_digest(b.metrics[name], e.metrics[name])
        same_digest(b.rtt, e.rtt)


def roll_up(archive: Archive, *, limit: int = 5000) -> int:
    total = 0
    for _ in range(1000):  # a step that left its runs pending would loop forever
        if not (n := archive.process_rollups(limit)):
            break
        total += n
    assert archive.rollup_backlog() == 0
    return total


def windows(archive: Archive, window: int, **kw: Any) -> list[tuple[int, Bucket]]:
    return archive.windows(window, test_key=A.key, **kw)


# ---- the tests ------------------------------------------------------------------------------


def test_rollups_equal_digests_from_raw_at_every_resolution(archive: Archive) -> None:
    runs = runs_of(A, 1, ALL)
    assert archive.store_runs(runs) == len(runs)
    assert archive.rollup_backlog() == len(runs)
    before = {res: windows(archive, res) for res in rollups.RESOLUTIONS_US}
    assert roll_up(archive, limit=100) == len(runs)
    for res in rollups.RESOLUTIONS_US:
        same(before[res], expected(runs, res))  # from the pending runs
        after = windows(archive, res)
        same(after, expected(runs, res))  # from the rollups
    # Read from the rollup rows indeed: a day holds more than 64 values, kept as a sketch.
    days = windows(archive, DAY)
    assert days[0][1].metrics["minRtt"].n > 64 and not days[0][1].metrics["minRtt"].exact
    assert before[DAY][0][1].metrics["minRtt"].exact  # from raw runs: exact, no cap
    hours = windows(archive, HOUR)
    assert all(b.metrics["minRtt"].exact for _, b in hours)  # ≤ 64 values: exact, as raw


@pytest.mark.parametrize(
    ("window", "since", "until"),
    [
        (HOUR, None, None),
        (HOUR, T0 + 1234 * S, T0 + 30 * HOUR + 77 * S),  # unaligned head and tail
        (2 * HOUR, T0 + 7 * MIN5 + 3, T0 + DAY + 13 * MIN5),  # tiled by 1 h rollups
        (90 * 60 * S, T0 + 100 * S, T0 + DAY),  # 5 min rollups
        (DAY, T0 + HOUR, T0 + 2 * DAY + HOUR),
        (420 * S, T0 + 5 * HOUR, T0 + 9 * HOUR),  # 7 min: no resolution divides it, all raw
        (HOUR, T0 + 3116 * S, T0 + 3236 * S),  # inside one 5 min bucket (run 8 at 3176 s)
    ],
)
def test_windows_are_complete_before_during_and_after_rolling_up(
    archive: Archive, window: int, since: int | None, until: int | None
) -> None:
    runs = runs_of(A, 2, ALL)
    want = expected(runs, window, since, until)
    assert want  # the range holds runs
    first, later = runs[::2], runs[1::2]
    archive.store_runs(first)
    roll_up(archive)
    archive.store_runs(later)  # pending, in the same buckets as rolled-up runs
    assert archive.rollup_backlog() == len(later)
    same(windows(archive, window, since_us=since, until_us=until), want)
    roll_up(archive)
    same(windows(archive, window, since_us=since, until_us=until), want)


def test_aggregate_from_rollups_equals_aggregate_from_raw(archive: Archive) -> None:
    archive.store_runs(runs_of(A, 3, ALL))
    raw = archive.aggregate("meanRtt", HOUR, test_key=A.key, since_us=T0, until_us=T0 + DAY)
    (day_raw,) = archive.aggregate("meanRtt", DAY, test_key=A.key, since_us=T0, until_us=T0 + DAY)
    roll_up(archive)
    rolled = archive.aggregate("meanRtt", HOUR, test_key=A.key, since_us=T0, until_us=T0 + DAY)
    assert len(rolled) == 24 and rolled == raw  # exact while ≤ 64 values: digests too
    assert archive.aggregate("meanRtt", HOUR, test_key=A.key, limit=5) == raw[:5]
    # A day: count, min, mean, max exact; percentiles within 1 %.
    (day,) = archive.aggregate("meanRtt", DAY, test_key=A.key, since_us=T0, until_us=T0 + DAY)
    assert {k: day[k] for k in ("runs", "count", "min", "mean", "max", "mean_loss")} == {
        k: day_raw[k] for k in ("runs", "count", "min", "mean", "max", "mean_loss")
    }
    assert not day["digest"].exact and day_raw["digest"].exact
    same_digest(day["digest"], day_raw["digest"])


def test_all_keys_of_a_test_id_and_all_tests(archive: Archive) -> None:
    a, a2, b = runs_of(A, 4, ALL), runs_of(A2, 5, ALL), runs_of(B, 6, ALL)
    for batch in (a, a2, b):
        archive.store_runs(batch)
    want_id, want_all = expected(a + a2, HOUR), expected(a + a2 + b, HOUR)
    same(archive.windows(HOUR, test_id="a"), want_id)
    roll_up(archive)
    same(archive.windows(HOUR, test_id="a"), want_id)
    same(archive.windows(HOUR), want_all)


def test_a_run_stored_twice_is_rolled_up_once(archive: Archive) -> None:
    runs = runs_of(A, 7, range(40))
    archive.store_runs(runs)
    assert archive.store_runs(runs[:10]) == 0  # again before rolling up
    assert archive.rollup_backlog() == 40
    roll_up(archive)
    assert archive.store_runs(runs[5:20]) == 0  # and after
    assert archive.rollup_backlog() == 0
    same(windows(archive, HOUR), expected(runs, HOUR))


def _rollup_store(store_url: str) -> stores.Store:
    location = str(path_of(store_url)) if store_url.startswith("sqlite:") else store_url
    return stores.open_store(location, "rollups", rollups.MIGRATIONS)


# A write of the day's rollup row fails: a trigger standing for a full disk or a lost server.
_FAIL_ON_DAY = {
    "sqlite": [
        f"CREATE TRIGGER fail_day BEFORE UPDATE ON rollups WHEN NEW.resolution_us = {DAY}"
        " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_day() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'the disk is full'; END$$",
        f"CREATE TRIGGER fail_day BEFORE UPDATE ON rollups FOR EACH ROW"
        f" WHEN (NEW.resolution_us = {DAY}) EXECUTE FUNCTION fail_day()",
    ],
}
_STOP_FAILING = {
    "sqlite": ["DROP TRIGGER fail_day"],
    "postgresql": ["DROP TRIGGER fail_day ON rollups", "DROP FUNCTION fail_day()"],
}
_ROWS = "SELECT resolution_us, start_us, digest FROM rollups ORDER BY resolution_us, start_us"


@pytest.mark.parametrize("failure", ["write", "read"])
def test_processing_that_fails_midway_leaves_no_half_state(
    archive: Archive, store_url: str, failure: str
) -> None:
    runs = runs_of(A, 8, ALL)
    day0 = [r for r in runs if r.planned_us < T0 + DAY]
    archive.store_runs(day0[::2])
    roll_up(archive)
    archive.store_runs(day0[1::2])
    side = _rollup_store(store_url)
    try:
        saved = side.cursor().execute(_ROWS).fetchall()
        day_row = "UPDATE rollups SET digest = ? WHERE resolution_us = ? AND start_us = ?"
        if failure == "write":
            # The day's row is the last a step writes (key order): the step fails after it
            # has rewritten the 5 min and 1 h rows.
            for statement in _FAIL_ON_DAY[side.dialect]:
                side.execute(statement)
            with pytest.raises(ArchiveError, match="the disk is full"):
                archive.process_rollups()
            for statement in _STOP_FAILING[side.dialect]:
                side.execute(statement)
        else:  # a rollup row that cannot be read
            side.execute(day_row, ('{"runs": "oops"}', DAY, T0))
            with pytest.raises(ArchiveError, match="unreadable"):
                archive.process_rollups()
            side.execute(day_row, (saved[-1][2], DAY, T0))
        assert side.cursor().execute(_ROWS).fetchall() == saved  # nothing of the step stayed
        assert archive.rollup_backlog() == len(day0[1::2])
    finally:
        side.close()
    roll_up(archive)
    for res in rollups.RESOLUTIONS_US:
        same(windows(archive, res), expected(day0, res))


def test_a_pending_run_gone_before_its_rollup_is_dropped(archive: Archive, store_url: str) -> None:
    runs = runs_of(A, 9, range(30))
    archive.store_runs(runs)
    side = _rollup_store(store_url)
    try:  # removed behind the pending list's back (retention takes both together)
        gone = "SELECT run_id FROM runs WHERE planned_us < ?"
        side.execute(f"DELETE FROM results WHERE run_id IN ({gone})", (runs[10].planned_us,))
        side.execute("DELETE FROM runs WHERE planned_us < ?", (runs[10].planned_us,))
    finally:
        side.close()
    assert roll_up(archive) == 30
    same(windows(archive, HOUR), expected(runs[10:], HOUR))


@pytest.mark.parametrize("resolution", [300, 3600, 86400, 5400, 60, 7200])
def test_pinger_consolidation_is_the_same_before_and_after_rollups(
    archive: Archive, resolution: int
) -> None:
    archive.store_runs(runs_of(A, 10, ALL))
    start, end = T0 // S + 1000, (T0 + SPAN) // S - 500
    rows = archive.summaries(A.key, start * S, (end + 1) * S, limit=10**6)
    points = [(t // S, json.loads(summary)) for t, summary in rows]
    functions = ("AVERAGE", "MIN", "MAX", "LAST")
    # The reference: the raw rows consolidated in memory.
    reference = {f: views.consolidate(points, f, resolution) for f in functions}

    def answers() -> dict[str, list[views.Datum]]:
        return {
            f: views.data(archive, A.key, start, end, consolidation=f, resolution=resolution)
            for f in functions
        }

    assert answers() == reference
    roll_up(archive)
    assert answers() == reference
    assert len(reference["LAST"]) > 1 and all(d.values for d in reference["LAST"])


def test_one_process_rolls_up_at_a_time_on_postgresql(pg_url: str) -> None:
    archive = open_archive(pg_url)
    try:
        archive.register_tests([A], T0)
        runs = runs_of(A, 11, range(50))
        archive.store_runs(runs)
        other = stores.open_store(pg_url, "rollups", rollups.MIGRATIONS)
        try:
            other.execute("SELECT pg_advisory_lock(7100, 1)")  # another worker, mid-step
            assert archive.process_rollups() == 0
            assert archive.rollup_backlog() == 50
            other.execute("SELECT pg_advisory_unlock(7100, 1)")
        finally:
            other.close()
        assert roll_up(archive) == 50
        same(windows(archive, HOUR), expected(runs, HOUR))
    finally:
        archive.close()


def test_the_rollups_keep_the_headline_metrics_and_others_come_from_raw_runs(
    archive: Archive,
) -> None:
    from netsonde.nmwg.pinger import DATUM_NAMES

    assert set(DATUM_NAMES) <= rollups.ROLLED_UP  # PingER consolidation reads the rollups
    runs = runs_of(A, 3, ALL)
    archive.store_runs(runs)
    roll_up(archive)
    stored = archive.windows(DAY, test_key=A.key, since_us=T0, until_us=T0 + DAY)
    assert stored and set(stored[0][1].metrics) <= rollups.ROLLED_UP
    # "duplicates" is kept; a metric the rollups do not keep is still answered, from the runs.
    kept = archive.aggregate("duplicates", DAY, test_key=A.key, since_us=T0, until_us=T0 + DAY)
    assert kept and not kept[0]["digest"].exact  # from the day's rollup: a sketch
    with_extra = [
        dataclasses.replace(
            run,
            run_id=f"x-{run.run_id}",
            result=dataclasses.replace(
                run.result, values={**run.result.values, "notRolledUp": 7.0}
            ),
        )
        for run in runs_of(B, 4, ALL)
        if run.result is not None and run.result.values
    ]
    archive.store_runs(with_extra)
    roll_up(archive)
    (day,) = archive.aggregate("notRolledUp", DAY, test_key=B.key, since_us=T0, until_us=T0 + DAY)
    assert day["count"] == sum(T0 <= r.planned_us < T0 + DAY for r in with_extra)
    assert day["digest"].exact and day["mean"] == 7.0  # raw runs: exact, whatever their number
