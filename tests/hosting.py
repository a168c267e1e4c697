"""Building what services are given (a Host, a service's state) for tests: one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from netsonde.api.app import create_app
from netsonde.archive import PerThread, connections
from netsonde.limits import RequestLimits
from netsonde.services.base import Host
from netsonde.services.lookup.settings import LookupSection
from netsonde.services.status.nmwg import StatusState
from netsonde.services.status.store import LinkStatusStore


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def host(
    archive: Path | str,
    *,
    request_timeout: float = 30.0,
    max_body_bytes: int = 10 * 1024 * 1024,
    **kw: Any,
) -> Host:
    """A Host on the archive at ``archive``, an archive URL or a SQLite file's path (other
    Host fields by keyword)."""
    return Host(
        archive=connections(archive if isinstance(archive, str) else sqlite_url(archive)),
        limits=RequestLimits(request_timeout, max_body_bytes),
        **kw,
    )


def status_store(path: str | Path) -> PerThread[LinkStatusStore]:
    """Per-thread link status stores at ``path`` (a SQLite file or a PostgreSQL URL)."""
    return PerThread(lambda: LinkStatusStore(path))


def status_state(path: str | Path, **kw: Any) -> StatusState:
    return StatusState(store=status_store(path), **kw)


def lookup_client(tmp_path: Path, token: str, **section: Any) -> TestClient:
    """The HTTP app in process with ``[ls]`` on (its registry in ``tmp_path``, or at ``db``)."""
    section.setdefault("db", str(tmp_path / "lookup.sqlite"))
    ls = LookupSection(enabled=True, token=token, **section)
    return TestClient(create_app(host(tmp_path / "a.sqlite", sections={"ls": ls})))
