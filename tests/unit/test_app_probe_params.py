"""dns, http and tcp probes: bad parameters and targets fail at config load, naming the key and
its line; the pure parts (blackbox's record rules, certificate times, URL checks) on vectors.

Configs are lists of lines: element k is line k + 1.
"""

from __future__ import annotations

from pathlib import Path

import dns.flags
import pytest

from netsonde import config
from netsonde import probes as tools
from netsonde.config import ConfigError
from netsonde.probes import dns as dns_tool
from netsonde.probes import http as http_tool
from netsonde.probes import tcp as tcp_tool
from netsonde.probes import tlsinfo

NAME = "probes.toml"


def block(tool: str, target: str, *extra: str) -> list[str]:
    """Lines 1-5: a [[test]] of ``tool``; ``extra`` lines start at line 6."""
    return [
        "[[test]]",
        'id = "a"',
        f'tool = "{tool}"',
        f'target = "{target}"',
        'interval = "30s"',
        *extra,
    ]


def error_of(lines: list[str], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse("\n".join(lines) + "\n", Path(NAME), tools.TOOLS, base=tmp_path)
    return str(info.value)


DNS = ("dns", "127.0.0.1")
HTTP = ("http", "http://127.0.0.1:8080/health")
TCP = ("tcp", "127.0.0.1")


@pytest.mark.parametrize(
    ("tool", "extra", "line", "key", "fragment"),
    [
        # dns
        (DNS, ["params = { port = 53 }"], 6, "params.query_name", "required key is missing"),
        (DNS, ['params = { query_name = "a..b" }'], 6, "params.query_name", "not a valid DNS"),
        (
            DNS,
            ['params = { query_name = "x.test", query_type = "AX" }'],
            6,
            "params.query_type",
            "unknown record type 'AX'",
        ),
        (
            DNS,
            ["[test.params]", 'query_name = "x.test"', 'transport = "sctp"'],
            8,
            "params.transport",
            "'udp' or 'tcp'",
        ),
        (
            DNS,
            ["[test.params]", 'query_name = "x"', "port = 0"],
            8,
            "params.port",
            "greater than or equal to 1",
        ),
        (
            DNS,
            ["[test.params]", 'query_name = "x"', 'valid_rcodes = ["NOERROR", "NOPE"]'],
            8,
            "params.valid_rcodes",
            "unknown rcode",
        ),
        (
            DNS,
            [
                "[test.params]",
                'query_name = "x"',
                "validate_answer_rrs.fail_if_matches_regexp = ['(']",
            ],
            8,
            "params.validate_answer_rrs.fail_if_matches_regexp",
            "invalid regex '('",
        ),
        (
            DNS,
            ["[test.params]", 'query_name = "x"', "validate_answer_rrs = { fail_if_match = [] }"],
            8,
            "params.validate_answer_rrs.fail_if_match",
            "did you mean 'fail_if_matches_regexp'?",
        ),
        # http
        (HTTP, ['params = { method = "POST" }'], 6, "params.method", "'GET' or 'HEAD'"),
        (
            HTTP,
            ["params = { valid_status_codes = [200, 99] }"],
            6,
            "params.valid_status_codes",
            "[99]",
        ),
        (HTTP, ['params.headers = { "Bad Name" = "x" }'], 6, "params.headers", "'Bad Name' is not"),
        (HTTP, ['params.headers = { X-A = "a\\r\\nb" }'], 6, "params.headers", "line break"),
        (
            HTTP,
            ["params.fail_if_body_not_matches_regexp = ['[']"],
            6,
            "params.fail_if_body_not_matches_regexp",
            "invalid regex",
        ),
        (HTTP, ["params = { timeout = 0 }"], 6, "params.timeout", "greater than 0"),
        (
            HTTP,
            ['params.tls_config = { ca_file = "ca.pem" }'],
            6,
            "params.tls_config.ca_file",
            "absolute path of an existing file",
        ),
        (
            HTTP,
            ["params.tls_config = { verfy = false }"],
            6,
            "params.tls_config.verfy",
            "did you mean 'verify'?",
        ),
        (
            HTTP,
            ['params.tls_config = { server_name = "-x" }'],
            6,
            "params.tls_config.server_name",
            "neither an IP address nor a valid host name",
        ),
        # tcp
        (TCP, ["params = { timeout = 3 }"], 6, "params.port", "required key is missing"),
        (TCP, ["params = { port = 70000 }"], 6, "params.port", "less than or equal to 65535"),
        (
            TCP,
            ["params = { port = 25, query_response = [{}] }"],
            6,
            "params.query_response[0]",
            "a step needs",
        ),
        (
            TCP,
            ["[test.params]", "port = 25", "[[test.params.query_response]]", 'expect = "("'],
            9,
            "params.query_response[0].expect",
            "invalid regex",
        ),
        (
            TCP,
            ["[test.params]", "port = 25", "[[test.params.query_response]]", 'sand = "QUIT"'],
            9,
            "params.query_response[0].sand",
            "did you mean 'send'?",
        ),
        (TCP, ['params = { port = 25, tls = "maybe" }'], 6, "params.tls", "boolean"),
    ],
)
def test_bad_params(
    tmp_path: Path,
    tool: tuple[str, str],
    extra: list[str],
    line: int,
    key: str,
    fragment: str,
) -> None:
    msg = error_of(block(*tool, *extra), tmp_path)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{NAME}:{line}: test[0].{key}: "), msg
    assert fragment in msg, msg


@pytest.mark.parametrize(
    ("tool", "target", "fragment"),
    [
        ("dns", "ns1.example.net", "not an IP address (names are not resolved)"),
        ("tcp", "localhost", "not an IP address (names are not resolved)"),
        ("tcp", "127.0.0.1:80", "not an IP address"),
        ("http", "http://example.net/", "the host must be an IP address"),
        ("http", "ftp://127.0.0.1/", "the scheme must be http or https"),
        ("http", "127.0.0.1", "the scheme must be http or https"),
        ("http", "http://user:pw@127.0.0.1/", "credentials in the URL are not allowed"),
        ("http", "http://[::1/", "not a valid URL"),
        ("http", "http://127.0.0.1:99999/", "port 99999 is out of range"),
        ("http", "http://127.1/", "the host must be an IP address"),
        ("http", "http://[fe80::1%25eth0]/", "the host must be an IP address"),
        ("http", "http://example.net@127.0.0.1/", "credentials in the URL are not allowed"),
    ],
)
def test_bad_targets(tmp_path: Path, tool: str, target: str, fragment: str) -> None:
    params = {"dns": ['params = { query_name = "x.test" }'], "tcp": ["params = { port = 1 }"]}
    msg = error_of(block(tool, target, *params.get(tool, [])), tmp_path)
    assert msg.startswith(f"{NAME}:4: test[0].target: "), msg
    assert fragment in msg, msg


def test_good_config_and_defaults(tmp_path: Path) -> None:
    lines = [
        *block("dns", "::1", 'params = { query_name = "example.test", query_type = "soa" }'),
        "[[test]]",
        'id = "b"',
        'tool = "http"',
        'target = "https://[::1]:8443/"',
        'interval = "30s"',
        "params.tls_config.verify = false",
        "[[test]]",
        'id = "c"',
        'tool = "tcp"',
        'target = "192.0.2.1"',
        'interval = "30s"',
        "params = { port = 443, tls = true, query_response = [{ send = 'PING' }] }",
    ]
    cfg = config.parse("\n".join(lines) + "\n", Path(NAME), tools.TOOLS, base=tmp_path)
    d, h, t = cfg.tests
    assert d.params.query_type == "SOA" and d.params.valid_rcodes == ("NOERROR",)
    assert (d.params.transport, d.params.port, d.params.recursion_desired) == ("udp", 53, True)
    assert d.timeout == 7.0  # default_timeout: the query's timeout + 2 s
    assert h.params.method == "GET" and h.params.follow_redirects is False
    assert h.params.tls_config.verify is False and h.timeout == 12.0
    assert t.params.query_response[0].send == "PING" and t.params.tls is True
    assert t.timeout == 7.0


# ---- pure parts ------------------------------------------------------------------------------

RECORDS = ["a.test.\t300\tIN\tA\t192.0.2.1", "a.test.\t300\tIN\tA\t192.0.2.2"]


@pytest.mark.parametrize(
    ("rules", "records", "failure"),
    [
        ({}, [], None),
        (
            {"fail_if_matches_regexp": ["2\\.2$"]},
            RECORDS,
            "'a.test.\\t300\\tIN\\tA\\t192.0.2.2' matches",
        ),
        ({"fail_if_matches_regexp": ["2\\.3$"]}, RECORDS, None),
        ({"fail_if_not_matches_regexp": ["2\\.1$"]}, RECORDS, "does not match '2\\\\.1$'"),
        ({"fail_if_not_matches_regexp": ["192"]}, RECORDS, None),
        ({"fail_if_not_matches_regexp": ["192"]}, [], "no records, but a match is required"),
        ({"fail_if_none_matches_regexp": ["2\\.2$"]}, RECORDS, None),
        ({"fail_if_none_matches_regexp": ["2\\.9$"]}, RECORDS, "no record matches '2\\\\.9$'"),
        ({"fail_if_none_matches_regexp": ["x"]}, [], "no records, but a match is required"),
        ({"fail_if_all_match_regexp": ["192"]}, RECORDS, "every record matches ['192']"),
        ({"fail_if_all_match_regexp": ["192", "2\\.1$"]}, RECORDS, None),
        # blackbox: with no records "all" records match (the probe fails).
        ({"fail_if_all_match_regexp": ["192"]}, [], "every record matches ['192']"),
    ],
)
def test_rr_validator_is_blackbox_semantics(
    rules: dict[str, list[str]], records: list[str], failure: str | None
) -> None:
    got = dns_tool.RRValidator.model_validate(rules).failure(records)
    if failure is None:
        assert got is None
    else:
        assert got is not None and failure in got, got


def test_dns_query_flags_and_ptr_name() -> None:
    q = dns_tool.query_for(dns_tool.Params(query_name="192.0.2.10", query_type="PTR"))
    assert q.question[0].name.to_text() == "10.2.0.192.in-addr.arpa."
    assert q.flags & dns.flags.RD
    q = dns_tool.query_for(dns_tool.Params(query_name="2001:db8::1", query_type="PTR"))
    assert q.question[0].name.to_text().startswith("1.0.0.0.") and q.question[
        0
    ].name.to_text().endswith(".8.b.d.0.1.0.0.2.ip6.arpa.")
    q = dns_tool.query_for(dns_tool.Params(query_name="x.test", recursion_desired=False))
    assert not q.flags & dns.flags.RD


@pytest.mark.parametrize(
    ("tag", "text", "epoch"),
    [
        (0x17, "000101000000Z", 946_684_800),  # 2000-01-01T00:00:00Z
        (0x17, "491231235959Z", 2_524_607_999),  # 2049-12-31T23:59:59Z (YY < 50 → 20YY)
        (0x17, "500101000000Z", -631_152_000),  # 1950-01-01T00:00:00Z (YY >= 50 → 19YY)
        (0x18, "20500101000000Z", 2_524_608_000),  # GeneralizedTime from 2050 on
        (0x17, "700101000001Z", 1),
    ],
)
def test_asn1_time(tag: int, text: str, epoch: int) -> None:
    assert tlsinfo._asn1_time(tag, text) == epoch


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n])
        if n < 128
        else bytes([0x81, n])
        if n < 256
        else bytes([0x82]) + n.to_bytes(2, "big")
    )
    return bytes([tag]) + length + content


