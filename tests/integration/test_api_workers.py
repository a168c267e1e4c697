"""[api] workers = N: HTTP served by N processes sharing the socket, kept alive by the daemon."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable

import httpx

from integration.conftest import DaemonProcess
from integration.test_archive_service import free_port
from procs import alive, descendants

ECHO = """<nmwg:message xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/" type="EchoRequest" id="e">
<nmwg:metadata id="m"><nmwg:eventType>http://schemas.perfsonar.net/tools/admin/echo/2.0
</nmwg:eventType></nmwg:metadata><nmwg:data id="d" metadataIdRef="m"/></nmwg:message>"""


def serving(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.ConnectError:  # no worker listens yet
        return False


def test_workers_serve_count_restart_and_stop(
    daemon_factory: Callable[[str], DaemonProcess],
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    d = daemon_factory(
        f"""
[daemon]
data_dir = "data"
listen = "127.0.0.1:{port}"
[api]
workers = 2
[[test]]
id = "lo4"
tool = "ping"
target = "127.0.0.1"
interval = "1s"
params = {{ count = 2, interval = 0.05 }}
"""
    )
    d.start()
    status = d.wait_for(lambda: (s := d.cli_json("status")).get("api_workers") and s, 15)
    workers = status["api_workers"]
    assert len(workers) == 2 and d.proc is not None
    assert set(workers) <= descendants(d.proc.pid)  # the daemon's own children
    d.wait_for(lambda: serving(f"{base}/api/v1/tests"), 10)  # the workers are importing

    with httpx.Client(base_url=base) as client:  # new connections spread over both workers
        for _ in range(20):
            assert client.get("/api/v1/tests", headers={"Connection": "close"}).status_code == 200
        echo = client.post("/perfSONAR_PS/services/pinger/ma", content=ECHO)
        assert b"success.echo" in echo.content
        # Workers run result queries on their own loop: same answers as the archive has.
        d.wait_for(lambda: len(d.cli_json("results", "lo4", missing=[])) >= 2, 10)
        stored = {r["run_id"]: r for r in d.cli_json("results", "lo4")}
        served = client.get("/api/v1/results", params={"test_id": "lo4", "limit": 1000}).json()
        assert served["items"] and all(
            stored[r["run_id"]]["values"] == r["result"]["values"]
            for r in served["items"]
            if r["run_id"] in stored
        )
        assert len({r["run_id"] for r in served["items"]} & set(stored)) >= 2

    def counted() -> float:
        text = httpx.get(f"{base}/metrics").text
        m = re.search(r'netsonde_http_requests_total\{method="GET",path="/api/v1/tests",'
                      r'status="200"\} (\S+)', text)  # fmt: skip
        return float(m[1]) if m else 0.0

    assert counted() >= 20  # summed over the workers, whichever answers the scrape
    d.wait_for(lambda: "netsonde_runs_total" in httpx.get(f"{base}/metrics").text, 10)

    # A worker killed hard is replaced within 2 s and the service keeps answering.
    os.kill(workers[0], signal.SIGKILL)
    killed_at = time.monotonic()
    # The status file itself, polled: a `netsonde status` takes over a second to start on a
    # loaded machine, which would be measured along with the replacement.
    status_file = d.config.parent / "data" / "status.json"
    new = d.wait_for(
        lambda: (
            (s := json.loads(status_file.read_text()))["api_worker_restarts"] == 1
            and len(s["api_workers"]) == 2
            and s
        ),
        5,
        step=0.05,
    )
    assert time.monotonic() - killed_at < 2 + 1.2  # + one status-file refresh
    assert workers[0] not in new["api_workers"] and workers[1] in new["api_workers"]
    assert httpx.get(f"{base}/api/v1/tests").status_code == 200

    took = d.stop()
    assert took < 10
    time.sleep(0.5)
    assert not [w for w in new["api_workers"] if alive(w)]
