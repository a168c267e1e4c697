"""The service contract: what a service package declares, and what it is given.

A service (the archive's REST API, the PingER MA, the Status MA, …) is one package under
``services/`` exporting one :class:`ServiceDef`; ``services/__init__.py`` lists them in one
table, from which the HTTP app (``api/app.py``) and the daemon (``daemon/service.py``) are
derived. A service never imports another service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter
from lxml import etree

from netsonde.archive import Archive, PerThread
from netsonde.config import Config, Section
from netsonde.limits import RequestLimits
from netsonde.model import Run, TestSpec
from netsonde.mp.status import FeedStats, StatusSource
from netsonde.nmwg.service import NMWGService
from netsonde.restartable import Restartable


@dataclass(frozen=True)
class Host:
    """What every service is given by the process that serves HTTP: the daemon, an API worker
    process, a test or a benchmark."""

    archive: PerThread[Archive]
    name: str = ""  # this measurement point's name: the PingER "src" of local tests
    token: str | None = None  # store requests need it; None disables them
    limits: RequestLimits = field(default_factory=RequestLimits)
    # The daemon's live status when it runs alongside; None when this process serves an
    # archive alone.
    status: StatusSource | None = None
    # True in an API worker process: small queries may run on its event loop (nothing else
    # shares it); False inside the daemon, whose loop also runs the scheduler.
    inline_queries: bool = False
    sections: Mapping[str, Section] = field(default_factory=dict)  # settled, by service name


class Served(Protocol):
    """A service as one process serves it: its endpoints, built once per process."""

    def nmwg(self) -> Mapping[str, Sequence[NMWGService[Any]]]:
        """NMWG services by endpoint path (Echo is added to every endpoint)."""
        ...

    def routers(self) -> Sequence[APIRouter]:
        """REST routers, mounted under /api/v1."""
        ...

    def lookup_data(self) -> list[etree._Element]:
        """What it registers with a lookup service: one nmwg:metadata per thing it serves."""
        ...


class Feed(Protocol):
    """Runs a service consumes in the daemon (the Status MA's link states from snmp_link runs).
    ``submit`` is called on the event loop and must be quick; ``worker`` is a supervised thread
    (see ``daemon/supervisor.py``) that does the slow part."""

    @property
    def worker(self) -> Restartable: ...

    def submit(self, run: Run, spec: TestSpec | None) -> int: ...

    @property
    def stats(self) -> FeedStats: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServiceDef:
    """One service: its name (also its config section's name), its section model, and how to
    serve it and feed it. ``serve`` and ``feed`` return None when the config disables it."""

    name: str
    serve: Callable[[Host], Served | None]
    section: type[Section] | None = None
    feed: Callable[[Config], Feed | None] | None = None


class Endpoints:
    """A base for ``Served`` with nothing: a service overrides what it offers."""

    def nmwg(self) -> Mapping[str, Sequence[NMWGService[Any]]]:
        return {}

    def routers(self) -> Sequence[APIRouter]:
        return ()

    def lookup_data(self) -> list[etree._Element]:
        return []
