"""The calendar: which run of which test is due when, and whether it may start now.

A pure state machine driven by the caller's clock (``poll(now)``, ``finished(run_id)``), so it
is tested with a fake clock and never sleeps. It merges the PingER MP scheduler (periodic with
a uniform ±offset) with IEPM-BW's and pScheduler's ideas: scheduling classes, a bound on
concurrent runs, and runs that cannot start within their slip recorded as missed.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from netsonde.model import Run, RunState, SchedClass, TestSpec, to_us


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A decision of ``poll``: start this run now, or record it as missed."""

    action: Literal["start", "missed"]
    run: Run
    spec: TestSpec


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    seq: int
    test_id: str = field(compare=False)
    generation: int = field(compare=False)


@dataclass(slots=True)
class _TestState:
    spec: TestSpec
    generation: int
    rng: random.Random
    next_slot: int = 0
    planned_runs: int = 0
    last_planned: float | None = None  # Poisson: the previous planned time
    anchor: float = 0.0  # periodic: nominal time of slot 0


@dataclass(slots=True)
class _Pending:
    run: Run
    spec: TestSpec
    planned: float
    blocked_by: str = ""


MAX_RECOVERED = 1000  # missed runs recorded per test for one down time, at most
DOWN_REASON = "not run: the daemon was down"


def default_slip(spec: TestSpec) -> float:
    return spec.schedule.slip if spec.schedule.slip is not None else spec.schedule.interval / 2


