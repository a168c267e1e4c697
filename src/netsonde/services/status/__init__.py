"""The Status MA: layer-2 link state kept as time ranges (the seed's Status MA).

``store.py`` the ranges (SQLite or PostgreSQL), ``feed.py`` snmp_link runs → ranges,
``nmwg.py`` the NMWG service (PROTOCOL.md §4.2–4.11), ``rest.py`` ``/api/v1/links``,
``definitions.py`` the E2EMon link definitions file, ``settings.py`` the ``[status]`` section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from lxml import etree
from starlette.exceptions import HTTPException

from netsonde.archive import PerThread
from netsonde.config import Config
from netsonde.http.rest import ApiRoute
from netsonde.nmwg import codes
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import Message, Unit
from netsonde.nmwg.service import NMWGService, RequestContext
from netsonde.services.base import Endpoints, Host, ServiceDef
from netsonde.services.status.feed import StatusFeed
from netsonde.services.status.nmwg import MESSAGE_TYPES, StatusState, lookup_data, status_ma
from netsonde.services.status.rest import links_router
from netsonde.services.status.settings import StatusSection
from netsonde.services.status.store import LinkStatusStore

NAME = "status"
ENDPOINT = "/perfSONAR_PS/services/status"
DISABLED = "this server keeps no link states ([status] enabled = false)"


def section_of(sections: Mapping[str, Any]) -> StatusSection:
    found = sections.get(NAME)
    return found if isinstance(found, StatusSection) else StatusSection()


class StatusService(Endpoints):
    def __init__(self, state: StatusState) -> None:
        self.state = state

    def nmwg(self) -> Mapping[str, Sequence[NMWGService[Any]]]:
        return {ENDPOINT: [status_ma(self.state)]}

    def routers(self) -> Sequence[APIRouter]:
        return [links_router(self.state.store)]

    def lookup_data(self) -> list[etree._Element]:
        return lookup_data(self.state)


def _off(unit: Unit, message: Message, rctx: RequestContext[None]) -> list[etree._Element]:
    raise NMWGError(codes.STORAGE_OPEN, DISABLED)


class StatusOff(Endpoints):
    """``[status] enabled = false``: the link paths and the endpoint say so instead of a bare
    404 or an unknown-endpoint error."""

    def nmwg(self) -> Mapping[str, Sequence[NMWGService[Any]]]:
        off = dict.fromkeys(MESSAGE_TYPES, _off)
        return {ENDPOINT: [NMWGService(name="status-off", handlers=off, event_types=None)]}

    def routers(self) -> Sequence[APIRouter]:
        router = APIRouter(route_class=ApiRoute)

        @router.api_route("/links{rest:path}", methods=["GET"], include_in_schema=False)
        def off(rest: str) -> None:
            raise HTTPException(404, DISABLED)

        return [router]


def serve(host: Host) -> StatusService | StatusOff:
    section = section_of(host.sections)
    if not section.enabled or section.db is None:
        return StatusOff()
    db = section.db
    defs = section.e2emon_definitions
    state = StatusState(
        store=PerThread(lambda: LinkStatusStore(db)),
        token=host.token,
        definitions=Path(defs) if defs else None,
        max_recent_age=section.max_recent_age,
    )
    return StatusService(state)


def feed(cfg: Config) -> StatusFeed | None:
    section = section_of(cfg.sections)
    if not section.enabled or section.db is None:
        return None
    return StatusFeed(LinkStatusStore(section.db))


SERVICE = ServiceDef(name=NAME, serve=serve, section=StatusSection, feed=feed)
