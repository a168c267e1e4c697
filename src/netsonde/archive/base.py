"""The storage interface: what every archive backend offers, whatever it stores in.

Backends are one file each (``sqlite.py``; PostgreSQL next) and are opened from a URL by
:func:`netsonde.archive.open_archive`; nothing outside ``archive/`` and the daemon names one.
Times are integer epoch microseconds (UTC). Rows come back as plain dicts (the REST and NMWG
layers shape them), and every failure of the store itself is an :class:`ArchiveError`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from netsonde.metrics.digest import Bucket
from netsonde.model import Run, TestSpec


class ArchiveError(Exception):
    """The archive cannot be opened or used; the message says why, in one line."""


class UnknownTestError(ValueError):
    """Runs name test keys that the archive does not know (and that came with no definition)."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(f"unknown test key(s): {', '.join(keys)}")
        self.keys = list(keys)


def no_check() -> None:
    """The default of a ``check`` callback: nothing cancels the call."""


class Archive(Protocol):
    """One connection to a measurement archive. Not shared between threads that use it at the
    same time: see :class:`netsonde.archive.PerThread`."""

    url: str

    # ---- writing -------------------------------------------------------------------------

    def register_tests(self, specs: Iterable[TestSpec], now_us: int) -> None:
        """Insert or refresh the definitions of these tests (by key)."""

    def store_runs(self, runs: Sequence[Run]) -> int:
        """Store runs of registered tests in one transaction; returns how many were new
        (a run id stored before is skipped, never duplicated)."""
        ...

    def store_batch(self, specs: Iterable[TestSpec], runs: Sequence[Run], now_us: int) -> int:
        """Register ``specs`` and store ``runs`` in one transaction (remote stores); runs of a
        key neither known nor in ``specs`` raise :class:`UnknownTestError`."""
        ...

    def received(self) -> int:
        """How many runs ``store_batch`` has stored (remote stores), ever."""
        ...

    # ---- reading -------------------------------------------------------------------------

    def last_slots(self, keys: Iterable[str]) -> dict[str, int]:
        """The highest stored slot by test key; what a restarted scheduler resumes from."""
        ...

    def tests(self) -> list[dict[str, Any]]:
        """Every test with its run count and last run time."""
        ...

    def tests_of_tool(self, tool: str, key: str | None = None) -> list[dict[str, Any]]:
        """The tests of one tool (or the one with ``key``), without run statistics."""
        ...

    def runs(
        self,
        test_id: str | None = None,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Runs with their results, oldest first (the CLI's view)."""
        ...

    def summaries(
        self, test_key: str, since_us: int, until_us: int, *, limit: int
    ) -> list[tuple[int, str]]:
        """(planned_us, summary JSON) of the finished runs of one test in [since, until)."""
        ...

    def find_tests(
        self,
        *,
        key: str | None = None,
        test_id: str | None = None,
        test_id_contains: str | None = None,
        tool: str | None = None,
        target: str | None = None,
        after: tuple[str, str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Tests matching every filter given, ordered by (test_id, key); keyset paging."""
        ...

    def find_runs(
        self,
        *,
        test_id: str | None = None,
        test_key: str | None = None,
        states: Sequence[str] = (),
        since_us: int | None = None,
        until_us: int | None = None,
        results_only: bool = False,
        samples: bool = False,
        after: tuple[int, str] | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Runs matching every filter given, ordered by (planned_us, run_id); keyset paging."""
        ...

    def aggregate(
        self,
        metric: str,
        window_us: int,
        *,
        test_id: str | None = None,
        test_key: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """One summary metric's statistics per test and time window of ``window_us``."""
        ...

    def windows(
        self,
        window_us: int,
        *,
        test_key: str | None = None,
        test_id: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
        metrics: Collection[str] | None = None,
        packets: bool = True,
        check: Callable[[], None] = no_check,
    ) -> list[tuple[int, Bucket]]:
        """(start, bucket digest) per window of ``window_us`` with results, oldest first: from
        the rollups where they cover the window, from raw runs elsewhere (``rollups.windows``).
        ``metrics`` (None: all) and ``packets`` (the samples' RTTs and loss) say what the
        digests hold; ``check`` (a request's cancellation) is called while decoding."""
        ...

    # ---- rollups -------------------------------------------------------------------------

    def process_rollups(self, limit: int = 5000) -> int:
        """Roll up at most ``limit`` stored runs not rolled up yet, in one transaction; returns
        how many were taken (0: nothing to do, or another process is at it)."""
        ...

    def rollup_backlog(self) -> int:
        """How many stored runs wait to be rolled up."""
        ...

    # ---- retention -----------------------------------------------------------------------

    def expire(self, before_us: int) -> int:
        """Remove the runs planned before ``before_us``, with their results (the rollups are
        kept); returns how many runs went. Done in bounded steps: writers are never held up
        for long."""
        ...

    # ---- connection ----------------------------------------------------------------------

    def interrupt(self) -> None:
        """Abort the query running on this connection (from another thread)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backend:
    """What a backend module contributes to ``netsonde.archive``: how its URLs look, how one is
    made independent of the working directory, and how one is opened."""

    scheme: str  # a URL of this backend starts with "{scheme}://"
    form: str  # how such a URL is written, for error messages: "sqlite:///PATH"
    # (url, base directory) → the same store named so that the working directory no longer
    # matters (a relative path resolved against the base); ArchiveError if the URL is malformed.
    resolve: Callable[[str, Path], str]
    # (url, readonly) → a connection; ArchiveError when the store cannot be opened.
    open: Callable[[str, bool], Archive]
