"""The dns, http and tcp probes against real servers this module starts on loopback.

- DNS: a small authoritative server written with dnspython's message API, UDP and TCP on one
  random port of 127.0.0.1 (and of ::1), answering a few names of ``example.test.`` and
  NXDOMAIN otherwise.
- HTTP: ``http.server`` in threads, plain and TLS (a self-signed certificate made with the
  ``openssl`` CLI, passed to the probe as its trusted CA), on 127.0.0.1 and ::1.
- TCP: listening sockets, a closed port, a line-based banner server and a TLS 1.2-only one.

Nothing is resolved and nothing leaves loopback.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from calendar import timegm
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_tz
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from integration.test_runner import execute, spec_for
from netsonde import config
from netsonde import probes as tools
from netsonde.model import Result, RunState
from netsonde.probes import dns as dns_tool
from netsonde.probes import http as http_tool
from netsonde.probes import tcp as tcp_tool
from netsonde.probes import tlsinfo


def later(seconds: float = 10.0) -> float:
    return time.time() + seconds


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound then closed: the kernel will refuse a connection)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- a tiny authoritative DNS server ---------------------------------------------------------

ZONE: dict[tuple[str, str], list[str]] = {
    ("www.example.test.", "A"): ["192.0.2.10", "192.0.2.11"],
    ("www.example.test.", "AAAA"): ["2001:db8::10"],
    ("example.test.", "MX"): ["10 mail.example.test."],
    ("example.test.", "TXT"): ['"v=spf1 -all"'],
    ("example.test.", "NS"): ["ns1.example.test."],
    ("example.test.", "SOA"): [
        "ns1.example.test. hostmaster.example.test. 2026112101 3600 600 86400 300"
    ],
    ("10.2.0.192.in-addr.arpa.", "PTR"): ["www.example.test."],
}
SOA = ZONE[("example.test.", "SOA")][0]


@dataclass
class DnsServer:
    host: str
    port: int
    queries: list[tuple[str, str, bool]] = field(default_factory=list)  # transport, name, RD

    def answer(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((transport, name, bool(query.flags & dns.flags.RD)))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if (name, rdtype) in ZONE:
            response.answer.append(
                dns.rrset.from_text(name, 300, "IN", rdtype, *ZONE[name, rdtype])
            )
        elif any(n == name for n, _ in ZONE):
            response.authority.append(dns.rrset.from_text("example.test.", 300, "IN", "SOA", SOA))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text("example.test.", 300, "IN", "SOA", SOA))
        return response.to_wire()


def _serve_dns(server: DnsServer, udp: socket.socket, tcp: socket.socket, stop: threading.Event):
    while not stop.is_set():
        ready, _, _ = select.select([udp, tcp], [], [], 0.1)
        if udp in ready:
            wire, peer = udp.recvfrom(65535)
            udp.sendto(server.answer(wire, "udp"), peer)
        if tcp in ready:
            conn, _ = tcp.accept()
            with conn:
                conn.settimeout(2)
                length = int.from_bytes(_recv_exactly(conn, 2), "big")
                reply = server.answer(_recv_exactly(conn, length), "tcp")
                conn.sendall(len(reply).to_bytes(2, "big") + reply)


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


@contextlib.contextmanager
def dns_server(host: str) -> Iterator[DnsServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):  # UDP and TCP on the same random port
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            tcp.bind((host, udp.getsockname()[1]))
            break
        except OSError:
            udp.close()
            tcp.close()
    else:
        raise RuntimeError("no port free for both UDP and TCP")
    tcp.listen(8)
    server = DnsServer(host, udp.getsockname()[1])
    stop = threading.Event()
    thread = threading.Thread(target=_serve_dns, args=(server, udp, tcp, stop), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        udp.close()
        tcp.close()


@pytest.fixture(scope="module")
def dns4() -> Iterator[DnsServer]:
    with dns_server("127.0.0.1") as server:
        yield server


def dns_params(**kw: Any) -> dns_tool.Params:
    return dns_tool.Params.model_validate(kw)


# ---- DNS probe -------------------------------------------------------------------------------


def test_dns_a_over_udp(dns4: DnsServer) -> None:
    params = dns_params(query_name="www.example.test", port=dns4.port)
    result = dns_tool.run(dns4.host, params, later())
    assert result.error is None
    assert result.values["ok"] == 1
    assert result.values["rcode"] == 0
    assert result.values["answers"] == 2
    assert result.values["lookupMs"] is not None and result.values["lookupMs"] > 0
    assert sorted(result.extra["answer"]) == [  # dnspython shuffles an rrset on the wire
        "www.example.test.\t300\tIN\tA\t192.0.2.10",
        "www.example.test.\t300\tIN\tA\t192.0.2.11",
    ]
    assert dns4.queries[-1] == ("udp", "www.example.test.", True)


def test_dns_over_tcp_without_recursion(dns4: DnsServer) -> None:
    params = dns_params(
        query_name="example.test", query_type="mx", transport="tcp", recursion_desired=False
    )
    params = params.model_copy(update={"port": dns4.port})
    result = dns_tool.run(dns4.host, params, later())
    assert result.values["ok"] == 1
    assert result.extra["answer"] == ["example.test.\t300\tIN\tMX\t10 mail.example.test."]
    assert dns4.queries[-1] == ("tcp", "example.test.", False)


def test_dns_soa_serial_and_ptr_from_address(dns4: DnsServer) -> None:
    soa = dns_tool.run(
        dns4.host, dns_params(query_name="example.test", query_type="SOA", port=dns4.port), later()
    )
    assert soa.values["serial"] == 2026112101
    ptr = dns_tool.run(
        dns4.host, dns_params(query_name="192.0.2.10", query_type="PTR", port=dns4.port), later()
    )
    assert ptr.values["ok"] == 1
    assert ptr.extra["answer"] == ["10.2.0.192.in-addr.arpa.\t300\tIN\tPTR\twww.example.test."]


def test_dns_nxdomain_is_a_measurement_not_an_error(dns4: DnsServer) -> None:
    params = dns_params(query_name="nope.example.test", port=dns4.port)
    result = dns_tool.run(dns4.host, params, later())
    assert result.error is None
    assert result.values["rcode"] == 3
    assert result.values["ok"] == 0
    assert result.values["answers"] == 0 and result.values["authority"] == 1
    assert result.extra["rcode"] == "NXDOMAIN"
    assert "rcode NXDOMAIN not in ['NOERROR']" in result.extra["failed"][0]
    accepted = params.model_copy(update={"valid_rcodes": ("NOERROR", "NXDOMAIN")})
    assert dns_tool.run(dns4.host, accepted, later()).values["ok"] == 1


@pytest.mark.parametrize(
    ("rules", "ok"),
    [
        ({"fail_if_not_matches_regexp": [r"\tA\t192\.0\.2\.1\d$"]}, 1),
        ({"fail_if_not_matches_regexp": [r"192\.0\.2\.10$"]}, 0),  # .11 does not match
        ({"fail_if_none_matches_regexp": [r"192\.0\.2\.11$"]}, 1),
        ({"fail_if_none_matches_regexp": [r"198\.51\.100\."]}, 0),
        ({"fail_if_matches_regexp": [r"192\.0\.2\.11"]}, 0),
        ({"fail_if_matches_regexp": [r"198\.51\.100\."]}, 1),
        ({"fail_if_all_match_regexp": [r"192\.0\.2\."]}, 0),
        ({"fail_if_all_match_regexp": [r"192\.0\.2\.10"]}, 1),
    ],
)
def test_dns_answer_validation(dns4: DnsServer, rules: dict[str, list[str]], ok: int) -> None:
    params = dns_params(query_name="www.example.test", port=dns4.port, validate_answer_rrs=rules)
    result = dns_tool.run(dns4.host, params, later())
    assert result.values["ok"] == ok, result.extra
    assert ("failed" in result.extra) == (ok == 0)


def test_dns_authority_validation_on_empty_answer(dns4: DnsServer) -> None:
    # NOERROR, no answer (there is no TXT for www), the zone's SOA in authority.
    params = dns_params(
        query_name="www.example.test",
        query_type="TXT",
        port=dns4.port,
        validate_authority_rrs={"fail_if_not_matches_regexp": [r"\tSOA\tns1\.example\.test\."]},
    )
    result = dns_tool.run(dns4.host, params, later())
    assert (result.values["ok"], result.values["answers"], result.values["authority"]) == (1, 0, 1)
    required = params.model_copy(
        update={"validate_answer_rrs": dns_tool.RRValidator(fail_if_none_matches_regexp=("x",))}
    )
    result = dns_tool.run(dns4.host, required, later())
    assert result.values["ok"] == 0
    assert result.extra["failed"] == ["answer: no records, but a match is required"]


def test_dns_ipv6_server() -> None:
    with dns_server("::1") as server:
        params = dns_params(query_name="www.example.test", query_type="AAAA", port=server.port)
        result = dns_tool.run("::1", params, later())
    assert result.values["ok"] == 1
    assert result.extra["answer"] == ["www.example.test.\t300\tIN\tAAAA\t2001:db8::10"]


def test_dns_silent_server_is_an_error_with_ok_0() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        params = dns_params(query_name="www.example.test", port=silent.getsockname()[1])
        params = params.model_copy(update={"timeout": 0.3})
        result = dns_tool.run("127.0.0.1", params, later())
    assert result.error == "no response within 0.3s"
    assert result.values == {"ok": 0}


def test_dns_tcp_refused_is_an_error() -> None:
    params = dns_params(query_name="www.example.test", transport="tcp", port=free_port())
    result = dns_tool.run("127.0.0.1", params, later())
    assert result.error is not None and "refused" in result.error.lower()
    assert result.values == {"ok": 0}


# ---- HTTP servers ----------------------------------------------------------------------------

BODY = b"hello from netsonde\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path
        if path == "/ok":
            self._send(200, BODY)
        elif path == "/echo":
            self._send(200, f"x-probe={self.headers.get('X-Probe')}".encode())
        elif path == "/redirect":
            self._send(302, Location="/ok")
        elif path == "/redirect-to-name":
            self._send(302, Location="http://probe-target.invalid/ok")
        elif path == "/missing":
            self._send(404, b"no")
        elif path == "/big":
            self._send(200, b"x" * 5000)
        elif path == "/slow-headers":
            time.sleep(0.25)
            self._send(200, BODY)
        elif path == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(0.25)
            self.wfile.write(BODY)
        else:
            self._send(500, b"unknown path")


class Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def http_server(host: str, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``Handler`` on ``host`` (random port); yields the base URL."""
    cls = Server6 if ":" in host else ThreadingHTTPServer
    server = cls((host, 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    port = server.server_address[1]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        yield f"{'https' if tls else 'http'}://{netloc}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path
    not_after: float  # epoch seconds, as openssl reads it


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI"):
            pytest.fail("openssl CLI not found")
        pytest.skip("openssl CLI not found")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    san = "subjectAltName=IP:127.0.0.1,IP:::1,DNS:probe.test"
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            *new_key,
            *files,
            "-days",
            "30",
            "-subj",
            "/CN=t",
            "-addext",
            san,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    end = subprocess.run(
        [openssl, "x509", "-noout", "-enddate", "-in", str(cert)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout  # notAfter=Dec 21 22:30:00 2026 GMT
    parsed = parsedate_tz(end.strip().removeprefix("notAfter=").replace(" GMT", " +0000"))
    assert parsed is not None, end
    return Cert(cert, key, float(timegm(parsed[:6])))


def server_context(cert: Cert, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert, cert.key)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    with http_server("127.0.0.1") as url:
        yield url


@pytest.fixture(scope="module")
def web_tls(cert: Cert) -> Iterator[str]:
    with http_server("127.0.0.1", server_context(cert)) as url:
        yield url


def http_params(**kw: Any) -> http_tool.Params:
    return http_tool.Params.model_validate(kw)


def trusting(cert: Cert, **tls: Any) -> dict[str, Any]:
    return {"tls_config": {"ca_file": str(cert.cert), **tls}}


# ---- HTTP probe ------------------------------------------------------------------------------


def test_http_get_values(web: str) -> None:
    result = http_tool.run(f"{web}/ok", http_params(), later())
    assert result.error is None
    v = result.values
    assert (v["ok"], v["statusCode"], v["contentLength"], v["bodyBytes"]) == (1, 200, 20, 20)
    assert v["resolveMs"] == 0 and v["tlsMs"] == 0
    assert all(v[f"{p}Ms"] > 0 for p in ("connect", "processing", "transfer")), v
    # The phases happen one after the other inside the probe's total.
    phases = sum(v[f"{p}Ms"] for p in http_tool._PHASES)
    assert phases <= v["durationMs"], v
    assert v["httpVersion"] == 1.1 and v["redirects"] == 0
    assert "tlsVersion" not in v and "certExpiryDays" not in v


def test_http_head_has_no_body(web: str) -> None:
    result = http_tool.run(f"{web}/ok", http_params(method="HEAD"), later())
    assert (result.values["ok"], result.values["contentLength"], result.values["bodyBytes"]) == (
        1,
        20,
        0,
    )


def test_http_phases_take_the_server_delays(web: str) -> None:
    # The server sleeps 0.25 s before its headers, or between headers and body: that time
    # must land in processing, or in transfer (lower bounds only).
    headers = http_tool.run(f"{web}/slow-headers", http_params(), later()).values
    body = http_tool.run(f"{web}/slow-body", http_params(), later()).values
    assert headers["processingMs"] >= 240 and headers["transferMs"] < headers["processingMs"]
    assert body["transferMs"] >= 240 and body["processingMs"] < body["transferMs"]


def test_http_status_checks(web: str) -> None:
    missing = http_tool.run(f"{web}/missing", http_params(), later())
    assert missing.error is None
    assert (missing.values["ok"], missing.values["statusCode"]) == (0, 404)
    assert missing.extra["failed"] == ["status 404 not valid"]
    expected = http_tool.run(f"{web}/missing", http_params(valid_status_codes=[404]), later())
    assert expected.values["ok"] == 1


def test_http_redirects(web: str) -> None:
    unfollowed = http_tool.run(f"{web}/redirect", http_params(), later())
    assert (unfollowed.values["statusCode"], unfollowed.values["ok"]) == (302, 0)
    followed = http_tool.run(f"{web}/redirect", http_params(follow_redirects=True), later())
    assert (followed.values["statusCode"], followed.values["ok"]) == (200, 1)
    assert followed.values["redirects"] == 1
    assert followed.extra["final_url"] == f"{web}/ok"


def test_http_redirect_to_a_name_is_refused_not_resolved(web: str) -> None:
    result = http_tool.run(f"{web}/redirect-to-name", http_params(follow_redirects=True), later())
    assert result.error is not None
    assert "probe-target.invalid" in result.error and "not an IP-literal" in result.error


def test_http_headers_and_body_regex(web: str) -> None:
    params = http_params(
        headers={"X-Probe": "netsonde-42"},
        fail_if_body_not_matches_regexp=["x-probe=netsonde-4\\d"],
    )
    assert http_tool.run(f"{web}/echo", params, later()).values["ok"] == 1
    params = http_params(fail_if_body_not_matches_regexp=["^goodbye"])
    result = http_tool.run(f"{web}/ok", params, later())
    assert result.values["ok"] == 0
    assert result.extra["failed"] == ["body does not match '^goodbye'"]
    result = http_tool.run(
        f"{web}/ok", http_params(fail_if_body_matches_regexp=["netsonde"]), later()
    )
    assert result.extra["failed"] == ["body matches 'netsonde'"]


def test_http_body_size_limit(web: str) -> None:
    result = http_tool.run(f"{web}/big", http_params(body_size_limit=1000), later())
    assert result.values["ok"] == 0
    assert result.extra["failed"] == ["body larger than 1000 bytes"]
    assert result.values["bodyBytes"] <= 1000


def test_http_refused_is_an_error() -> None:
    result = http_tool.run(f"http://127.0.0.1:{free_port()}/", http_params(), later())
    assert result.error is not None and "refused" in result.error.lower(), result.error
    assert result.values == {"ok": 0}


def test_http_silent_server_times_out() -> None:
    with socket.socket() as silent:  # the handshake completes in the backlog; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        result = http_tool.run(url, http_params(timeout=0.3), later())
    assert result.error is not None and result.error.startswith("timed out"), result.error


def test_http_ignores_proxy_environment(web: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy that refuses connections: if the probe used it, the run would fail.
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert http_tool.run(f"{web}/ok", http_params(), later()).values["ok"] == 1


def test_https_with_trusted_ca(web_tls: str, cert: Cert) -> None:
    result = http_tool.run(f"{web_tls}/ok", http_params(**trusting(cert)), later())
    assert result.error is None
    v = result.values
    assert v["ok"] == 1 and v["tlsMs"] > 0 and v["tlsVersion"] == 1.3
    expected = (cert.not_after - time.time()) / 86400
    assert abs(v["certExpiryDays"] - expected) < 0.01, (v["certExpiryDays"], expected)
    assert 29 < v["certExpiryDays"] <= 30


def test_https_untrusted_certificate_is_an_error(web_tls: str, cert: Cert) -> None:
    result = http_tool.run(f"{web_tls}/ok", http_params(), later())
    assert result.error is not None and "CERTIFICATE_VERIFY_FAILED" in result.error, result.error
    unverified = http_tool.run(f"{web_tls}/ok", http_params(tls_config={"verify": False}), later())
    assert unverified.values["ok"] == 1
    assert 29 < unverified.values["certExpiryDays"] <= 30  # read from DER, even unverified


def test_https_server_name(web_tls: str, cert: Cert) -> None:
    good = http_params(**trusting(cert, server_name="probe.test"))
    assert http_tool.run(f"{web_tls}/ok", good, later()).values["ok"] == 1
    bad = http_params(**trusting(cert, server_name="other.test"))
    result = http_tool.run(f"{web_tls}/ok", bad, later())
    assert result.error is not None and "other.test" in result.error, result.error


def test_http_and_https_over_ipv6(cert: Cert) -> None:
    with http_server("::1") as url:
        assert http_tool.run(f"{url}/ok", http_params(), later()).values["ok"] == 1
    with http_server("::1", server_context(cert)) as url:
        assert url.startswith("https://[::1]:")
        result = http_tool.run(f"{url}/ok", http_params(**trusting(cert)), later())
        assert result.values["ok"] == 1 and result.values["tlsVersion"] == 1.3


# ---- TCP probe -------------------------------------------------------------------------------


@contextlib.contextmanager
def line_server(
    host: str, talk: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None
) -> Iterator[int]:
    """Accepts connections on ``host`` (random port) and runs ``talk`` on each; yields the port."""

    class Talk(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn = self.request
            if tls is not None:
                try:
                    conn = tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    return
            conn.settimeout(2)
            with conn, contextlib.suppress(OSError):  # closes the TLS socket too
                talk(conn)

    class Server(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    server = Server((host, 0), Talk)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def banner(conn: socket.socket) -> None:
    """220 greeting, then echo one line back as ``250 <line>`` and close (an SMTP-ish dialogue)."""
    conn.sendall(b"220 netsonde ready\r\n")
    line = conn.makefile("rb").readline().rstrip(b"\r\n")
    conn.sendall(b"250 " + line + b"\r\n")


def tcp_params(**kw: Any) -> tcp_tool.Params:
    return tcp_tool.Params.model_validate(kw)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_connect(host: str) -> None:
    with line_server(host, lambda conn: None) as port:
        result = tcp_tool.run(host, tcp_params(port=port), later())
    assert result.error is None
    assert result.values["ok"] == 1
    assert result.values["connectMs"] > 0
    assert result.values["durationMs"] >= result.values["connectMs"]
    assert "error" not in result.extra


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_refused_is_ok_0_not_an_error(host: str) -> None:
    result = tcp_tool.run(host, tcp_params(port=free_port(host)), later())
    assert result.error is None
    assert result.values == {"connectMs": None, "ok": 0}
    assert result.extra["error"] == "connect: connection refused"


def test_tcp_query_response() -> None:
    steps = [{"expect": "^220 "}, {"send": "HELO probe"}, {"expect": "^250 HELO probe$"}]
    with line_server("127.0.0.1", banner) as port:
        result = tcp_tool.run("127.0.0.1", tcp_params(port=port, query_response=steps), later())
        assert result.values["ok"] == 1, result.extra
        assert result.extra["matched"] == ["220 netsonde ready", "250 HELO probe"]
        wrong = [{"expect": "^220 "}, {"send": "HELO probe"}, {"expect": "^550"}]
        result = tcp_tool.run("127.0.0.1", tcp_params(port=port, query_response=wrong), later())
    assert result.values["ok"] == 0 and result.values["connectMs"] > 0
    assert result.extra["error"] == "step 2: connection closed before '^550'"


def test_tcp_expect_times_out() -> None:
    with line_server("127.0.0.1", lambda conn: time.sleep(1)) as port:
        params = tcp_params(port=port, timeout=0.3, query_response=[{"expect": "^220"}])
        result = tcp_tool.run("127.0.0.1", params, later())
    assert result.values["ok"] == 0
    assert result.extra["error"] == "step 0: timed out waiting for '^220'"


def test_tcp_tls_12(cert: Cert) -> None:
    tls12 = server_context(cert, ssl.TLSVersion.TLSv1_2)
    steps = [{"expect": "^220 "}, {"send": "QUIT"}, {"expect": "^250 QUIT"}]
    with line_server("127.0.0.1", banner, tls12) as port:
        trusted = tcp_params(port=port, tls=True, query_response=steps, **trusting(cert))
        result = tcp_tool.run("127.0.0.1", trusted, later())
        assert result.values["ok"] == 1, result.extra
        assert result.values["tlsVersion"] == 1.2 and result.values["tlsMs"] > 0
        assert 29 < result.values["certExpiryDays"] <= 30
        untrusted = tcp_tool.run("127.0.0.1", tcp_params(port=port, tls=True), later())
    assert untrusted.error is None and untrusted.values["ok"] == 0
    assert untrusted.extra["error"] == "tls: CERTIFICATE_VERIFY_FAILED"


# ---- certificate expiry against openssl --------------------------------------------------------


def test_der_not_after_matches_openssl(cert: Cert) -> None:
    der = ssl.PEM_cert_to_DER_cert(cert.cert.read_text())
    assert tlsinfo.der_not_after(der) == cert.not_after
    assert tlsinfo.expiry_days(der, now=cert.not_after - 86400 * 1.5) == 1.5


# ---- through config and the runner ----------------------------------------------------------


def test_config_and_runner(dns4: DnsServer, web: str, tmp_path: Path) -> None:
    """The three tools as a config author writes them, run by the real runner (fork server)."""
    with line_server("127.0.0.1", lambda conn: None) as tcp_port:
        text = "\n".join(
            [
                "[[test]]",
                'id = "dns"',
                'tool = "dns"',
                'target = "127.0.0.1"',
                'interval = "30s"',
                f'params = {{ query_name = "www.example.test", port = {dns4.port} }}',
                "[[test]]",
                'id = "web"',
                'tool = "http"',
                f'target = "{web}/ok"',
                'interval = "30s"',
                "[[test]]",
                'id = "tcp"',
                'tool = "tcp"',
                'target = "127.0.0.1"',
                'interval = "30s"',
                f"params = {{ port = {tcp_port} }}",
            ]
        )
        cfg = config.parse(text, Path("probes.toml"), tools.TOOLS, base=tmp_path)
        runs = {}
        for spec in cfg.tests:
            assert spec.timeout == spec.params.timeout + 2.0
            runs[spec.id] = execute(spec_for(spec.tool, spec.params, 10, spec.target))
    for name, run in runs.items():
        assert run.state is RunState.FINISHED, (name, run.error)
        assert isinstance(run.result, Result) and run.result.values["ok"] == 1, name
    assert runs["dns"].result.values["answers"] == 2
    assert runs["web"].result.values["statusCode"] == 200
    assert runs["tcp"].result.values["connectMs"] > 0


def test_runner_records_refused_http_as_failed() -> None:
    spec = spec_for("http", http_params(), 10, f"http://127.0.0.1:{free_port()}/")
    run = execute(spec)
    assert run.state is RunState.FAILED
    assert run.error is not None and "refused" in run.error.lower()
    assert run.result is not None and run.result.values == {"ok": 0}
