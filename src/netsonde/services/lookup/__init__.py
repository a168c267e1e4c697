"""The Lookup Service: a registry of records with leases, where netsonde instances find each
other (the seed's LS; the sLS JSON records).

``records.py`` a record's shape and checks, ``registry.py`` the records and their leases
(SQLite or PostgreSQL), ``rest.py`` ``/api/v1/lookup/…``, ``nmwg.py`` the NMWG LS at
``/perfSONAR_PS/services/LS`` and ``/hLS`` (``documents.py`` maps its registrations to records
and records to XML, ``xquery.py`` runs its XQuery in a sandboxed worker process), ``feed.py``
expiry as a supervised thread (``cleanLS``), ``settings.py`` the ``[ls]`` section (off by
default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from netsonde.services.lookup.feed import ExpiryFeed
from netsonde.services.lookup.nmwg import MESSAGE_TYPES, LookupState, ls_service
from netsonde.services.lookup.registry import LookupRegistry
from netsonde.services.lookup.rest import PREFIX, lookup_router
from netsonde.services.lookup.settings import LookupSection
from netsonde.services.lookup.xquery import XQueryEngine

NAME = "ls"
ENDPOINTS = ("/perfSONAR_PS/services/LS", "/perfSONAR_PS/services/hLS")
DISABLED = "this server runs no lookup service ([ls] enabled = false)"


def section_of(sections: Mapping[str, Any]) -> LookupSection:
    found = sections.get(NAME)
    return found if isinstance(found, LookupSection) else LookupSection()


def open_registry(section: LookupSection) -> LookupRegistry:
    assert section.db is not None  # settled
    return LookupRegistry(
        section.db,
        ttl=round(section.ttl),
        max_ttl=round(section.max_ttl),
        max_records_per_registrant=section.max_records_per_registrant,
        max_record_bytes=section.max_record_bytes,
    )


class LookupService(Endpoints):
    def __init__(self, section: LookupSection) -> None:
        self.section = section
        self.registries = PerThread(lambda: open_registry(section))
        engine = XQueryEngine(section.query_timeout, section.query_memory)
        self.state = LookupState(self.registries, section.token, engine)

    def nmwg(self) -> Mapping[str, Sequence[NMWGService[Any]]]:
        service = ls_service(self.state)
        return {endpoint: [service] for endpoint in ENDPOINTS}

    def routers(self) -> Sequence[APIRouter]:
        s = self.section
        return [lookup_router(self.registries, s.token, s.max_record_bytes)]

    def lookup_data(self) -> list[etree._Element]:
        return []  # the LS does not register itself


def _off(unit: Unit, message: Message, rctx: RequestContext[None]) -> list[etree._Element]:
    raise NMWGError(codes.LS_XMLDB, DISABLED)


class LookupOff(Endpoints):
    """``[ls] enabled = false``: the lookup paths and the NMWG endpoints say so instead of a
    bare 404 or an unknown-endpoint error."""

    def nmwg(self) -> Mapping[str, Sequence[NMWGService[Any]]]:
        off = dict.fromkeys(MESSAGE_TYPES, _off)
        service = NMWGService[None](name="ls-off", handlers=off, event_types=None)
        return {endpoint: [service] for endpoint in ENDPOINTS}

    def routers(self) -> Sequence[APIRouter]:
        router = APIRouter(route_class=ApiRoute)

        @router.api_route(
            PREFIX + "{rest:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False
        )
        def off(rest: str) -> None:
            raise HTTPException(404, DISABLED)

        return [router]


def serve(host: Host) -> LookupService | LookupOff:
    section = section_of(host.sections)
    if not section.enabled or section.db is None:
        return LookupOff()
    return LookupService(section)


def feed(cfg: Config) -> ExpiryFeed | None:
    section = section_of(cfg.sections)
    if not section.enabled or section.db is None:
        return None
    return ExpiryFeed(open_registry(section), section.expire_every)


SERVICE = ServiceDef(name=NAME, serve=serve, section=LookupSection, feed=feed)