def phase_of(key: str, interval: float) -> float:
    """A stable per-test phase in [0, interval), so tests with the same interval spread out
    evenly instead of firing together, and slot numbers survive a restart."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return (h / 2**64) * interval


class Scheduler:
    def __init__(
        self,
        specs: Iterable[TestSpec],
        *,
        now: float,
        max_children: int = 32,
        rng: random.Random | None = None,
        resume: Mapping[str, int] | None = None,
        max_recovered: int = MAX_RECOVERED,
    ) -> None:
        """``resume``: by test key, the highest slot the archive holds for a periodic test
        (see ``Archive.last_slots``). Such a test never plans a slot at or below it
        again, and the slots between it and the first one planned now become missed runs,
        handed out once by ``recovered`` (at most ``max_recovered`` per test). It applies to
        the tests given here only, i.e. at the daemon's start: a test added by a later
        ``set_tests`` (a reload) was not configured in between, not down, so it starts afresh.
        Poisson tests have no grid of slots, so nothing "would have run" while down: they
        just restart their (memoryless) process from ``now``.
        """
        if max_children < 1:
            raise ValueError("max_children must be >= 1")
        self.max_children = max_children
        self._rng = rng or random.Random()
        self._tests: dict[str, _TestState] = {}
        self._heap: list[_Entry] = []
        self._seq = 0
        self._generation = 0
        self._pending: list[_Pending] = []
        self._running: dict[str, tuple[str, SchedClass]] = {}  # run_id → (test_id, class)
        self._running_tests: Counter[str] = Counter()  # what _blocked asks, kept up to date
        self._running_classes: Counter[SchedClass] = Counter()
        self._resume = dict(resume or {})
        self._max_recovered = max_recovered
        self._recovered: list[Run] = []
        self.set_tests(specs, now=now)
        self._resume = {}  # only at start: see above

    # ---- configuration -------------------------------------------------------------------

    def set_tests(self, specs: Iterable[TestSpec], *, now: float) -> None:
        """Install a (new) test set. A test whose spec is unchanged keeps its place in the
        calendar (SIGHUP must not reset schedules); changed or new tests are planned afresh."""
        new = {s.id: s for s in specs}
        replaced: dict[str, _TestState] = {}
        for test_id in list(self._tests):
            if test_id not in new or new[test_id] != self._tests[test_id].spec:
                replaced[test_id] = self._tests.pop(test_id)
        self._pending = [p for p in self._pending if p.spec.id in self._tests]
        for test_id, spec in new.items():
            if test_id not in self._tests:
                self._add(spec, now, replaced.get(test_id))

    def _add(self, spec: TestSpec, now: float, old: _TestState | None = None) -> None:
        self._generation += 1
        state = _TestState(
            spec=spec,
            generation=self._generation,
            rng=random.Random(self._rng.getrandbits(64)),
        )
        sched = spec.schedule
        if not sched.poisson:
            state.anchor = (
                sched.start if sched.start is not None else phase_of(spec.key, sched.interval)
            )
            # First slot whose earliest possible time (nominal - offset) is not in the past.
            earliest = max(now, sched.start or now)
            state.next_slot = max(
                0, math.ceil((earliest + sched.offset - state.anchor) / sched.interval)
            )
            if (
                old is not None
                and not old.spec.schedule.poisson
                and old.spec.key == spec.key
                and (old.anchor, old.spec.schedule.interval) == (state.anchor, sched.interval)
            ):
                # Same grid (e.g. only the offset changed): a slot the old spec already handed
                # out (possibly early, by -offset) must not be planned again under its run id.
                state.next_slot = max(state.next_slot, old.next_slot)
            resumed = self._resume.get(spec.key)
            if resumed is not None:
                self._resume_from(state, resumed, now)
        else:
            state.last_planned = (
                sched.start if sched.start is not None and sched.start > now else now
            )
        self._tests[spec.id] = state
        self._plan_next(state)

    def _resume_from(self, state: _TestState, resumed: int, now: float) -> None:
        """Continue after slot ``resumed`` (the last one in the archive), recording the ones
        that passed while the daemon was down as missed."""
        spec, sched = state.spec, state.spec.schedule
        if state.anchor + resumed * sched.interval > now + sched.offset + sched.interval:
            # Not a slot this grid could have handed out yet: the archive's slot numbers
            # belong to another grid (the interval or start changed while down). Ignore them.
            return
        first_now = state.next_slot
        state.next_slot = max(state.next_slot, resumed + 1)
        passed = range(resumed + 1, first_now)
        if sched.until is not None:
            last = math.ceil((sched.until - state.anchor) / sched.interval)  # first slot >= until
            passed = passed[: max(0, last - passed.start)]
        kept = passed[: self._max_recovered]
        for slot in kept:
            nominal_us = to_us(state.anchor + slot * sched.interval)
            run = Run.of(spec, nominal_us, slot=slot, state=RunState.MISSED, error=DOWN_REASON)
            self._recovered.append(run)
        if len(passed) > len(kept):
            self._recovered[-1].error = (
                f"{DOWN_REASON} ({len(passed) - len(kept)} later slot(s) until"
                f" {first_now - 1} not recorded)"
            )

    def recovered(self) -> list[Run]:
        """The missed runs of the down time before this start (see ``resume``), by test and
        slot; each is handed out once, so a second call returns []."""
        runs, self._recovered = self._recovered, []
        return runs

    def _plan_next(self, state: _TestState) -> None:
        sched = state.spec.schedule
        if sched.max_runs is not None and state.planned_runs >= sched.max_runs:
            return
        if sched.poisson:
            assert state.last_planned is not None
            due = state.last_planned + state.rng.expovariate(1.0 / sched.interval)
            state.last_planned = due
        else:
            nominal = state.anchor + state.next_slot * sched.interval
            due = nominal + (
                state.rng.uniform(-sched.offset, sched.offset) if sched.offset else 0.0
            )
        if sched.until is not None and due >= sched.until:
            return
        self._seq += 1
        heapq.heappush(self._heap, _Entry(due, self._seq, state.spec.id, state.generation))

    def _live(self, entry: _Entry) -> _TestState | None:
        state = self._tests.get(entry.test_id)
        return state if state is not None and state.generation == entry.generation else None

    # ---- the clock drives these ----------------------------------------------------------

    def poll(self, now: float) -> list[Dispatch]:
        """Move every run due by ``now`` into the waiting line, then start what may start and
        give up on what waited past its slip. Returns the decisions in the order made."""
        while self._heap and self._heap[0].due <= now:
            entry = heapq.heappop(self._heap)
            state = self._live(entry)
            if state is None:
                continue
            self._pending.append(self._make_pending(state, entry.due))
            state.planned_runs += 1
            state.next_slot += 1
            self._plan_next(state)
        self._pending.sort(key=lambda p: p.planned)
        decisions: list[Dispatch] = []
        still: list[_Pending] = []
        exclusive_waiting = False
        for p in self._pending:
            deadline = p.planned + default_slip(p.spec)
            reason = self._blocked(p.spec, exclusive_waiting)
            if reason is None and now <= deadline:
                self._running[p.run.run_id] = (p.spec.id, p.spec.sched_class)
                self._running_tests[p.spec.id] += 1
                self._running_classes[p.spec.sched_class] += 1
                decisions.append(Dispatch("start", p.run, p.spec))
                continue
            if reason is None:  # free to start now, but its slip ran out before this poll
                reason = p.blocked_by or f"not polled until {now - p.planned:g}s after plan"
            p.blocked_by = reason
            # Still blocked at its deadline (which next_wakeup reports): give up now, or a
            # driver that wakes up exactly then would find nothing to do and spin.
            if now >= deadline:
                p.run.state = RunState.MISSED
                p.run.error = f"not started within {default_slip(p.spec):g}s of plan: {reason}"
                decisions.append(Dispatch("missed", p.run, p.spec))
                continue
            exclusive_waiting |= p.spec.sched_class is SchedClass.EXCLUSIVE
            still.append(p)
        self._pending = still
        return decisions

    def _make_pending(self, state: _TestState, due: float) -> _Pending:
        spec = state.spec
        if spec.schedule.poisson:
            slot = nominal_us = to_us(due)
        else:
            slot = state.next_slot
            nominal_us = to_us(state.anchor + slot * spec.schedule.interval)
        # Identity = key + nominal time, not slot index: a changed interval or start never
        # reuses the id of a run that happened at another time.
        run = Run.of(spec, nominal_us, slot=slot, planned_us=to_us(due))
        return _Pending(run=run, spec=spec, planned=due)

    def _blocked(self, spec: TestSpec, exclusive_waiting: bool) -> str | None:
        """Why this run may not start now, or None if it may."""
        if len(self._running) >= self.max_children:
            return f"max_children={self.max_children} runs in progress"
        if self._running_tests[spec.id]:
            return "previous run of this test still in progress"
        if spec.sched_class is SchedClass.BACKGROUND:
            return None
        if self._running_classes[SchedClass.EXCLUSIVE]:
            return "an exclusive run is in progress"
        if spec.sched_class is SchedClass.EXCLUSIVE and self._running_classes[SchedClass.NORMAL]:
            return "normal runs are in progress"
        if spec.sched_class is SchedClass.NORMAL and exclusive_waiting:
            # Exclusive runs waiting for normal ones to drain get priority, or they'd starve.
            return "an exclusive run is waiting"
        return None

    def finished(self, run_id: str) -> None:
        """A started run has ended (any outcome); its slot is free again."""
        ended = self._running.pop(run_id, None)
        if ended is not None:
            self._running_tests[ended[0]] -= 1
            self._running_classes[ended[1]] -= 1

    # ---- what the driver and status need -------------------------------------------------

    def next_wakeup(self) -> float | None:
        """The earliest time at which ``poll`` could decide something without a run finishing."""
        while self._heap and self._live(self._heap[0]) is None:
            heapq.heappop(self._heap)
        times = [self._heap[0].due] if self._heap else []
        times += [p.planned + default_slip(p.spec) for p in self._pending]
        return min(times, default=None)

    def upcoming(self, n: int = 10) -> list[tuple[float, str]]:
        """The next ``n`` planned starts as (epoch seconds, test id)."""
        live = [(e.due, e.test_id) for e in self._heap if self._live(e) is not None]
        return sorted(live)[:n]

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def spec(self, test_id: str) -> TestSpec | None:
        state = self._tests.get(test_id)
        return state.spec if state else None

    @property
    def specs(self) -> list[TestSpec]:
        return [s.spec for s in self._tests.values()]
