"""Registration with lookup services (``[registration]``, the seed's registerLS): the messages
and the reading of replies (``nmwg/ls.py``), what the measurement point and the PingER MA
register, the section, the status and metrics it shows, and the registrar against a real
netsonde lookup service (its NMWG endpoint in the real app, served on loopback)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from hosting import host
from netsonde import config
from netsonde import probes as tools
from netsonde.api.app import create_app
from netsonde.api.metrics import Metrics
from netsonde.config import ConfigError
from netsonde.http.server import bind
from netsonde.model import TestSpec
from netsonde.mp.lookup import event_type
from netsonde.mp.lookup import lookup_data as mp_lookup_data
from netsonde.mp.status import DaemonStatus, RegistrationStatus
from netsonde.nmwg import codes, ns
from netsonde.nmwg import ls as nls
from netsonde.nmwg.parse import parse_message
from netsonde.registration import SECTIONS, Registrant, Registrar, RegistrationSection
from netsonde.services import pinger
from netsonde.services.lookup.settings import LookupSection
from silent_ls import LS_PATH, Silent
from waiting import wait

NS = {
    "nmwg": ns.NMWG,
    "nmwgt": ns.NMWGT,
    "nmwgr": ns.NMWGR,
    "pinger": ns.PINGER,
    "perfsonar": ns.PERFSONAR,
    "psservice": ns.PSSERVICE,
}
ACCESS_POINT = "http://localhost:8080/axis/services/snmpMA"
TESTS = """
[daemon]
name = "mp1.example.org"
data_dir = "{data}"

[[test]]
id = "ping-b"
tool = "ping"
target = "192.0.2.2"
interval = "60s"

[[test]]
id = "trace-a"
tool = "traceroute"
target = "a.example.org"
interval = "10m"

[[test]]
id = "dns-c"
tool = "dns"
target = "192.0.2.53"
interval = "60s"
params = {{ query_name = "example.org" }}
"""


def load(text: str, tmp_path: Path) -> config.Config:
    return config.parse(text, None, tools.TOOLS, base=tmp_path, sections=SECTIONS)


# ---- the messages ----------------------------------------------------------------------------


def test_the_key_is_the_md5_of_the_access_point() -> None:
    # PROTOCOL.md §4.15: the key the requests/ls vectors use.
    assert nls.ls_key(ACCESS_POINT) == "5cfb07ea7a5b840ce4f8f48b842ac9c0"


def test_keepalive_and_deregister_name_the_key_and_the_lease() -> None:
    keepalive = nls.keepalive_request("k1", ttl=7200)
    assert keepalive.get("type") == "LSKeepaliveRequest"
    path = "nmwg:metadata/nmwg:key/nmwg:parameters/nmwg:parameter[@name='lsKey']"
    assert keepalive.findtext(path, namespaces=NS) == "k1"
    ttl = keepalive.find("nmwg:parameters/nmwg:parameter[@name='lsTTL']", NS)
    assert ttl is not None and ttl.text == "7200" and ttl.get("units") == "seconds"
    (md,) = keepalive.findall("nmwg:metadata", NS)
    (data,) = keepalive.findall("nmwg:data", NS)
    assert data.get("metadataIdRef") == md.get("id")
    deregister = nls.deregister_request("k1")
    assert deregister.get("type") == "LSDeregisterRequest"
    assert deregister.findtext(path, namespaces=NS) == "k1"
    assert deregister.find("nmwg:parameters", NS) is None  # a lease means nothing there
    with pytest.raises(ValueError, match="not a keyed"):
        nls.keyed_request("LSQueryRequest", "k1")


def test_register_new_clobber_and_append() -> None:
    service = nls.ServiceInfo("ma", ACCESS_POINT)
    items = [etree.Element(f"{{{ns.NMWG}}}metadata", id=f"m{i}") for i in range(120)]
    new = nls.register_request(service, items[:50], ttl=60)
    assert new.find(".//nmwg:key", NS) is None
    assert new.findtext(".//psservice:accessPoint", namespaces=NS) == ACCESS_POINT
    clobber = nls.register_request(service, items[:50], key="k")
    assert clobber.find(".//nmwg:key", NS) is not None
    assert clobber.find(".//psservice:service", NS) is not None
    appends = nls.append_requests("k", items[50:])
    assert [len(m.findall("nmwg:data", NS)) for m in appends] == [50, 20]
    for m in appends:  # key only: appended, never a second registration
        assert m.find(".//psservice:service", NS) is None
        assert m.findtext(".//nmwg:parameter[@name='lsKey']", namespaces=NS) == "k"
    assert nls.append_requests("k", []) == []
    with pytest.raises(ValueError):
        nls.register_request(None, items)


REGISTER_RESPONSE = b"""<nmwg:message xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/"
  id="message.10508492" messageIdRef="msg1" type="LSRegisterResponse">
  <nmwg:metadata id="metadata.8864627" metadataIdRef="serviceLookupInfo">
    <nmwg:key id="key.16862305"><nmwg:parameters id="param.5587477">
      <nmwg:parameter name="lsKey">
        http://localhost:8080/axis/services/snmpMA
      </nmwg:parameter>
    </nmwg:parameters></nmwg:key>
    <nmwg:eventType>success.ls.register</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="data.12743213" metadataIdRef="metadata.8864627">
    <nmwgr:datum xmlns:nmwgr="http://ggf.org/ns/nmwg/result/2.0/"
      value="[1] Data elements have been registered with key [http://localhost:8080/axis/services/snmpMA]"/>
  </nmwg:data>
