"""The archive's upkeep, as one supervised thread of the daemon: rolling up the runs that
arrived (every second, until none wait) and removing runs older than ``[archive] retention``
(at start, then hourly).

It has a connection of its own, so a long retention pass never holds up the writer's, and every
failure is kept in ``last_error`` and retried on the next turn: the archive may come back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from netsonde.archive.base import Archive
from netsonde.restartable import OneThread

log = logging.getLogger(__name__)

ROLLUP_BATCH = 1000  # runs rolled up per transaction: short write locks on SQLite, a beat between
RETENTION_EVERY = 3600.0


class Maintenance(OneThread):
    thread_name = "archive-maintenance"

    def __init__(
        self,
        open_: Callable[[], Archive],
        *,
        retention: float | None,
        every: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._open = open_
        self._archive: Archive | None = None
        self.retention = retention
        self.every = every
        self._clock = clock
        self.rolled_up = 0
        self.expired = 0
        self.backlog = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._retention_due = time.monotonic()

    def _loop(self, generation: int) -> None:
        while not self._stop.is_set() and generation == self._generation:
            self._beat = time.monotonic()
            self.turn(lambda: generation == self._generation and not self._stop.is_set())
            self._stop.wait(self.every)

    def turn(self, going: Callable[[], bool] = lambda: True) -> None:
        """One pass: roll up everything waiting (a batch at a time, beating between), then
        retention when it is due. Errors are kept for the next pass to retry."""
        try:
            archive = self._connection()
            while going():
                done = archive.process_rollups(ROLLUP_BATCH)
                self.rolled_up += done
                self._beat = time.monotonic()
                if done < ROLLUP_BATCH:
                    break
            self.backlog = archive.rollup_backlog()
            if self.retention is not None and time.monotonic() >= self._retention_due:
                cutoff_us = int((self._clock() - self.retention) * 1_000_000)
                self.expired += archive.expire(cutoff_us)
                self._retention_due = time.monotonic() + RETENTION_EVERY
            self.last_error = None
        except Exception as e:  # the archive may be away: keep it, try again next turn
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("archive upkeep failed, will retry: %s", self.last_error)
            self._drop_connection()

    def _connection(self) -> Archive:
        if self._archive is None:
            self._archive = self._open()
        return self._archive

    def _drop_connection(self) -> None:
        if self._archive is not None:
            try:
                self._archive.close()
            except Exception as e:  # closing a broken connection: nothing left to do
                log.debug("closing the upkeep connection: %s", e)
            self._archive = None

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._join(timeout)
        self._drop_connection()
