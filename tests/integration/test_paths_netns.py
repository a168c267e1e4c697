"""traceroute and iperf3 across network namespaces the tests build: a shaped veth pair A — B
with a real `netsonde run` inside A, and a routed A — R — B (plus a second router R2).

Throughput ground truth: tbf on each end's egress at 50 Mbit/s. tbf counts every byte of the
frame it queues (IP packet plus the 14-byte Ethernet header), iperf3 counts TCP payload, so the
most iperf3 can report is 50 × MSS / (MTU + 14) with MSS = MTU − 40 − 12 (IP and TCP headers,
timestamps option): 50 × 1448 / 1514 = 47.82 Mbit/s for MTU 1500. The test holds the measured
value to 10 % of that goodput and of the nominal 50 Mbit/s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import DaemonProcess
from netns import Netns, NetnsLab, netns_lab, require_netns
from netsonde.probes import iperf3, traceroute

__all__ = ["netns_lab"]  # the fixture, re-exported so pytest finds it here

RATE_MBIT = 50
HOST_A, HOST_B = "10.99.7.1", "10.99.7.2"


class NetnsDaemon(DaemonProcess):
    """`netsonde run` inside a namespace (`ip netns exec NS netsonde run …`); the CLI stays on
    the host, where it only reads the archive."""

    def __init__(self, netsonde: Path, config: Path, ns: Netns) -> None:
        super().__init__(netsonde, config)
        self.ns = ns

    def start(self) -> subprocess.Popen[str]:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                self.ns.argv(str(self.netsonde), "run", "--config", str(self.config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        return self.proc


def shaped_pair(lab: NetnsLab) -> tuple[Netns, Netns]:
    """A and B joined by vethA (in A) — vethB (in B), both directions shaped to 50 Mbit/s."""
    a, b = lab.add("a"), lab.add("b")
    lab.link(a, b, f"{HOST_A}/24", f"{HOST_B}/24", a_dev="vethA", b_dev="vethB")
    # The bucket holds more than a timer tick's worth of the rate (50 Mbit/s ÷ 250 Hz ≈ 25 kB):
    # a smaller one makes the achieved rate depend on the host's timer jitter, not on the rate.
    a.shape("vethA", f"{RATE_MBIT}mbit", burst="64kb")
    b.shape("vethB", f"{RATE_MBIT}mbit", burst="64kb")
    return a, b


def toml_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def daemon_config(b: Netns, tests: str) -> str:
    """A daemon without HTTP that keeps `iperf3 -s` alive inside B."""
    server_args = ", ".join(f'"{a}"' for a in b.argv("iperf3", "-s", "-p", "5201")[1:])
    return f"""
[daemon]
data_dir = "data"

[api]
enabled = false

[[server]]
id = "iperf3-b"
command = "{b.argv()[0]}"
args = [{server_args}]
restart = "always"
{tests}
"""


def runs(d: DaemonProcess, test_id: str) -> list[dict[str, Any]]:
    return d.cli_json("results", test_id, "--since", "10m", missing=[])


def expected_goodput_mbit(a: Netns, dev: str) -> float:
    mtu = int(a.run("cat", f"/sys/class/net/{dev}/mtu").stdout)
    timestamps = a.run("sysctl", "-n", "net.ipv4.tcp_timestamps").stdout.strip() != "0"
    mss = mtu - 40 - (12 if timestamps else 0)
    return RATE_MBIT * mss / (mtu + 14)


@pytest.fixture
def lab_daemon(netsonde_bin: Path, tmp_path: Path) -> Iterator[Callable[[Netns, str], NetnsDaemon]]:
    made: list[NetnsDaemon] = []

    def make(ns: Netns, body: str) -> NetnsDaemon:
        config = tmp_path / "netsonde.toml"
        config.write_text(body)
        d = NetnsDaemon(netsonde_bin, config, ns)
        made.append(d)
        return d

    yield make
    for d in made:
        d.kill()


def test_iperf3_through_the_daemon_measures_the_shaped_rate(
    netns_lab: NetnsLab, lab_daemon: Callable[[Netns, str], NetnsDaemon]
) -> None:
    require_netns("iperf3", "tc")
    a, b = shaped_pair(netns_lab)
    start = datetime.now(UTC) + timedelta(seconds=5)
    d = lab_daemon(
        a,
        daemon_config(
            b,
            f"""
[[test]]
id = "bw"
tool = "iperf3"
target = "{HOST_B}"
class = "exclusive"
interval = "9s"
start = {toml_time(start)}
max_runs = 2
params = {{ duration = 4, omit = 1 }}

