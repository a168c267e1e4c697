"""The registrar's message: an LSRegisterRequest describing one service and what it serves
(PROTOCOL.md §4.15: a perfsonar:subject/psservice:service metadata, one nmwg:data per item)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from netsonde.nmwg import build

ITEMS_PER_MESSAGE = 50  # as Client/LS/Remote.pm sent them


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    access_point: str  # the service's URL, e.g. http://host:8075/perfSONAR_PS/services/status
    type: str = "MA"
    description: str = ""


def register_request(service: ServiceInfo, items: Sequence[etree._Element]) -> etree._Element:
    """An LSRegisterRequest for ``service`` carrying ``items`` (nmwg:metadata elements)."""
    ids = build.IdGen()
    message = build.element("nmwg:message", {"type": "LSRegisterRequest", "id": ids.message()})
    md = build.metadata(ids)
    message.append(md)
    subject = build.element("perfsonar:subject", {"id": ids.new("subject")}, parent=md)
    svc = build.element("psservice:service", {"id": ids.new("service")}, parent=subject)
    for tag, text in (
        ("psservice:serviceName", service.name),
        ("psservice:accessPoint", service.access_point),
        ("psservice:serviceType", service.type),
        ("psservice:serviceDescription", service.description),
    ):
        build.element(tag, text=text, parent=svc)
    for item in items:
        data = build.data(ids, md.get("id", ""))
        data.append(item)
        message.append(data)
    if not items:
        # A lookup service refuses a registration without data (data_trigger_missing): a
        # service with nothing to list sends one empty data, as the PingER MP did.
        message.append(build.data(ids, md.get("id", "")))
    return message


def register_requests(
    service: ServiceInfo, items: Sequence[etree._Element]
) -> list[etree._Element]:
    """The items split into messages of at most ITEMS_PER_MESSAGE (at least one message)."""
    chunks = [items[i : i + ITEMS_PER_MESSAGE] for i in range(0, len(items), ITEMS_PER_MESSAGE)]
    return [register_request(service, chunk) for chunk in chunks or [[]]]