</nmwg:message>"""

KEEPALIVE_REFUSED = b"""<nmwg:message xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/"
  id="m" type="LSKeepaliveResponse">
  <nmwg:metadata id="md" metadataIdRef="key_to_keepalive">
    <nmwg:eventType>error.ls.keepalive.key_not_found</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d" metadataIdRef="md">
    <nmwgr:datum xmlns:nmwgr="http://ggf.org/ns/nmwg/result/2.0/">Sent key
      "abc" was not registered.</nmwgr:datum>
  </nmwg:data>
</nmwg:message>"""


def test_a_reply_gives_its_codes_key_and_text() -> None:
    # The protocol document's LSRegisterResponse (PROTOCOL.md §4.15): key in the parameter,
    # its text spread over lines, the text in the datum's @value.
    reply = nls.read_reply(parse_message(REGISTER_RESPONSE, 1 << 20))
    assert reply.ok and reply.error is None
    assert reply.key == ACCESS_POINT
    assert reply.text.startswith("[1] Data elements have been registered")
    refused = nls.read_reply(parse_message(KEEPALIVE_REFUSED, 1 << 20))
    assert not refused.ok and refused.key is None
    assert refused.error == codes.LS_KEEPALIVE_KEY_NOT_FOUND
    assert (
        refused.describe()
        == f'{codes.LS_KEEPALIVE_KEY_NOT_FOUND}: Sent key "abc" was not registered.'
    )
    empty = nls.Reply(codes=(), key=None, text="")
    assert not empty.ok and empty.error == "no result code in the reply"


# ---- what is registered ------------------------------------------------------------------------


def test_the_measurement_point_registers_each_test(tmp_path: Path) -> None:
    cfg = load(TESTS.format(data=tmp_path), tmp_path)
    items = mp_lookup_data(cfg.tests, "192.0.2.10")
    seen = []
    for md in items:
        params = {p.get("name"): p.text for p in md.iterfind("nmwg:parameters/nmwg:parameter", NS)}
        src = md.find("nmwg:subject/nmwgt:endPointPair/nmwgt:src", NS)
        dst = md.find("nmwg:subject/nmwgt:endPointPair/nmwgt:dst", NS)
        seen.append(
            (
                params["testId"],
                params["tool"],
                src.get("value"),
                dst.get("value"),
                dst.get("type"),
                md.findtext("nmwg:eventType", namespaces=NS),
            )
        )
    assert seen == [
        ("dns-c", "dns", "192.0.2.10", "192.0.2.53", "ipv4", "urn:netsonde:tool:dns"),
        ("ping-b", "ping", "192.0.2.10", "192.0.2.2", "ipv4", ns.PINGER),
        ("trace-a", "traceroute", "192.0.2.10", "a.example.org", "hostname", ns.TRACEROUTE),
    ]
    assert event_type("iperf3") == ns.IPERF
    # Unique ids within what is registered (an LS keys items by them).
    ids = [e.get("id") for md in items for e in md.iter() if e.get("id")]
    assert len(ids) == len(set(ids))


def test_the_pinger_ma_registers_its_ping_tests(tmp_path: Path) -> None:
    cfg = load(TESTS.format(data=tmp_path), tmp_path)
    served = pinger.serve(host(tmp_path / "a.sqlite", name=cfg.name))
    assert served.lookup_data() == []  # nothing stored yet: nothing to register
    served.state.archive.get().register_tests(cfg.tests, int(time.time() * 1e6))
    (md,) = served.lookup_data()  # the ping test alone
    assert md.findtext("nmwg:eventType", namespaces=NS) == ns.PINGER
    pair = md.find("pinger:subject/nmwgt:endPointPair", NS)
    assert pair.find("nmwgt:src", NS).get("value") == "mp1.example.org"
    assert pair.find("nmwgt:dst", NS).get("value") == "192.0.2.2"
    ping_spec = next(t for t in cfg.tests if t.tool == "ping")
    assert md.find("nmwg:key", NS).get("id") == ping_spec.key
    names = {p.get("name") for p in md.iterfind("pinger:parameters/nmwg:parameter", NS)}
    assert {"count", "packetSize"} <= names


# ---- the section -------------------------------------------------------------------------------


def test_the_section_defaults_and_token_file(tmp_path: Path) -> None:
    cfg = load(TESTS.format(data=tmp_path), tmp_path)
    section = cfg.sections["registration"]
    assert isinstance(section, RegistrationSection) and not section.enabled
    assert (section.interval, section.ttl) == (1800.0, 7200.0)
    (tmp_path / "ls.token").write_text("t" * 20 + "\n")
    text = TESTS.format(data=tmp_path) + (
        '[registration]\nurls = ["http://ls.example.org:8075/perfSONAR_PS/services/LS/"]\n'
        'token_file = "ls.token"\ninterval = "10m"\nttl = "1h"\n'
        'advertise = "http://mp1.example.org:8075/"\n'
    )
    section = load(text, tmp_path).sections["registration"]
    assert isinstance(section, RegistrationSection) and section.enabled
    assert section.token == "t" * 20
    assert (section.interval, section.ttl) == (600.0, 3600.0)
    assert section.advertise == "http://mp1.example.org:8075"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('urls = ["ftp://ls.example.org/"]', "urls"),
        ('urls = ["http://ls/"]\ninterval = "2h"\nttl = "1h"', "ttl"),
        ('urls = ["http://ls/"]\ntoken_file = "missing.token"', "token_file"),
        ('urls = ["http://ls/"]\ntoken = "short"', "token"),
    ],
)
def test_a_bad_section_names_its_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"registration.*{key}|{key}.*registration"):
        load(TESTS.format(data=tmp_path) + "[registration]\n" + body + "\n", tmp_path)


# ---- status and metrics ------------------------------------------------------------------------


def test_registration_state_round_trips_status_json_and_is_exported() -> None:
    status = DaemonStatus(
        registration={
            "mp": RegistrationStatus(
                access_point="http://a:8075/perfSONAR_PS/services/pinger/mp",
                url="http://ls:8075/perfSONAR_PS/services/LS",
                key="k",
                items=3,
                last_success=1_700_000_000.0,
                failures=2,
                next_due=1_700_001_800.0,
            ),
            "status": RegistrationStatus(last_error="refused", failures=5),
        }
    )
    assert DaemonStatus.from_json(status.to_json()).registration == status.registration
    body, _ = Metrics(status=lambda: status).exposition()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert found[("netsonde_ls_registered", (("service", "mp"),))] == 1
    assert found[("netsonde_ls_registered", (("service", "status"),))] == 0
    assert found[("netsonde_ls_last_success_seconds", (("service", "mp"),))] == 1_700_000_000.0
    assert ("netsonde_ls_last_success_seconds", (("service", "status"),)) not in found
    assert found[("netsonde_ls_failures_total", (("service", "status"),))] == 5


# ---- the registrar against a real lookup service ------------------------------------------------

LS_TOKEN = "r" * 24
MP_AP = "http://192.0.2.10:8075/perfSONAR_PS/services/pinger/mp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LookupServer:
    """The real app with ``[ls] enabled``, served by uvicorn in a thread on loopback; stop() and
    start() again on the same port restart it (``fresh``: without what it held)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.db = directory / "lookup.sqlite"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{LS_PATH}"
        self.base = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self, *, fresh: bool = False) -> None:
        if fresh:
            for f in self.directory.glob("lookup.sqlite*"):
                f.unlink()
        section = LookupSection(enabled=True, token=LS_TOKEN, db=str(self.db), ttl=600)
        app = create_app(host(self.directory / "archive.sqlite", sections={"ls": section}))
        self._server = server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None))
        self._sock = bind("127.0.0.1", self.port)
        self._thread = threading.Thread(target=server.run, args=([self._sock],), daemon=True)
        self._thread.start()
        until(lambda: server.started)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None and self._sock is not None
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def records(self, **query: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.base}/api/v1/lookup/records", params={**query, "limit": "1000"}, timeout=10
        )
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()
        return found

    def service(self, access_point: str) -> dict[str, Any] | None:
        found = self.records(type="service", **{"service-locator": access_point})
        return found[0] if found else None

    def metadata(self, src: str) -> list[dict[str, Any]]:
        return self.records(type="psmetadata", **{"psmetadata-src-address": src})


