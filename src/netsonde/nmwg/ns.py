"""Canonical NMWG namespace prefixes (PROTOCOL.md §2.4).

The Perl clients find elements by QName *string* (``nmwg:metadata``), so every document we
emit must use exactly these prefixes; requests are re-prefixed to them on input, which also
lets echoed request metadata come back in the form clients expect.
"""

from __future__ import annotations

NMWG = "http://ggf.org/ns/nmwg/base/2.0/"
NMWGR = "http://ggf.org/ns/nmwg/result/2.0/"
SELECT = "http://ggf.org/ns/nmwg/ops/select/2.0/"
AVERAGE = "http://ggf.org/ns/nmwg/ops/average/2.0/"
NMTM = "http://ggf.org/ns/nmwg/time/2.0/"
NMWGT = "http://ggf.org/ns/nmwg/topology/2.0/"
NMWGTOPO3 = "http://ggf.org/ns/nmwg/topology/base/3.0/"
NMTOPO = "http://ogf.org/schema/network/topology/base/20070828/"
NMTL2 = "http://ogf.org/schema/network/topology/l2/20070828/"
NMTL3 = "http://ogf.org/schema/network/topology/l3/20070828/"
NMTL4 = "http://ogf.org/schema/network/topology/l4/20070828/"
TOPOID = "http://ogf.org/schema/network/topology/id/20070828/"
IFEVT = "http://ggf.org/ns/nmwg/event/status/base/2.0/"
PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
PERFSONAR = "http://ggf.org/ns/nmwg/tools/org/perfsonar/1.0/"
PSSERVICE = "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/1.0/"
XQUERY = "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/lookup/xquery/1.0/"
XPATH = "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/lookup/xpath/1.0/"
SUMMARY = "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/lookup/summarization/2.0/"
SNMP = "http://ggf.org/ns/nmwg/tools/snmp/2.0/"
NETUTIL = "http://ggf.org/ns/nmwg/characteristic/utilization/2.0/"
NETERR = "http://ggf.org/ns/nmwg/characteristic/errors/2.0/"
NETDISC = "http://ggf.org/ns/nmwg/characteristic/discards/2.0/"
IPERF = "http://ggf.org/ns/nmwg/tools/iperf/2.0/"
BWCTL = "http://ggf.org/ns/nmwg/tools/bwctl/2.0/"
OWAMP = "http://ggf.org/ns/nmwg/tools/owamp/2.0/"
TRACEROUTE = "http://ggf.org/ns/nmwg/tools/traceroute/2.0/"
PING = "http://ggf.org/ns/nmwg/tools/ping/2.0/"
PINGERTOPO = "http://ogf.org/ns/nmwg/tools/pinger/landmarks/1.0/"

# Second URIs seen for a canonical prefix: the 2008 support grammar's time namespace and the
# Status module's E2EMon l2 topology. Input using them is re-prefixed; output uses the above.
NMTM_20070914 = "http://ggf.org/ns/nmwg/time/20070914/"
NMTL2_E2EMON = "http://ggf.org/ns/nmwg/topology/l2/3.0/"

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSD = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XML = "http://www.w3.org/XML/1998/namespace"

PREFIXES: dict[str, str] = {
    "nmwg": NMWG,
    "nmwgr": NMWGR,
    "select": SELECT,
    "average": AVERAGE,
    "nmtm": NMTM,
    "nmwgt": NMWGT,
    "nmwgtopo3": NMWGTOPO3,
    "nmtopo": NMTOPO,
    "nmtl2": NMTL2,
    "nmtl3": NMTL3,
    "nmtl4": NMTL4,
    "topoid": TOPOID,
    "ifevt": IFEVT,
    "pinger": PINGER,
    "perfsonar": PERFSONAR,
    "psservice": PSSERVICE,
    "xquery": XQUERY,
    "xpath": XPATH,
    "summary": SUMMARY,
    "snmp": SNMP,
    "netutil": NETUTIL,
    "neterr": NETERR,
    "netdisc": NETDISC,
    "iperf": IPERF,
    "bwctl": BWCTL,
    "owamp": OWAMP,
    "traceroute": TRACEROUTE,
    "ping": PING,
    "pingertopo": PINGERTOPO,
}
"""prefix → URI: what output uses."""

URI_PREFIXES: dict[str, str] = {
    **{uri: prefix for prefix, uri in PREFIXES.items()},
    NMTM_20070914: "nmtm",
    NMTL2_E2EMON: "nmtl2",
}
"""URI → prefix: how input is re-prefixed."""

# Time elements (nmtm:time, nmtm:start, ...) are accepted in either time namespace.
TIME_NAMESPACES = (NMTM, NMTM_20070914)


def clark(qname: str) -> str:
    """``"nmwg:metadata"`` → ``"{http://ggf.org/ns/nmwg/base/2.0/}metadata"``."""
    prefix, sep, local = qname.partition(":")
    if not sep:
        return qname
    try:
        return f"{{{PREFIXES[prefix]}}}{local}"
    except KeyError:
        raise ValueError(f"unknown NMWG prefix {prefix!r} in {qname!r}") from None


def split(tag: str) -> tuple[str | None, str]:
    """Clark tag → (namespace URI or None, local name)."""
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return None, tag
