"""The measurement archive through real processes: the daemon pings loopback and serves what
it stored over NMWG (with `netsonde client`), REST and /metrics; a remote MP stores over NMWG."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from lxml import etree

from integration.conftest import DaemonProcess
from netsonde.nmwg import ns

TOKEN = "integration-token-0123456789"
PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
NS = {"nmwg": ns.NMWG, "pinger": ns.PINGER, "nmwgr": ns.NMWGR, "select": ns.SELECT}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(port: int) -> str:
    return f"""
[daemon]
data_dir = "data"
name = "mp.test"
listen = "127.0.0.1:{port}"

[api]
token = "{TOKEN}"

[[test]]
id = "lo4"
tool = "ping"
target = "127.0.0.1"
interval = "1s"
params = {{ count = 3, interval = 0.05, packet_size = 100 }}
"""


MDK = f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" xmlns:pinger="{PINGER}"
    xmlns:nmwgt="{ns.NMWGT}" type="MetadataKeyRequest" id="mdk1">
  <nmwg:metadata id="m1">
    <pinger:subject id="s1"><nmwgt:endPointPair>
      <nmwgt:src type="hostname" value="mp.test"/><nmwgt:dst type="ipv4" value="127.0.0.1"/>
    </nmwgt:endPointPair></pinger:subject>
    <pinger:parameters id="p1"><nmwg:parameter name="packetSize">100</nmwg:parameter>
    </pinger:parameters>
    <nmwg:eventType>{PINGER}</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="m1"/>
</nmwg:message>"""


def setup_data(key: str, start: int, end: int) -> str:
    return f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" xmlns:pinger="{PINGER}"
    xmlns:select="{ns.SELECT}" type="SetupDataRequest" id="sd1">
  <nmwg:metadata id="m1"><nmwg:key id="{key}"/><nmwg:eventType>{PINGER}</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:metadata id="f1">
    <select:subject id="fs1" metadataIdRef="m1"/>
    <select:parameters id="fp1">
      <nmwg:parameter name="startTime">{start}</nmwg:parameter>
      <nmwg:parameter name="endTime">{end}</nmwg:parameter>
    </select:parameters>
    <nmwg:eventType>http://ggf.org/ns/nmwg/ops/select/2.0/</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="f1"/>
</nmwg:message>"""


STORE = f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" xmlns:pinger="{PINGER}"
    xmlns:nmwgt="{ns.NMWGT}" type="MeasurementArchiveStoreRequest" id="st1">
  {{params}}
  <nmwg:metadata id="m1">
    <pinger:subject id="s1"><nmwgt:endPointPair>
      <nmwgt:src value="remote-mp.test"/><nmwgt:dst value="127.0.0.9"/>
    </nmwgt:endPointPair></pinger:subject>
    <pinger:parameters id="p1">
      <nmwg:parameter name="count" value="3"/><nmwg:parameter name="packetSize" value="64"/>
    </pinger:parameters>
    <nmwg:eventType>{PINGER}</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="m1">
    <nmwg:commonTime type="unix" value="1700000000" duration="1">
      <pinger:datum seqNum="1" value="0.5" ttl="60" numBytes="72" timeValue="1700000000.1"/>
      <pinger:datum seqNum="2" value="1.5" ttl="60" numBytes="72" timeValue="1700000000.3"/>
    </nmwg:commonTime>
  </nmwg:data>
</nmwg:message>"""


def post(url: str, body: str, headers: dict[str, str] | None = None) -> etree._Element:
    r = httpx.post(url, content=body.encode(), headers=headers or {}, timeout=30)
    assert r.status_code == 200
    return etree.fromstring(r.content).find(".//nmwg:message", NS)


def codes_of(message: etree._Element) -> list[str]:
    return [e.text for e in message.findall("nmwg:metadata/nmwg:eventType", NS)]


