"""Crash recovery in the scheduler: resuming from the archive's last slot per test, with a fake
clock. A resumed test never plans a slot it already handed out, and the slots that passed
while the daemon was down come back once, as missed runs with their stable run ids."""

from __future__ import annotations

import math
import random
from typing import Any

from netsonde.model import RunState, SchedClass, Schedule, TestSpec, run_id_for, to_us
from netsonde.mp.scheduler import DOWN_REASON, Scheduler, phase_of
from netsonde.probes import noop

T0 = 1_700_000_000.0


def make_spec(test_id: str, *, interval: float = 10.0, **schedule: Any) -> TestSpec:
    return TestSpec(
        id=test_id,
        tool="noop",
        target=test_id,
        schedule=Schedule(interval=interval, **schedule),
        params=noop.Params(),
        sched_class=SchedClass.BACKGROUND,
        timeout=30.0,
    )


def make(specs: list[TestSpec], *, now: float = T0, **kw: Any) -> Scheduler:
    return Scheduler(specs, now=now, rng=random.Random(1), **kw)


def first_slot(spec: TestSpec, now: float) -> int:
    """The first slot a fresh scheduler plans at ``now`` (its earliest time not in the past)."""
    sched = spec.schedule
    anchor = sched.start if sched.start is not None else phase_of(spec.key, sched.interval)
    return math.ceil((now + sched.offset - anchor) / sched.interval)


def nominal_us(spec: TestSpec, slot: int) -> int:
    sched = spec.schedule
    anchor = sched.start if sched.start is not None else phase_of(spec.key, sched.interval)
    return to_us(anchor + slot * sched.interval)


def started_slots(s: Scheduler, until: float, step: float = 0.25) -> list[tuple[str, int]]:
    out = []
    t = T0
    while t <= until:
        for d in s.poll(t):
            assert d.action == "start"
            out.append((d.spec.id, d.run.slot))
            s.finished(d.run.run_id)
        t += step
    return out


def test_resume_in_the_middle_records_exact_missed_slots() -> None:
    spec = make_spec("a", interval=10.0)
    first = first_slot(spec, T0)
    s = make([spec], resume={spec.key: first - 5})
    missed = s.recovered()
    assert [r.slot for r in missed] == list(range(first - 4, first))
    for r in missed:
        assert r.state is RunState.MISSED and r.error == DOWN_REASON
        assert r.run_id == run_id_for(spec.key, nominal_us(spec, r.slot))
        assert r.planned_us == nominal_us(spec, r.slot) and r.actual_us is None
        assert (r.test_id, r.test_key) == ("a", spec.key)
    assert s.recovered() == [], "handed out once"
    # The schedule goes on from the first slot after the down time, gap-free.
    assert started_slots(s, T0 + 40)[:4] == [("a", k) for k in range(first, first + 4)]


def test_nothing_missed_when_the_last_slot_is_just_before_now() -> None:
    spec = make_spec("a", interval=10.0)
    first = first_slot(spec, T0)
    s = make([spec], resume={spec.key: first - 1})
    assert s.recovered() == []
    assert started_slots(s, T0 + 10)[0] == ("a", first)


def test_missed_runs_are_bounded_and_the_last_one_says_how_many_were_skipped() -> None:
    spec = make_spec("fast", interval=1.0)
    first = first_slot(spec, T0)
    down = 7 * 24 * 3600  # a week down
    s = make([spec], resume={spec.key: first - down - 1}, max_recovered=1000)
    missed = s.recovered()
    assert len(missed) == 1000
    assert [r.slot for r in missed] == list(range(first - down, first - down + 1000))
    assert all(r.error == DOWN_REASON for r in missed[:-1])
    assert missed[-1].error == (
        f"{DOWN_REASON} ({down - 1000} later slot(s) until {first - 1} not recorded)"
    )


def test_default_bound_is_1000() -> None:
    spec = make_spec("fast", interval=1.0)
    s = make([spec], resume={spec.key: first_slot(spec, T0) - 5000})
    assert len(s.recovered()) == 1000