def until(what: Callable[[], Any], timeout: float = 10.0) -> Any:
    return wait(what, timeout, "condition not met", step=0.05)


@pytest.fixture
def lookup_server(tmp_path: Path) -> Iterator[LookupServer]:
    (tmp_path / "ls").mkdir()
    server = LookupServer(tmp_path / "ls")
    server.start()
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def point_tests(n: int, tmp_path: Path) -> list[TestSpec]:
    text = f'[daemon]\nname = "mp1"\ndata_dir = "{tmp_path}"\n' + "".join(
        f'[[test]]\nid = "t{i:03}"\ntool = "noop"\ntarget = "192.0.2.{i % 250 + 1}"\n'
        f'interval = "60s"\n'
        for i in range(n)
    )
    return list(load(text, tmp_path).tests)


def section(*urls: str, **kw: Any) -> RegistrationSection:
    settings: dict[str, Any] = {"interval": 60.0, "ttl": 600.0, "timeout": 2.0, **kw}
    return RegistrationSection(urls=list(urls), token=LS_TOKEN, **settings)


def mp_registrant(tests: list[TestSpec]) -> Registrant:
    info = nls.ServiceInfo("mp1 MP", MP_AP, "MP")
    return Registrant("mp", info, lambda: mp_lookup_data(tests, "192.0.2.10"))


