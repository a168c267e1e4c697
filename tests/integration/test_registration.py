"""Registration everywhere, with real daemons: a ``netsonde run`` serving a lookup service
(``[ls] enabled``) and a measurement point (``netsonde run`` with ``[registration]``) that
registers its tests and services there. The first URL is a port nothing listens on, so every
registration fails over to the second. Checked: the point and its tests appear in the LS; its
keepalives renew the lease; an LS restarted without the registration gets it again; a clean stop
deregisters at once; a lookup service that accepts connections and never answers does not delay
one run.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import DaemonProcess
from silent_ls import LS_PATH, Silent
from waiting import wait

pytestmark = pytest.mark.integration

TOKEN = secrets.token_hex(16)
MP_PATH = "/perfSONAR_PS/services/pinger/mp"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

LS_CONFIG = """
[daemon]
name = "ls"
data_dir = "{data}"
listen = "127.0.0.1:{port}"
stop_timeout = "2s"

[api]
workers = 0

[ls]
enabled = true
token = "{token}"
ttl = "60s"
max_ttl = "60s"
expire_every = "1s"
"""

MP_CONFIG = """
[daemon]
name = "mp.test"
data_dir = "{data}"
listen = "127.0.0.1:{port}"
stop_timeout = "2s"

[api]
workers = 0

[registration]
urls = [{urls}]
token = "{token}"
interval = "{interval}"
ttl = "60s"
timeout = "{timeout}"

[[test]]
id = "lo"
tool = "ping"
target = "127.0.0.1"
interval = "{every}"
params = {{ count = 1, wait = 0.5 }}

[[test]]
id = "noop"
tool = "noop"
target = "192.0.2.7"
interval = "{every}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with _NO_PROXY.open(url, timeout=5) as r:
        return json.load(r)


