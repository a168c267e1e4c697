"""Response builders: canonical prefixes, unique ids, escaping, ErrorResponse, envelope."""

from __future__ import annotations

import pytest
from lxml import etree

from netsonde.nmwg import build, codes, ns

NMWG = f"{{{ns.NMWG}}}"


def test_element_uses_canonical_prefixes() -> None:
    md = build.element("nmwg:metadata", {"id": "m", "metadataIdRef": None})
    subject = build.element("pinger:subject", {"id": "s"}, parent=md)
    build.element("nmwgt:src", {"value": "a.example", "type": "hostname"}, parent=subject)
    build.element("select:parameters", {"id": "p"}, parent=md)
    out = etree.tostring(md).decode()
    assert out.startswith('<nmwg:metadata xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/" id="m">')
    assert "<pinger:subject " in out and "<nmwgt:src " in out and "<select:parameters " in out
    assert "metadataIdRef" not in out  # None attributes are left out


def test_element_rejects_unknown_prefix() -> None:
    with pytest.raises(ValueError, match="unknown NMWG prefix"):
        build.element("foo:bar")


def test_id_generator_is_unique_and_skips_request_ids() -> None:
    ids = build.IdGen(reserved={"metadata.1", "metadata.3", "data.2"})
    got = [ids.metadata() for _ in range(3)] + [ids.data() for _ in range(3)] + [ids.message()]
    assert got == [
        "metadata.2",
        "metadata.4",
        "metadata.5",
        "data.1",
        "data.3",
        "data.4",
        "message.1",
    ]
    assert len(set(got)) == len(got)


@pytest.mark.parametrize(
    ("request_type", "response_type"),
    [
        ("SetupDataRequest", "SetupDataResponse"),
        ("EchoRequest", "EchoResponse"),
        (
            "http://schemas.perfsonar.net/messages/EchoRequest/1.0",
            "http://schemas.perfsonar.net/messages/EchoResponse/1.0",
        ),
        ("LSQuery", "LSQueryResponse"),
        ("FooResponse", "FooResponse"),
    ],
)
def test_response_type(request_type: str, response_type: str) -> None:
    assert build.response_type(request_type) == response_type


def test_message_omits_message_id_ref_without_request_id() -> None:
    ids = build.IdGen()
    assert build.message("EchoResponse", ids, "req").get("messageIdRef") == "req"
    assert "messageIdRef" not in build.message("EchoResponse", ids, None).attrib


def test_result_pair_shape_and_escaping() -> None:
    text = 'a < b && c > "d" \x01\ud800 ü'
    md, data = build.result_pair(build.IdGen(), codes.MA_STORAGE, text, ref="meta1")
    assert md.get("metadataIdRef") == "meta1"
    assert md.findtext(f"{NMWG}eventType") == codes.MA_STORAGE
    assert data.get("metadataIdRef") == md.get("id")
    wire = etree.tostring(data, encoding="UTF-8")
    assert b"a &lt; b &amp;&amp; c" in wire
    reparsed = etree.fromstring(wire).findtext(f"{{{ns.NMWGR}}}datum")
    assert reparsed == 'a < b && c > "d" \ufffd\ufffd ü'


def test_error_response() -> None:
    out = build.error_response(
        codes.ACTION_NOT_SUPPORTED, "Messages of type X are unsupported", "r1"
    )
    assert out.get("type") == "ErrorResponse" and out.get("messageIdRef") == "r1"
    (md,) = out.findall(f"{NMWG}metadata")
    (data,) = out.findall(f"{NMWG}data")
    # The seed put the message id here (a reference to no metadata); we leave it out.
    assert "metadataIdRef" not in md.attrib
    assert md.findtext(f"{NMWG}eventType") == codes.ACTION_NOT_SUPPORTED
    assert data.get("metadataIdRef") == md.get("id")
    assert data.findtext(f"{{{ns.NMWGR}}}datum") == "Messages of type X are unsupported"
    assert "messageIdRef" not in build.error_response(codes.TIMEOUT, "t").attrib


def test_envelope_is_compact_and_declares_each_namespace_once() -> None:
    ids = build.IdGen()
    message = build.message("SetupDataResponse", ids, "r")
    for _ in range(3):
        message.extend(build.result_pair(ids, codes.MA_STORAGE, "x", ref="m"))
    build.element("pinger:datum", {"name": "minRtt", "value": "1.5"}, parent=message)
    body = build.envelope(message)
    assert body.startswith(build.ENVELOPE_HEAD) and body.endswith(build.ENVELOPE_TAIL)
    inner = body[len(build.ENVELOPE_HEAD) : -len(build.ENVELOPE_TAIL)]
    assert not inner.startswith(b"<?xml") and b"\n" not in inner
    assert inner.count(b"xmlns:nmwg=") == 1 and inner.count(b"xmlns:nmwgr=") == 1
    assert inner.count(b"xmlns:pinger=") == 1
    assert b"xmlns:select=" not in inner  # unused prefixes are not declared
    root = etree.fromstring(body)
    assert root.tag == f"{{{ns.SOAP_ENV}}}Envelope"
    assert root.find(f"{{{ns.SOAP_ENV}}}Body/{NMWG}message") is not None
