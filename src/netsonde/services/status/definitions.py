"""The Status MA's link definitions file: the nodes and links E2EMon ("compat") output describes.

Formats read (PROTOCOL.md §4.8, §4.11; examples in ``tests/vectors/status``):

* ``<config>`` — the E2EMon definitions file: ``<domain>``, ``<node name="…">`` with optional
  ``city``/``country``/``institution``/``latitude``/``longitude``, and links written
  ``<circuit knowledge="full|partial">`` (2008) or ``<link>`` (2009), each with ``globalName``,
  ``localName``, one or more link ids (``segmentID`` 2008, ``elementID`` 2009, ``linkID``) and
  exactly two ``<endpoint type="endpoint|demarcpoint" name="…"/>``.
* ``<links>`` — the 2007 collector file (``links-2007.conf``): ``<link knowledge="…">`` with
  ``<id>`` children (and ``<agent>`` blocks, which belong to the collector and are skipped).
  Such links have no names or endpoints of their own: the first id names them.

Bad files raise :class:`LinkDefinitionsError` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from netsonde.nmwg.parse import XMLRefused, parse_xml

KNOWLEDGE = ("full", "partial")
ENDPOINT_TYPES = ("endpoint", "demarcpoint")
_NODE_FIELDS = ("city", "country", "institution", "latitude", "longitude")
_ID_TAGS = ("segmentID", "elementID", "linkID")


class LinkDefinitionsError(ValueError):
    """A link definitions file that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Node:
    name: str
    city: str | None = None
    country: str | None = None
    institution: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class Endpoint:
    name: str
    type: str  # endpoint | demarcpoint


@dataclass(frozen=True)
class LinkDef:
    global_name: str
    local_name: str
    link_ids: tuple[str, ...]
    endpoints: tuple[Endpoint, ...] = ()
    knowledge: str = "full"
    line: int = 0


@dataclass(frozen=True)
class LinkDefinitions:
    domain: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)
    links: tuple[LinkDef, ...] = ()

    def node_name(self, raw: str) -> str:
        """The E2EMon form of a node name: ``DOMAIN-`` prefixed when it has no ``-``, only
        ``[A-Za-z0-9_-]`` kept, upper-cased (§4.8)."""
        name = raw if "-" in raw or not self.domain else f"{self.domain}-{raw}"
        return re.sub(r"[^A-Za-z0-9_-]", "", name).upper()

    def link_type(self, link: LinkDef) -> str:
        """``DOMAIN_Link`` (both ends are nodes of this domain), else ``ID_Link`` (full
        knowledge) or ``ID_LinkPartialInfo`` (partial)."""
        if link.endpoints and all(e.name in self.nodes for e in link.endpoints):
            return "DOMAIN_Link"
        return "ID_Link" if link.knowledge == "full" else "ID_LinkPartialInfo"

    def links_with_ids(self, ids: set[str]) -> list[LinkDef]:
        return [link for link in self.links if ids.intersection(link.link_ids)]

    def links_between(self, node_names: list[str]) -> list[LinkDef]:
        """Links whose endpoints include every given node (raw or E2EMon-normalised name)."""
        wanted = {self.node_name(n) for n in node_names}
        return [
            link
            for link in self.links
            if wanted <= {self.node_name(e.name) for e in link.endpoints}
        ]