def test_registers_in_messages_of_fifty_then_keeps_alive(
    lookup_server: LookupServer, tmp_path: Path
) -> None:
    tests = point_tests(120, tmp_path)
    clock = Clock()
    registrar = Registrar([mp_registrant(tests)], section(lookup_server.url), clock=clock)
    registrar.tick()
    state = registrar.states()["mp"]
    assert state.url == lookup_server.url and state.key and state.items == 120
    assert state.failures == 0 and state.last_success == clock.now
    assert 54 <= state.next_due - clock.now <= 66  # the interval, ±10 %
    service = lookup_server.service(MP_AP)
    assert service is not None
    assert len(lookup_server.metadata("192.0.2.10")) == 120  # three messages, one registration

    # Nothing is due before the keepalive: no exchange, the lease is as it was.
    time.sleep(1.1)  # leases are whole seconds
    clock.now += 30
    registrar.tick()
    assert lookup_server.service(MP_AP)["expires"] == service["expires"]
    clock.now += 40  # past the keepalive, whatever its jitter
    registrar.tick()
    renewed = lookup_server.service(MP_AP)
    assert renewed is not None and renewed["expires"] > service["expires"]
    assert registrar.states()["mp"].last_success == clock.now
    assert registrar.states()["mp"].key == state.key


def test_an_ls_restarted_without_it_gets_it_again(
    lookup_server: LookupServer, tmp_path: Path
) -> None:
    clock = Clock()
    registrar = Registrar(
        [mp_registrant(point_tests(3, tmp_path))], section(lookup_server.url), clock=clock
    )
    registrar.tick()
    assert lookup_server.service(MP_AP) is not None
    lookup_server.stop()
    lookup_server.start(fresh=True)
    assert lookup_server.service(MP_AP) is None
    clock.now += 70
    registrar.tick()  # the keepalive refused (key_not_found): registered again
    state = registrar.states()["mp"]
    assert state.key and state.failures == 1 and "key_not_found" in (state.last_error or "")
    assert lookup_server.service(MP_AP) is not None
    assert len(lookup_server.metadata("192.0.2.10")) == 3


def test_the_first_url_down_the_second_is_used_and_the_first_again_once_back(
    lookup_server: LookupServer, tmp_path: Path
) -> None:
    (tmp_path / "ls1").mkdir()
    first = LookupServer(tmp_path / "ls1")  # not started yet: nothing listens on its port
    tests = point_tests(3, tmp_path)
    clock = Clock()
    registrar = Registrar(
        [mp_registrant(tests)], section(first.url, lookup_server.url), clock=clock
    )
    registrar.tick()
    state = registrar.states()["mp"]
    assert state.url == lookup_server.url and state.key
    assert state.failures == 1 and first.url in (state.last_error or "")  # counted, named
    assert lookup_server.service(MP_AP) is not None

    # The first back and what is served changed: registered there, let go at the second.
    first.start()
    try:
        tests.pop()
        clock.now += 61
        registrar.tick()
        assert registrar.states()["mp"].url == first.url
        assert first.service(MP_AP) is not None and len(first.metadata("192.0.2.10")) == 2
        assert lookup_server.service(MP_AP) is None
    finally:
        first.stop()

    # Both gone: the keepalive fails, and so does registering anew at each URL in turn.
    lookup_server.stop()
    clock.now += 70
    registrar.tick()
    state = registrar.states()["mp"]
    assert state.key is None and first.url in (state.last_error or "")
    assert lookup_server.url in (state.last_error or "")  # each URL's error, in order
    assert state.failures == 1 + 1 + 2  # the first URL at the start, the keepalive, each URL
    assert state.next_due == clock.now + 10.0  # and a backoff
    lookup_server.start()  # for the fixture's stop


