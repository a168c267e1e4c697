"""The shared archive: PostgreSQL (psycopg 3). Being written (issue 14)."""

from __future__ import annotations

from pathlib import Path

from netsonde.archive import pg
from netsonde.archive.base import Archive, ArchiveError, Backend


def _resolve(url: str, base: Path) -> str:
    return pg.check(url, base)


def _open(url: str, readonly: bool) -> Archive:
    raise ArchiveError("the PostgreSQL archive is not written yet")


BACKEND = Backend(scheme=pg.SCHEME, form=pg.FORM, resolve=_resolve, open=_open)