class LookupHost:
    """The lookup service's daemon and what it holds, read over its JSON API."""

    def __init__(self, factory: Callable[..., DaemonProcess], tmp: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.nmwg_url = self.base + LS_PATH
        self.data = tmp / "ls-data"
        body = LS_CONFIG.format(data=self.data, port=self.port, token=TOKEN)
        self.daemon = factory(body, "ls.toml")

    def start(self) -> None:
        self.daemon.start()
        self.daemon.wait_for(lambda: self._answers(), 30)

    def _answers(self) -> bool:
        try:
            get_json(self.base + "/api/v1/lookup/records?limit=1")
        except OSError:
            return False
        return True

    def records(self, **query: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({**query, "limit": "1000"})
        return get_json(f"{self.base}/api/v1/lookup/records?{q}")

    def service(self, access_point: str) -> dict[str, Any] | None:
        found = self.records(type="service", **{"service-locator": access_point})
        return found[0] if found else None

    def metadata(self, access_point: str) -> list[dict[str, Any]]:
        """What the service at ``access_point`` registered (its items)."""
        return self.records(type="psmetadata", **{"psmetadata-ma-locator": access_point})


@pytest.fixture
def lookup(daemon_factory: Callable[..., DaemonProcess], tmp_path: Path) -> LookupHost:
    return LookupHost(daemon_factory, tmp_path)


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    yield s
    s.close()


def mp_daemon(
    factory: Callable[..., DaemonProcess],
    tmp: Path,
    urls: list[str],
    *,
    interval: str = "2s",
    timeout: str = "2s",
    every: str = "1s",
) -> tuple[DaemonProcess, str]:
    port = free_port()
    body = MP_CONFIG.format(
        data=tmp / "mp-data",
        port=port,
        urls=", ".join(json.dumps(u) for u in urls),
        token=TOKEN,
        interval=interval,
        timeout=timeout,
        every=every,
    )
    return factory(body, "mp.toml"), f"http://127.0.0.1:{port}"


def registration(mp: DaemonProcess) -> dict[str, Any]:
    status = mp.cli_json("status")
    return status.get("registration", {}) if status.get("running") else {}


def expires(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["expires"]).timestamp()


def test_registers_keeps_alive_fails_over_reregisters_and_deregisters(
    daemon_factory: Callable[..., DaemonProcess], lookup: LookupHost, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}{LS_PATH}"  # nothing listens: the next URL is used
    mp, mp_base = mp_daemon(daemon_factory, tmp_path, [dead, lookup.nmwg_url])
    access_point = mp_base + MP_PATH
    lookup.start()
    mp.start()

    # Registered with the second URL; the point's service and its tests are in the LS.
    state = mp.wait_for(
        lambda: (r := registration(mp).get("mp")) and r["key"] and r,
        30,
    )
    assert state["url"] == lookup.nmwg_url and state["access_point"] == access_point
    assert state["items"] == 2 and state["failures"] >= 1  # the dead URL, each time
    assert dead in (state["last_error"] or "")
    text = mp.cli("status").stdout
    assert f"ls mp: registered with {lookup.nmwg_url} (2 items)" in text, text
    service = wait(lambda: lookup.service(access_point), 10, "the MP's service record")
    tests = wait(
        lambda: (m := lookup.metadata(access_point)) and len(m) == 2 and m, 10, "its two tests"
    )
    assert {v for r in tests for v in r["psmetadata-dst-address"]} == {"127.0.0.1", "192.0.2.7"}
    assert {v for r in tests for v in r["psmetadata-src-address"]} == {"127.0.0.1"}  # its host
    # The PingER MA registers its ping test too (its own access point, its own key).
    pinger_ma = wait(
        lambda: (r := registration(mp).get("pinger")) and r["key"] and r, 10, "the PingER MA"
    )
    (ping,) = wait(lambda: lookup.metadata(pinger_ma["access_point"]), 10, "its ping test")
    assert ping["psmetadata-dst-address"] == ["127.0.0.1"]

    # Keepalives (every 2 s ±10 %) move the lease on.
    first = expires(service)
    wait(
        lambda: (s := lookup.service(access_point)) and expires(s) >= first + 2,
        10,
        "a keepalive renewed the lease",
    )

    # The LS restarted without it (its registry lost): the next keepalive is refused and the
    # point registers again.
    failures = registration(mp)["mp"]["failures"]
    lookup.daemon.stop()
    for f in lookup.data.glob("lookup.sqlite*"):
        f.unlink()
    lookup.start()
    assert lookup.service(access_point) is None
    wait(lambda: lookup.service(access_point), 15, "registered again after the LS restart")
    assert len(lookup.metadata(access_point)) == 2
    assert registration(mp)["mp"]["failures"] > failures

    # A clean stop deregisters at once (before the daemon has exited).
    mp.stop()
    assert lookup.service(access_point) is None
    assert lookup.metadata(access_point) == []
    assert lookup.service(pinger_ma["access_point"]) is None


def test_an_unanswering_lookup_service_never_delays_a_run(
    daemon_factory: Callable[..., DaemonProcess], silent: Silent, tmp_path: Path
) -> None:
    # Two runs a second while every exchange with the LS hangs until its 2 s timeout, again
    # and again (keepalive period 1 s, the backoff no longer than that).
    mp, _ = mp_daemon(
        daemon_factory, tmp_path, [silent.url], interval="1s", timeout="2s", every="0.5s"
    )
    mp.start()
    mp.wait_for(lambda: (r := registration(mp).get("mp")) and r["failures"] >= 1, 30)
    stuck_from = time.time()  # the registrar now spends its time in exchanges that hang
    state = mp.wait_for(lambda: (r := registration(mp).get("mp")) and r["failures"] >= 4 and r, 30)
    assert state["key"] is None
    assert any(w in (state["last_error"] or "") for w in ("timed out", "within 2 s"))
    text = mp.cli("status").stdout
    assert "ls mp: not registered" in text and f"ls error: {silent.url}" in text, text
    status = mp.cli_json("status")
    assert status["runs"].get("missed", 0) == 0, status["runs"]
    # Every run planned while the registrar was stuck in its exchanges started on time.
    runs = [r for r in mp.cli_json("results") if r["planned_us"] / 1e6 >= stuck_from]
    assert len(runs) >= 10
    late_ms = sorted((r["actual_us"] - r["planned_us"]) / 1e3 for r in runs)
    assert late_ms[-1] < 150, late_ms
    assert status["workers"]["registrar"]["restarts"] == 0  # its heartbeat never went stale
    # A clean stop is not held up by the silent LS (nothing registered, nothing to withdraw).
    assert mp.stop() < 10
