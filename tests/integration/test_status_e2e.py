"""The Status MA end to end with a real agent: snmpd watches a veth pair in a namespace the test
owns, a real ``netsonde run`` inside that namespace polls it with snmp_link every second, and
the link states are read back over the daemon's own REST API (from the namespace too).

``ip link set vB down`` → a new ``down`` range for vB; ``up`` → a new ``up`` range. snmpd
caches its interface table for a few seconds, so the test measures when the *agent* first shows
the change (polling it directly) and holds the daemon to that: its new range must start no
earlier than the change and no later than one poll interval after the agent showed it (plus one
second: stored times are whole seconds and a poll takes a moment). The agent's lag is asserted
only loosely (< 10 s) and reported in the failure message.

The same daemon with ``[status] e2emon_definitions`` answers E2EMon's ``Path.Status`` over HTTP
at ``/perfSONAR_PS/services/status``: the circuit of the definitions file, its nodes, and its
state combined from the two links' states as polled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from netsonde.engines.snmp import poll_interfaces_sync
from netsonde.nmwg import ns
from snmp_fixture import LINK_A, LINK_B, SnmpAgent, snmp_agent

pytestmark = pytest.mark.integration
__all__ = ["snmp_agent"]  # the fixture, re-exported so pytest finds it here

INTERVAL = 1  # seconds between polls
LINK_ID = "urn:ogf:network:domain=test:host={target}:port={interface}"
ID_A = LINK_ID.format(target="127.0.0.1", interface=LINK_A)
ID_B = LINK_ID.format(target="127.0.0.1", interface=LINK_B)
NETSONDE = Path(sys.executable).with_name("netsonde")

CONFIG = """
[daemon]
name = "e2e"
data_dir = "{data}"
listen = "127.0.0.1:{port}"
stop_timeout = "2s"

