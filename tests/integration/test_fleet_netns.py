"""A fleet you can see work: three netsonde hosts and one central lookup service + archive, each
in a network namespace of its own, built from one pSConfig mesh file.

The central host ``c`` routes between the hosts (``hN`` is 10.99.N.2, linked to ``c`` at
10.99.N.1) and serves the lookup service and the archive on 10.99.0.1 (an address on its
loopback, reached through the links). Every host gets its tests by ``netsonde config import
psconfig`` of the same mesh file, pings the two others, spools its results to the central
archive and registers with the central lookup service. The test checks what the issue names:
every host and its tests appear in the LS; a host killed with SIGKILL disappears after its TTL
and never before; a cleanly stopped host disappears at once; the LS restarted keeps every live
registration; the central archive holds every host's results.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import DaemonProcess
from netns import Netns, NetnsLab, enter_netns, require_netns
from waiting import wait

HOSTS = ("h1", "h2", "h3")
CENTRAL = "10.99.0.1"
PORT = 8075
LS_TTL = 8  # seconds: a lease, as the hosts ask for it
KEEPALIVE = 2  # seconds between keepalives
PSSERVICE = "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/1.0/"
LS_TOKEN = secrets.token_hex(16)
ARCHIVE_TOKEN = secrets.token_hex(16)


def address(host: str) -> str:
    return f"10.99.{HOSTS.index(host) + 1}.2"


MESH = {
    "addresses": {h: {"address": address(h)} for h in HOSTS},
    "groups": {
        "fleet": {
            "type": "mesh",
            "addresses": [{"name": h} for h in HOSTS],
        }
    },
    "tests": {
        "ping": {
            "type": "rtt",
            "spec": {
                "source": "{% address[0] %}",
                "dest": "{% address[1] %}",
                "count": 3,
                "interval": "PT0.1S",
            },
        }
    },
    "schedules": {"often": {"repeat": "PT2S", "slip": "PT1S"}},
    "tasks": {"fleet-ping": {"group": "fleet", "test": "ping", "schedule": "often"}},
}

CENTRAL_CONFIG = f"""
[daemon]
name = "c"
data_dir = "{{dir}}/data"
pidfile = "{{dir}}/netsonde.pid"
listen = "{CENTRAL}:{PORT}"
stop_timeout = "5s"

[api]
workers = 0
token = "{ARCHIVE_TOKEN}"

[ls]
enabled = true
token = "{LS_TOKEN}"
ttl = "{LS_TTL}s"
max_ttl = "{LS_TTL}s"
expire_every = "1s"
"""

HOST_CONFIG = f"""
[daemon]
name = "{{name}}"
data_dir = "{{dir}}/data"
pidfile = "{{dir}}/netsonde.pid"
listen = "{{address}}:{PORT}"
stop_timeout = "5s"

[api]
workers = 0

[spool]
url = "http://{CENTRAL}:{PORT}"
token = "{ARCHIVE_TOKEN}"
timeout = "3s"
max_backoff = "2s"

