"""The contract of a component that works in a thread of its own (the archive writer, a
service's feed, the spool): the supervisor starts it, watches its heartbeat and restarts it."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Restartable(Protocol):
    """A component that does its work in thread(s) it can (re)start."""

    def start(self) -> None: ...

    def is_alive(self) -> bool: ...

    @property
    def beat(self) -> float: ...  # monotonic time of its last heartbeat


class OneThread:
    """A :class:`Restartable` that works in one thread running ``_loop(generation)``, which
    beats by setting ``self._beat`` and ends once ``generation`` is no longer current.
    ``abandon`` gives up on a stuck thread: it ends at its next turn, and the next ``start``
    starts another."""

    thread_name = "worker"

    def __init__(self) -> None:
        self._beat = time.monotonic()
        self._generation = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread, or a new one if it died or was abandoned; a no-op while it runs."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._generation += 1
        self._beat = time.monotonic()
        self._thread = threading.Thread(
            target=self._loop, args=(self._generation,), name=self.thread_name, daemon=True
        )
        self._thread.start()

    def abandon(self) -> None:
        self._generation += 1
        self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def beat(self) -> float:
        """Monotonic time of the thread's last heartbeat."""
        return self._beat

    def _join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self, generation: int) -> None:
        raise NotImplementedError
