"""The measurement archive: one interface (:class:`Archive`), backends opened from a URL.

``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (the embedded default). Adding a
backend is one module here and one entry in ``_BACKENDS``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from netsonde.archive.base import Archive, ArchiveError, UnknownTestError

__all__ = [
    "Archive",
    "ArchiveError",
    "PerThread",
    "UnknownTestError",
    "connections",
    "open_archive",
]

T = TypeVar("T")


def _sqlite(url: str, readonly: bool) -> Archive:
    from netsonde.archive.sqlite import SQLiteArchive, path_of

    return SQLiteArchive(path_of(url), readonly=readonly)


_BACKENDS: dict[str, Callable[[str, bool], Archive]] = {"sqlite": _sqlite}


def scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in _BACKENDS)
        raise ArchiveError(f"unsupported archive URL {url!r} (known: {known})")
    return scheme


def open_archive(url: str, *, readonly: bool = False) -> Archive:
    """A connection to the archive at ``url``; ArchiveError when it cannot be opened."""
    return _BACKENDS[scheme_of(url)](url, readonly)


class PerThread(Generic[T]):
    """One connection per thread: request handlers run in a thread pool, and a connection (to
    the archive or to a service's own store) must not be used by two threads at once."""

    def __init__(self, open_: Callable[[], T]) -> None:
        self._open = open_
        self._local = threading.local()

    def get(self) -> T:
        conn: T | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn


def connections(url: str) -> PerThread[Archive]:
    """Per-thread connections to the archive at ``url``; an unknown scheme fails here, at
    start, rather than at the first request."""
    scheme_of(url)
    return PerThread(lambda: open_archive(url))
