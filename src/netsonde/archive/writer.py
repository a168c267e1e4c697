"""Batched, never-losing writes to the archive from a thread of their own.

The event loop only enqueues; this thread commits up to ``max_batch`` runs per transaction
(or whatever arrived within ``max_delay``). When a write fails (disk full, locked database)
the batch is kept and retried with backoff, and the error is visible in ``stats``.

The thread beats a heartbeat at least once a second, idle or retrying, and ``start`` starts a
new one when it died (the queue survives it), so the daemon's supervisor can keep it alive.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Protocol

from netsonde.model import Run
from netsonde.restartable import OneThread

log = logging.getLogger(__name__)


class RunStore(Protocol):
    def store_runs(self, runs: list[Run]) -> int: ...


class BatchWriter(OneThread):
    # An abandoned thread that wakes up still writes what it holds.
    thread_name = "archive-writer"

    def __init__(self, store: RunStore, *, max_batch: int = 500, max_delay: float = 0.1) -> None:
        super().__init__()
        self._store = store
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._queue: queue.Queue[Run | None] = queue.Queue()
        self.stored = 0
        self.last_error: str | None = None
        self.start()

    def submit(self, run: Run) -> None:
        self._queue.put(run)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything submitted so far, then stop."""
        self._queue.put(None)
        self._join(timeout)

    def _loop(self, generation: int) -> None:
        closing = False
        while not closing and generation == self._generation:
            self._beat = time.monotonic()
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if first is None:
                break
            batch = [first]
            until = time.monotonic() + self._max_delay
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            self._write(batch, give_up_after=5.0 if closing else None)

    def _write(self, batch: list[Run], give_up_after: float | None) -> None:
        delay, started = 0.1, time.monotonic()
        while True:
            try:
                self.stored += self._store.store_runs(batch)
                self.last_error = None
                return
            except Exception as e:  # keep the batch; the archive may come back
                self.last_error = f"{type(e).__name__}: {e}"
                log.error("archive write failed, will retry: %s", self.last_error)
                if give_up_after is not None and time.monotonic() - started > give_up_after:
                    log.error("giving up on %d runs at shutdown", len(batch))
                    return
                _sleep_beating(delay, self._beating)
                delay = min(delay * 2, 10.0)

    def _beating(self) -> None:
        self._beat = time.monotonic()


def _sleep_beating(seconds: float, beat: Callable[[], None]) -> None:
    """Sleep in slices of at most a second, beating between them (a long backoff is not a
    hang)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        beat()
        time.sleep(min(left, 1.0))
    beat()
