"""The lookup service's expiry (the seed's ``cleanLS``) as a supervised thread of the daemon.

The daemon gives a service a supervised thread through its ``Feed`` (``services.base``); the
lookup service consumes no runs, so its feed is a timer: ``submit`` takes nothing, and its
worker removes expired records every ``every`` seconds. Its ``stats.stored`` counts the records
removed. Expiry only reclaims space: reads never answer an expired record anyway.
"""

from __future__ import annotations

import logging
import threading
import time

from netsonde.model import Run, TestSpec
from netsonde.mp.status import FeedStats
from netsonde.restartable import OneThread
from netsonde.services.lookup.registry import LookupRegistry

log = logging.getLogger(__name__)


class ExpiryWorker(OneThread):
    """Removes expired records every ``every`` seconds; beats at least once a second, and
    ``start`` starts a new thread when the last one died (the supervisor's contract)."""

    thread_name = "lookup-expiry"

    def __init__(self, registry: LookupRegistry, every: float) -> None:
        super().__init__()
        self.registry = registry
        self.every = every
        self.expired = 0
        self.last_error: str | None = None
        self._stop = threading.Event()

    def expire_now(self) -> int:
        """One pass; errors are kept (and logged) for the next pass to retry."""
        try:
            n = self.registry.expire()
        except Exception as e:  # a locked or vanished file: the next pass tries again
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("lookup expiry failed, will retry: %s", self.last_error)
            return 0
        self.expired += n
        self.last_error = None
        return n

    def _loop(self, generation: int) -> None:
        due = time.monotonic()
        while not self._stop.is_set() and generation == self._generation:
            self._beat = time.monotonic()
            if self._beat >= due:
                self.expire_now()
                due = time.monotonic() + self.every
            self._stop.wait(min(1.0, max(0.0, due - time.monotonic())))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._join(timeout)


class ExpiryFeed:
    """``services.base.Feed`` for a service that consumes no runs: only its worker matters."""

    def __init__(self, registry: LookupRegistry, every: float) -> None:
        self.registry = registry
        self.expiry = ExpiryWorker(registry, every)

    @property
    def worker(self) -> ExpiryWorker:
        return self.expiry

    def submit(self, run: Run, spec: TestSpec | None) -> int:
        return 0  # runs say nothing to a lookup service

    @property
    def stats(self) -> FeedStats:
        return FeedStats(stored=self.expiry.expired, error=self.expiry.last_error)

    def close(self) -> None:
        self.expiry.stop()
        self.registry.close()
