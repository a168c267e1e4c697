"""What the seed's client.pl did: wrap a request in the SOAP envelope, POST it, read the
``nmwg:message`` out of the answer (parsed as hardened as a request), and select from it."""

from __future__ import annotations

import httpx
from lxml import etree

from netsonde.nmwg import build, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.parse import parse_message

SOAP_ACTION = f"{ns.NMWG}message/"
MAX_RESPONSE_BYTES = 512 * 1024 * 1024


class ClientError(Exception):
    """A failed exchange, said in one line."""


def request_body(text: bytes) -> bytes:
    """The request file as client.pl sent it: leading ``#`` comment lines (the PingER client's
    examples have them) and the XML declaration dropped, wrapped in the fixed envelope."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].lstrip().startswith(b"#"):
        lines.pop(0)
    kept = b"".join(line for line in lines if not line.lstrip().startswith(b"<?xml"))
    return build.ENVELOPE_HEAD + kept.strip() + build.ENVELOPE_TAIL


def exchange(
    url: str, request: bytes, *, timeout: float = 60.0, client: httpx.Client | None = None
) -> etree._Element:
    """POST ``request`` (a bare nmwg:message document) to ``url``; the response message.
    ``client``: a client of the caller's (its connections kept; a test's in-process app)."""
    try:
        response = (client or httpx).post(
            url,
            content=request_body(request),
            headers={"SOAPAction": SOAP_ACTION, "Content-Type": "text/xml"},
            timeout=timeout,
        )
    except httpx.HTTPError as e:
        raise ClientError(f"{url}: {e}") from None
    if response.status_code != 200:
        raise ClientError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
    try:
        return parse_message(response.content, MAX_RESPONSE_BYTES)
    except NMWGError as e:
        raise ClientError(f"{url}: the response is not an NMWG message: {e}") from None


def render(message: etree._Element, xpath: str | None = None) -> str:
    """The message pretty-printed, or the nodes ``xpath`` selects (canonical prefixes)."""
    if xpath is None:
        return etree.tostring(message, pretty_print=True, encoding="unicode")
    try:
        found = message.xpath(xpath, namespaces=ns.PREFIXES)
    except etree.XPathError as e:
        raise ClientError(f"invalid XPath {xpath!r}: {e}") from None
    nodes = found if isinstance(found, list) else [found]
    return "".join(
        etree.tostring(n, pretty_print=True, encoding="unicode")
        if isinstance(n, etree._Element)
        else str(n) + "\n"
        for n in nodes
    )
