"""What the HTTP layer is given by whoever starts it (the daemon, a test, a benchmark)."""

from __future__ import annotations

import hmac
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from netsonde.archive.sqlite import SQLiteArchive
from netsonde.archive.status import LinkStatusStore

T = TypeVar("T")


class _PerThread(ABC, Generic[T]):
    """One connection per thread: request handlers run in a thread pool, and an SQLite
    connection must not be shared between threads that use it at the same time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    @abstractmethod
    def _open(self) -> T:
        """A new connection for the calling thread."""

    def get(self) -> T:
        conn: T | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn


class ArchiveConnections(_PerThread[SQLiteArchive]):
    def _open(self) -> SQLiteArchive:
        return SQLiteArchive(self.path)  # read-write: store requests write through it


class StatusConnections(_PerThread[LinkStatusStore]):
    def _open(self) -> LinkStatusStore:
        return LinkStatusStore(self.path)


@dataclass
class ApiContext:
    archive: ArchiveConnections
    name: str = ""  # this measurement point's name: the PingER "src" of local tests
    token: str | None = None  # store requests need it; None disables them
    request_timeout: float = 30.0  # per request, as the seed daemon's max_worker_lifetime
    max_body_bytes: int = 10 * 1024 * 1024
    # A live snapshot of the measurement point (MeasurementPoint.snapshot plus writer stats),
    # when the API runs inside the daemon; None when it serves an archive alone.
    status: Callable[[], dict[str, Any]] | None = None
    # True in an API worker process: small queries may run on its event loop (nothing else
    # shares it); False inside the daemon, whose loop also runs the scheduler.
    inline_queries: bool = False
    # The link status store (Status MA); None when this server keeps no link states.
    status_store: StatusConnections | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    scheme, _, given = (authorization or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def token_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; no configured token means nothing matches."""
    return bool(expected and given) and hmac.compare_digest(given.encode(), expected.encode())  # type: ignore[union-attr]
