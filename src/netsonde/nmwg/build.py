"""Building NMWG responses: canonical prefixes, ids unique per response, the fixed envelope.

Every element is created under its canonical prefix (``element("pinger:datum", ...)``), so a
response reads ``nmwg:``/``nmwgr:``/``select:``/``pinger:`` whatever the request used. Text and
attribute values are escaped by lxml; characters XML 1.0 cannot carry at all (control
characters, lone surrogates) are replaced by U+FFFD instead of failing the response.

Namespace declarations are kept few, because lxml's namespace reconciling (``append`` of a
subtree from elsewhere, ``cleanup_namespaces``) costs elements × declarations: the response
message declares every canonical prefix, so a subtree appended to it sheds its own; a container
that takes many rows declares their prefix (``declare=``), so the rows need none of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from lxml import etree

from netsonde.nmwg import ns

# The envelope every perfSONAR-PS client sends and expects back (PROTOCOL.md §2.1).
ENVELOPE_HEAD = (
    f'<SOAP-ENV:Envelope xmlns:SOAP-ENC="{ns.SOAP_ENC}"\n'
    f'                   xmlns:xsd="{ns.XSD}"\n'
    f'                   xmlns:xsi="{ns.XSI}"\n'
    f'                   xmlns:SOAP-ENV="{ns.SOAP_ENV}">\n'
    "  <SOAP-ENV:Header/>\n"
    "  <SOAP-ENV:Body>\n"
).encode()
ENVELOPE_TAIL = b"\n  </SOAP-ENV:Body>\n</SOAP-ENV:Envelope>\n"

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """``value`` with the characters XML 1.0 cannot represent replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


def element(
    qname: str,
    attrib: Mapping[str, str | None] | None = None,
    text: str | None = None,
    parent: etree._Element | None = None,
    declare: Iterable[str] = (),
) -> etree._Element:
    """A new element named ``prefix:local`` with canonical prefixes; None attributes are left
    out, so optional ones (``metadataIdRef``) can be passed unconditionally. ``declare``: more
    canonical prefixes to declare on it, for the descendants it will take."""
    tag = ns.clark(qname)  # raises on an unknown prefix
    attrs = {ns.clark(k): xml_text(v) for k, v in (attrib or {}).items() if v is not None}
    names = [qname, *(attrib or {})]
    nsmap = {p: ns.PREFIXES[p] for p in declare}
    nsmap |= {p: ns.PREFIXES[p] for p, sep, _ in (n.partition(":") for n in names) if sep}
    if parent is None:
        out = etree.Element(tag, attrs, nsmap=nsmap)
    else:
        out = etree.SubElement(parent, tag, attrs, nsmap=nsmap)
    if text is not None:
        out.text = xml_text(text)
    return out


class IdGen:
    """``message.N``/``metadata.N``/``data.N`` ids, unique within one response.

    The seed drew random numbers per id and PingER restarted its counters per unit, so one
    response could repeat an id. Here each kind counts up, skipping every id the request
    already uses, since echoed request metadata keep theirs.
    """

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._used = set(reserved)
        self._next: dict[str, int] = {}

    def new(self, kind: str) -> str:
        n = self._next.get(kind, 1)
        while f"{kind}.{n}" in self._used:
            n += 1
        self._next[kind] = n + 1
        self._used.add(f"{kind}.{n}")
        return f"{kind}.{n}"

    def message(self) -> str:
        return self.new("message")

    def metadata(self) -> str:
        return self.new("metadata")

    def data(self) -> str:
        return self.new("data")


def response_type(request_type: str) -> str:
    """``SetupDataRequest`` → ``SetupDataResponse``; ``Response`` appended if no ``Request``."""
    out = request_type.replace("Request", "Response", 1)
    return out if "Response" in out else out + "Response"


def message(type_: str, ids: IdGen, message_id_ref: str | None) -> etree._Element:
    """The response ``nmwg:message``; ``messageIdRef`` left out when the request had no id.
    It declares every canonical prefix (:func:`envelope` keeps the used ones)."""
    attrib = {"id": ids.message(), "messageIdRef": message_id_ref, "type": type_}
    return element("nmwg:message", attrib, declare=ns.PREFIXES)


def metadata(ids: IdGen, ref: str | None = None, event_type: str | None = None) -> etree._Element:
    md = element("nmwg:metadata", {"id": ids.metadata(), "metadataIdRef": ref})
    if event_type is not None:
        element("nmwg:eventType", text=event_type, parent=md)
    return md


def data(ids: IdGen, ref: str, declare: Iterable[str] = ()) -> etree._Element:
    """``declare``: the prefixes of the rows it will take (``pinger``, ``ifevt`` ...)."""
    return element("nmwg:data", {"id": ids.data(), "metadataIdRef": ref}, declare=declare)


def result_pair(ids: IdGen, code: str, text: str, ref: str | None) -> list[etree._Element]:
    """Result metadata (eventType = code, referencing ``ref``) + data with the nmwgr:datum."""
    md = metadata(ids, ref=ref, event_type=code)
    d = data(ids, md.get("id", ""))
    element("nmwgr:datum", text=text, parent=d)
    return [md, d]


def error_response(code: str, text: str, message_id_ref: str | None = None) -> etree._Element:
    """A whole-message failure (PROTOCOL.md §2.3).

    The seed also copied the request's *message* id into the result metadata's
    ``metadataIdRef``, a reference to no metadata; it is left out here (the grammar makes it
    optional) and ``messageIdRef`` alone ties the error to the request.
    """
    ids = IdGen()
    out = message("ErrorResponse", ids, message_id_ref)
    out.extend(result_pair(ids, code, text, ref=None))
    return out


def envelope(message: etree._Element) -> bytes:
    """The response bytes: compact message, namespaces declared once on it, in the envelope."""
    etree.cleanup_namespaces(message, top_nsmap=ns.PREFIXES)
    return ENVELOPE_HEAD + etree.tostring(message, encoding="UTF-8") + ENVELOPE_TAIL