def _line(el: etree._Element) -> int:
    line = el.sourceline
    return line if isinstance(line, int) else 0


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, el: etree._Element | None, text: str) -> LinkDefinitionsError:
        line = f" line {el.sourceline}" if el is not None and el.sourceline else ""
        return LinkDefinitionsError(f"{self.source}{line}: {text}")

    def children(self, el: etree._Element) -> list[etree._Element]:
        out = []
        for child in el.iterchildren():
            if isinstance(child.tag, str):
                if etree.QName(child).namespace:
                    raise self.fail(child, f"unexpected namespaced element <{child.tag}>")
                out.append(child)
        return out

    def knowledge(self, el: etree._Element) -> str:
        value = (el.get("knowledge") or "full").strip().lower()
        if value not in KNOWLEDGE:
            raise self.fail(el, f"knowledge must be 'full' or 'partial', not {value!r}")
        return value

    def node(self, el: etree._Element) -> Node:
        name = (el.get("name") or "").strip()
        if not name:
            raise self.fail(el, "<node> needs a name attribute")
        values: dict[str, object] = {}
        for child in self.children(el):
            if child.tag not in _NODE_FIELDS:
                raise self.fail(child, f"unknown element <{child.tag}> in <node name={name!r}>")
            if child.tag in values:
                raise self.fail(child, f"<{child.tag}> given twice in <node name={name!r}>")
            value = _text(child)
            if child.tag in ("latitude", "longitude"):
                try:
                    number = float(value)
                except ValueError:
                    number = float("nan")
                limit = 90 if child.tag == "latitude" else 180
                if not -limit <= number <= limit:
                    raise self.fail(child, f"<{child.tag}> {value!r} is not a number in ±{limit}")
                values[child.tag] = number
            else:
                values[child.tag] = value
        return Node(name, **values)  # type: ignore[arg-type]

    def link(self, el: etree._Element) -> LinkDef:
        names: dict[str, str] = {}
        ids: list[str] = []
        endpoints: list[Endpoint] = []
        for child in self.children(el):
            if child.tag in ("globalName", "localName"):
                if child.tag in names:
                    raise self.fail(child, f"<{child.tag}> given twice")
                if not _text(child):
                    raise self.fail(child, f"<{child.tag}> is empty")
                names[child.tag] = _text(child)
            elif child.tag in _ID_TAGS:
                if not _text(child):
                    raise self.fail(child, f"<{child.tag}> is empty")
                ids.append(_text(child))
            elif child.tag == "endpoint":
                kind = (child.get("type") or "").strip()
                name = (child.get("name") or "").strip()
                if kind not in ENDPOINT_TYPES:
                    raise self.fail(child, f"endpoint type must be one of {ENDPOINT_TYPES}")
                if not name:
                    raise self.fail(child, "<endpoint> needs a name attribute")
                endpoints.append(Endpoint(name, kind))
            else:
                raise self.fail(child, f"unknown element <{child.tag}> in <{el.tag}>")
        for required in ("globalName", "localName"):
            if required not in names:
                raise self.fail(el, f"<{el.tag}> has no <{required}>")
        if not ids:
            raise self.fail(el, f"<{el.tag}> has no link id (segmentID, elementID or linkID)")
        if len(endpoints) != 2:
            raise self.fail(el, f"<{el.tag}> needs exactly 2 endpoints, has {len(endpoints)}")
        return LinkDef(
            names["globalName"],
            names["localName"],
            tuple(ids),
            tuple(endpoints),
            self.knowledge(el),
            _line(el),
        )

    def collector_link(self, el: etree._Element) -> LinkDef:
        ids = []
        for child in self.children(el):
            if child.tag == "id":
                if not _text(child):
                    raise self.fail(child, "<id> is empty")
                ids.append(_text(child))
            elif child.tag != "agent":
                raise self.fail(child, f"unknown element <{child.tag}> in <link>")
        if not ids:
            raise self.fail(el, "<link> has no <id>")
        return LinkDef(ids[0], ids[0], tuple(ids), (), self.knowledge(el), _line(el))

    def read(self, root: etree._Element) -> LinkDefinitions:
        if root.tag == "links":
            links = [
                self.collector_link(c) if c.tag == "link" else None for c in self.children(root)
            ]
            if None in links:
                bad = next(c for c in self.children(root) if c.tag != "link")
                raise self.fail(bad, f"unknown element <{bad.tag}> in <links>")
            return LinkDefinitions(links=tuple(link for link in links if link is not None))
        if root.tag != "config":
            raise self.fail(root, f"root element must be <config> or <links>, not <{root.tag}>")
        domain: str | None = None
        nodes: dict[str, Node] = {}
        out: list[LinkDef] = []
        for child in self.children(root):
            if child.tag == "domain":
                if domain is not None:
                    raise self.fail(child, "<domain> given twice")
                domain = _text(child)
                if not domain:
                    raise self.fail(child, "<domain> is empty")
            elif child.tag == "node":
                node = self.node(child)
                if node.name in nodes:
                    raise self.fail(child, f"node {node.name!r} defined twice")
                nodes[node.name] = node
            elif child.tag in ("circuit", "link"):
                out.append(self.link(child))
            else:
                raise self.fail(child, f"unknown element <{child.tag}> in <config>")
        if domain is None:
            raise self.fail(root, "<config> has no <domain>")
        return LinkDefinitions(domain, nodes, tuple(out))


def parse_link_definitions(
    text: str | bytes, source: str = "<link definitions>"
) -> LinkDefinitions:
    data = text.encode() if isinstance(text, str) else text
    try:
        root = parse_xml(data)
    except XMLRefused as e:
        if e.line is None:  # refused before a tree: a DOCTYPE, or nesting too deep
            raise LinkDefinitionsError(f"{source}: XML refused: {e.reason}") from None
        raise LinkDefinitionsError(
            f"{source} line {e.line}: not well-formed XML: {e.reason}"
        ) from None
    return _Reader(source).read(root)


def load_link_definitions(path: str | Path) -> LinkDefinitions:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LinkDefinitionsError(f"{path}: cannot read link definitions: {e}") from None
    return parse_link_definitions(data, str(path))
