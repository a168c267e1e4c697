"""The measurement archive: one interface (:class:`Archive`), backends opened from a URL.

Everything that knows how a URL names a store is here: the config only asks
:func:`default_url` and :func:`resolve_url`, the daemon :func:`open_archive`. Adding a backend
is one module here that defines a :class:`Backend` (import its driver lazily, inside ``open``,
so that sites without it still start) and one entry in ``_BACKENDS``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from netsonde.archive import postgres, sqlite
from netsonde.archive.base import Archive, ArchiveError, Backend, UnknownTestError

__all__ = [
    "Archive",
    "ArchiveError",
    "PerThread",
    "UnknownTestError",
    "connections",
    "default_url",
    "open_archive",
    "resolve_url",
]

T = TypeVar("T")

_BACKENDS: dict[str, Backend] = {b.scheme: b for b in (sqlite.BACKEND, postgres.BACKEND)}


def _backend(url: str) -> Backend:
    scheme, sep, _ = url.partition("://")
    scheme = {"postgres": "postgresql"}.get(scheme, scheme)  # libpq's two spellings
    backend = _BACKENDS.get(scheme) if sep else None
    if backend is None:
        # Only the scheme is quoted back: the rest of a URL may hold a password.
        what = f"unsupported archive URL scheme {scheme!r}" if sep else "not an archive URL"
        known = ", ".join(b.form for b in _BACKENDS.values())
        raise ArchiveError(f"{what} (use {known})")
    return backend


def default_url(data_dir: Path) -> str:
    """Where the archive is when the config names none: a SQLite file in the data directory."""
    return sqlite.url_of(data_dir / "archive.sqlite")


def resolve_url(url: str, base_dir: Path) -> str:
    """``url`` with any relative path made relative to ``base_dir`` (the config file's
    directory), so the archive does not move with the working directory; ArchiveError when
    the scheme is unknown or the URL malformed."""
    return _backend(url).resolve(url, base_dir)


def open_archive(url: str, *, readonly: bool = False) -> Archive:
    """A connection to the archive at ``url``; ArchiveError when it cannot be opened."""
    return _backend(url).open(url, readonly)


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
    _backend(url)
    return PerThread(lambda: open_archive(url))
