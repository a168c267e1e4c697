"""The archive's REST JSON API (``/api/v1``): tests, runs, results, aggregates, and the
authenticated store remote measurement points deliver to. ``rest.py`` the routes,
``schemas.py`` the JSON shapes."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from netsonde.services.archive.rest import build_router
from netsonde.services.base import Endpoints, Host, ServiceDef

NAME = "archive"


class ArchiveService(Endpoints):
    def __init__(self, host: Host) -> None:
        self.host = host

    def routers(self) -> Sequence[APIRouter]:
        return [build_router(self.host)]


SERVICE = ServiceDef(name=NAME, serve=ArchiveService)
