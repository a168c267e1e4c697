"""The Status MA end to end with a real agent: snmpd watches a veth pair in a namespace the test
owns, a real ``netsonde run`` inside that namespace polls it with snmp_link every second, and
the link states are read back over the daemon's own REST API (from the namespace too).

``ip link set vB down`` → a new ``down`` range for vB; ``up`` → a new ``up`` range. snmpd
caches its interface table for a few seconds, so the test measures when the *agent* first shows
the change (polling it directly) and holds the daemon to that: its new range must start no
earlier than the change and no later than one poll interval after the agent showed it (plus one
second: stored times are whole seconds and a poll takes a moment). The agent's lag is asserted
only loosely (< 10 s) and reported in the failure message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from netsonde.engines.snmp import poll_interfaces_sync
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


def test_link_down_up_shows_as_new_ranges(snmp_agent: SnmpAgent, tmp_path: Path) -> None:
    assert NETSONDE.exists(), f"no netsonde entry point next to {sys.executable}"
    port = snmp_agent.inside(_free_port)
    config = tmp_path / "netsonde.toml"
    config.write_text(
        CONFIG.format(
            data=tmp_path / "data",
            port=port,
            interval=INTERVAL,
            community=snmp_agent.community,
            agent_port=snmp_agent.port,
            a=LINK_A,
            b=LINK_B,
            link_id=LINK_ID,
        )
    )
    config.chmod(0o600)  # it holds the community
    log = tmp_path / "daemon.log"
    started = time.monotonic()
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                snmp_agent.netns,
                str(NETSONDE),
                "run",
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api = Api(snmp_agent, port, daemon, log)
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
        os.killpg(daemon.pid, signal.SIGTERM)  # a clean stop flushes and closes the store
        assert daemon.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - started < 40
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=10)