[registration]
urls = ["http://{CENTRAL}:{PORT}/perfSONAR_PS/services/LS"]
token = "{LS_TOKEN}"
interval = "{KEEPALIVE}s"
ttl = "{LS_TTL}s"
"""


class Fleet:
    """The lab, the central daemon and the hosts' daemons, by name."""

    def __init__(self, lab: NetnsLab, netsonde: Path, tmp: Path) -> None:
        self.lab, self.netsonde, self.tmp = lab, netsonde, tmp
        self.central_ns = lab.add("c")
        self.central_ns.forward()
        self.central_ns.ip("addr", "add", f"{CENTRAL}/32", "dev", "lo")
        self.host_ns: dict[str, Netns] = {}
        for i, name in enumerate(HOSTS, start=1):
            ns = lab.add(name)
            lab.link(self.central_ns, ns, f"10.99.{i}.1/24", f"10.99.{i}.2/24")
            ns.ip("route", "add", "10.99.0.0/16", "via", f"10.99.{i}.1")
            self.host_ns[name] = ns
        self.central = self._daemon("c", CENTRAL_CONFIG.format(dir=tmp / "c"))
        mesh = tmp / "mesh.json"
        mesh.write_text(json.dumps(MESH))
        self.daemons: dict[str, DaemonProcess] = {}
        for name in HOSTS:
            tests = self.cli("config", "import", "psconfig", str(mesh), "--host", name)
            body = HOST_CONFIG.format(name=name, dir=tmp / name, address=address(name)) + tests
            self.daemons[name] = self._daemon(name, body)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.netsonde), *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def _daemon(self, name: str, body: str) -> DaemonProcess:
        (self.tmp / name).mkdir(exist_ok=True)
        config = self.tmp / name / "netsonde.toml"
        config.write_text(body)
        return DaemonProcess(self.netsonde, config)

    def ns_of(self, d: DaemonProcess) -> Netns:
        if d is self.central:
            return self.central_ns
        return self.host_ns[next(n for n, x in self.daemons.items() if x is d)]

    def start(self, d: DaemonProcess) -> None:
        ns = self.ns_of(d)
        d.start(preexec_fn=lambda: enter_netns(ns.name))
        ns.wait_listening(PORT, timeout=30)

    def get(self, path: str) -> Any:
        """GET the central server from inside a host's namespace (through the links)."""

        def fetch() -> Any:
            with urllib.request.urlopen(f"http://{CENTRAL}:{PORT}{path}", timeout=10) as r:
                return json.load(r)

        return self.host_ns["h1"].inside(fetch)

    def services(self) -> dict[str, dict[str, Any]]:
        """Live service records in the LS, by the host part of their locator."""
        found = self.get("/api/v1/lookup/records?type=service&limit=1000")
        out = {}
        for record in found:
            for locator in record.get("service-locator", []):
                for name in HOSTS:
                    if f"//{address(name)}:" in locator:
                        out.setdefault(name, record)
        return out

    def metadata(self, name: str) -> list[dict[str, Any]]:
        """Live psmetadata records of ``name``'s measurement point."""
        return self.get(
            f"/api/v1/lookup/records?type=psmetadata&psmetadata-src-address={address(name)}"
        )

    def xquery_access_points(self) -> set[str]:
        """Every live service's accessPoint, by an XQuery sent with ``netsonde ls query`` from
        inside h1's namespace: the NMWG way to the same registry."""
        query = (
            f'declare namespace psservice="{PSSERVICE}";'
            " for $a in /nmwg:store//psservice:accessPoint return string($a)"
        )
        url = f"http://{CENTRAL}:{PORT}/perfSONAR_PS/services/LS"
        done = self.host_ns["h1"].run(
            str(self.netsonde),
            "ls",
            "query",
            "--url",
            url,
            "--xquery",
            query,
            "--json",
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return set(json.loads(done.stdout))

    def stop_all(self) -> None:
        for d in (*self.daemons.values(), self.central):
            d.kill()


@pytest.fixture
def fleet(netsonde_bin: Path, tmp_path: Path) -> Iterator[Fleet]:
    require_netns("ping")
    lab = NetnsLab()
    try:
        f = Fleet(lab, netsonde_bin, tmp_path)
        try:
            yield f
        finally:
            f.stop_all()
    finally:
        lab.close()


def test_a_fleet_registers_measures_expires_and_survives_an_ls_restart(fleet: Fleet) -> None:
    fleet.start(fleet.central)
    for d in fleet.daemons.values():
        fleet.start(d)

    # Every host and its tests appear in the LS.
    wait(lambda: set(fleet.services()) == set(HOSTS), 30, "every host registered")
    for name in HOSTS:
        others = {address(o) for o in HOSTS if o != name}
        items = wait(
            lambda n=name, o=others: (
                (m := fleet.metadata(n))
                and {v for r in m for v in r.get("psmetadata-dst-address", [])} >= o
                and m
            ),
            30,
            f"{name}'s tests registered",
        )
        assert all(address(name) in r["psmetadata-src-address"] for r in items)

    # The same registrations, found by XQuery over NMWG: each host's services by accessPoint.
    points = fleet.xquery_access_points()
    for name in HOSTS:
        assert any(f"//{address(name)}:{PORT}/" in p for p in points), (name, points)
    # Each host shows its registration in `netsonde status`.
    for name, d in fleet.daemons.items():
        states = d.cli_json("status")["registration"]
        assert states["mp"]["key"] and states["mp"]["items"] == 2, (name, states)
        assert "ls" not in states  # [ls] is off on a host: nothing of it to register

    # The central archive holds every host's results (spooled).
    def sources_with_results() -> set[str]:
        tests = fleet.get("/api/v1/tests?limit=1000")["items"]
        have = set()
        for t in tests:
            runs = fleet.get(f"/api/v1/runs?test={t['key']}&limit=1")["items"]
            if runs:
                have.add(t["source"])
        return have

    wait(lambda: sources_with_results() >= set(HOSTS), 40, "every host's results centrally")

    # A cleanly stopped host disappears at once (it deregisters).
    fleet.daemons["h3"].stop()
    stopped = time.monotonic()
    wait(lambda: "h3" not in fleet.services(), 5, "h3 deregistered on its clean stop")
    assert time.monotonic() - stopped < 5
    assert fleet.metadata("h3") == []

    # The LS restarted keeps every live registration (h1 and h2 never stopped).
    before = fleet.services()
    assert set(before) == {"h1", "h2"}
    fleet.central.stop()
    fleet.start(fleet.central)
    after = fleet.services()
    assert set(after) == {"h1", "h2"}
    assert {n: r["uri"] for n, r in after.items()} == {n: r["uri"] for n, r in before.items()}

    # A host killed with SIGKILL disappears after its TTL, and never before.
    wait(lambda: "h2" in fleet.services(), 10, "h2 still registered")
    fleet.daemons["h2"].kill()
    killed = time.time()
    lease_end = datetime.fromisoformat(fleet.services()["h2"]["expires"]).timestamp()
    assert lease_end > killed
    while time.time() < lease_end - 1:
        assert "h2" in fleet.services(), "h2 gone before its lease ended"
        time.sleep(0.5)
    wait(lambda: "h2" not in fleet.services(), LS_TTL + 3, "h2 gone after its TTL")
    gone = time.time()
    assert gone - killed <= LS_TTL + 3
    assert "h1" in fleet.services()  # the live one stays
