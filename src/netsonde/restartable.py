"""The contract of a component that works in a thread of its own (the archive writer, a
service's feed, the spool): the supervisor starts it, watches its heartbeat and restarts it."""

from __future__ import annotations

from typing import Protocol


class Restartable(Protocol):
    """A component that does its work in thread(s) it can (re)start."""

    def start(self) -> None: ...

    def is_alive(self) -> bool: ...

    @property
    def beat(self) -> float: ...  # monotonic time of its last heartbeat
