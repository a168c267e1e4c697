"""`netsonde config import` against every file of the founders' corpus: the pSConfig examples
(../shared/psconfig) and the perfSONAR-PS configuration files (../shared/conformance/config).

Each file either imports and loads with netsonde's own loader (holding exactly the imported
tests), or fails with one clean line naming where; which one is asserted per file, and a file
added to the corpus without an expectation here fails the test that lists them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netsonde import probes
from netsonde.config.importers import Imported, Unmappable
from netsonde.config.importers.perfsonar import import_perfsonar
from netsonde.config.importers.psconfig import import_psconfig

from . import CONFORMANCE_DIR, LEGACY
from .importing import round_trip

pytestmark = LEGACY  # reads ../shared: skipped when it is absent

PSCONFIG_DIR = CONFORMANCE_DIR.parent / "psconfig"
CONFIG_DIR = CONFORMANCE_DIR / "config"

# pSConfig file → (host, error of a strict import or None, test ids with --skip-unmappable).
PSCONFIG: dict[str, tuple[str, str | None, int]] = {
    "example-1-simple.json": (
        "host-a.perfsonar.net",
        "addresses.\"host-b.perfsonar.net\".address: twamp: target 'host-b.perfsonar.net'"
        " must be an IP address (no DNS lookups)",
        4,  # throughput and trace to b and c; latencybg skipped (host names)
    ),
    "example-2-testbed.json": (
        "antg-staging.es.net",
        "tests.throughput_iperf3_udp_test_v4.spec.window-size: has no netsonde equivalent"
        " (iperf3 tool)",
        13 + 9 + 13 + 10,  # iperf3 TCP, nuttcp UDP (as iperf3), trace, rtt
    ),
    "example-4-snmp.json": (
        "host-a.perfsonar.net",
        'tasks.task-snmp.test: test type "snmpget" has no netsonde tool'
        " (mapped: dns, http, latency, latencybg, rtt, throughput, trace)",
        0,
    ),
    "skeleton.json": (
        "FILL_IN_ADDRESS_NAME_1",
        "addresses.FILL_IN_ADDRESS_NAME_2.address: iperf3: target 'FILL_IN_HOSTNAME_OR_IP_2'"
        " is neither an IP address nor a valid host name",
        0,
    ),
    "psconfig-schema.json": ("any", "addresses: required, missing", -1),  # -1: never imports
}

_KEY_VALUE = (
    ": the 2007 KEY?value format is not imported (only the Config::General daemon.conf of 2008"
    " and later)"
)
_NOT_DAEMON = ": no <port> block: not a perfSONAR-PS daemon.conf"
# conformance/config file → the error (after "FILE"), or the number of tests it imports.
CONFIG: dict[str, str | int] = {
    "daemon/lookupservice-daemon-2009.conf": 0,
    "daemon/ls-2007.conf": ":1: METADATA_DB_TYPE?…" + _KEY_VALUE,
    "daemon/pinger-2008.conf": ":14: <pingermp> configuration_file: "
    f"{CONFIG_DIR}/daemon/tier2-landmarks.xml: no such file (give --landmarks)",
    "daemon/pinger-daemon-2011.conf": ":30: <pingermp> configuration_file: "
    "/opt/perfsonar_ps/PingER/etc/pinger-landmarks.xml: no such file (give --landmarks)",
    "daemon/status-2007.conf": ":73: DISABLE_MA?…" + _KEY_VALUE,
    "daemon/status-service-2009-02.conf": ":8: <status> e2emon_definitions_file: "
    f"{CONFIG_DIR}/daemon/e2emon_metadata.conf: no such file",
    "daemon/status-service-2009-03.conf": ":5: <<include database.conf>>: "
    f"{CONFIG_DIR}/daemon/database.conf: no such file",
    "ls/control-2007.xml": ":7: not a PingER landmarks file (root <store>)",
    "ls/store-2007.xml": ":7: not a PingER landmarks file (root <store>)",
    "pinger/create_pingerMA_MySQL.sql": _NOT_DAEMON,
    "pinger/create_pingerMA_SQLite.sql": _NOT_DAEMON,
    "pinger/landmarks_test.xml": 2,
    "pinger/pinger-landmarks-2008.xml": 3,
    "pinger/tier2-landmarks-2008.xml": 10,
    "status/db-mysql-2007.sql": _NOT_DAEMON,
    "status/db-sqlite-2007.sql": _NOT_DAEMON,
    "status/e2emon_compat-2008.conf": ":1: not a PingER landmarks file (root <config>)",
    "status/e2emon_metadata-2009.conf": ":3: not a PingER landmarks file (root <config>)",
    "status/elements-2008.conf": ":1: not a PingER landmarks file (root <config>)",
    "status/elements-2009.conf": _NOT_DAEMON,
    "status/links-2007.conf": ":1: not a PingER landmarks file (root <links>)",
}


def _psconfig_dir() -> Path:
    if not PSCONFIG_DIR.is_dir():
        pytest.skip(f"pSConfig examples not found at {PSCONFIG_DIR}")
    return PSCONFIG_DIR


def test_every_corpus_file_has_an_expectation() -> None:
    found = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*") if p.is_file())
    assert found == sorted(CONFIG)
    assert sorted(p.name for p in _psconfig_dir().glob("*.json")) == sorted(PSCONFIG)


def _specs(imported: Imported) -> int:
    return sum(len(t.fields.get("targets", [0])) for t in imported.tests)


@pytest.mark.parametrize("name", sorted(PSCONFIG))
def test_psconfig_examples(name: str, tmp_path: Path) -> None:
    path = _psconfig_dir() / name
    host, error, count = PSCONFIG[name]
    text = path.read_text()
    if error is not None:
        with pytest.raises(Unmappable) as e:
            import_psconfig(text, str(path), host, probes.TOOLS)
        assert str(e.value) == f"{path}: {error}"
    if count < 0:
        with pytest.raises(Unmappable):
            import_psconfig(text, str(path), host, probes.TOOLS, skip_unmappable=True)
        return
    imported = import_psconfig(text, str(path), host, probes.TOOLS, skip_unmappable=True)
    cfg = round_trip(imported, tmp_path)
    assert len(cfg.tests) == _specs(imported) == count
    if error is not None:
        assert any(error in n for n in imported.notes)  # skipped, with the reason


@pytest.mark.parametrize("name", sorted(CONFIG))
def test_perfsonar_configs(name: str, tmp_path: Path) -> None:
    path = CONFIG_DIR / name
    expected = CONFIG[name]
    if isinstance(expected, str):
        with pytest.raises(Unmappable) as e:
            import_perfsonar(path, probes.TOOLS)
        assert str(e.value) == f"{path}{expected}"
        return
    cfg = round_trip(import_perfsonar(path, probes.TOOLS), tmp_path)
    assert len(cfg.tests) == expected


@pytest.mark.parametrize(
    ("name", "landmarks", "tests"),
    [
        ("daemon/pinger-2008.conf", "pinger/tier2-landmarks-2008.xml", 10),
        ("daemon/pinger-daemon-2011.conf", "pinger/pinger-landmarks-2008.xml", 3),
    ],
)
def test_pinger_daemons_with_their_landmarks(
    name: str, landmarks: str, tests: int, tmp_path: Path
) -> None:
    imported = import_perfsonar(
        CONFIG_DIR / name, probes.TOOLS, landmarks_file=CONFIG_DIR / landmarks
    )
    cfg = round_trip(imported, tmp_path)
    assert len(cfg.tests) == tests
    assert cfg.listen_address == ("0.0.0.0", 8075)
    assert cfg.api.request_timeout == 300  # max_worker_lifetime
    assert all(t.tool == "ping" and t.params.packet_size == 1000 for t in cfg.tests)


def test_the_status_service_with_its_definitions_beside_it(tmp_path: Path) -> None:
    conf = tmp_path / "status.conf"
    shutil.copy(CONFIG_DIR / "daemon/status-service-2009-02.conf", conf)
    shutil.copy(CONFIG_DIR / "status/e2emon_metadata-2009.conf", tmp_path / "e2emon_metadata.conf")
    cfg = round_trip(import_perfsonar(conf, probes.TOOLS), tmp_path)
    status = cfg.sections["status"]
    assert status.e2emon_definitions == str(tmp_path / "e2emon_metadata.conf")
    assert status.max_recent_age == 600
    assert cfg.listen_address == ("0.0.0.0", 8084)


def test_the_hls(tmp_path: Path) -> None:
    imported = import_perfsonar(CONFIG_DIR / "daemon/lookupservice-daemon-2009.conf", probes.TOOLS)
    cfg = round_trip(imported, tmp_path)
    ls = cfg.sections["ls"]
    assert (ls.enabled, ls.ttl, ls.expire_every) == (True, 5760 * 60, 120 * 60)
    assert cfg.pidfile == Path("/var/run/lookup_service.pid")
