"""Registration with lookup services (``[registration]``, the seed's registerLS): the messages
and the reading of replies (``nmwg/ls.py``), what the measurement point and the PingER MA
register, the section, the status and metrics it shows, and the registrar against a real
netsonde lookup service (its NMWG endpoint in the real app, served on loopback)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from hosting import host
from netsonde import config
from netsonde import probes as tools
from netsonde.api.metrics import Metrics
from netsonde.config import ConfigError
from netsonde.mp.lookup import event_type
from netsonde.mp.lookup import lookup_data as mp_lookup_data
from netsonde.mp.status import DaemonStatus, RegistrationStatus
from netsonde.nmwg import codes, ns
from netsonde.nmwg import ls as nls
from netsonde.nmwg.parse import parse_message
from netsonde.registration import SECTIONS, RegistrationSection
from netsonde.services import pinger

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
    items = mp_lookup_data(cfg.tests, cfg.name)
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
        ("dns-c", "dns", "mp1.example.org", "192.0.2.53", "ipv4", "urn:netsonde:tool:dns"),
        ("ping-b", "ping", "mp1.example.org", "192.0.2.2", "ipv4", ns.PINGER),
        ("trace-a", "traceroute", "mp1.example.org", "a.example.org", "hostname", ns.TRACEROUTE),
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