def test_round_trip_mdk_key_setup_data_rest_metrics_and_store(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ma = f"{base}/perfSONAR_PS/services/pinger/ma"
    d = daemon_factory(config(port))
    d.start()
    d.wait_for(
        lambda: len([r for r in d.cli_json("results", "lo4", missing=[]) if r["values"]]) >= 4, 15
    )

    # MetadataKeyRequest through the real client: one key for our test.
    (tmp_path / "mdk.xml").write_text(MDK)
    keys_out = subprocess.run(
        [str(d.netsonde), "client", ma, str(tmp_path / "mdk.xml"), "--filter",
         "//nmwg:data/nmwg:key/@id"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    stored = d.cli_json("results", "lo4", "--since", "10m")
    tests = {t["id"]: t for t in d.cli_json("tests")}
    assert keys_out == [tests["lo4"]["key"]]
    key = keys_out[0]

    # SetupDataRequest by that key and a time filter: exactly the stored datums, in order.
    finished = [r for r in stored if r["state"] == "finished"]
    first, last = finished[1]["planned_us"] // 10**6, finished[-1]["planned_us"] // 10**6
    expected = [r for r in finished if first <= r["planned_us"] // 10**6 <= last]
    answer = post(ma, setup_data(key, first, last))
    assert answer.get("type") == "SetupDataResponse", etree.tostring(answer)
    times = answer.findall("nmwg:data/nmwg:commonTime", NS)
    assert [int(t.get("value")) for t in times] == [r["planned_us"] // 10**6 for r in expected]
    for common, row in zip(times, expected, strict=True):
        datums = {dm.get("name"): dm.get("value") for dm in common.findall("pinger:datum", NS)}
        for name in ("minRtt", "maxRtt", "meanRtt", "medianRtt", "lossPercent"):
            assert float(datums[name]) == row["values"][name], name
        assert datums["duplicates"] == ("true" if row["values"]["duplicates"] else "false")
    select_md = answer.find("nmwg:metadata/select:parameters/..", NS)
    pinger_md = answer.find("nmwg:metadata/pinger:subject/..", NS)
    assert pinger_md.get("metadataIdRef") == select_md.get("id")  # not a dangling "1"

    # REST sees the same runs.
    rest = httpx.get(f"{base}/api/v1/results", params={"test_key": key, "limit": 1000}).json()
    by_id = {r["run_id"]: r for r in rest["items"]}
    assert all(by_id[r["run_id"]]["result"]["values"] == r["values"] for r in expected)

    # Store: refused without the token, taken with it, idempotent on a re-post.
    refused = post(ma, STORE.format(params=""))
    assert codes_of(refused) == ["error.common.authentication"]
    token_param = (
        f'<nmwg:parameters id="mp"><nmwg:parameter name="authToken">{TOKEN}'
        "</nmwg:parameter></nmwg:parameters>"
    )
    added = post(ma, STORE.format(params=token_param))
    assert codes_of(added) == ["success.ma.added"]
    assert added.findtext("nmwg:data/nmwgr:datum", namespaces=NS).startswith("1 new")
    again = post(ma, STORE.format(params=""), {"Authorization": f"Bearer {TOKEN}"})
    assert again.findtext("nmwg:data/nmwgr:datum", namespaces=NS).startswith("0 new")
    remote_key = httpx.get(f"{base}/api/v1/tests", params={"target": "127.0.0.9"}).json()
    (stored_test,) = remote_key["items"]
    assert stored_test["source"] == "remote-mp.test"
    back = post(ma, setup_data(stored_test["key"], 1699999999, 1700000001))
    (common,) = back.findall("nmwg:data/nmwg:commonTime", NS)
    datums = {dm.get("name"): dm.get("value") for dm in common.findall("pinger:datum", NS)}
    assert (datums["minRtt"], datums["maxRtt"], datums["meanRtt"]) == ("0.5", "1.5", "1.0")
    assert float(datums["lossPercent"]) == round(100 / 3, 6)  # seq 3 never came back

    # /metrics: runs by state and per-test gauges from the live daemon, request counters.
    text = httpx.get(f"{base}/metrics").text
    assert 'netsonde_runs_total{state="finished",test="lo4"}' in text
    assert 'netsonde_last_loss_percent{target="127.0.0.1",test="lo4"} 0.0' in text
    assert "netsonde_scheduler_lateness_ms" in text
    assert 'path="/perfSONAR_PS/services/pinger/ma"' in text
    d.stop()


def test_client_errors_are_one_line(netsonde_bin: Path, tmp_path: Path) -> None:
    request = tmp_path / "r.xml"
    request.write_text(MDK)
    port = free_port()  # nothing listens there
    done = subprocess.run(
        [str(netsonde_bin), "client", f"http://127.0.0.1:{port}/x", str(request)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    missing = subprocess.run(
        [str(netsonde_bin), "client", "http://127.0.0.1:1/x", str(tmp_path / "nope.xml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert missing.returncode == 1 and "nope.xml" in missing.stderr


def test_app_index_and_unknown_paths_answer_json(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from hosting import host
    from netsonde.api.app import create_app

    app = create_app(host(tmp_path / "a.sqlite"))
    with TestClient(app) as client:
        index = client.get("/").json()
        assert index["nmwg"][0] == "/perfSONAR_PS/services/pinger/ma"
        assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "netsonde"
        missing = client.get("/no/such/path")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_busy_listen_address_is_one_line_and_leaves_nothing(
    netsonde_bin: Path, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        conf = tmp_path / "n.toml"
        conf.write_text(config(port))
        for extra in ([], ["--daemon"]):
            done = subprocess.run(
                [str(netsonde_bin), "run", "--config", str(conf), *extra],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert done.returncode == 1
            assert (
                done.stderr
                == f"netsonde: cannot listen on 127.0.0.1:{port}: Address already in use\n"
            )
            assert not (tmp_path / "data" / "netsonde.pid").exists()