def test_resumed_slot_is_not_run_again_when_its_planned_time_is_still_ahead() -> None:
    # offset 4 s on a 10 s grid: slot k may have run up to 4 s before its nominal time. A
    # restart at exactly nominal_k - offset would plan slot k again (the same run id) if the
    # scheduler started afresh.
    spec = make_spec("early", interval=10.0, offset=4.0, start=T0 - 1000.0)
    k = 110
    now = T0 - 1000.0 + k * 10.0 - 4.0
    assert first_slot(spec, now) == k

    def slots_started(s: Scheduler) -> list[int]:
        out, t = [], now
        while t <= now + 40:
            for d in s.poll(t):
                assert d.action == "start"
                out.append(d.run.slot)
                s.finished(d.run.run_id)
            t += 0.25
        return out

    resumed = make([spec], now=now, resume={spec.key: k})
    assert resumed.recovered() == []
    assert slots_started(resumed) == [k + 1, k + 2, k + 3]
    fresh = make([spec], now=now)
    assert slots_started(fresh)[0] == k, "without resume the slot that ran would run again"


def test_poisson_tests_are_untouched_by_resume() -> None:
    spec = make_spec("p", interval=5.0, poisson=True)
    s = make([spec], resume={spec.key: 12345})
    ref = make([spec])
    assert s.recovered() == []
    assert s.upcoming() == ref.upcoming()


def test_resume_only_applies_at_start_not_to_tests_added_on_reload() -> None:
    a, b = make_spec("a"), make_spec("b")
    s = make([a], resume={a.key: first_slot(a, T0) - 3, b.key: first_slot(b, T0) - 3})
    assert [r.test_id for r in s.recovered()] == ["a", "a"]
    s.set_tests([a, b], now=T0 + 1)
    assert s.recovered() == []


def test_unknown_keys_and_tests_without_history_are_planned_afresh() -> None:
    a = make_spec("a")
    s = make([a], resume={"0123456789abcdef": 5})
    assert s.recovered() == []
    assert s.upcoming() == make([a]).upcoming()


def test_slots_of_another_grid_in_the_future_are_ignored() -> None:
    # The interval was changed while down: the stored slot numbers are of a finer grid and
    # lie far in this grid's future. Trusting them would stop the test for years.
    a = make_spec("a", interval=60.0)
    s = make([a], resume={a.key: first_slot(a, T0) * 60})
    assert s.recovered() == []
    assert s.upcoming() == make([a]).upcoming()


def test_until_bounds_the_missed_slots() -> None:
    spec = make_spec("u", interval=10.0, start=T0 - 100.0, until=T0 - 45.0)
    s = make([spec], resume={spec.key: 2})
    # Slots 3, 4, 5 are nominally before until (T0-70, -60, -50); 6 (T0-40) is not.
    assert [r.slot for r in s.recovered()] == [3, 4, 5]
    assert s.upcoming() == []


def test_archive_last_slots_is_the_highest_stored_slot_of_any_state(tmp_path: Any) -> None:
    from hosting import sqlite_url
    from netsonde.archive import open_archive
    from netsonde.model import Run

    a, b, c = make_spec("a"), make_spec("b"), make_spec("c")
    archive = open_archive(sqlite_url(tmp_path / "archive.sqlite"))
    archive.register_tests([a, b, c], to_us(T0))
    archive.store_runs(
        [
            Run.of(a, nominal_us(a, 7), slot=7, state=RunState.FINISHED),
            Run.of(a, nominal_us(a, 9), slot=9, state=RunState.MISSED, error=DOWN_REASON),
            Run.of(a, nominal_us(a, 8), slot=8, state=RunState.FAILED),
            Run.of(b, nominal_us(b, 3), slot=3, state=RunState.TIMEOUT),
        ]
    )
    assert archive.last_slots([a.key, b.key, c.key, a.key]) == {a.key: 9, b.key: 3}
    archive.close()
