"""Hardened parsing, message location and prefix normalisation (PROTOCOL.md §2.2)."""

from __future__ import annotations

import pytest
from lxml import etree

from netsonde.nmwg import codes, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.parse import (
    MAX_DEPTH,
    check_size,
    event_type,
    normalise,
    parameter_value,
    parse_document,
    parse_message,
)

LIMIT = 1 << 20
NMWG_URI = ns.NMWG
MESSAGE = (
    f'<nmwg:message xmlns:nmwg="{NMWG_URI}" type="EchoRequest" id="m1">'
    '<nmwg:metadata id="md"><nmwg:eventType>echo.ma</nmwg:eventType></nmwg:metadata>'
    '<nmwg:data id="d" metadataIdRef="md"/></nmwg:message>'
)


def envelope(inner: str) -> bytes:
    return (
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
        f"<SOAP-ENV:Header/><SOAP-ENV:Body>{inner}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def parse_fails(body: bytes, code: str = codes.PARSE_ERROR, max_bytes: int = LIMIT) -> str:
    with pytest.raises(NMWGError) as info:
        parse_message(body, max_bytes)
    assert info.value.code == code
    return info.value.text


def test_bare_message_and_enveloped_message_parse_alike() -> None:
    bare = parse_message(MESSAGE.encode(), LIMIT)
    wrapped = parse_message(envelope(MESSAGE), LIMIT)
    assert etree.tostring(bare) == etree.tostring(wrapped)
    assert bare.tag == f"{{{NMWG_URI}}}message" and bare.get("id") == "m1"
    assert bare.getparent() is None


def test_message_found_at_any_depth() -> None:
    body = f"<outer><inner>{MESSAGE}</inner></outer>".encode()
    assert parse_message(body, LIMIT).get("type") == "EchoRequest"


def test_no_message() -> None:
    text = parse_fails(envelope("<x/>"))
    assert text == "Error parsing request: Couldn't find message element in request"


def test_two_messages() -> None:
    text = parse_fails(envelope(MESSAGE + MESSAGE))
    assert text == "Error parsing request: Too many message elements found within request"


def test_message_in_the_wrong_namespace() -> None:
    wrong = MESSAGE.replace(NMWG_URI, "http://ggf.org/ns/nmwg/base/1.0/")
    assert parse_fails(wrong.encode()).endswith("Received message with incorrect message URI")
    unqualified = b'<message type="EchoRequest"/>'
    assert parse_fails(unqualified).endswith("Received message with incorrect message URI")


def test_syntax_error_text_names_the_problem() -> None:
    text = parse_fails(b"<a>\n<b>\n</a>")
    assert text.startswith("Error parsing request: Parse failed: ")
    assert "line 3" in text  # where the problem is, once
    assert "<string>" not in text and "\n" not in text


@pytest.mark.parametrize("body", [b"", b"  \r\n\t "], ids=["empty", "whitespace"])
def test_empty_body(body: bytes) -> None:
    assert parse_fails(body) == "Error parsing request: Parse failed: empty request body"


def test_invalid_utf8() -> None:
    body = MESSAGE.replace("echo.ma", "echo.\xff").encode("latin-1")
    assert "Parse failed" in parse_fails(body)


def test_doctype_is_rejected_before_entities_are_read() -> None:
    body = (
        '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e "expanded">]>'
        + MESSAGE.replace("echo.ma", "&e;")
    ).encode()
    text = parse_fails(body)
    assert "DOCTYPE declarations are not allowed" in text
    assert "expanded" not in text


def test_size_is_checked_before_parsing() -> None:
    # A DOCTYPE would be a parse error; the size error wins because nothing was parsed.
    body = b"<!DOCTYPE x []>" + MESSAGE.encode()
    text = parse_fails(body, codes.TRANSPORT, max_bytes=len(body) - 1)
    assert text == f"Request body exceeds the limit of {len(body) - 1} bytes"
    assert parse_message(MESSAGE.encode(), len(MESSAGE)).get("id") == "m1"


def test_check_size_boundary() -> None:
    check_size(10, 10)
    with pytest.raises(NMWGError) as info:
        check_size(11, 10)
    assert info.value.code == codes.TRANSPORT


def nested(depth: int) -> bytes:
    """A document whose deepest element is at ``depth`` (the message itself is depth 1)."""
    inner = "<x>" * (depth - 2) + "</x>" * (depth - 2)
    return MESSAGE.replace("<nmwg:data ", f"<nmwg:parameters>{inner}</nmwg:parameters><nmwg:data ")


def test_depth_limit_is_exact() -> None:
    assert parse_message(nested(MAX_DEPTH), LIMIT) is not None
    assert f"nested deeper than {MAX_DEPTH}" in parse_fails(nested(MAX_DEPTH + 1))


def test_ten_thousand_levels_are_rejected() -> None:
    body = b"<a>" * 10_000 + b"</a>" * 10_000
    with pytest.raises(NMWGError) as info:
        parse_document(body)
    assert f"nested deeper than {MAX_DEPTH}" in info.value.text


def test_comments_and_processing_instructions_are_dropped() -> None:
    body = MESSAGE.replace("<nmwg:data ", "<!-- note --><?pi x?><nmwg:data ").encode()
    out = etree.tostring(parse_message(body, LIMIT))
    assert b"note" not in out and b"<?pi" not in out


def test_prefixes_are_normalised() -> None:
    body = (
        b'<m:message xmlns:m="http://ggf.org/ns/nmwg/base/2.0/" type="SetupDataRequest">'
        b'<metadata xmlns="http://ggf.org/ns/nmwg/base/2.0/" id="a">'
        b'<s:subject xmlns:s="http://ggf.org/ns/nmwg/ops/select/2.0/" id="s" metadataIdRef="b"/>'
        b"<eventType>http://ggf.org/ns/nmwg/ops/select/2.0/</eventType></metadata>"
        b'<m:data id="d" metadataIdRef="a">tail-text<m:key/>after</m:data></m:message>'
    )
    out = etree.tostring(parse_message(body, LIMIT)).decode()
    assert out.startswith('<nmwg:message xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/"')
    assert '<select:subject id="s"' in out
    # Every namespace declared once, on the copy's root: none of its elements declares its own.
    assert out.count('xmlns:select="http://ggf.org/ns/nmwg/ops/select/2.0/"') == 1
    assert out.count("xmlns:") == 2
    assert "<nmwg:metadata " in out and "<nmwg:eventType>" in out
    assert "<m:" not in out and "<s:" not in out and 'xmlns="' not in out
    assert "tail-text<nmwg:key/>after" in out


def test_unknown_namespaces_keep_their_prefix_unless_it_is_canonical() -> None:
    message = etree.fromstring(
        f'<nmwg:message xmlns:nmwg="{NMWG_URI}" xmlns:foo="urn:foo" xmlns:x="urn:x">'
        '<foo:a foo:attr="1"/>'
        '<pinger:b xmlns:pinger="urn:not-pinger"/>'  # a canonical prefix on a foreign URI
        '<c xmlns="urn:default"/><x:d/></nmwg:message>'
    )
    out = normalise(message)
    by_uri = {ns.split(el.tag)[0]: el.prefix for el in out.iter()}
    assert by_uri["urn:foo"] == "foo"
    assert by_uri["urn:not-pinger"] not in ns.PREFIXES
    assert by_uri["urn:default"] not in (None, *ns.PREFIXES)
    assert by_uri["urn:x"] == "x"
    assert len(set(by_uri.values())) == len(by_uri)  # one prefix per URI
    assert out.find("{urn:foo}a").get("{urn:foo}attr") == "1"


def test_second_time_namespace_is_prefixed_nmtm() -> None:
    message = etree.fromstring(
        f'<nmwg:message xmlns:nmwg="{NMWG_URI}">'
        f'<t:time xmlns:t="{ns.NMTM_20070914}"/></nmwg:message>'
    )
    assert normalise(message)[0].prefix == "nmtm"


def test_event_type_loses_all_whitespace() -> None:
    el = etree.fromstring("<e>\n   http://schemas.perfsonar.net/tools/admin/\n echo/2.0\n   </e>")
    assert event_type(el) == "http://schemas.perfsonar.net/tools/admin/echo/2.0"


@pytest.mark.parametrize(
    ("xml", "value"),
    [
        ('<p name="a" value="10">  20  </p>', "10"),
        ('<p name="a" value="0"/>', "0"),  # the Perl code took "0" for false
        ('<p name="a" value="">  20  </p>', "20"),
        ('<p name="a">\n  20\n</p>', "20"),
        ('<p name="a"/>', ""),
    ],
)
def test_parameter_value(xml: str, value: str) -> None:
    assert parameter_value(etree.fromstring(xml)) == value
