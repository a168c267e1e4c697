"""The hostile NMWG requests of issue 11, built small: the tests send them to a real daemon and
``bench/attack.py`` sends them under load. Each once cost the server seconds to hours of CPU or
gigabytes of memory; now each is refused by a named limit or answered in linear time."""

from __future__ import annotations

from netsonde.nmwg import ns
from netsonde.nmwg.build import ENVELOPE_HEAD, ENVELOPE_TAIL


def message(body: str, decls: str = "") -> bytes:
    """A SetupDataRequest holding ``body``, in a SOAP envelope."""
    msg = (
        f'<nmwg:message xmlns:nmwg="{ns.NMWG}" {decls} type="SetupDataRequest" id="x">'
        f"{body}</nmwg:message>"
    )
    return ENVELOPE_HEAD + msg.encode() + ENVELOPE_TAIL


def merge_request(n: int = 20_000) -> bytes:
    """Two metadata, the second merged onto the first, each with n distinct children."""
    kids = "".join(f"<x:c{i}/>" for i in range(n))
    return message(
        f'<nmwg:metadata id="a"><nmwg:subject id="sa">{kids}</nmwg:subject></nmwg:metadata>'
        f'<nmwg:metadata id="b" metadataIdRef="a"><nmwg:subject id="sb">{kids}</nmwg:subject>'
        f"<nmwg:eventType>{ns.PINGER}</nmwg:eventType></nmwg:metadata>"
        '<nmwg:data id="d" metadataIdRef="b"/>',
        'xmlns:x="urn:x"',
    )


def namespaces_request(n: int = 25_000) -> bytes:
    """n namespace declarations on the message, a few used in the subject."""
    decls = " ".join(f'xmlns:p{i}="urn:x:{i}"' for i in range(n))
    kids = "".join(f"<p{i}:x/>" for i in range(0, n, 25))
    return message(
        f'<nmwg:metadata id="a"><nmwg:subject id="s">{kids}</nmwg:subject>'
        f"<nmwg:eventType>{ns.PINGER}</nmwg:eventType></nmwg:metadata>"
        '<nmwg:data id="d" metadataIdRef="a"/>',
        decls,
    )


def triggers_request(select: str = "", n: int = 100_000) -> bytes:
    """n data triggers on one metadata (``select``: its parameters and key, if any)."""
    return message(
        f'<nmwg:metadata id="m">{select}<nmwg:eventType>{ns.PINGER}</nmwg:eventType>'
        "</nmwg:metadata>" + "".join(f'<nmwg:data id="d{i}" metadataIdRef="m"/>' for i in range(n))
    )
