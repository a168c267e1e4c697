"""The registration client's messages (PROTOCOL.md §4.15, ``Client/LS/Remote.pm``): an
LSRegisterRequest describing one service and what it serves (a perfsonar:subject/psservice:service
metadata, one nmwg:data per item), LSKeepaliveRequest and LSDeregisterRequest by key, and the
reading of a lookup service's reply (its result codes, the key it gave)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from netsonde.nmwg import build, ns

ITEMS_PER_MESSAGE = 50  # as Client/LS/Remote.pm sent them

_KEY_PARAMETER = "nmwg:metadata/nmwg:key/nmwg:parameters/nmwg:parameter[@name='lsKey']"
_NS = {"nmwg": ns.NMWG, "nmwgr": ns.NMWGR, "psservice": ns.PSSERVICE}


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    access_point: str  # the service's URL, e.g. http://host:8075/perfSONAR_PS/services/status
    type: str = "MA"
    description: str = ""


def ls_key(access_point: str) -> str:
    """The key a lookup service gives a service: md5 of its accessPoint (the v0.09 rule; v0.10
    appended type and name only for topology subjects)."""
    return hashlib.md5(access_point.encode()).hexdigest()


def _message(kind: str, ids: build.IdGen, ttl: int | None) -> etree._Element:
    message = build.element("nmwg:message", {"type": kind, "id": ids.message()})
    if ttl is not None:
        # A message-level lsTTL: the lease asked for (the LS keeps it within its own bounds).
        params = build.element("nmwg:parameters", {"id": ids.new("parameters")}, parent=message)
        build.element(
            "nmwg:parameter", {"name": "lsTTL", "units": "seconds"}, str(ttl), parent=params
        )
    return message


def _add_key(md: etree._Element, ids: build.IdGen, key: str) -> None:
    key_el = build.element("nmwg:key", {"id": ids.new("key")}, parent=md)
    params = build.element("nmwg:parameters", {"id": ids.new("parameters")}, parent=key_el)
    build.element("nmwg:parameter", {"name": "lsKey"}, key, parent=params)


def _add_service(md: etree._Element, ids: build.IdGen, service: ServiceInfo) -> None:
    subject = build.element("perfsonar:subject", {"id": ids.new("subject")}, parent=md)
    svc = build.element("psservice:service", {"id": ids.new("service")}, parent=subject)
    for tag, text in (
        ("psservice:serviceName", service.name),
        ("psservice:accessPoint", service.access_point),
        ("psservice:serviceType", service.type),
        ("psservice:serviceDescription", service.description),
    ):
        build.element(tag, text=text, parent=svc)


def register_request(
    service: ServiceInfo | None,
    items: Sequence[etree._Element],
    *,
    key: str | None = None,
    ttl: int | None = None,
) -> etree._Element:
    """An LSRegisterRequest carrying ``items`` (nmwg:metadata elements): with ``service`` and no
    key a new registration; with both a "clobber" (everything under ``key`` replaced); with a
    key only, items appended to that registration."""
    if service is None and key is None:
        raise ValueError("a registration names its service, its key, or both")
    ids = build.IdGen()
    message = _message("LSRegisterRequest", ids, ttl)
    md = build.metadata(ids)
    message.append(md)
    if service is not None:
        _add_service(md, ids, service)
    if key is not None:
        _add_key(md, ids, key)
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
    service: ServiceInfo, items: Sequence[etree._Element], *, ttl: int | None = None
) -> list[etree._Element]:
    """The items split into messages of at most ITEMS_PER_MESSAGE (at least one message), each
    naming the service (a lookup service appends to the key it already has for it). The
    registrar sends the first and then :func:`append_requests` by the key the reply gives."""
    return [register_request(service, chunk, ttl=ttl) for chunk in _chunks(items)]


def append_requests(
    key: str, items: Sequence[etree._Element], *, ttl: int | None = None
) -> list[etree._Element]:
    """``items`` appended to the registration ``key``, ITEMS_PER_MESSAGE per message."""
    return [register_request(None, c, key=key, ttl=ttl) for c in _chunks(items) if c]


def _chunks(items: Sequence[etree._Element]) -> list[Sequence[etree._Element]]:
    chunks = [items[i : i + ITEMS_PER_MESSAGE] for i in range(0, len(items), ITEMS_PER_MESSAGE)]
    return chunks or [[]]


def keyed_request(kind: str, key: str, *, ttl: int | None = None) -> etree._Element:
    """An LSKeepaliveRequest or LSDeregisterRequest (the whole service) for ``key``."""
    if kind not in ("LSKeepaliveRequest", "LSDeregisterRequest"):
        raise ValueError(f"not a keyed LS request: {kind!r}")
    ids = build.IdGen()
    message = _message(kind, ids, ttl)
    md = build.metadata(ids)
    message.append(md)
    _add_key(md, ids, key)
    message.append(build.data(ids, md.get("id", "")))
    return message


def keepalive_request(key: str, *, ttl: int | None = None) -> etree._Element:
    return keyed_request("LSKeepaliveRequest", key, ttl=ttl)


def deregister_request(key: str) -> etree._Element:
    return keyed_request("LSDeregisterRequest", key)


@dataclass(frozen=True)
class Reply:
    """What a lookup service answered: the result codes (eventTypes) of its metadata, the key
    it named, and the text of its first datum (``@value`` or content, both were sent)."""

    codes: tuple[str, ...]
    key: str | None
    text: str

    @property
    def ok(self) -> bool:
        return bool(self.codes) and all(c.startswith("success.") for c in self.codes)

    @property
    def error(self) -> str | None:
        """The first code that is not a success, or a line saying there was none at all."""
        if not self.codes:
            return "no result code in the reply"
        return next((c for c in self.codes if not c.startswith("success.")), None)

    def describe(self) -> str:
        return f"{self.error}: {self.text}" if self.text else str(self.error)


def read_reply(message: etree._Element) -> Reply:
    """A reply message (as ``nmwg.parse`` gives it: canonical prefixes) read."""
    codes = tuple(
        (e.text or "").strip() for e in message.iterfind("nmwg:metadata/nmwg:eventType", _NS)
    )
    key_el = message.find(_KEY_PARAMETER, _NS)
    key = ((key_el.text or "").strip() or None) if key_el is not None else None
    text = ""
    for tag in ("nmwg:datum", "nmwgr:datum", "psservice:datum"):
        datum = message.find(f"nmwg:data/{tag}", _NS)
        if datum is not None:
            text = (datum.get("value") or "".join(str(t) for t in datum.itertext())).strip()
            break
    return Reply(codes=codes, key=key, text=" ".join(text.split())[:500])
