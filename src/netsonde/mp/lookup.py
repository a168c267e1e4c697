"""What the measurement point registers with a lookup service: one metadata per test, naming its
source and destination (an endpoint pair, as PingER's did), its tool's eventType, and the tool
and test id as parameters, so that a query by host, tool or eventType finds it.

The source is the point's address as others reach it (the host of its advertised URL), not its
``[daemon] name``: a name is what PingER's archive keys data by, an address what a lookup finds a
point by."""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from netsonde.model import TestSpec
from netsonde.nmwg import build, ns, pinger

# A tool's eventType where the NMWG schemas name one; other tools: a URN of their own.
EVENT_TYPES = {"ping": pinger.EVENT_TYPE, "traceroute": ns.TRACEROUTE, "iperf3": ns.IPERF}


def event_type(tool: str) -> str:
    return EVENT_TYPES.get(tool, f"urn:netsonde:tool:{tool}")


def lookup_data(tests: Iterable[TestSpec], address: str) -> list[etree._Element]:
    """The tests, measured from ``address``, by test id."""
    ids = build.IdGen()
    out = []
    for test in sorted(tests, key=lambda t: t.id):
        md = build.metadata(ids)
        subject = build.element("nmwg:subject", {"id": ids.new("subject")}, parent=md)
        pair = build.element("nmwgt:endPointPair", parent=subject)
        for tag, value in (("nmwgt:src", address), ("nmwgt:dst", test.target)):
            build.element(tag, {"value": value, "type": pinger.address_type(value)}, parent=pair)
        build.element("nmwg:eventType", text=event_type(test.tool), parent=md)
        params = build.element("nmwg:parameters", {"id": ids.new("parameters")}, parent=md)
        for key, value in (("tool", test.tool), ("testId", test.id)):
            build.element("nmwg:parameter", {"name": key}, value, parent=params)
        out.append(md)
    return out
