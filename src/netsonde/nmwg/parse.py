"""Hardened parsing of NMWG requests (PROTOCOL.md §2.2 items 4 and 5), and of every other XML
netsonde reads: :func:`parse_xml` is the one way in.

Untrusted bytes go through two libxml2 passes with entity expansion, DTD loading and network
access switched off. The first pass builds nothing: it rejects any DOCTYPE as soon as it is
seen (so entity declarations, external DTDs and entity bombs are never even read) and stops at
the first element nested deeper than the limit; given :class:`~netsonde.limits.RequestLimits`,
it also stops at the first element or namespace declaration past ``max_elements`` or
``max_namespaces``. Only a document that passes is parsed into a tree. Both passes are fed in
chunks, calling ``check`` (a request's cancellation) between them, so a cancelled request stops
parsing within a chunk. :func:`parse_xml` raises :class:`XMLRefused`; the request parser says it
as an :class:`NMWGError`, never an lxml exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from itertools import islice
from typing import cast

from lxml import etree

from netsonde.limits import RequestLimits
from netsonde.nmwg import codes, ns
from netsonde.nmwg.codes import LimitExceeded, NMWGError

MAX_DEPTH = 64
CHUNK = 64 * 1024  # bytes fed to the parser between two cancellation checks
CHECK_EVERY = 4096  # elements copied by normalise between two cancellation checks

Check = Callable[[], None]
"""A request's cancellation check: returns, or raises to stop the work (RequestContext.check)."""


def never_cancelled() -> None:
    """The :data:`Check` of work that nobody cancels."""
    return None


_MESSAGE = f"{{{ns.NMWG}}}message"
_UNITS = (ns.clark("nmwg:metadata"), ns.clark("nmwg:data"))
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
    """Parser target for the first pass: sees every event, keeps nothing but counts."""

    def __init__(self, max_depth: int, limits: RequestLimits | None) -> None:
        self.max_depth = max_depth
        self.limits = limits
        self.depth = 0
        self.elements = 0
        self.namespaces = 0

    def doctype(self, name: str | None, pubid: str | None, system: str | None) -> None:
        raise _Rejected("DOCTYPE declarations are not allowed")

    def start_ns(self, prefix: str | None, uri: str) -> None:
        self.namespaces += 1
        if self.limits and self.namespaces > self.limits.max_namespaces:
            limit = self.limits.max_namespaces
            raise _over(f"request has more than {limit} namespace declarations", "max_namespaces")

    def start(self, tag: str, attrib: object) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise _Rejected(f"elements are nested deeper than {self.max_depth} levels")
        self.elements += 1
        if self.limits and self.elements > self.limits.max_elements:
            limit = self.limits.max_elements
            raise _over(f"request has more than {limit} elements", "max_elements")

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, data: str) -> None:
        pass

    def close(self) -> None:
        return None


def _over(what: str, key: str) -> LimitExceeded:
    return LimitExceeded(codes.PARSE_ERROR, f"Error parsing request: {what}", key)


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


def _feed(parser: etree.XMLParser, body: bytes, check: Check) -> etree._Element:
    """``body`` through ``parser`` in chunks, ``check`` before each (and before closing)."""
    if len(body) <= CHUNK:
        check()
        return etree.fromstring(body, parser)
    for start in range(0, len(body), CHUNK):
        check()
        parser.feed(body[start : start + CHUNK])
    check()
    return parser.close()


def parse_xml(
    body: bytes,
    max_depth: int = MAX_DEPTH,
    limits: RequestLimits | None = None,
    check: Check = never_cancelled,
) -> etree._Element:
    """Untrusted bytes → root element (comments and processing instructions dropped), or
    XMLRefused: a DOCTYPE, nesting deeper than ``max_depth``, or not well-formed. Given
    ``limits``, more elements or namespace declarations than they allow raise
    :class:`LimitExceeded` (``error.transport.parse_error``) naming the limit."""
    try:
        _feed(_parser(_Guard(max_depth, limits)), body, check)
        return _feed(_parser(), body, check)
    except _Rejected as exc:
        raise XMLRefused(str(exc)) from None
    except etree.XMLSyntaxError as exc:
        # libxml2 messages span lines and name the (meaningless) "<string>" source.
        detail = " ".join(_SOURCE.sub("", str(exc)).split())
        line = exc.position[0] if exc.position else exc.lineno
        raise XMLRefused(detail, line) from None


def parse_document(
    body: bytes,
    max_depth: int = MAX_DEPTH,
    limits: RequestLimits | None = None,
    check: Check = never_cancelled,
) -> etree._Element:
    """Untrusted bytes → root element, or NMWGError(error.transport.parse_error)."""
    if not body or body.isspace():
        raise parse_error("Parse failed: empty request body")
    try:
        return parse_xml(body, max_depth, limits, check)
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