def test_what_it_serves_changed_is_registered_again(
    lookup_server: LookupServer, tmp_path: Path
) -> None:
    tests = point_tests(4, tmp_path)
    clock = Clock()
    registrar = Registrar([mp_registrant(tests)], section(lookup_server.url), clock=clock)
    registrar.tick()
    assert len(lookup_server.metadata("192.0.2.10")) == 4
    del tests[1:]  # a reload left one test
    clock.now += 61  # the next check
    registrar.tick()
    (left,) = lookup_server.metadata("192.0.2.10")
    assert "192.0.2.1" in left["psmetadata-dst-address"]
    assert registrar.states()["mp"].items == 1


def test_a_clean_stop_deregisters_and_nothing_left_withdraws(
    lookup_server: LookupServer, tmp_path: Path
) -> None:
    tests = point_tests(2, tmp_path)
    clock = Clock()
    status_ap = "http://192.0.2.10:8075/perfSONAR_PS/services/status"
    links: list[etree._Element] = []
    status = Registrant("status", nls.ServiceInfo("mp1 status", status_ap), lambda: list(links))
    registrar = Registrar([mp_registrant(tests), status], section(lookup_server.url), clock=clock)
    registrar.tick()
    assert lookup_server.service(MP_AP) is not None
    assert lookup_server.service(status_ap) is None  # nothing to register: not registered
    assert registrar.states()["status"].key is None
    tests.clear()  # nothing to register any more: withdrawn
    clock.now += 61
    registrar.tick()
    assert lookup_server.service(MP_AP) is None and registrar.states()["mp"].key is None
    tests.extend(point_tests(2, tmp_path))
    clock.now += 61
    registrar.tick()
    assert lookup_server.service(MP_AP) is not None
    registrar.start()  # the thread, as the daemon runs it
    until(registrar.is_alive)
    started = time.monotonic()
    registrar.close(timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert not registrar.is_alive()
    assert lookup_server.service(MP_AP) is None and lookup_server.metadata("192.0.2.10") == []


def test_a_wrong_token_is_refused_with_its_code(
    lookup_server: LookupServer, tmp_path: Path
) -> None:
    wrong = RegistrationSection(urls=[lookup_server.url], token="w" * 24, timeout=2.0)
    registrar = Registrar([mp_registrant(point_tests(1, tmp_path))], wrong, clock=Clock())
    registrar.tick()
    state = registrar.states()["mp"]
    assert state.key is None and state.failures == 1 and state.last_error
    assert lookup_server.service(MP_AP) is None


class Dripping(Silent):
    """Answers HTTP 200 at once, then one byte every 0.2 s, forever."""

    def hold(self, conn: socket.socket) -> None:
        super().hold(conn)
        threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    @staticmethod
    def _drip(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while True:
                conn.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            return


@pytest.mark.parametrize("kind", [Silent, Dripping])
def test_a_hanging_ls_costs_one_timeout_and_the_heartbeat_holds(kind: type[Silent]) -> None:
    ls = kind()
    try:
        clock = Clock()
        registrant = Registrant(
            "mp",
            nls.ServiceInfo("mp1 MP", MP_AP, "MP"),
            lambda: [etree.Element(f"{{{ns.NMWG}}}metadata", id="m1")],
        )
        registrar = Registrar([registrant], section(ls.url, timeout=1.0), clock=clock)
        beats: list[float] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                beats.append(time.monotonic() - registrar.beat)
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()
        started = time.monotonic()
        registrar.tick()
        took = time.monotonic() - started
        done.set()
        assert 0.9 <= took < 2.0  # the Echo, cut at its 1 s timeout; nothing else tried
        state = registrar.states()["mp"]
        assert state.key is None and state.failures == 1
        assert "timed out" in (state.last_error or "") or "within 1 s" in (state.last_error or "")
        assert max(beats) < 0.5  # inside a bounded exchange it counts as beating
        assert state.next_due == clock.now + 10.0  # the first backoff
    finally:
        ls.close()
