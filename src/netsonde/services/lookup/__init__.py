"""The Lookup Service: a registry of records with leases, where netsonde instances find each
other (the seed's LS; the sLS JSON records).

``records.py`` a record's shape and checks, ``registry.py`` the records and their leases
(SQLite), ``rest.py`` ``/api/v1/lookup/…``, ``feed.py`` expiry as a supervised thread
(``cleanLS``), ``settings.py`` the ``[ls]`` section (off by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter
from starlette.exceptions import HTTPException

from netsonde.archive import PerThread
from netsonde.config import Config
from netsonde.http.rest import ApiRoute
from netsonde.services.base import Endpoints, Host, ServiceDef
from netsonde.services.lookup.feed import ExpiryFeed
from netsonde.services.lookup.registry import LookupRegistry
from netsonde.services.lookup.rest import PREFIX, lookup_router
from netsonde.services.lookup.settings import LookupSection

NAME = "ls"
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

    def routers(self) -> Sequence[APIRouter]:
        s = self.section
        return [lookup_router(self.registries, s.token, s.max_record_bytes)]


class LookupOff(Endpoints):
    """``[ls] enabled = false``: the lookup paths say so instead of a bare 404."""

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