[[test]]
id = "links"
tool = "snmp_link"
target = "127.0.0.1"
interval = "{interval}s"
params = {{ community = "{community}", port = {agent_port}, interfaces = ["{a}", "{b}"], \
timeout = 0.3, retries = 0, link_id = "{link_id}" }}
"""


def _free_port() -> int:
    """A free TCP port on the calling thread's namespace's loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> tuple[int, Any]:
    """(status, JSON body) of a GET; (0, error) when nothing answers yet."""
    try:
        with _NO_PROXY.open(url, timeout=3) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError as e:
        return 0, str(e)


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    try:
        with _NO_PROXY.open(urllib.request.Request(url, data=body), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Api:
    def __init__(self, agent: SnmpAgent, port: int, daemon: subprocess.Popen[bytes], log: Path):
        self.agent, self.base, self.daemon, self.log = (
            agent,
            f"http://127.0.0.1:{port}",
            daemon,
            log,
        )

    def get(self, path: str) -> tuple[int, Any]:
        return self.agent.inside(_get, self.base + path)

    def post(self, path: str, body: str) -> tuple[int, bytes]:
        return self.agent.inside(_post, self.base + path, body.encode())

    def latest(self) -> dict[str, dict[str, Any]]:
        code, body = self.get("/api/v1/links")
        if code == 404 and body == {"error": "Not Found"}:
            pytest.fail("GET /api/v1/links is not routed: mount build_links_router in app.py")
        return {x["link_id"]: x["latest"] for x in body["links"]} if code == 200 else {}

    def wait(self, what: Any, within: float, step: float = 0.2) -> Any:
        end = time.monotonic() + within
        while time.monotonic() < end:
            if value := what():
                return value
            if self.daemon.poll() is not None:
                pytest.fail(f"daemon exited {self.daemon.returncode}:\n{self.log.read_text()}")
            time.sleep(step)
        raise AssertionError(f"not within {within}s; daemon log:\n{self.log.read_text()}")


def _agent_shows(agent: SnmpAgent, oper_b: str, within: float = 10.0) -> float:
    """Poll snmpd directly until vB reads ``oper_b``; the time that poll returned."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        readings = agent.inside(
            poll_interfaces_sync, agent.host, agent.community, [LINK_B], port=agent.port,
            timeout=0.3, retries=0,
        )  # fmt: skip
        if readings[LINK_B].oper == oper_b:
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"snmpd did not show {LINK_B} {oper_b} within {within}s")


def _change(api: Api, oper_b: str, admin_b: str, after: int) -> dict[str, Any]:
    """Set vB, then check the daemon's new range for vB against when the agent showed it."""
    t0 = time.time()
    api.agent.link(LINK_B, "down" if oper_b == "down" else "up")
    t_agent = _agent_shows(api.agent, oper_b)
    new = api.wait(
        lambda: (r := api.latest().get(ID_B)) and r["oper"] == oper_b and r["start"] > after and r,
        within=t_agent - time.time() + INTERVAL + 5,
    )
    lag = t_agent - t0
    print(f"{LINK_B} {oper_b}: agent after {lag:.2f}s, range starts {new['start'] - t0:+.2f}s")
    assert new["admin"] == admin_b, new
    assert new["start"] >= int(t0), (new, t0)  # nothing recorded before the change
    assert new["start"] <= t_agent + INTERVAL + 1, f"{new} vs agent at {t_agent} (lag {lag:.1f}s)"
    assert lag < 10, f"snmpd showed the change {lag:.1f}s after it"
    return new


def _both(latest: dict[str, dict[str, Any]], oper: str) -> dict[str, dict[str, Any]] | None:
    """``latest`` when both links' latest ranges are ``oper``."""
    both = {latest.get(i, {}).get("oper") for i in (ID_A, ID_B)} == {oper}
    return latest if both else None


@contextlib.contextmanager
def _daemon(agent: SnmpAgent, tmp_path: Path, extra: str = "") -> Iterator[Api]:
    """A real ``netsonde run`` inside the agent's namespace, polling both links every second;
    ``extra`` is appended to its config. Killed at the end if the test did not stop it."""
    assert NETSONDE.exists(), f"no netsonde entry point next to {sys.executable}"
    port = agent.inside(_free_port)
    config = tmp_path / "netsonde.toml"
    config.write_text(
        CONFIG.format(
            data=tmp_path / "data",
            port=port,
            interval=INTERVAL,
            community=agent.community,
            agent_port=agent.port,
            a=LINK_A,
            b=LINK_B,
            link_id=LINK_ID,
        )
        + extra
    )
    config.chmod(0o600)  # it holds the community
    log = tmp_path / "daemon.log"
    argv = ["ip", "netns", "exec", agent.netns, str(NETSONDE), "run", "--config", str(config)]
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Api(agent, port, daemon, log)
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=10)


def test_link_down_up_shows_as_new_ranges(snmp_agent: SnmpAgent, tmp_path: Path) -> None:
    started = time.monotonic()
    with _daemon(snmp_agent, tmp_path) as api:
        first = api.wait(lambda: _both(api.latest(), "up"), within=15)
        assert first[ID_B]["admin"] == "normaloperation"

        down = _change(api, "down", "maintenance", after=first[ID_B]["start"])
        assert api.latest()[ID_A]["oper"] == "down"  # its peer lost carrier (admin stays up)
        up = _change(api, "up", "normaloperation", after=down["start"])

        code, body = api.get(f"/api/v1/links/{ID_B}/status?history=true")
        assert code == 200, body
        ranges = body["ranges"]
        assert [(r["oper"], r["admin"]) for r in ranges] == [
            ("up", "normaloperation"),
            ("down", "maintenance"),
            ("up", "normaloperation"),
        ]
        assert ranges[1]["start"] == down["start"] and ranges[2]["start"] == up["start"]
        assert ranges[0]["end"] < ranges[1]["start"] <= ranges[1]["end"] < ranges[2]["start"]
        # the down range, asked for by a point inside it, as ISO and as epoch seconds
        code, body = api.get(f"/api/v1/links/{ID_B}/status?at={ranges[1]['start_iso']}")
        assert code == 200 and body["ranges"] == [ranges[1]]
        feed = json.loads((tmp_path / "data" / "status.json").read_text())["feeds"]["status"]
        assert feed["stored"] >= 3 and feed["error"] is None  # the daemon reports its feed
        os.killpg(api.daemon.pid, signal.SIGTERM)  # a clean stop flushes and closes the store
        assert api.daemon.wait(timeout=10) == 0, api.log.read_text()
        assert time.monotonic() - started < 40