def parse_message(
    body: bytes,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    *,
    limits: RequestLimits | None = None,
    check: Check = never_cancelled,
) -> etree._Element:
    """Untrusted request bytes → the nmwg:message, re-prefixed canonically, as a new tree.
    ``limits`` bound the document (elements, namespace declarations) and the message's units;
    ``check`` is called throughout, so a cancelled request stops here too."""
    check_size(len(body), max_bytes)
    message = find_message(parse_document(body, max_depth, limits, check))
    if limits is not None:
        check_units(message, limits.max_units)
    return normalise(message, check)


def check_units(message: etree._Element, limit: int) -> None:
    """More metadata and data in ``message`` than ``limit`` (``max_units``): the whole
    message is refused with error.common.structure before any copy is made of it."""
    if sum(1 for _ in message.iterchildren(*_UNITS)) > limit:
        what = f"message has more than {limit} metadata and data elements"
        raise LimitExceeded(codes.STRUCTURE, what, "max_units")


def normalise(element: etree._Element, check: Check = never_cancelled) -> etree._Element:
    """Copy ``element`` with every namespace under its canonical prefix (PROTOCOL.md §2.2.5).

    Known URIs get the table's prefix, also for default-namespace elements; an unknown URI keeps
    the prefix it is first written with unless that is taken, else gets ``nsN``. Elements are
    matched by URI everywhere in netsonde, so this is for the output only: echoed request
    metadata must carry the prefixes the Perl clients look for. The copy declares every
    namespace on its root. Linear in the elements: in-scope declarations (``nsmap``, which
    costs as many as there are) are never read. ``check`` runs every CHECK_EVERY elements.
    """
    return _Copier(check).copy_tree(element)


class _Prefixes:
    def __init__(self) -> None:
        self._unknown: dict[str, str] = {}
        self._taken = set(ns.PREFIXES)

    def __call__(self, uri: str, element: etree._Element) -> str:
        """The output prefix of ``uri``, used in ``element`` (whose own prefix is the hint)."""
        known = ns.URI_PREFIXES.get(uri) or self._unknown.get(uri)
        if known:
            return known
        hint = _written_prefix(element, uri)
        prefix = hint if hint and hint not in self._taken else self._fresh()
        self._unknown[uri] = prefix
        self._taken.add(prefix)
        return prefix

    def _fresh(self) -> str:
        n = 0
        while f"ns{n}" in self._taken:
            n += 1
        return f"ns{n}"


def _written_prefix(element: etree._Element, uri: str) -> str | None:
    """The prefix ``element`` writes ``uri`` with: its tag's, else an attribute's. Read from
    the element alone, as ``nsmap`` would cost every declaration in scope."""
    if ns.split(element.tag)[0] == uri:
        return element.prefix
    name = element.xpath("name(@*[namespace-uri()=$uri])", uri=uri)
    prefix, colon, _ = str(name).partition(":")
    return prefix if colon else None


class _Copier:
    """Copies a tree in two passes: the first names every namespace (in document order, so
    prefixes are handed out as they are first met), the second copies under a root declaring
    them all, so that no element declares one of its own. Declarations per element would make
    lxml's namespace reconciling (append, deepcopy, cleanup_namespaces) cost elements ×
    declarations for a request of many siblings in an unknown namespace."""

    def __init__(self, check: Check) -> None:
        self.prefixes = _Prefixes()
        self.check = check
        self.count = 0

    def nsmap(self, src: etree._Element) -> dict[str, str]:
        """prefix → URI of the namespaces ``src`` itself uses (its tag's, its attributes')."""
        out: dict[str, str] = {}
        for name in (src.tag, *src.attrib):
            uri, _ = ns.split(name)
            if uri and uri != ns.XML:
                out[self.prefixes(uri, src)] = uri
        return out

    def copy_tree(self, root: etree._Element) -> etree._Element:
        declared: dict[str, str] = {}
        for el in root.iter(etree.Element):
            self.count_one()
            declared |= self.nsmap(el)
        out = self.copy(root, None, declared)
        out.tail = None
        return out

    def count_one(self) -> None:
        self.count += 1
        if self.count % CHECK_EVERY == 0:
            self.check()

    def copy(
        self, src: etree._Element, parent: etree._Element | None, nsmap: dict[str, str]
    ) -> etree._Element:
        self.count_one()
        attrib: dict[str, str] = dict(src.attrib)  # type: ignore[arg-type]  # lxml-stubs: bytes
        if parent is None:
            out = etree.Element(src.tag, attrib, nsmap=nsmap)
        else:
            # Its prefixes are all declared on the root already: lxml finds them there.
            out = etree.SubElement(parent, src.tag, attrib, nsmap=nsmap)
            out.tail = src.tail
        out.text = src.text
        for child in src.iterchildren(etree.Element):
            self.copy(child, out, self.nsmap(child))
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