[[test]]
id = "tr"
tool = "traceroute"
target = "{HOST_B}"
interval = "9s"
start = {toml_time(start)}
max_runs = 1
params = {{ queries = 1, wait = 1, max_hops = 3 }}
""",
        ),
    )
    d.start()
    b.wait_listening(5201, timeout=15)  # the daemon's [[server]] inside B

    def finished() -> list[dict[str, Any]]:
        return [r for r in runs(d, "bw") if r["state"] == "finished"]

    run = d.wait_for(finished, timeout=25)[0]
    # A slow start-up may let the first slot come before the server listens; nothing else
    # may go wrong.
    for r in runs(d, "bw"):
        assert r["state"] == "finished" or "Connection refused" in (r["error"] or ""), r
    v = run["values"]
    goodput = expected_goodput_mbit(a, "vethA")
    print(f"iperf3 through tbf {RATE_MBIT} Mbit/s: received {v['throughput_mbps']:.3f} Mbit/s,"
          f" sent {v['sender_mbps']:.3f}, expected goodput {goodput:.3f}")  # fmt: skip
    assert v["throughput_mbps"] == pytest.approx(goodput, rel=0.10)
    assert v["throughput_mbps"] == pytest.approx(RATE_MBIT, rel=0.10)
    assert v["throughput_mbps"] <= RATE_MBIT  # the shaper is a ceiling, never exceeded
    assert v["retransmits"] is not None and v["retransmits"] >= 0

    # The traceroute beside it went through the daemon and the archive too: one hop, B.
    tr = d.wait_for(lambda: [r for r in runs(d, "tr") if r["state"] == "finished"], timeout=5)
    assert tr[0]["values"]["reached"] == 1 and tr[0]["values"]["hops"] == 1
    assert tr[0]["values"]["pathId"] == int(traceroute.path_id([HOST_B]), 16)
    # The hop list itself is stored and shown with --samples.
    (detail,) = d.cli_json("results", "tr", "--since", "10m", "--samples", "--limit", "1")
    assert detail["extra"]["path"] == [HOST_B]
    assert detail["extra"]["hops"][0]["probes"][0]["addr"] == HOST_B


@pytest.mark.parametrize("end", ["vethA", "vethB"])
def test_link_down_is_loss_for_ping_and_an_error_for_iperf3(
    netns_lab: NetnsLab, lab_daemon: Callable[[Netns, str], NetnsDaemon], end: str
) -> None:
    """vethA (A's own end) down: A has no route to B any more. vethB down: A's link loses its
    carrier, as when the far side of a cable goes. Either way ping loses everything (a
    measurement: finished, 100 % loss) and iperf3 cannot connect (no measurement: failed)."""
    require_netns("iperf3", "tc", "ping")
    a, b = shaped_pair(netns_lab)
    start = datetime.now(UTC) + timedelta(seconds=3)
    d = lab_daemon(
        a,
        daemon_config(
            b,
            f"""
[[test]]
id = "ping-b"
tool = "ping"
target = "{HOST_B}"
interval = "2s"
start = {toml_time(start)}
params = {{ count = 3, interval = 0.2, wait = 1 }}

[[test]]
id = "bw"
tool = "iperf3"
target = "{HOST_B}"
class = "exclusive"
interval = "3s"
start = {toml_time(start)}
params = {{ duration = 1, connect_timeout = 1.5 }}
""",
        ),
    )
    d.start()
    b.wait_listening(5201, timeout=15)

    def after(test_id: str, since_us: int, state: str) -> list[dict[str, Any]]:
        return [
            r for r in runs(d, test_id) if r["state"] == state and (r["actual_us"] or 0) > since_us
        ]

    # Up: both measure.
    d.wait_for(lambda: after("ping-b", 0, "finished") and after("bw", 0, "finished"), timeout=15)
    ok = after("ping-b", 0, "finished")[-1]["values"]
    assert ok["lossPercent"] == 0

    (a if end == "vethA" else b).link_state(end, "down")
    down_us = int(time.time() * 1e6)
    lost = d.wait_for(lambda: after("ping-b", down_us, "finished"), timeout=10)[0]
    assert lost["values"]["lossPercent"] == 100
    assert lost["error"] is None
    failed = d.wait_for(lambda: after("bw", down_us, "failed"), timeout=12)[0]
    assert failed["error"].startswith("iperf3: unable to connect to server:"), failed
    assert not after("bw", down_us, "finished")


def traceroute_in(ns: Netns, target: str, **params: Any) -> Any:
    p = traceroute.Params(**{"queries": 2, "wait": 1, "max_hops": 6, **params})
    return ns.inside(traceroute.run, target, p, time.time() + 20)


def routed(lab: NetnsLab) -> tuple[Netns, Netns, Netns, Netns]:
    """A — R — B and A — R2 — B; A's default route via R; B answers both ways."""
    a, r, r2, b = lab.add("a"), lab.add("r"), lab.add("r2"), lab.add("b")
    lab.link(a, r, "10.99.1.2/24", "10.99.1.1/24")
    lab.link(r, b, "10.99.2.1/24", "10.99.2.2/24")
    lab.link(a, r2, "10.99.3.2/24", "10.99.3.1/24")
    lab.link(r2, b, "10.99.4.1/24", "10.99.4.2/24")
    r.forward()
    r2.forward()
    a.ip("route", "add", "default", "via", "10.99.1.1")
    b.ip("route", "add", "10.99.1.0/24", "via", "10.99.2.1")
    b.ip("route", "add", "10.99.3.0/24", "via", "10.99.4.1")
    r2.ip("route", "add", "10.99.2.0/24", "via", "10.99.4.2")
    return a, r, r2, b


def test_traceroute_shows_the_router_and_detects_path_changes(netns_lab: NetnsLab) -> None:
    require_netns("traceroute")
    a, r, _, _ = routed(netns_lab)

    via_r = traceroute_in(a, "10.99.2.2")
    assert via_r.error is None, via_r.error
    assert via_r.extra["path"] == ["10.99.1.1", "10.99.2.2"]
    assert via_r.values["hops"] == 2 and via_r.values["reached"] == 1
    assert via_r.values["lastHopRtt"] is not None and via_r.values["lastHopRtt"] >= 0
    assert [h["ttl"] for h in via_r.extra["hops"]] == [1, 2]
    assert all(p["addr"] == "10.99.1.1" for p in via_r.extra["hops"][0]["probes"])
    assert len(via_r.extra["path_id"]) == 12

    # Same path again: same id.
    assert traceroute_in(a, "10.99.2.2").extra["path_id"] == via_r.extra["path_id"]

    # Through R2 instead: a new id.
    a.ip("route", "replace", "default", "via", "10.99.3.1")
    via_r2 = traceroute_in(a, "10.99.2.2")
    assert via_r2.extra["path"] == ["10.99.3.1", "10.99.2.2"]
    assert via_r2.extra["path_id"] != via_r.extra["path_id"]
    assert via_r2.values["pathId"] != via_r.values["pathId"]

    # Back through R, which has stopped routing: the probes die there in silence. (A cut link
    # behind R would give "!N", but the kernel rate-limits those per source with its own
    # 1/s token bucket, so which probes get one depends on timing; the parser's handling of
    # !N/!H/!X is tested on captured outputs in tests/unit/test_traceroute_parse.py.)
    a.ip("route", "replace", "default", "via", "10.99.1.1")
    r.sysctl("net.ipv4.ip_forward", 0)
    cut = traceroute_in(a, "10.99.2.2", max_hops=3)
    assert cut.error is None, cut.error
    assert cut.values == {
        "hops": 3,
        "reached": 0,
        "lastHopRtt": None,
        "pathId": int(cut.extra["path_id"], 16),
    }
    assert cut.extra["path"] == ["*", "*", "*"]
    assert cut.extra["path_id"] not in (via_r.extra["path_id"], via_r2.extra["path_id"])


@pytest.mark.parametrize("method", ["icmp", "tcp"])
def test_traceroute_methods_across_the_router(netns_lab: NetnsLab, method: str) -> None:
    require_netns("traceroute")
    a, _, _, _ = routed(netns_lab)
    res = traceroute_in(a, "10.99.2.2", method=method)
    assert res.error is None, res.error
    assert res.extra["path"] == ["10.99.1.1", "10.99.2.2"]
    assert res.values["reached"] == 1


def test_traceroute_ipv6_across_the_router(netns_lab: NetnsLab) -> None:
    require_netns("traceroute")
    a, r, b = netns_lab.add("a"), netns_lab.add("r"), netns_lab.add("b")
    netns_lab.link(a, r, "fd00:99::2/64", "fd00:99::1/64")
    netns_lab.link(r, b, "fd00:99:0:1::1/64", "fd00:99:0:1::2/64")
    r.forward()
    a.ip("-6", "route", "add", "default", "via", "fd00:99::1")
    b.ip("-6", "route", "add", "default", "via", "fd00:99:0:1::1")
    res = traceroute_in(a, "fd00:99:0:1::2")
    assert res.error is None, res.error
    assert res.extra["path"] == ["fd00:99::1", "fd00:99:0:1::2"]
    assert res.values["reached"] == 1


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_traceroute_loopback(target: str) -> None:
    if shutil.which("traceroute") is None:
        if os.environ.get("CI"):
            pytest.fail("traceroute not installed")
        pytest.skip("traceroute not installed")
    res = traceroute.run(target, traceroute.Params(queries=1, wait=1, max_hops=3), time.time() + 10)
    assert res.error is None, res.error
    assert res.values["hops"] == 1 and res.values["reached"] == 1
    assert res.extra["path"] == [target]


def test_traceroute_out_of_time_is_a_clear_error(netns_lab: NetnsLab) -> None:
    require_netns("traceroute")
    a, r, _, _ = routed(netns_lab)
    r.ip("route", "add", "blackhole", "10.99.9.0/24")  # R drops them without a word
    p = traceroute.Params(queries=3, wait=2, max_hops=10)
    res = a.inside(traceroute.run, "10.99.9.9", p, time.time() + 2.5)
    assert res.error is not None and "did not finish" in res.error
    assert res.values == {}


def test_iperf3_without_a_server_is_iperf3s_error(netns_lab: NetnsLab) -> None:
    require_netns("iperf3", "tc")
    a, _ = shaped_pair(netns_lab)
    res = a.inside(iperf3.run, HOST_B, iperf3.Params(duration=1), time.time() + 15)
    assert res.error == "iperf3: unable to connect to server: Connection refused"
    assert res.values == {}
