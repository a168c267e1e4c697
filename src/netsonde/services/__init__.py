"""The services table: every service netsonde serves, in the order their routes are mounted.
The HTTP app and the daemon are derived from it; adding a service is one package and one line.
"""

from __future__ import annotations

from netsonde.config import Section
from netsonde.services import archive, lookup, pinger, status
from netsonde.services.base import ServiceDef

SERVICES: tuple[ServiceDef, ...] = (
    archive.SERVICE,
    pinger.SERVICE,
    status.SERVICE,
    lookup.SERVICE,
)

SECTIONS: dict[str, type[Section]] = {s.name: s.section for s in SERVICES if s.section}
