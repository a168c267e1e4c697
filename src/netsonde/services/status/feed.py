"""snmp_link runs → link status store: each poll's link observations become store updates.

``readings_from_run`` is the pure mapping; ``StatusFeed`` is what the daemon's run sink calls.
It maps on the caller's thread (cheap) and writes from a thread of its own (a ``BatchWriter``),
so the event loop never waits for the database; a transient store error (locked, disk full, the
server gone) keeps the batch and retries it with backoff, as the archive writer does.

Time of an update: the poll's own time (``LinkObservation.time_us``, taken when the answers
came back), in whole unix seconds (floored), which is what the store and the Status MA speak.

A run without readings:

* killed at its deadline (TIMEOUT): the agent did not answer in time, so every link configured
  in the spec is ``unknown`` at the run's end — the tool says the same when it runs out of time
  itself (``poll not done within``);
* missed, or failed before the tool could report (the daemon stopping, the fork server gone):
  nobody looked at the agent, so nothing is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from netsonde.archive.writer import BatchWriter
from netsonde.model import US_PER_S, Run, RunState, TestSpec
from netsonde.mp.status import FeedStats
from netsonde.probes import snmp_link
from netsonde.services.status.store import LinkStatusStore, StatusError, Update

log = logging.getLogger(__name__)


def _seconds(us: int) -> int:
    return us // US_PER_S


def is_snmp_link(run: Run, spec: TestSpec | None) -> bool:
    if run.result is not None:
        return run.result.tool == snmp_link.NAME
    return spec is not None and spec.tool == snmp_link.NAME


def readings_from_run(run: Run, spec: TestSpec | None = None) -> list[Update]:
    """The store updates one finished, failed or timed-out snmp_link run stands for.

    ``spec`` (the run's test) names the links when the run has no result; without it such a
    run gives nothing.
    """
    if run.result is not None:
        links = run.result.links if run.result.tool == snmp_link.NAME else []
    elif run.state is RunState.TIMEOUT and spec is not None and spec.tool == snmp_link.NAME:
        end = run.end_us or run.actual_us or run.planned_us
        links = snmp_link.unknown_links(spec.target, spec.params, run.error or "timeout", end)
    else:
        links = []
    return [Update(o.link_id, _seconds(o.time_us), o.oper, o.admin) for o in links]


class _StoreUpdates:
    """BatchWriter's store: each item is the update list of one run."""

    def __init__(self, store: LinkStatusStore) -> None:
        self.store = store
        self.rejected = 0

    def store_runs(self, batches: Sequence[Sequence[Update]]) -> int:
        updates = [u for batch in batches for u in batch]
        try:
            return self.store.update_many(updates)  # one transaction for the whole batch
        except StatusError:
            pass  # one update the store refuses (e.g. the clock went back): not transient
        stored = 0
        for u in updates:  # StoreError propagates: BatchWriter keeps the batch and retries
            try:
                stored += self.store.update_many([u])
            except StatusError as e:
                self.rejected += 1
                log.warning("link status update refused, dropped: %s", e)
        return stored


class StatusFeed:
    """Feeds a link status store from snmp_link runs, off the caller's thread."""

    def __init__(self, store: LinkStatusStore, *, max_delay: float = 0.1) -> None:
        self.store = store
        self._updates = _StoreUpdates(store)
        self.writer = BatchWriter(self._updates, max_delay=max_delay)  # type: ignore[arg-type]

    def submit(self, run: Run, spec: TestSpec | None) -> int:
        """Queue what ``run`` says about its links; returns how many updates (0: not ours)."""
        if not is_snmp_link(run, spec):
            return 0
        updates = readings_from_run(run, spec)
        if updates:
            self.writer.submit(updates)  # type: ignore[arg-type]
        return len(updates)

    @property
    def worker(self) -> BatchWriter:
        """The supervised thread that writes the updates."""
        return self.writer

    @property
    def stats(self) -> FeedStats:
        return FeedStats(
            stored=self.writer.stored,
            backlog=self.writer.backlog,
            rejected=self._updates.rejected,
            error=self.writer.last_error,
        )

    def close(self) -> None:
        """Write everything submitted, stop the thread and close the store."""
        self.writer.close()
        self.store.close()
