"""Hardened parsing of NMWG requests (PROTOCOL.md §2.2 items 4 and 5), and of every other XML
netsonde reads: :func:`parse_xml` is the one way in.

Untrusted bytes go through two libxml2 passes with entity expansion, DTD loading and network
access switched off. The first pass builds nothing: it rejects any DOCTYPE as soon as it is
seen (so entity declarations, external DTDs and entity bombs are never even read) and stops at
the first element nested deeper than the limit. Only a document that passes is parsed into a
tree. :func:`parse_xml` raises :class:`XMLRefused`; the request parser says it as an
:class:`NMWGError`, never an lxml exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice
from typing import cast

from lxml import etree

from netsonde.nmwg import codes, ns
from netsonde.nmwg.codes import NMWGError

MAX_DEPTH = 64


_MESSAGE = f"{{{ns.NMWG}}}message"
_SOURCE = re.compile(r"\(<string>, line \d+\)")


class XMLRefused(ValueError):
    """A document :func:`parse_xml` would not read: why, in one line, and where if known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class _Rejected(Exception):
    pass


class _Guard:
    """Parser target for the first pass: sees every event, keeps nothing."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.depth = 0

    def doctype(self, name: str | None, pubid: str | None, system: str | None) -> None:
        raise _Rejected("DOCTYPE declarations are not allowed")

    def start(self, tag: str, attrib: object) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise _Rejected(f"elements are nested deeper than {self.max_depth} levels")

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, data: str) -> None:
        pass

    def close(self) -> None:
        return None


def _parser(target: _Guard | None = None) -> etree.XMLParser:
    """The one hardened parser: no entities, no network, no DTD, no huge trees."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        target=target,  # type: ignore[arg-type]  # lxml-stubs: a target's methods take bytes too
    )


def parse_error(detail: str) -> NMWGError:
    return NMWGError(codes.PARSE_ERROR, f"Error parsing request: {detail}")


def check_size(size: int, limit: int) -> None:
    """Shared by the HTTP layer (while streaming the body) and :func:`parse_message`."""
    if size > limit:
        raise NMWGError(codes.TRANSPORT, f"Request body exceeds the limit of {limit} bytes")


def parse_xml(body: bytes, max_depth: int = MAX_DEPTH) -> etree._Element:
    """Untrusted bytes → root element (comments and processing instructions dropped), or
    XMLRefused: a DOCTYPE, nesting deeper than ``max_depth``, or not well-formed."""
    try:
        etree.fromstring(body, _parser(_Guard(max_depth)))
        return etree.fromstring(body, _parser())
    except _Rejected as exc:
        raise XMLRefused(str(exc)) from None
    except etree.XMLSyntaxError as exc:
        # libxml2 messages span lines and name the (meaningless) "<string>" source.
        detail = " ".join(_SOURCE.sub("", str(exc)).split())
        line = exc.position[0] if exc.position else exc.lineno
        raise XMLRefused(detail, line) from None


def parse_document(body: bytes, max_depth: int = MAX_DEPTH) -> etree._Element:
    """Untrusted bytes → root element, or NMWGError(error.transport.parse_error)."""
    if not body or body.isspace():
        raise parse_error("Parse failed: empty request body")
    try:
        return parse_xml(body, max_depth)
    except XMLRefused as exc:
        raise parse_error(f"Parse failed: {exc}") from None


def find_message(root: etree._Element) -> etree._Element:
    """The single nmwg:message anywhere in the document: SOAP envelope optional."""
    found = list(islice(root.iter(_MESSAGE), 2))
    if len(found) > 1:
        raise parse_error("Too many message elements found within request")
    if found:
        return found[0]
    if any(ns.split(el.tag)[1] == "message" for el in root.iter(etree.Element)):
        raise parse_error("Received message with incorrect message URI")
    raise parse_error("Couldn't find message element in request")


def parse_message(body: bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> etree._Element:
    """Untrusted request bytes → the nmwg:message, re-prefixed canonically, as a new tree."""
    check_size(len(body), max_bytes)
    return normalise(find_message(parse_document(body, max_depth)))


def normalise(element: etree._Element) -> etree._Element:
    """Copy ``element`` with every namespace under its canonical prefix (PROTOCOL.md §2.2.5).

    Known URIs get the table's prefix, also for default-namespace elements; an unknown URI keeps
    its own prefix unless that is taken, else gets ``nsN``. Elements are matched by URI
    everywhere in netsonde, so this is for the output only: echoed request metadata must carry
    the prefixes the Perl clients look for.
    """
    prefixes = _Prefixes()
    return _copy(element, None, prefixes)


class _Prefixes:
    def __init__(self) -> None:
        self._unknown: dict[str, str] = {}
        self._taken = set(ns.PREFIXES)

    def __call__(self, uri: str, hint: str | None) -> str:
        known = ns.URI_PREFIXES.get(uri) or self._unknown.get(uri)
        if known:
            return known
        prefix = hint if hint and hint not in self._taken else self._fresh()
        self._unknown[uri] = prefix
        self._taken.add(prefix)
        return prefix

    def _fresh(self) -> str:
        n = 0
        while f"ns{n}" in self._taken:
            n += 1
        return f"ns{n}"


def _copy(
    src: etree._Element, parent: etree._Element | None, prefixes: _Prefixes
) -> etree._Element:
    hints: dict[str, str | None] = {uri: prefix for prefix, uri in src.nsmap.items()}
    nsmap: dict[str, str] = {}
    for name in (src.tag, *src.attrib):
        uri, _ = ns.split(name)
        if uri and uri != ns.XML:
            nsmap[prefixes(uri, hints.get(uri))] = uri
    attrib: dict[str, str] = dict(src.attrib)  # type: ignore[arg-type]  # lxml-stubs: str | bytes
    if parent is None:
        out = etree.Element(src.tag, attrib, nsmap=nsmap)
    else:
        out = etree.SubElement(parent, src.tag, attrib, nsmap=nsmap)
    out.text = src.text
    out.tail = src.tail if parent is not None else None
    for child in src.iterchildren(etree.Element):
        _copy(child, out, prefixes)
    return out


def _text(element: etree._Element) -> str:
    # itertext yields str for a document parsed from bytes; lxml-stubs says str | bytes.
    return "".join(cast(Iterator[str], element.itertext()))


def text_value(element: etree._Element) -> str:
    """All text inside ``element``, trimmed."""
    return _text(element).strip()


def event_type(element: etree._Element) -> str:
    """An nmwg:eventType's value: every whitespace character removed (PROTOCOL.md §7.4)."""
    return "".join(_text(element).split())


def parameter_value(element: etree._Element) -> str:
    """An nmwg:parameter's value: ``@value`` if given, else its trimmed text (Common::extract)."""
    value = element.get("value")
    if value is not None and value.strip():
        return value.strip()
    return text_value(element)
