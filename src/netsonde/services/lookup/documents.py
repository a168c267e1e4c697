"""One registry, two views: an NMWG registration as lookup records, a record as the XML the
XQuery sees (PROTOCOL.md §4.15).

An NMWG registration of a service (``psservice:service`` with an ``accessPoint``) and its data
items becomes, under one lease key ``md5_hex(accessPoint)`` (the seed's ``lsKey``):

* a ``service`` record: ``service-locator`` = accessPoint, ``service-name``, ``service-type``,
  ``service-description``, ``ls-key``; its XML is the registered metadata with ``id`` = the key,
  as the seed stored it;
* one ``psmetadata`` record per item: ``psmetadata-ma-locator`` = accessPoint, the
  ``src``/``dst`` addresses, eventTypes and tool name the item names, ``ls-key``; its XML is
  ``<nmwg:data id="KEY/HASH" metadataIdRef="KEY">`` around the item as sent.

A record registered as JSON gets an XML rendering instead (:func:`render`): a service as the
seed's service metadata, a psmetadata as an item, any other type as a ``netsonde:record``.
The XQuery sees one document per lease key (:func:`store_document`): ``<nmwg:store
type="LSStore">`` holding the service metadata, then its items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from copy import deepcopy

from lxml import etree

from netsonde.nmwg import ns
from netsonde.nmwg.ls import ls_key
from netsonde.nmwg.message import local
from netsonde.nmwg.parse import event_type, parameter_value
from netsonde.services.lookup.records import MAX_VALUE_CHARS, MAX_VALUES, RecordIn, record_in

RECORD_NS = "http://netsonde.org/ns/lookup/record/1.0/"  # a JSON record's XML rendering
LS_KEY = "ls-key"  # the value every record of an NMWG registration carries
TOOL_PARAMETERS = ("toolName", "tool")
_SERVICE_FIELDS = (
    ("serviceName", "service-name"),
    ("accessPoint", "service-locator"),
    ("serviceType", "service-type"),
    ("serviceDescription", "service-description"),
)
_ITEM_FIELDS = (
    ("src", "psmetadata-src-address"),
    ("dst", "psmetadata-dst-address"),
    ("event", "psmetadata-event-types"),
    ("tool", "psmetadata-tool-name"),
)
_EVENT_TYPE = f"{{{ns.NMWG}}}eventType"
_STORE_HEAD = f'<nmwg:store xmlns:nmwg="{ns.NMWG}" type="LSStore">'


def item_hash(item: etree._Element) -> str:
    """What tells two items apart: md5 of the item's canonical XML without its ``id``
    (the seed hashed the text as sent, so a new id made a new item)."""
    copy = deepcopy(item)
    copy.tail = None
    for el in copy.iter(etree.Element):
        if "id" in el.attrib:
            del el.attrib["id"]
    return hashlib.md5(etree.tostring(copy, method="c14n")).hexdigest()


def _text(el: etree._Element | None) -> str:
    return " ".join((el.text or "").split()) if el is not None else ""


def service_values(service: etree._Element) -> dict[str, str]:
    """``psservice:service`` → record keys (``service-locator`` …) with their non-empty text."""
    out = {}
    for name, key in _SERVICE_FIELDS:
        value = _text(service.find(f"{{{ns.PSSERVICE}}}{name}"))
        if value:
            out[key] = value
    return out


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    kept = dict.fromkeys(v[:MAX_VALUE_CHARS] for v in values if v)
    return tuple(kept)[:MAX_VALUES]


def item_values(item: etree._Element, access_point: str, key: str) -> dict[str, tuple[str, ...]]:
    """The psmetadata keys an item says something about: ``*:src``/``*:dst`` anywhere in it
    (``@value`` or text: endPointPair, PingER), its eventTypes and tool parameters. One walk
    of the item (a registration of 20 items walked it three times)."""
    found: dict[str, list[str]] = {"src": [], "dst": [], "event": [], "tool": []}
    for el in item.iter(etree.Element):
        name = local(el)
        if name in ("src", "dst"):
            found[name].append((el.get("value") or _text(el)).strip())
        elif el.tag == _EVENT_TYPE:
            found["event"].append(event_type(el))
        elif name == "parameter" and el.get("name") in TOOL_PARAMETERS:
            found["tool"].append(parameter_value(el))
    values: dict[str, tuple[str, ...]] = {
        "psmetadata-ma-locator": (access_point,),
        LS_KEY: (key,),
    }
    for name, field in _ITEM_FIELDS:
        if kept := _distinct(found[name]):
            values[field] = kept
    return values


def service_record(service: etree._Element, key: str) -> RecordIn:
    values: dict[str, object] = {k: [v] for k, v in service_values(service).items()}
    values[LS_KEY] = [key]
    return record_in("service", values)


def item_record(item: etree._Element, access_point: str, key: str) -> RecordIn:
    values = item_values(item, access_point, key)
    return record_in("psmetadata", {k: list(v) for k, v in values.items()})


def _tostring(el: etree._Element) -> str:
    return etree.tostring(el, encoding="unicode", with_tail=False)


def service_xml(metadata: etree._Element, key: str) -> str:
    """The registered metadata as the seed stored it: a copy with ``id`` = the key."""
    copy = deepcopy(metadata)
    copy.tail = None
    copy.set("id", key)
    if "metadataIdRef" in copy.attrib:
        del copy.attrib["metadataIdRef"]
    return _tostring(copy)


def item_xml(item: etree._Element, key: str, hash_: str) -> str:
    data = etree.Element(
        f"{{{ns.NMWG}}}data",
        {"id": f"{key}/{hash_}", "metadataIdRef": key},
        nsmap={"nmwg": ns.NMWG},
    )
    copy = deepcopy(item)
    copy.tail = None
    data.append(copy)
    return _tostring(data)


# ---- JSON records as XML -------------------------------------------------------------------


def _first(values: Mapping[str, Sequence[str]], key: str) -> str:
    found = values.get(key) or ()
    return found[0] if found else ""


def _service_render(values: Mapping[str, Sequence[str]]) -> str:
    locator = _first(values, "service-locator")
    md = etree.Element(f"{{{ns.NMWG}}}metadata", {"id": ls_key(locator)}, nsmap={"nmwg": ns.NMWG})
    subject = etree.SubElement(md, f"{{{ns.PERFSONAR}}}subject", nsmap={"perfsonar": ns.PERFSONAR})
    service = etree.SubElement(
        subject, f"{{{ns.PSSERVICE}}}service", nsmap={"psservice": ns.PSSERVICE}
    )
    for name, key in _SERVICE_FIELDS:
        if value := _first(values, key):
            etree.SubElement(service, f"{{{ns.PSSERVICE}}}{name}").text = value
    return _tostring(md)


def _psmetadata_render(values: Mapping[str, Sequence[str]], uri: str) -> str:
    key = ls_key(_first(values, "psmetadata-ma-locator"))
    nsmap = {"nmwg": ns.NMWG, "nmwgt": ns.NMWGT}
    data = etree.Element(
        f"{{{ns.NMWG}}}data", {"id": uri, "metadataIdRef": key}, nsmap={"nmwg": ns.NMWG}
    )
    md = etree.SubElement(data, f"{{{ns.NMWG}}}metadata", {"id": uri}, nsmap=nsmap)
    subject = etree.SubElement(md, f"{{{ns.NMWG}}}subject")
    pairs = zip(
        values.get("psmetadata-src-address") or ("",),
        values.get("psmetadata-dst-address") or ("",),
        strict=False,
    )
    for src, dst in pairs:
        pair = etree.SubElement(subject, f"{{{ns.NMWGT}}}endPointPair")
        if src:
            etree.SubElement(pair, f"{{{ns.NMWGT}}}src", {"value": src})
        if dst:
            etree.SubElement(pair, f"{{{ns.NMWGT}}}dst", {"value": dst})
    for e in values.get("psmetadata-event-types", ()):
        etree.SubElement(md, f"{{{ns.NMWG}}}eventType").text = e
    tools = values.get("psmetadata-tool-name", ())
    if tools:
        params = etree.SubElement(md, f"{{{ns.NMWG}}}parameters")
        for tool in tools:
            etree.SubElement(params, f"{{{ns.NMWG}}}parameter", {"name": "toolName"}).text = tool
    return _tostring(data)


def _generic_render(type_: str, values: Mapping[str, Sequence[str]], uri: str) -> str:
    record = etree.Element(
        f"{{{RECORD_NS}}}record", {"type": type_, "uri": uri}, nsmap={"netsonde": RECORD_NS}
    )
    for key, vs in values.items():
        for v in vs:
            etree.SubElement(record, f"{{{RECORD_NS}}}value", {"name": key}).text = v
    return _tostring(record)


def render(type_: str, values: Mapping[str, Sequence[str]], uri: str) -> str:
    """A record registered as JSON, as the XQuery sees it."""
    if type_ == "service" and _first(values, "service-locator"):
        return _service_render(values)
    if type_ == "psmetadata" and _first(values, "psmetadata-ma-locator"):
        return _psmetadata_render(values, uri)
    return _generic_render(type_, values, uri)


def store_document(parts: Iterable[str]) -> str:
    """One document of the collection: the seed's ``LSStore`` wrapper around ``parts``."""
    return _STORE_HEAD + "".join(parts) + "</nmwg:store>"
