"""The scheduler as a pure state machine, driven by a fake clock (plain floats; nothing sleeps).

``Sim`` plays the measurement point: it advances time in fixed steps, finishes started runs
after a chosen duration, polls, and records every decision together with the set of runs in
progress at each step, so the tests below can check ordering, ±offset, classes, concurrency,
missed runs, wake-ups, Poisson gaps, start/until/max_runs and reloads.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest

from netsonde.model import Run, RunState, SchedClass, Schedule, TestSpec, run_id_for, to_us
from netsonde.mp.scheduler import Dispatch, Scheduler, default_slip, phase_of
from netsonde.probes import noop

T0 = 1_700_000_000.0  # the fake clock's epoch
STEP = 0.25  # a binary fraction, so T0 + i*STEP and start + duration land exactly on the grid
US = 1  # tolerance for the µs rounding of planned times

EXCL, NORM, BACK = SchedClass.EXCLUSIVE, SchedClass.NORMAL, SchedClass.BACKGROUND


def make_spec(
    test_id: str,
    *,
    interval: float = 60.0,
    offset: float = 0.0,
    sched_class: SchedClass = BACK,
    target: str | None = None,
    **schedule: Any,
) -> TestSpec:
    """A noop test; the target defaults to the id so that every test has its own key."""
    return TestSpec(
        id=test_id,
        tool="noop",
        target=target or test_id,
        schedule=Schedule(interval=interval, offset=offset, **schedule),
        params=noop.Params(),
        sched_class=sched_class,
        timeout=30.0,
    )


def make_scheduler(
    specs: Iterable[TestSpec], *, now: float = T0, max_children: int = 32, seed: int = 1
) -> Scheduler:
    return Scheduler(specs, now=now, max_children=max_children, rng=random.Random(seed))


def anchor_of(spec: TestSpec) -> float:
    sched = spec.schedule
    return sched.start if sched.start is not None else phase_of(spec.key, sched.interval)


def nominal_of(spec: TestSpec, slot: int) -> float:
    """Where slot ``slot`` of a periodic test sits on its grid, before the ±offset."""
    return anchor_of(spec) + slot * spec.schedule.interval


def planned_s(run: Run) -> float:
    return run.planned_us / 1e6


# ---- the simulation --------------------------------------------------------------------------


@dataclass
class Started:
    at: float  # when poll said "start"
    dispatch: Dispatch
    end: float | None  # when the simulated run ends; None = never

    @property
    def run(self) -> Run:
        return self.dispatch.run

    @property
    def spec(self) -> TestSpec:
        return self.dispatch.spec

    def overlaps(self, other: Started) -> bool:
        end_a = math.inf if self.end is None else self.end
        end_b = math.inf if other.end is None else other.end
        return self.at < end_b and other.at < end_a


Duration = float | None | Callable[[TestSpec], float | None]


@dataclass
class Sim:
    """Drives a Scheduler like the measurement point does, with a fake clock.

    ``duration``: how long a started run lasts (seconds, None = never ends), either one value
    for all or a function of the spec. A run is reported ``finished`` at the first step at or
    after its end, before that step's ``poll``. Calling ``run`` again continues where the
    previous call stopped, so a test can reconfigure the scheduler in between.
    """

    sched: Scheduler
    duration: Duration = 0.0
    starts: list[Started] = field(default_factory=list)
    misses: list[tuple[float, Dispatch]] = field(default_factory=list)
    # After every poll: the time and the runs in progress.
    snapshots: list[tuple[float, tuple[Started, ...]]] = field(default_factory=list)
    running: dict[str, Started] = field(default_factory=dict)
    polls: list[tuple[float, list[Dispatch]]] = field(default_factory=list)

    def _duration(self, spec: TestSpec) -> float | None:
        return self.duration(spec) if callable(self.duration) else self.duration

    def step(self, now: float) -> list[Dispatch]:
        for run_id, started in list(self.running.items()):
            if started.end is not None and started.end <= now:
                self.sched.finished(run_id)
                del self.running[run_id]
        decisions = self.sched.poll(now)
        for d in decisions:
            if d.action == "start":
                assert d.run.run_id not in self.running, "the same run started twice"
                assert d.run.state is None
                dur = self._duration(d.spec)
                started = Started(now, d, None if dur is None else now + dur)
                self.running[d.run.run_id] = started
                self.starts.append(started)
            else:
                self.misses.append((now, d))
        # The scheduler's bookkeeping agrees with the driver's, and its wake-up is consistent
        # with its calendar.
        assert self.sched.running == len(self.running)
        wake, upcoming = self.sched.next_wakeup(), self.sched.upcoming(1)
        if self.sched.waiting == 0:
            assert wake == (upcoming[0][0] if upcoming else None)
        else:
            assert wake is not None
            assert not upcoming or wake <= upcoming[0][0]
        if wake is not None:
            assert wake > now, "next_wakeup is not in the future after a poll"
        self.snapshots.append((now, tuple(self.running.values())))
        self.polls.append((now, decisions))
        return decisions

    def run(self, start: float, end: float, step: float = STEP) -> Sim:
        """Poll at start, start+step, … up to and including end."""
        for i in range(math.floor((end - start) / step) + 1):
            self.step(start + i * step)
        return self

    # ---- views on what happened ----

    def starts_of(self, test_id: str) -> list[Started]:
        return sorted((s for s in self.starts if s.spec.id == test_id), key=lambda s: s.run.slot)

    def misses_of(self, test_id: str) -> list[Run]:
        return sorted((d.run for _, d in self.misses if d.spec.id == test_id), key=lambda r: r.slot)

    def runs_of(self, test_id: str) -> list[Run]:
        """Every run of a test that poll decided on (started or missed), by slot."""
        runs = [s.run for s in self.starts_of(test_id)] + self.misses_of(test_id)
        return sorted(runs, key=lambda r: r.slot)

    def all_runs(self) -> list[Run]:
        return [s.run for s in self.starts] + [d.run for _, d in self.misses]


def assert_contiguous_slots(runs: list[Run]) -> None:
    """Slots k, k+1, …: no slot skipped (silently dropped) and none decided twice."""
    slots = [r.slot for r in runs]
    assert slots == list(range(slots[0], slots[0] + len(slots))), slots


def classes_in(snapshot: tuple[Started, ...]) -> Counter[SchedClass]:
    return Counter(s.spec.sched_class for s in snapshot)


# ---- 1. ordering, spacing, slots and run ids -------------------------------------------------


def test_starts_come_out_in_planned_order() -> None:
    specs = [
        make_spec("a", interval=7, offset=1),
        make_spec("b", interval=11, offset=2),
        make_spec("c", interval=13),
        make_spec("d", interval=17, offset=3),
        make_spec("e", interval=30, offset=5),
    ]
    # Steps of 2.5 s (below every slip) make several runs come due in the same poll.
    sim = Sim(make_scheduler(specs)).run(T0, T0 + 3000, step=2.5)

    planned = [s.run.planned_us for s in sim.starts]
    assert planned == sorted(planned)
    assert len(sim.starts) > 1000
    assert any(sum(d.action == "start" for d in ds) >= 2 for _, ds in sim.polls)
    assert not sim.misses
    # Nothing started before it was due, nor later than one step after.
    assert all(0 <= s.at - planned_s(s.run) <= 2.5 + 1e-6 for s in sim.starts)
    assert all(s.run.actual_us is None for s in sim.starts)  # the executor stamps the start


def test_periodic_runs_are_spaced_by_interval_and_slots_increase_by_one() -> None:
    spec = make_spec("p", interval=10, offset=2)
    sim = Sim(make_scheduler([spec])).run(T0, T0 + 5000)

    runs = sim.runs_of("p")
    assert len(runs) >= 499
    assert not sim.misses
    assert_contiguous_slots(runs)
    lo, hi = to_us(10 - 2 * 2) - US, to_us(10 + 2 * 2) + US
    gaps = [b.planned_us - a.planned_us for a, b in pairwise(runs)]
    assert all(lo <= g <= hi for g in gaps)
    assert len(set(gaps)) > len(gaps) // 2  # jittered, not a fixed period
    for r in runs:
        assert r.test_id == "p" and r.test_key == spec.key
        assert r.run_id == run_id_for(spec.key, to_us(nominal_of(spec, r.slot)))
    assert len({r.run_id for r in runs}) == len(runs)


def test_a_new_interval_on_the_same_start_never_reuses_a_run_id() -> None:
    """Run ids come from the slot's nominal time, not its index: slot 3 of a 10 s grid and
    slot 3 of a 20 s grid are different runs and must not share an id."""
    ten = make_spec("p", interval=10, start=T0)
    twenty = make_spec("p", interval=20, start=T0)
    assert ten.key == twenty.key  # same probe; only the schedule differs
    a = {r.slot: r for r in Sim(make_scheduler([ten])).run(T0, T0 + 200).runs_of("p")}
    b = {r.slot: r for r in Sim(make_scheduler([twenty])).run(T0, T0 + 400).runs_of("p")}
    for k in a.keys() & b.keys():
        same_time = a[k].planned_us == b[k].planned_us
        assert (a[k].run_id == b[k].run_id) == same_time


def test_run_ids_are_stable_for_the_same_test_key_and_slot() -> None:
    spec = make_spec("p", interval=10, offset=3)
    one = Sim(make_scheduler([spec], seed=1)).run(T0, T0 + 600)
    two = Sim(make_scheduler([spec], seed=99)).run(T0, T0 + 600)

    ids_one = {r.slot: r.run_id for r in one.runs_of("p")}
    ids_two = {r.slot: r.run_id for r in two.runs_of("p")}
    assert len(ids_one) >= 59
    common = ids_one.keys() & ids_two.keys()
    assert len(common) >= len(ids_one) - 1
    assert all(ids_one[k] == ids_two[k] for k in common)
    # Different seeds really did draw different offsets: only the ids are stable.
    assert [r.planned_us for r in one.runs_of("p")] != [r.planned_us for r in two.runs_of("p")]
    # Another test (other key) never shares a run id, even for the same slot numbers.
    other = make_spec("q", interval=10, offset=3)
    assert all(run_id_for(other.key, k) != ids_one[k] for k in ids_one)


# ---- 2. ±offset ------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [None, T0 + 3.5], ids=["phase-anchor", "start-anchor"])
def test_planned_times_stay_within_offset_of_the_grid_and_spread(start: float | None) -> None:
    spec = make_spec("p", interval=10, offset=4, start=start, max_runs=2000)
    sim = Sim(make_scheduler([spec], seed=7)).run(T0, T0 + 20_100, step=1.0)

    runs = sim.runs_of("p")
    assert len(runs) == 2000
    devs = [planned_s(r) - nominal_of(spec, r.slot) for r in runs]
    assert all(-4 - 1e-6 <= d <= 4 + 1e-6 for d in devs), (min(devs), max(devs))
    # Uniform on [-4, 4]: sd ≈ 2.31, both ends reached, centred.
    assert statistics.pstdev(devs) > 4 / 4
    assert min(devs) < -3.5 and max(devs) > 3.5
    assert abs(statistics.fmean(devs)) < 0.2


def test_zero_offset_plans_exactly_on_the_grid() -> None:
    spec = make_spec("p", interval=10, start=T0 + 3.5)
    sim = Sim(make_scheduler([spec])).run(T0, T0 + 1000)

    runs = sim.runs_of("p")
    assert len(runs) == 100
    assert all(r.planned_us == to_us(nominal_of(spec, r.slot)) for r in runs)
    assert runs[0].planned_us == to_us(T0 + 3.5)


# ---- 3. phase --------------------------------------------------------------------------------


def test_tests_with_the_same_interval_get_different_stable_phases() -> None:
    a, b = make_spec("a", interval=60), make_spec("b", interval=60)
    phase_a, phase_b = phase_of(a.key, 60), phase_of(b.key, 60)
    assert 0 <= phase_a < 60 and 0 <= phase_b < 60
    assert abs(phase_a - phase_b) > 1e-3

    sched = make_scheduler([a, b])
    first = {tid: t for t, tid in sched.upcoming()}
    assert first["a"] != first["b"]
    for spec, phase in ((a, phase_a), (b, phase_b)):
        assert math.isclose((first[spec.id] - phase) / 60 % 1, 0, abs_tol=1e-9)
        assert T0 <= first[spec.id] < T0 + 60


def test_phase_and_slots_survive_a_restart() -> None:
    a, b = make_spec("a", interval=60), make_spec("b", interval=60)
    before = Sim(make_scheduler([a, b], seed=1)).run(T0, T0 + 7200, step=1.0)
    # "Restart" an hour and a bit later with another random seed.
    after = Sim(make_scheduler([a, b], now=T0 + 3600.5, seed=2)).run(
        T0 + 3600.5, T0 + 7200, step=1.0
    )
    for test_id in ("a", "b"):
        old = {r.slot: r for r in before.runs_of(test_id)}
        new = {r.slot: r for r in after.runs_of(test_id)}
        assert len(new) >= 58
        assert new.keys() <= old.keys()
        for slot, run in new.items():
            assert (run.planned_us, run.run_id) == (old[slot].planned_us, old[slot].run_id)
    assert phase_of(a.key, 60) == phase_of(make_spec("a", interval=60).key, 60)


# ---- 4. scheduling classes -------------------------------------------------------------------

CLASS_MIX = [
    make_spec("e1", interval=60, offset=5, sched_class=EXCL),
    make_spec("e2", interval=45, offset=3, sched_class=EXCL),
    make_spec("n1", interval=20, offset=2, sched_class=NORM),
    make_spec("n2", interval=25, offset=2, sched_class=NORM),
    make_spec("n3", interval=30, offset=2, sched_class=NORM),
    make_spec("b1", interval=5, sched_class=BACK),
    make_spec("b2", interval=7, offset=1, sched_class=BACK),
    make_spec("b3", interval=9, offset=1, sched_class=BACK),
]
CLASS_DURATION = {EXCL: 10.0, NORM: 6.0, BACK: 4.0}


def class_duration(spec: TestSpec) -> float:
    return CLASS_DURATION[spec.sched_class]


def test_exclusive_runs_alone_normal_never_with_exclusive_background_anywhere() -> None:
    sim = Sim(make_scheduler(CLASS_MIX), duration=class_duration).run(T0, T0 + 4 * 3600)

    seen: set[tuple[int, int, int]] = set()
    for now, snapshot in sim.snapshots:
        c = classes_in(snapshot)
        assert c[EXCL] <= 1, now
        assert not (c[EXCL] and c[NORM]), now
        seen.add((min(c[EXCL], 1), min(c[NORM], 2), min(c[BACK], 1)))
    # Not vacuous: every class ran, normals overlapped each other, background ran alongside
    # both exclusive and normal runs.
    assert Counter(s.spec.sched_class for s in sim.starts)[EXCL] > 100
    assert (0, 2, 1) in seen
    assert (1, 0, 1) in seen
    # Background runs are never held back by the other classes: each starts at its first poll,
    # including while an exclusive run is in progress.
    background = [s for s in sim.starts if s.spec.sched_class is BACK]
    assert all(s.at - planned_s(s.run) <= STEP for s in background)
    exclusive = [s for s in sim.starts if s.spec.sched_class is EXCL]
    assert any(e.at < b.at < (e.end or math.inf) for b in background for e in exclusive)
    assert not [d for _, d in sim.misses if d.spec.sched_class is BACK]
    # The same, checked on the run intervals rather than on the step snapshots.
    heavy = [s for s in sim.starts if s.spec.sched_class is not BACK]
    for i, a in enumerate(heavy):
        for b in heavy[i + 1 :]:
            if EXCL in (a.spec.sched_class, b.spec.sched_class):
                assert not a.overlaps(b), (a.spec.id, a.at, b.spec.id, b.at)


def test_waiting_exclusive_is_not_starved_by_later_normal_runs() -> None:
    long_normal = make_spec("n-long", interval=1000, start=T0, sched_class=NORM)
    exclusive = make_spec("excl", interval=1000, start=T0 + 5, slip=60, sched_class=EXCL)
    stream = make_spec("n-stream", interval=2, start=T0 + 1.5, slip=1, sched_class=NORM)
    durations = {"n-long": 20.0, "excl": 10.0, "n-stream": 0.5}
    sim = Sim(make_scheduler([long_normal, exclusive, stream]), duration=lambda s: durations[s.id])
    sim.run(T0, T0 + 60)

    (excl_run,) = sim.starts_of("excl")
    # Due at T0+5, it waited for n-long (ends at T0+20), not for the stream.
    assert excl_run.at == T0 + 20
    assert excl_run.run.planned_us == to_us(T0 + 5)
    stream_starts = [s.at for s in sim.starts_of("n-stream")]
    assert any(t < T0 + 5 for t in stream_starts)  # the stream really flows…
    assert not [t for t in stream_starts if T0 + 5 <= t < T0 + 30]  # …but not past the exclusive
    assert any(t >= T0 + 30 for t in stream_starts)  # …and resumes once it is done
    waiting = [d.run.error or "" for t, d in sim.misses if t < T0 + 20]
    during = [d.run.error or "" for t, d in sim.misses if T0 + 20 <= t < T0 + 30]
    assert len(waiting) == 7 and all("exclusive run is waiting" in e for e in waiting)
    assert during and all("exclusive run is in progress" in e for e in during)


# ---- 5. max_children -------------------------------------------------------------------------


def test_max_children_bounds_concurrency_and_waiting_runs_start_when_a_slot_frees() -> None:
    specs = [make_spec(f"bg{i}", interval=10, offset=2) for i in range(20)]
    sim = Sim(make_scheduler(specs, max_children=4), duration=3.0).run(T0, T0 + 3600)

    assert max(len(snap) for _, snap in sim.snapshots) == 4
    ends = {s.end for s in sim.starts}
    late = [s for s in sim.starts if s.at - planned_s(s.run) > STEP]
    assert len(late) > 100
    for s in late:
        assert s.at in ends, "a waiting run started without a slot being freed"
        assert s.at - planned_s(s.run) <= default_slip(s.spec) + 1e-6
    assert sim.misses
    assert all("max_children=4" in (d.run.error or "") for _, d in sim.misses)
    for spec in specs:
        assert_contiguous_slots(sim.runs_of(spec.id))


def test_run_waiting_for_a_child_slot_starts_after_finished() -> None:
    a = make_spec("a", interval=100, start=T0 + 1)
    b = make_spec("b", interval=100, start=T0 + 2)
    sched = make_scheduler([a, b], max_children=1)

    [start_a] = sched.poll(T0 + 1)
    assert (start_a.action, start_a.spec.id) == ("start", "a")
    assert sched.poll(T0 + 2) == []
    assert (sched.running, sched.waiting) == (1, 1)
    assert sched.next_wakeup() == T0 + 2 + 50  # b's slip deadline, before the next slots
    assert sched.poll(T0 + 9) == []
    sched.finished(start_a.run.run_id)
    [start_b] = sched.poll(T0 + 10)
    assert (start_b.action, start_b.spec.id, start_b.run.slot) == ("start", "b", 0)
    assert start_b.run.planned_us == to_us(T0 + 2)
    assert (sched.running, sched.waiting) == (1, 0)


# ---- 6. missed runs --------------------------------------------------------------------------


def test_run_that_cannot_start_within_its_slip_is_missed_with_a_reason() -> None:
    a = make_spec("a", interval=100, start=T0)
    b = make_spec("b", interval=100, start=T0 + 1, slip=5)
    sched = make_scheduler([a, b], max_children=1)
    assert [d.action for d in sched.poll(T0)] == ["start"]

    assert sched.poll(T0 + 3) == []
    assert sched.poll(T0 + 5.9) == []
    [missed] = sched.poll(T0 + 6.5)
    assert (missed.action, missed.spec.id) == ("missed", "b")
    assert missed.run.state is RunState.MISSED
    assert missed.run.error and "5s" in missed.run.error and "max_children=1" in missed.run.error
    assert missed.run.actual_us is None
    assert sched.waiting == 0


def test_previous_run_still_running_makes_the_next_slot_missed_not_overlapping() -> None:
    spec = make_spec("slow", interval=10, start=T0)
    sim = Sim(make_scheduler([spec]), duration=25.0).run(T0, T0 + 200)

    starts = sim.starts_of("slow")
    for a, b in pairwise(starts):
        assert not a.overlaps(b)
    misses = sim.misses_of("slow")
    assert len(misses) >= len(starts) - 1 > 3
    assert all("previous run of this test still in progress" in (r.error or "") for r in misses)
    assert all(r.state is RunState.MISSED for r in misses)
    assert_contiguous_slots(sim.runs_of("slow"))


def test_every_planned_slot_is_either_started_or_missed() -> None:
    until = T0 + 2 * 3600
    specs = [
        make_spec(
            s.id,
            interval=s.schedule.interval,
            sched_class=s.sched_class,
            start=T0 + 1.5 * i,
            until=until,
        )
        for i, s in enumerate(CLASS_MIX)
    ]
    sched = make_scheduler(specs, max_children=3)
    sim = Sim(sched, duration=class_duration).run(T0, until + 100)

    assert len(sim.starts) > 1000 and len(sim.misses) > 100
    for spec in specs:
        assert spec.schedule.start is not None
        expected = math.ceil((until - spec.schedule.start) / spec.schedule.interval)
        runs = sim.runs_of(spec.id)
        assert len(runs) == expected, spec.id
        assert_contiguous_slots(runs)
        assert runs[0].slot == 0
    assert len({r.run_id for r in sim.all_runs()}) == len(sim.all_runs())
    assert (sched.waiting, sched.next_wakeup(), sched.upcoming()) == (0, None, [])


def test_late_poll_does_not_start_a_run_past_its_slip() -> None:
    """If poll is not called for a while (stalled loop, suspend), runs whose slip has passed
    are recorded as missed; the stale slot must not start ahead of the current one."""
    spec = make_spec("p", interval=10, start=T0)
    sched = make_scheduler([spec])
    [first] = sched.poll(T0)
    sched.finished(first.run.run_id)

    decisions = sched.poll(T0 + 100)
    started = [d for d in decisions if d.action == "start"]
    missed = [d for d in decisions if d.action == "missed"]
    assert [d.run.slot for d in started] == [10]
    assert [d.run.slot for d in missed] == list(range(1, 10))
    assert all(d.run.state is RunState.MISSED and d.run.error for d in missed)


# ---- 7. next_wakeup --------------------------------------------------------------------------


def test_next_wakeup_is_the_earliest_planned_time() -> None:
    a = make_spec("a", interval=60, start=T0 + 10)
    b = make_spec("b", interval=60, start=T0 + 25)
    sched = make_scheduler([a, b])

    assert sched.next_wakeup() == T0 + 10 == sched.upcoming(1)[0][0]
    assert sched.poll(T0 + 10 - 1e-3) == []
    [d] = sched.poll(T0 + 10)
    assert (d.action, d.spec.id) == ("start", "a")
    assert sched.next_wakeup() == T0 + 25


def test_next_wakeup_is_a_waiting_runs_slip_deadline_when_earlier() -> None:
    a = make_spec("a", interval=100, start=T0)
    b = make_spec("b", interval=100, start=T0 + 20, slip=5)
    sched = make_scheduler([a, b], max_children=1)
    assert [d.action for d in sched.poll(T0)] == ["start"]
    assert sched.poll(T0 + 20) == []
    assert sched.waiting == 1

    deadline = sched.next_wakeup()
    assert deadline == T0 + 25 < sched.upcoming(1)[0][0]
    assert sched.poll(deadline - 1e-3) == []
    [d] = sched.poll(deadline)  # waking up when told to must decide something
    assert (d.action, d.spec.id, d.run.state) == ("missed", "b", RunState.MISSED)
    assert sched.next_wakeup() == T0 + 100


def test_next_wakeup_is_none_when_nothing_is_left() -> None:
    sched = make_scheduler([make_spec("once", interval=10, start=T0 + 1, max_runs=1)])
    assert sched.next_wakeup() == T0 + 1
    assert [d.action for d in sched.poll(T0 + 1)] == ["start"]
    assert sched.next_wakeup() is None and sched.upcoming() == []


# ---- 8. Poisson ------------------------------------------------------------------------------


def test_poisson_gaps_are_exponential_with_mean_interval() -> None:
    spec = make_spec("poi", interval=10, poisson=True, max_runs=5000)
    sched = make_scheduler([spec], seed=3)
    sim = Sim(sched).run(T0, T0 + 70_000, step=1.0)

    runs = sim.runs_of("poi")
    assert len(runs) == 5000
    assert sched.next_wakeup() is None
    times = [T0, *sorted(planned_s(r) for r in runs)]
    gaps = [b - a for a, b in pairwise(times)]
    mean = statistics.fmean(gaps)
    assert abs(mean - 10) < 0.5
    assert 0.9 < statistics.pstdev(gaps) / mean < 1.1
    # P(gap < mean) = 1 - 1/e ≈ 0.632 for an exponential (0.5 for a uniform, 1 for a period).
    assert abs(sum(g < 10 for g in gaps) / len(gaps) - (1 - math.exp(-1))) < 0.03
    assert len({r.slot for r in runs}) == 5000
    assert len({r.run_id for r in runs}) == 5000
    assert all(r.slot == r.planned_us for r in runs)
    assert all(r.run_id == run_id_for(spec.key, r.slot) for r in runs)


# ---- 9. start / until / max_runs -------------------------------------------------------------


def test_periodic_runs_respect_start_and_until() -> None:
    start, until = T0 + 100, T0 + 1000
    spec = make_spec("p", interval=10, offset=3, start=start, until=until)
    sim = Sim(make_scheduler([spec])).run(T0, T0 + 2000)

    runs = sim.runs_of("p")
    assert len(runs) >= 85
    assert all(to_us(start) <= r.planned_us < to_us(until) for r in runs)
    assert max(planned_s(r) for r in runs) > until - 10 - 2 * 3  # ran right up to the end
    assert max(s.at for s in sim.starts) < until + default_slip(spec)


def test_zero_offset_start_until_gives_the_exact_slot_count() -> None:
    spec = make_spec("p", interval=10, start=T0 + 100, until=T0 + 1000)
    sim = Sim(make_scheduler([spec])).run(T0, T0 + 2000)

    runs = sim.runs_of("p")
    assert [r.slot for r in runs] == list(range(90))
    assert runs[0].planned_us == to_us(T0 + 100)
    assert runs[-1].planned_us == to_us(T0 + 990)


def test_start_in_the_past_keeps_the_grid_and_plans_nothing_before_now() -> None:
    spec = make_spec("p", interval=10, start=T0 - 1003)
    sim = Sim(make_scheduler([spec])).run(T0, T0 + 100)

    runs = sim.runs_of("p")
    assert runs and all(r.planned_us >= to_us(T0) for r in runs)
    assert all((r.planned_us - to_us(T0 - 1003)) % to_us(10) == 0 for r in runs)
    assert runs[0].slot == 101


@pytest.mark.parametrize("poisson", [False, True], ids=["periodic", "poisson"])
def test_max_runs_gives_exactly_that_many_runs(poisson: bool) -> None:
    spec = make_spec("p", interval=10, offset=0 if poisson else 2, poisson=poisson, max_runs=7)
    sched = make_scheduler([spec])
    sim = Sim(sched).run(T0, T0 + 1000)

    assert len(sim.runs_of("p")) == 7
    assert not sim.misses
    assert sched.next_wakeup() is None and sched.upcoming() == []


def test_poisson_respects_start_and_until() -> None:
    start, until = T0 + 500, T0 + 5000
    spec = make_spec("poi", interval=20, poisson=True, start=start, until=until)
    sim = Sim(make_scheduler([spec], seed=5)).run(T0, T0 + 6000, step=1.0)

    runs = sim.runs_of("poi")
    assert len(runs) > 150
    assert all(to_us(start) <= r.planned_us < to_us(until) for r in runs)


# ---- 10. reload ------------------------------------------------------------------------------


def reload_specs() -> dict[str, TestSpec]:
    return {
        "a": make_spec("a", interval=60, offset=5),
        "b": make_spec("b", interval=30),
        "c": make_spec("c", interval=45),
    }


def test_reload_keeps_unchanged_replans_changed_drops_removed_adds_new() -> None:
    old = reload_specs()
    sched = make_scheduler(old.values())
    sim = Sim(sched).run(T0, T0 + 100)
    assert {s.spec.id for s in sim.starts} == {"a", "b", "c"}
    before = {tid: t for t, tid in sched.upcoming()}

    now = T0 + 100 + STEP
    new = reload_specs()  # equal but distinct objects: "unchanged" is by value
    changed_b = make_spec("b", interval=50)
    added_d = make_spec("d", interval=40)
    sched.set_tests([new["a"], changed_b, added_d], now=now)
    after = {tid: t for t, tid in sched.upcoming()}

    assert after.keys() == {"a", "b", "d"}
    assert after["a"] == before["a"]  # exactly the same planned time
    assert after["b"] != before["b"]
    assert math.isclose((after["b"] - phase_of(changed_b.key, 50)) / 50 % 1, 0, abs_tol=1e-9)
    assert now <= after["b"] < now + 50 and now <= after["d"] < now + 40
    assert sched.spec("b") == changed_b and sched.spec("c") is None

    sim.run(now, T0 + 2000)
    later = [s for s in sim.starts if s.at >= now]
    assert not [s for s in later if s.spec.id == "c"]
    assert sim.starts_of("d")
    a_later = [s for s in sim.starts_of("a") if s.at >= now]
    assert a_later[0].run.planned_us == to_us(before["a"])
    b_later = [s.run for s in sim.starts_of("b") if s.at >= now]
    gaps = {b.planned_us - a.planned_us for a, b in pairwise(b_later)}
    assert gaps == {to_us(50)}


def test_reload_drops_waiting_runs_of_removed_tests() -> None:
    a = make_spec("a", interval=100, start=T0)
    b = make_spec("b", interval=100, start=T0 + 1)
    sched = make_scheduler([a, b], max_children=1)
    [start_a] = sched.poll(T0)
    assert sched.poll(T0 + 1) == [] and sched.waiting == 1

    sched.set_tests([a], now=T0 + 2)
    assert sched.waiting == 0
    sched.finished(start_a.run.run_id)
    assert sched.poll(T0 + 3) == []
    assert sched.next_wakeup() == T0 + 100


def test_reload_of_a_changed_test_never_reuses_a_slot_already_decided() -> None:
    """A run planned early (negative offset) has started; changing only the offset must not
    plan that same slot again: it would run twice under one run id."""
    spec = make_spec("p", interval=60, offset=20, start=T0)
    sched = make_scheduler([spec], seed=2)
    sim = Sim(sched)
    now = T0
    while not any(planned_s(s.run) < nominal_of(spec, s.run.slot) - 1 for s in sim.starts):
        sim.step(now)
        now += STEP
    early = sim.starts[-1].run
    assert planned_s(early) < now < nominal_of(spec, early.slot)

    sched.set_tests([make_spec("p", interval=60, start=T0)], now=now)
    sim.run(now, now + 600)
    runs = sim.runs_of("p")
    assert len({r.run_id for r in runs}) == len(runs)
    assert_contiguous_slots(runs)
