"""The PingER MA (the seed's perfSONAR-PS PingER service) over NMWG: MetadataKey, SetupData and
MeasurementArchiveStore requests on the archive's ping tests (PROTOCOL.md §4.12–4.14).

``views.py`` the PingER view of the archive (metadata, datums, consolidation), ``ma.py`` the
NMWG handlers; the wire format they speak is ``netsonde.nmwg.pinger`` (the spool's NMWG sender
speaks it too). The MP endpoint answers Echo only, as the original did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree

from netsonde.nmwg.pinger import MA_PATH
from netsonde.nmwg.service import NMWGService
from netsonde.services.base import Endpoints, Host, ServiceDef
from netsonde.services.pinger.ma import PingerState, lookup_data, pinger_ma

NAME = "pinger"
MP_PATH = "/perfSONAR_PS/services/pinger/mp"


class PingerService(Endpoints):
    def __init__(self, state: PingerState) -> None:
        self.state = state

    def nmwg(self) -> Mapping[str, Sequence[NMWGService[Any]]]:
        return {MA_PATH: [pinger_ma(self.state)], MP_PATH: []}

    def lookup_data(self) -> list[etree._Element]:
        return lookup_data(self.state)


def serve(host: Host) -> PingerService:
    return PingerService(PingerState(archive=host.archive, name=host.name, token=host.token))


SERVICE = ServiceDef(name=NAME, serve=serve)

__all__ = ["MA_PATH", "MP_PATH", "NAME", "SERVICE", "PingerService", "serve"]
