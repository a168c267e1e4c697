"""Retention by rows: removing the runs planned before a cutoff a bounded batch at a time.

SQLite has no partitions to drop, so ``[archive] retention`` deletes here; PostgreSQL drops
its wholly old monthly partitions first and comes here only for the one month that straddles
the cutoff. Each batch is its own transaction of about :data:`BATCH` runs, so the archive's
writer never waits long behind retention. A run goes with its result and its
``rollup_pending`` row; the rollups themselves are kept (a few rows per test and hour or day:
long windows stay answerable after the raw runs are gone).
"""

from __future__ import annotations

from netsonde.archive.stores import Dialect, Store

BATCH = 5000  # runs per transaction

# A batch's runs are those planned at or before the planned time of the BATCH-th oldest run
# (a few more when several share that time): one bound, so every statement of the batch
# selects the same runs by an index on planned_us, without a list of ids.
_BATCH_END = "SELECT planned_us FROM runs WHERE planned_us < ? ORDER BY planned_us LIMIT 1 OFFSET ?"
_LAST_BEFORE = "SELECT max(planned_us) FROM runs WHERE planned_us < ?"
_DELETE_RESULTS: dict[Dialect, str] = {
    # SQLite's results know their run by id only.
    "sqlite": "DELETE FROM results WHERE run_id IN (SELECT run_id FROM runs WHERE planned_us <= ?)",
    # PostgreSQL's carry the run's planned time (the partition key): the planner prunes to
    # the partitions that can hold such rows instead of probing every one by run id.
    "postgresql": "DELETE FROM results WHERE planned_us <= ?",
}


def expire(store: Store, before_us: int, *, batch: int = BATCH) -> int:
    """Delete the runs planned before ``before_us`` (with their results and pending rollups),
    oldest first, ``batch`` runs per transaction; returns how many runs went."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    total = 0
    while True:
        with store.transaction() as cur:
            row = cur.execute(_BATCH_END, (before_us, batch - 1)).fetchone()
            if row is None:  # fewer than a batch left: all of them
                row = cur.execute(_LAST_BEFORE, (before_us,)).fetchone()
            upto = None if row is None else row[0]
            if upto is None:
                return total
            cur.execute("DELETE FROM rollup_pending WHERE planned_us <= ?", (upto,))
            cur.execute(_DELETE_RESULTS[store.dialect], (upto,))
            total += cur.execute("DELETE FROM runs WHERE planned_us <= ?", (upto,)).rowcount
