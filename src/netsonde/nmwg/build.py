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
import secrets
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


# How libxml2 writes an attribute value between double quotes.
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)


def xml_attr(value: str) -> str:
    """``value`` as the text of a double-quoted attribute, written as lxml writes it (for XML
    built as text: :class:`Splices`)."""
    return xml_text(value).translate(_ATTR_ESCAPES)


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


class Splices:
    """Prebuilt XML put into a response after it is serialized: a SetupDataResponse's rows as
    text cost a fraction of building and serializing them as lxml elements. :meth:`add` leaves
    a comment in the tree where the text goes; :meth:`envelope` serializes the message and
    replaces each comment with its text. The comments carry a random token of this process,
    which no request can forge or see (every one is replaced).

    The text is written, and escaped, by the caller: well-formed XML under the canonical
    ``prefixes`` it names, which the message then declares as if the text were elements.
    """

    _TOKEN = secrets.token_hex(16)
    _MARK = re.compile(rb"<!--" + _TOKEN.encode() + rb":(\d+)-->")

    def __init__(self) -> None:
        self._texts: list[bytes] = []
        self._prefixes: set[str] = set()

    def add(self, parent: etree._Element, text: bytes, prefixes: Iterable[str]) -> None:
        parent.append(etree.Comment(f"{self._TOKEN}:{len(self._texts)}"))
        self._texts.append(text)
        self._prefixes.update(prefixes)

    def envelope(self, message: etree._Element) -> bytes:
        """:func:`envelope` of ``message`` with the texts in place."""
        out = envelope(message, keep=self._prefixes)
        if not self._texts:
            return out
        return self._MARK.sub(lambda m: self._texts[int(m[1])], out)


def envelope(message: etree._Element, keep: Iterable[str] = ()) -> bytes:
    """The response bytes: compact message, namespaces declared once on it, in the envelope.
    ``keep``: prefixes declared even if no element uses them (:class:`Splices`)."""
    etree.cleanup_namespaces(message, top_nsmap=ns.PREFIXES, keep_ns_prefixes=list(keep) or None)
    return ENVELOPE_HEAD + etree.tostring(message, encoding="UTF-8") + ENVELOPE_TAIL
