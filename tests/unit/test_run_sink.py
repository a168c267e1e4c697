"""The daemon's run sink: every run goes to each consumer in order, with its test's spec as the
scheduler holds it now (None once a reload removed the test)."""

from __future__ import annotations

import pytest

from netsonde.daemon.sink import RunSink
from netsonde.model import Run, RunState, Schedule, TestSpec
from netsonde.mp.scheduler import Scheduler
from netsonde.probes import noop

T0 = 1_700_000_000.0


def spec(test_id: str) -> TestSpec:
    return TestSpec(test_id, "noop", "127.0.0.1", Schedule(interval=60), noop.Params())


def run_of(s: TestSpec) -> Run:
    return Run.of(s, int(T0 * 1e6), state=RunState.MISSED)


def test_each_consumer_gets_each_run_in_order_with_the_current_spec() -> None:
    a, b = spec("a"), spec("b")
    scheduler = Scheduler([a, b], now=T0)
    seen: list[tuple[str, str, TestSpec | None]] = []
    sink = RunSink(
        [
            lambda run, s: seen.append(("first", run.test_id, s)),
            lambda run, s: seen.append(("second", run.test_id, s)),
        ]
    )
    sink.follow(scheduler)
    sink(run_of(a))
    scheduler.set_tests([b], now=T0)  # a reload drops "a": a late run of it has no spec
    sink(run_of(a))
    assert seen == [
        ("first", "a", a),
        ("second", "a", a),
        ("first", "a", None),
        ("second", "a", None),
    ]


def test_a_sink_that_follows_no_scheduler_refuses_runs() -> None:
    got: list[Run] = []
    sink = RunSink([lambda run, _s: got.append(run)])
    with pytest.raises(RuntimeError):
        sink(run_of(spec("a")))
    assert got == []
