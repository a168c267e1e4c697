"""The Lookup Service over NMWG, as perfSONAR-PS spoke it (PROTOCOL.md §4.15): ``ls_service``.

Messages (every unit is one data trigger against its metadata, as in ``LS.pm``):

* ``LSRegisterRequest`` — no key: a new registration of the metadata's ``psservice:service``
  under ``md5_hex(accessPoint)`` (the same service again refreshes it and adds its items); a
  key and a service: the seed's "clobber" (everything of the key removed, the service
  registered anew); a key only: "append" (items added, the lease renewed). Every element
  child of the data is one item. Answer: the ``lsKey``, ``success.ls.register`` and
  ``<nmwg:datum value="[N] Data elements have been registered with key [KEY]"/>`` ("updated"
  for an append), N counting the items of the data trigger. An item registered again is the
  same item (an upsert), where the seed refused the duplicate and counted it out.
* ``LSKeepaliveRequest`` — renews every record of the key, once per message.
* ``LSDeregisterRequest`` — empty data: the whole registration; items in the data: those
  items only (compared without ids and whitespace). The seed reported the count of the last
  item only; this counts all.
* ``LSQueryRequest``/``LSLookupRequest`` — the ``xquery:subject`` run by the sandboxed XQuery
  engine (``xquery.py``) over the live registrations; the answer is ``psservice:datum`` with
  the result escaped as text, or as XML with ``lsOutput`` = ``native``.
* ``LSKeyRequest`` — the key of a registered service.

Registrations, keepalives and deregistrations need the ``[ls]`` token (``Authorization:
Bearer`` or the message parameter ``authToken``, ``nmwg.service.require_store_token``);
queries and key requests are open. The lease: message parameter ``lsTTL`` (``@units``
seconds|minutes|hours, seconds when absent), capped at ``[ls] max_ttl``; ``[ls] ttl`` when
absent or not a positive number (the seed replaced a value outside [ttl/2, ttl] by ttl).

Not reproduced: the seed wrote message parameters before ``<nmwg:message>`` (two children in
the SOAP body); a message without any data is answered ``error.common.no_metadata_data_pair``
(an ErrorResponse, as every service here) where the seed said
``error.ls.register.data_trigger_missing``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, replace

from lxml import etree

from netsonde.archive import PerThread
from netsonde.nmwg import build, codes, ns
from netsonde.nmwg.codes import LimitExceeded, NMWGError
from netsonde.nmwg.ls import ls_key
from netsonde.nmwg.message import Message, Unit, local
from netsonde.nmwg.parse import XMLRefused, parameter_value, parse_xml
from netsonde.nmwg.service import NMWGService, RequestContext, require_store_token
from netsonde.services.lookup.documents import (
    item_hash,
    item_record,
    item_xml,
    service_record,
    service_values,
    service_xml,
)
from netsonde.services.lookup.records import RecordError
from netsonde.services.lookup.registry import LookupRegistry, Member, RegistryError
from netsonde.services.lookup.xquery import XQueryEngine, XQueryError

QUERY_EVENT_TYPES = frozenset(
    {
        "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/lookup/xquery/1.0",
        "service.lookup.xquery",
    }
)
# The 2009 hLS took a registration without eventType or with this one; the gLS ones (summary,
# synchronization) it refused with error.hls.register, as it refused summary subjects.
REGISTRATION_SERVICE = (
    "http://ogf.org/ns/nmwg/tools/org/perfsonar/service/lookup/registration/service/2.0"
)
NO_ACCESS_POINT = "Cannont register data, accessPoint or address was not supplied."
TTL_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600}
_SERVICE_PATH = f"{{{ns.PERFSONAR}}}subject/{{{ns.PSSERVICE}}}service"
_KEY = ns.clark("nmwg:key")


@dataclass(frozen=True)
class LookupState:
    registries: PerThread[LookupRegistry]
    token: str | None  # registrations need it
    xquery: XQueryEngine


class _Exchange:
    """What one message already did: the keys it renewed (the seed's ``messageKeys``), the
    keys it clobbered, the answer of each data trigger it registered."""

    def __init__(self) -> None:
        self.renewed: set[str] = set()
        self.clobbered: set[str] = set()
        self.registered: dict[etree._Element, tuple[str, int, str]] = {}


_EXCHANGES: weakref.WeakKeyDictionary[RequestContext, _Exchange] = weakref.WeakKeyDictionary()


def _exchange(rctx: RequestContext[LookupState]) -> _Exchange:
    found = _EXCHANGES.get(rctx)
    if found is None:
        found = _EXCHANGES[rctx] = _Exchange()
    return found


def _registry(rctx: RequestContext[LookupState]) -> LookupRegistry:
    try:
        return rctx.state.registries.get()
    except RegistryError as e:
        raise NMWGError(codes.LS_XMLDB, f"Database could not be opened: {e}") from None


def requested_ttl(message: Message) -> float | None:
    """Seconds the message's ``lsTTL`` asks for; None when absent or not usable."""
    for p in message.parameter_elements:
        if p.get("name") != "lsTTL":
            continue
        unit = TTL_UNITS.get((p.get("units") or "seconds").strip().lower())
        try:
            value = float(parameter_value(p))
        except ValueError:
            return None
        if unit is None or not (value > 0 and math.isfinite(value * unit)):
            return None
        return value * unit
    return None


def _key(unit: Unit) -> str | None:
    return unit.key_parameters.get("lsKey") or None


def _not_registered(key: str, code: str) -> NMWGError:
    return NMWGError(code, f'Sent key "{key}" was not registered.')


def _items(data: etree._Element) -> list[etree._Element]:
    return list(data.iterchildren(etree.Element))


def _members(items: Sequence[etree._Element], access_point: str, key: str) -> list[Member]:
    out = []
    for item in items:
        h = item_hash(item)
        record = item_record(item, access_point, key)
        out.append(Member(record, item_xml(item, key, h), stable_key=f"ls:{key}/{h}"))
    return out


def _service_member(md: etree._Element, service: etree._Element, key: str) -> Member:
    stored = deepcopy(md)
    for k in stored.findall(_KEY):
        stored.remove(k)
    return Member(service_record(service, key), service_xml(stored, key))


def _access_point(service: etree._Element) -> str:
    access_point = service_values(service).get("service-locator")
    if not access_point:
        raise NMWGError(codes.LS_REGISTER_MISSING_VALUE, NO_ACCESS_POINT)
    return access_point


def _key_element(parent: etree._Element, rctx: RequestContext[LookupState], key: str) -> None:
    k = build.element("nmwg:key", {"id": rctx.ids.new("key")}, parent=parent)
    params = build.element("nmwg:parameters", {"id": rctx.ids.new("param")}, parent=k)
    build.element("nmwg:parameter", {"name": "lsKey"}, text=key, parent=params)


def register(
    unit: Unit, message: Message, rctx: RequestContext[LookupState]
) -> list[etree._Element]:
    require_store_token(rctx.state.token, message, rctx)
    exchange = _exchange(rctx)
    if unit.data not in exchange.registered:
        _register_batch(unit, message, rctx, exchange)
    key, n, verb = exchange.registered[unit.data]
    md = build.metadata(rctx.ids, ref=unit.ref)
    _key_element(md, rctx, key)
    build.element("nmwg:eventType", text=codes.SUCCESS_LS_REGISTER, parent=md)
    data = build.data(rctx.ids, md.get("id", ""))
    text = f"[{n}] Data elements have been {verb} with key [{key}]"
    build.element("nmwg:datum", {"value": text}, parent=data)
    return [md, data]


def _register_batch(
    unit: Unit, message: Message, rctx: RequestContext[LookupState], exchange: _Exchange
) -> None:
    """Register the items of every data trigger naming the unit's metadata, in one
    transaction (a registrar sends one trigger per item, all naming one metadata), and note
    each trigger's answer in ``exchange``. A failure fails this unit; the others then try on
    their own and fail alike, or succeed where only this unit's items were refused."""
    if unit.event_types and unit.event_types[0] != REGISTRATION_SERVICE:
        raise NMWGError(codes.HLS_REGISTER, "hLS servers can only accept service registration.")
    triggers = [
        d
        for d in message.data
        if d is unit.data or (d.get("metadataIdRef") == unit.ref and d not in exchange.registered)
    ]
    items = {d: _items(d) for d in triggers}
    summary = f"{{{ns.SUMMARY}}}subject"
    for its in items.values():
        if any(next(i.iter(summary), None) is not None for i in its):
            if len(triggers) > 1:
                return _register_alone(unit, message, rctx, exchange)
            raise NMWGError(codes.HLS_REGISTER, "hLS servers can not accept summary registration.")
    everything = [i for d in triggers for i in items[d]]
    registry = _registry(rctx)
    ttl = requested_ttl(message)
    sent_key = _key(unit)
    service = unit.subject.find(_SERVICE_PATH)
    try:
        if service is not None:
            access_point = _access_point(service)
            key = ls_key(access_point)
            # A key clobbered earlier in this message is not clobbered again (that would
            # drop what the earlier triggers registered under it).
            replaces = None if sent_key in exchange.clobbered else sent_key
            n = registry.register_group(
                key,
                _members(everything, access_point, key),
                service=_service_member(unit.subject, service, key),
                replaces=replaces,
                registrant=f"ls:{key}",
                ttl=ttl,
            )
            if replaces is not None and n is not None:
                exchange.clobbered.add(replaces)
            verb = "registered"
        elif sent_key is not None:
            key = sent_key
            found = registry.group_service(key)
            locators = found.values.get("service-locator", ()) if found else ()
            access_point = locators[0] if locators else ""
            n = registry.register_group(
                key, _members(everything, access_point, key), registrant=f"ls:{key}", ttl=ttl
            )
            verb = "updated"
        else:
            raise NMWGError(codes.LS_REGISTER_MISSING_VALUE, NO_ACCESS_POINT)
    except (RecordError, RegistryError) as e:
        if len(triggers) > 1:
            return _register_alone(unit, message, rctx, exchange)
        raise NMWGError(codes.LS_REGISTER_REFUSED, str(e)) from None
    if n is None:
        raise _not_registered(sent_key or "", codes.LS_REGISTER_KEY_NOT_FOUND)
    exchange.renewed.add(key)
    for d in triggers:
        exchange.registered[d] = (key, len(items[d]), verb)
    return None


def _register_alone(
    unit: Unit, message: Message, rctx: RequestContext[LookupState], exchange: _Exchange
) -> None:
    """The unit's items alone: a refused item fails its own trigger only."""
    alone = replace(message, data=(unit.data,))
    _register_batch(unit, alone, rctx, exchange)


def keepalive(
    unit: Unit, message: Message, rctx: RequestContext[LookupState]
) -> list[etree._Element]:
    require_store_token(rctx.state.token, message, rctx)
    key = _key(unit)
    if key is None:
        raise NMWGError(codes.LS_KEEPALIVE_KEY_NOT_FOUND, "Key not found in message.")
    done = _exchange(rctx).renewed
    if key in done:
        text = f'Key "{key}" was already updated in this exchange, skipping.'
    else:
        if not _registry(rctx).renew_group(key, requested_ttl(message)):
            raise _not_registered(key, codes.LS_KEEPALIVE_KEY_NOT_FOUND)
        done.add(key)
        text = f'Key "{key}" was updated.'
    return build.result_pair(rctx.ids, codes.SUCCESS_LS_KEEPALIVE, text, unit.ref)


def deregister(
    unit: Unit, message: Message, rctx: RequestContext[LookupState]
) -> list[etree._Element]:
    require_store_token(rctx.state.token, message, rctx)
    key = _key(unit)
    if key is None:
        raise NMWGError(codes.LS_DEREGISTER_KEY_NOT_FOUND, "Key not found in message.")
    items = _items(unit.data)
    wanted = [f"ls:{key}/{item_hash(i)}" for i in items] if items else None
    removed = _registry(rctx).delete_group(key, wanted)
    if removed is None:
        raise _not_registered(key, codes.LS_DEREGISTER_KEY_NOT_FOUND)
    n = removed[0]
    if items:
        text = f'Removed [{n}] data elements for key "{key}".'
    else:
        text = f'Removed [{n}] data elements and service info for key "{key}".'
        _exchange(rctx).renewed.discard(key)
    return build.result_pair(rctx.ids, codes.SUCCESS_LS_DEREGISTER, text, unit.ref)


def _query_text(md: etree._Element) -> str | None:
    for child in md.iterchildren(f"{{{ns.XQUERY}}}subject"):
        text = "".join(str(t) for t in child.itertext()).strip()
        if text:
            return text
    return None


def _output_native(md: etree._Element) -> bool:
    """``lsOutput`` = ``native`` in ``xquery:parameters``, else in ``nmwg:parameters``."""
    blocks = [b for b in md.iterchildren(etree.Element) if local(b) == "parameters"]
    blocks.sort(key=lambda b: b.tag != f"{{{ns.XQUERY}}}parameters")
    for block in blocks:
        for p in block.iterchildren(etree.Element):
            if local(p) == "parameter" and p.get("name") == "lsOutput":
                return parameter_value(p).strip() == "native"
    return False


def query(unit: Unit, message: Message, rctx: RequestContext[LookupState]) -> list[etree._Element]:
    md = unit.subject
    if not QUERY_EVENT_TYPES.intersection(unit.event_types):
        raise NMWGError(codes.LS_QUERY_EVENT_TYPE, "Given query type is missing or not supported.")
    text = _query_text(md)
    if text is None:
        raise NMWGError(codes.LS_QUERY_QUERY_NOT_FOUND, "Query not found in sent metadata.")
    try:
        result = rctx.state.xquery.run(
            _registry(rctx),
            text,
            deadline=rctx.deadline,
            max_bytes=rctx.limits.max_response_bytes,
        )
    except XQueryError as e:
        raise NMWGError(e.code, e.text) from None
    rctx.check()
    if not result:
        raise NMWGError(codes.LS_QUERY_EMPTY_RESULTS, "Nothing returned for search.")
    out_md = build.metadata(rctx.ids, ref=unit.ref, event_type=codes.SUCCESS_LS_QUERY)
    data = build.data(rctx.ids, out_md.get("id", ""))
    datum = build.element("psservice:datum", parent=data)
    if _output_native(md):
        try:
            wrapped = parse_xml(
                f'<d xmlns:psservice="{ns.PSSERVICE}">{result}</d>'.encode(),
                limits=rctx.limits,
                check=rctx.check,
            )
        except LimitExceeded as e:  # more elements than a request may carry
            raise NMWGError(codes.LS_QUERY_TOO_LARGE, e.text) from None
        except XMLRefused:
            datum.text = build.xml_text(result)  # atomic values that are not XML: as text
        else:
            datum.text = wrapped.text
            datum.extend(wrapped)
    else:
        datum.text = build.xml_text(result)
    return [out_md, data]


def key_request(
    unit: Unit, message: Message, rctx: RequestContext[LookupState]
) -> list[etree._Element]:
    service = unit.subject.find(_SERVICE_PATH)
    if service is None:
        raise NMWGError(
            codes.LS_KEY_SERVICE_MISSING, "Cannont find data, service element was not found."
        )
    access_point = service_values(service).get("service-locator")
    key = ls_key(access_point) if access_point else None
    if key is None or not _registry(rctx).group_live(key):
        raise NMWGError(codes.LS_KEY_NOT_REGISTERED, "Service was not registered in this LS.")
    md = build.metadata(rctx.ids, ref=unit.ref)
    copy = deepcopy(service)
    copy.tail = None
    for el in copy.iter(etree.Element):  # the client's ids: they may repeat across units
        if "id" in el.attrib:
            del el.attrib["id"]
    md.append(copy)
    data = build.data(rctx.ids, md.get("id", ""))
    _key_element(data, rctx, key)
    return [md, data]


HANDLERS = {
    "LSRegisterRequest": register,
    "LSKeepaliveRequest": keepalive,
    "LSDeregisterRequest": deregister,
    "LSQueryRequest": query,
    "LSLookupRequest": query,
    "LSKeyRequest": key_request,
}
MESSAGE_TYPES = tuple(HANDLERS)


def ls_service(state: LookupState) -> NMWGService[LookupState]:
    return NMWGService(
        name="lookup-service",
        state=state,
        handlers=HANDLERS,
        event_types=None,  # every unit of these messages, eventType or not (LS.pm)
        output_metadata=False,  # the seed's LS answered with its own metadata only
    )
