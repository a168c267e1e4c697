"""Runs that other measurement points stored here over the API (their spools, PingER MA stores)
since the daemon started: what ``status`` shows of a central archive beside its own ``stored``.

API workers are processes of their own, so the archive counts what they store
(``Archive.received``); the daemon reads that count from a connection of its own (the writer
thread has the other) once a second, when it publishes its status.
"""

from __future__ import annotations

import logging

from netsonde.archive import ArchiveError, open_archive

log = logging.getLogger(__name__)


class Received:
    def __init__(self, url: str) -> None:
        """Open after the archive exists (the daemon created it) and before the API serves."""
        self._archive = open_archive(url, readonly=True)
        self._start = self._archive.received()
        self.count = 0

    def refresh(self) -> None:
        try:
            self.count = self._archive.received() - self._start
        except ArchiveError as e:  # locked or unreadable for a moment: keep the last count
            log.debug("cannot read the count of received runs: %s", e)

    def close(self) -> None:
        self._archive.close()