def test_der_not_after_on_a_hand_built_certificate() -> None:
    validity = _der(0x30, _der(0x17, b"260101000000Z") + _der(0x18, b"20510601120000Z"))
    name = _der(0x30, _der(0x31, _der(0x30, _der(0x06, b"\x55\x04\x03") + _der(0x0C, b"x" * 200))))
    rest = _der(0x02, b"\x01") + _der(0x30, b"") + name + validity  # serial, alg, issuer, validity
    version = _der(0xA0, _der(0x02, b"\x02"))
    cert = _der(0x30, _der(0x30, version + rest) + _der(0x30, b"") + _der(0x03, b"\x00"))
    assert len(name) > 200  # a long-form length on the way
    # 2051-01-01 is 2_556_144_000; + 151 days (Jan-May) + 12 h.
    assert tlsinfo.der_not_after(cert) == 2_556_144_000 + 151 * 86400 + 12 * 3600
    v1 = _der(0x30, _der(0x30, rest))  # version 1 certificates carry no [0] element
    assert tlsinfo.der_not_after(v1) == 2_569_233_600
    with pytest.raises(ValueError, match="truncated"):
        tlsinfo.der_not_after(cert[:40])


def test_tls_version_numbers() -> None:
    assert [tlsinfo.version_number(v) for v in ("TLSv1.2", "TLSv1.3", "SSLv3", None)] == [
        1.2,
        1.3,
        None,
        None,
    ]
    assert tlsinfo.expiry_days(None) is None


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "https://[::1]:8443/x?y=1", "http://192.0.2.1:80"]
)
def test_check_url_accepts_ip_literal_urls(url: str) -> None:
    assert http_tool.check_target(url) == url


def test_tcp_check_target() -> None:
    assert tcp_tool.check_target("::1") == "::1"
    with pytest.raises(ValueError, match="not an IP address"):
        tcp_tool.check_target("-oProxyCommand=x")
