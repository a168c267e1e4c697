"""Connecting to PostgreSQL: the URL netsonde accepts, where the password comes from, and the
one import of the driver (psycopg 3), made lazily so that sites on SQLite never load it.

A URL is libpq's (``postgresql://user@host:port/db?sslmode=require``; a Unix socket as
``?host=/run/postgresql``). A password is never written in it (URLs end up in logs and
status): it comes from libpq's own places (``PGPASSWORD``, ``~/.pgpass``, ``?passfile=``) or
from ``?password_file=PATH``, a file holding only the password, which netsonde reads itself.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsonde.archive.base import ArchiveError

if TYPE_CHECKING:
    import psycopg

SCHEME = "postgresql"
FORM = "postgresql://USER@HOST/DB"
_SCHEMES = ("postgresql://", "postgres://")
_OURS = "password_file"  # a query parameter netsonde reads and libpq never sees


def is_url(location: str) -> bool:
    return location.startswith(_SCHEMES)


def check(url: str, base: Path) -> str:
    """``url`` checked (no password in it, a database named) with a relative
    ``password_file`` made absolute against ``base``; ArchiveError says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        raise ArchiveError(
            "the archive URL must not hold a password: put it in a file named by"
            " ?password_file=PATH, in ~/.pgpass or in PGPASSWORD"
        )
    if not parts.path.strip("/"):
        raise ArchiveError(f"the archive URL names no database (use {FORM})")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    fixed = []
    for name, value in query:
        if name == _OURS:
            path = Path(value).expanduser()
            value = str(path if path.is_absolute() else base / path)
        fixed.append((name, value))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(fixed, safe="/")))


def shown(url: str) -> str:
    """The URL as logs and errors show it: user, host and database only."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or dict(urllib.parse.parse_qsl(parts.query)).get("host", "")
    return f"postgresql://{parts.username or ''}@{host}{parts.path}"


def connect_args(url: str) -> tuple[str, dict[str, Any]]:
    """(conninfo for libpq, keyword arguments): ``password_file`` read here."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    extra: dict[str, Any] = {}
    kept = []
    for name, value in query:
        if name == _OURS:
            try:
                extra["password"] = Path(value).read_text().strip()
            except OSError as e:
                raise ArchiveError(f"archive password_file {value}: {e.strerror}") from None
        else:
            kept.append((name, value))
    scheme = "postgresql"
    conninfo = urllib.parse.urlunsplit(
        parts._replace(scheme=scheme, query=urllib.parse.urlencode(kept, safe="/"))
    )
    return conninfo, extra


def connect(url: str, *, autocommit: bool = True, connect_timeout: int = 10) -> psycopg.Connection:
    """A connection; ArchiveError (naming the server, never the password) when it fails."""
    import psycopg

    conninfo, extra = connect_args(url)
    try:
        return psycopg.connect(
            conninfo,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            application_name="netsonde",
            **extra,
        )
    except psycopg.Error as e:
        raise ArchiveError(f"cannot connect to {shown(url)}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def error_text(e: BaseException) -> str:
    """One line for a driver error, for ArchiveError messages."""
    return _first_line(e)
