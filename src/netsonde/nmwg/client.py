"""What the seed's client.pl did: wrap a request in the SOAP envelope, POST it, read the
``nmwg:message`` out of the answer (parsed as hardened as a request), and select from it."""

from __future__ import annotations

import contextlib
import time

import httpx
from lxml import etree

from netsonde.nmwg import build, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.parse import parse_message

SOAP_ACTION = f"{ns.NMWG}message/"
MAX_RESPONSE_BYTES = 512 * 1024 * 1024


class ClientError(Exception):
    """A failed exchange, said in one line."""


def read_bounded(response: httpx.Response, max_bytes: int, deadline: float | None = None) -> bytes:
    """The body of a streamed ``response``, read no further than ``max_bytes`` and, with a
    ``deadline`` (monotonic), no later: httpx bounds each read, not the whole, so a server
    dripping bytes would otherwise hold the reader. ClientError past either."""
    content = bytearray()
    for chunk in response.iter_bytes():
        content += chunk
        if len(content) > max_bytes:
            raise ClientError(f"answer larger than {max_bytes} bytes")
        if deadline is not None and time.monotonic() > deadline:
            raise ClientError("no whole answer in time")
    return bytes(content)


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
    headers = {"SOAPAction": SOAP_ACTION, "Content-Type": "text/xml"}
    own = httpx.Client() if client is None else contextlib.nullcontext(client)
    try:
        with (
            own as http,
            http.stream(
                "POST", url, content=request_body(request), headers=headers, timeout=timeout
            ) as response,
        ):
            if response.status_code != 200:
                raise ClientError(f"HTTP {response.status_code} {response.reason_phrase}")
            content = read_bounded(response, MAX_RESPONSE_BYTES)
    except ClientError as e:
        raise ClientError(f"{url}: {e}") from None
    except httpx.HTTPError as e:
        raise ClientError(f"{url}: {e}") from None
    try:
        return parse_message(content, MAX_RESPONSE_BYTES)
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