# ---- E2EMon compat (Path.Status) through the daemon ----------------------------------------

# One circuit of two segments, vA and vB: its state is theirs combined (the worst wins).
DEFINITIONS = f"""<config>
  <domain>E2E</domain>
  <node name="E2E-NORTH"><city>Oslo</city><country>NO</country></node>
  <node name="south"/>
  <circuit knowledge="full">
    <globalName>E2E-NORTH-SOUTH</globalName><localName>NORTH-SOUTH</localName>
    <segmentID>{ID_A}</segmentID><segmentID>{ID_B}</segmentID>
    <endpoint type="endpoint" name="E2E-NORTH"/><endpoint type="demarcpoint" name="south"/>
  </circuit>
</config>
"""

PATH_STATUS = f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" type="SetupDataRequest" id="e2e">
  <nmwg:metadata id="m1"><nmwg:eventType>Path.Status</nmwg:eventType></nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="m1"/>
</nmwg:message>"""


def _path_status(api: Api) -> dict[str, Any]:
    """Path.Status for every circuit, now, over HTTP: what E2EMon's collector asks."""
    code, body = api.post("/perfSONAR_PS/services/status", PATH_STATUS)
    assert code == 200, body
    message = next(etree.fromstring(body).iter(ns.clark("nmwg:message")))
    link = next(message.iter(f"{{{ns.NMTL2_E2EMON}}}link"))
    (datum,) = message.iter(ns.clark("ifevt:datum"))
    return {
        "domain": message.findtext(f"{ns.clark('nmwg:parameters')}/{ns.clark('nmwg:parameter')}"),
        "nodes": [n.get("id") for n in message.iter(ns.clark("nmwgtopo3:node")) if n.get("id")],
        "ends": [n.get("nodeIdRef") for n in link.iter(ns.clark("nmwgtopo3:node"))],
        "link": [link.findtext(f"{{{ns.NMTL2_E2EMON}}}{t}") for t in ("globalName", "type")],
        "state": (
            datum.findtext(ns.clark("ifevt:stateOper")),
            datum.findtext(ns.clark("ifevt:stateAdmin")),
        ),
        "codes": [
            e.text for e in message.iter(ns.clark("nmwg:eventType")) if "error" in (e.text or "")
        ],
    }


def test_e2emon_path_status_from_a_daemon(snmp_agent: SnmpAgent, tmp_path: Path) -> None:
    (tmp_path / "links.conf").write_text(DEFINITIONS)  # relative to the config file
    with _daemon(snmp_agent, tmp_path, '\n[status]\ne2emon_definitions = "links.conf"\n') as api:
        api.wait(lambda: _both(api.latest(), "up"), within=15)
        answer = _path_status(api)
        # the same observations, kept by the archive as the runs' tool detail
        code, body = api.get("/api/v1/results?test_id=links&samples=true&order=desc&limit=1")
        assert code == 200, body
        (run,) = body["items"]
        observed = run["result"]["extra"]["links"]
        assert [(o["link_id"], o["oper"], o["admin"]) for o in observed] == [
            (ID_A, "up", "normal"),
            (ID_B, "up", "normal"),
        ]
        assert all(o["time_us"] // 1_000_000 >= run["actual_us"] // 1_000_000 for o in observed)
        assert answer == {
            "domain": "E2E",
            "nodes": ["E2E-NORTH", "E2E-SOUTH"],  # "south": domain-prefixed, upper-cased
            "ends": ["E2E-NORTH", "E2E-SOUTH"],
            "link": ["E2E-NORTH-SOUTH", "DOMAIN_Link"],
            "state": ("up", "normaloperation"),
            "codes": [],
        }
        # vB down by its admin: the circuit is down (vA lost carrier) and in maintenance.
        api.agent.link(LINK_B, "down")
        down = api.wait(
            lambda: (a := _path_status(api))["state"] == ("down", "maintenance") and a, within=20
        )
        assert down["link"] == ["E2E-NORTH-SOUTH", "DOMAIN_Link"]
        latest = api.latest()
        assert (latest[ID_A]["oper"], latest[ID_B]["admin"]) == ("down", "maintenance")
        api.agent.link(LINK_B, "up")
