"""The PingER MP's landmarks file (PROTOCOL.md §4.12) → ping ``[[test]]``s.

``pingertopo:topology/pingertopo:domain/pingertopo:node``: its ``nmtb:hostName`` (else its first
``nmtl3:ipAddress``) is the target; ``nmwg:parameters``: ``packetSize``, ``count``,
``packetInterval``, ``ttl`` → the ping tool's, ``measurementPeriod`` (s) → interval,
``measurementOffset`` (s) → offset; other names (``project`` …) are ignored, as the MP did.
Elements are matched by local name: the seed's files disagree on the topology namespaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lxml import etree
from pydantic import ValidationError

from netsonde.config.importers.output import Imported, TestEntry, Unmappable
from netsonde.config.specs import ToolContract
from netsonde.nmwg import ns
from netsonde.nmwg.parse import XMLRefused, parse_xml

MAX_BYTES = 16 * 1024 * 1024
_PARAMS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "packetSize": ("packet_size", int),
    "count": ("count", int),
    "packetInterval": ("interval", float),
    "ttl": ("ttl", int),
}
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@/-]+")
_FIRST_TAG = re.compile(rb"<([A-Za-z_][\w.:-]*)[\s>]")


def is_xml(path: Path) -> bool:
    """Whether ``path`` is XML (a landmarks file) rather than a daemon.conf, whose only
    top-level blocks are ``<port>``s."""
    try:
        with path.open("rb") as f:
            head = f.read(512).lstrip()
    except OSError:
        return False
    tag = _FIRST_TAG.match(head)
    return head.startswith((b"<?xml", b"<!--")) or (tag is not None and tag[1].lower() != b"port")


def read_landmarks(
    path: Path, tools: Mapping[str, ToolContract], into: Imported, where: str = ""
) -> None:
    """Add a ping test per landmark node to ``into``. ``where``: the key that named the file,
    said in errors about reading it."""
    named = f" ({where})" if where else ""
    try:
        body = path.read_bytes()
    except OSError as e:
        raise Unmappable(f"{path}: cannot read{named}: {e.strerror}") from None
    if len(body) > MAX_BYTES:
        raise Unmappable(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        root = parse_xml(body)
    except XMLRefused as e:
        line = f":{e.line}" if e.line else ""
        raise Unmappable(f"{path}{line}: not a landmarks file: {e.reason}") from None
    if _local(root) != "topology":
        raise Unmappable(
            f"{path}:{root.sourceline}: not a PingER landmarks file (root <{_local(root)}>)"
        )
    ping = tools["ping"]
    ids: set[str] = set()
    nodes = [n for n in root.iter(etree.Element) if _local(n) == "node"]
    if not nodes:
        into.note(f"{path}: no landmark nodes")
    for node in nodes:
        test = _node(path, node, ids)
        try:
            ping.Params.model_validate(test.fields["params"])
            ping.check_target(test.fields["target"])
        except (ValidationError, ValueError) as e:
            msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise Unmappable(f"{path}:{node.sourceline}: node {node.get('id')}: {msg}") from None
        into.tests.append(test)


def _node(path: Path, node: etree._Element, ids: set[str]) -> TestEntry:
    at = f"{path}:{node.sourceline}"
    host = _text(node, "hostName")
    addresses = [_text(e) for e in node.iter(etree.Element) if _local(e) == "ipAddress"]
    target = host or next((a for a in addresses if a), None)
    if not target:
        raise Unmappable(f"{at}: node {node.get('id')}: no hostName and no ipAddress")
    params: dict[str, Any] = {}
    timing: dict[str, float] = {}
    for p in node.iter(etree.Element):
        if _local(p) != "parameter":
            continue
        name, value = p.get("name", ""), (p.text or "").strip()
        if not value:
            continue  # the seed's files leave some empty: the default applies
        try:
            if name in _PARAMS:
                key, conv = _PARAMS[name]
                params[key] = conv(value)
            elif name in ("measurementPeriod", "measurementOffset"):
                timing[name] = float(value)
        except ValueError:
            raise Unmappable(
                f"{path}:{p.sourceline}: parameter {name}: {value!r} is not a number"
            ) from None
    period = timing.get("measurementPeriod")
    if period is None or period <= 0:
        raise Unmappable(f"{at}: node {node.get('id')}: no measurementPeriod (seconds)")
    offset = timing.get("measurementOffset", 0.0)
    if offset * 2 >= period:
        raise Unmappable(
            f"{at}: node {node.get('id')}: measurementOffset {offset:g} must be under half the"
            f" measurementPeriod {period:g} (netsonde's offset is ± around each slot)"
        )
    name = _test_id(node, target, ids)
    fields: dict[str, Any] = {"id": name, "tool": "ping", "target": target, "interval": period}
    if offset:
        fields["offset"] = offset
    fields["params"] = params
    notes = [f"PingER landmark {node.get('id') or target} ({path.name}, line {node.sourceline})"]
    if host and addresses:
        notes.append(f"pinged by name; its addresses: {', '.join(a for a in addresses if a)}")
    return TestEntry(fields, notes)


def _test_id(node: etree._Element, target: str, ids: set[str]) -> str:
    """``pinger:DOMAIN:NODE`` from the node's URN, else from the target; unique."""
    urn = dict(re.findall(r"(domain|node)=([^:]+)", node.get("id") or ""))
    base = f"pinger:{urn['domain']}:{urn['node']}" if len(urn) == 2 else f"pinger:{target}"
    base = _ID_UNSAFE.sub("_", base)[:120]
    test_id, n = base, 1
    while test_id in ids:
        n += 1
        test_id = f"{base}.{n}"
    ids.add(test_id)
    return test_id


def _local(el: etree._Element) -> str:
    return ns.split(el.tag)[1] if isinstance(el.tag, str) else ""


def _text(el: etree._Element, local: str | None = None) -> str:
    if local is not None:
        found = next((c for c in el if _local(c) == local), None)
        return (found.text or "").strip() if found is not None else ""
    return (el.text or "").strip()
