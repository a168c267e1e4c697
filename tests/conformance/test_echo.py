"""Every shipped EchoRequest, sent as stored and as client.pl sends it, gets an EchoResponse
with success.echo that validates against the pSB EchoResponse grammar."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from netsonde.nmwg import build, ns

from . import LEGACY, conformance_path, vectors
from .conftest import ENDPOINT, TestClient
from .rng import RngCache

pytestmark = LEGACY  # reads ../shared/conformance: skipped when it is absent

ECHO_REQUESTS = vectors("requests/**/EchoRequest*.xml", "test_harness/requests/EchoRequest/*.xml")
PSB_RESPONSE_GRAMMAR = "schemas/pSB/EchoResponse.rnc"
NMWG = f"{{{ns.NMWG}}}"


def as_client_sends(document: bytes) -> bytes:
    """client.pl: drop lines starting with ``<?xml``, wrap in the fixed envelope (§2.1)."""
    lines = document.decode("utf-8").splitlines(keepends=True)
    kept = "".join(line for line in lines if not line.startswith("<?xml"))
    return build.ENVELOPE_HEAD + kept.encode("utf-8") + build.ENVELOPE_TAIL


def response_message(body: bytes) -> etree._Element:
    root = etree.fromstring(body)
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    messages = root.findall(f"{{{ns.SOAP_ENV}}}Body/{NMWG}message")
    assert len(messages) == 1
    return messages[0]


def check_echo_response(request: bytes, response_body: bytes, rng: RngCache) -> None:
    sent = etree.fromstring(request)
    sent = sent if sent.tag == f"{NMWG}message" else next(sent.iter(f"{NMWG}message"))
    message = response_message(response_body)
    assert message.get("type") == build.response_type(sent.get("type"))
    assert message.get("messageIdRef") == sent.get("id")
    request_metadata = {md.get("id") for md in sent.iter(f"{NMWG}metadata")}
    metadata = message.findall(f"{NMWG}metadata")
    assert metadata, "no result metadata"
    for md in metadata:
        assert md.findtext(f"{NMWG}eventType") == "success.echo"
        assert md.get("metadataIdRef") in request_metadata
        (data,) = message.findall(f"{NMWG}data[@metadataIdRef='{md.get('id')}']")
        datum = data.find(f"{{{ns.NMWGR}}}datum")
        assert datum is not None and datum.text == "The echo request has passed."
    # The Perl clients match QName strings: the prefixes must be literally these.
    assert b"<nmwg:message " in response_body and b"<nmwgr:datum" in response_body
    assert rng.errors(conformance_path(PSB_RESPONSE_GRAMMAR), message) == []


@pytest.mark.parametrize("path", ECHO_REQUESTS)
@pytest.mark.parametrize("framing", ["as-stored", "client-envelope"])
def test_echo_request_vector(
    path: Path | None, framing: str, client: TestClient, rng: RngCache
) -> None:
    document = conformance_path(path).read_bytes()
    body = document if framing == "as-stored" else as_client_sends(document)
    headers = {"Content-Type": "text/xml", "SOAPAction": "http://ggf.org/ns/nmwg/base/2.0/message/"}
    response = client.post(ENDPOINT, content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    check_echo_response(document, response.content, rng)


def test_the_shipped_echo_vectors_are_all_found() -> None:
    found = {p.values[0] for p in ECHO_REQUESTS}
    for name in [
        "requests/echo/EchoRequest.xml",
        "requests/echo/EchoRequest-pSB.xml",
        "requests/generic-ma/SNMPMA/EchoRequest.xml",
        "requests/generic-ma/perfSONARBUOY/EchoRequest.xml",
    ]:
        assert conformance_path(name) in found


def test_uri_message_type_gets_uri_response_type(client: TestClient, rng: RngCache) -> None:
    document = conformance_path("requests/echo/EchoRequest-pSB.xml").read_bytes()
    document = document.replace(
        b'type="EchoRequest"', b'type="http://schemas.perfsonar.net/messages/EchoRequest/1.0"'
    )
    response = client.post(ENDPOINT, content=document)
    message = response_message(response.content)
    assert message.get("type") == "http://schemas.perfsonar.net/messages/EchoResponse/1.0"
    check_echo_response(document, response.content, rng)


def test_psb_grammar_rejects_the_captured_response_only_for_its_echoed_metadata(
    rng: RngCache,
) -> None:
    """The captured pSB EchoResponse repeats the request metadata after the result pair; its
    own grammar allows one metadata. Without that copy it validates: that copy is the one
    difference, and why netsonde's Echo leaves it out."""
    grammar = conformance_path(PSB_RESPONSE_GRAMMAR)
    captured = etree.parse(str(conformance_path("requests/echo/EchoResponse-pSB.xml"))).getroot()
    assert rng.errors(grammar, captured) != []
    echoed = captured.findall(f"{NMWG}metadata")[-1]
    assert echoed.findtext(f"{NMWG}eventType") != "success.echo"
    captured.remove(echoed)
    assert rng.errors(grammar, captured) == []
