"""The run sink: where the measurement point hands every finished, failed or missed run.

Each consumer is called in turn with the run and its test's spec, looked up once: the archive
writer, the run metrics, each service's feed, the spool (see ``Daemon._consumers``). It runs on
the event loop, so a consumer only queues (each writes from a thread of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from netsonde.model import Run, TestSpec

# One consumer of runs. ``spec`` is None for a run of a test a reload has removed since.
Consumer = Callable[[Run, TestSpec | None], object]


class Specs(Protocol):
    def spec(self, test_id: str) -> TestSpec | None: ...


class RunSink:
    def __init__(self, consumers: Iterable[Consumer]) -> None:
        self.consumers: tuple[Consumer, ...] = tuple(consumers)
        self._specs: Specs | None = None

    def follow(self, specs: Specs) -> None:
        """Look the specs up in ``specs`` (the scheduler: the tests as last reloaded). Set
        after the measurement point is built, which needs its sink first."""
        self._specs = specs

    def __call__(self, run: Run) -> None:
        if self._specs is None:
            raise RuntimeError("the run sink follows no scheduler yet")
        spec = self._specs.spec(run.test_id)
        for consume in self.consumers:
            consume(run, spec)
