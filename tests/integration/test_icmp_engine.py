"""The ICMP engine on real sockets, loopback only (plus one namespace of the test's own).

Ground truth is fping on the same targets; the "network" in the reordering test is a
responder in a fresh namespace whose kernel echo replies are switched off.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from netsonde.engines.icmp import ping_many
from netsonde.metrics import pinger_summary
from netsonde.model import PacketSample
from netsonde.probes import ping

CI = bool(os.environ.get("CI"))
LOOPBACK8 = [f"127.0.0.{i}" for i in range(1, 9)]


def need(what: str, ok: bool) -> None:
    """A missing capability fails under CI and skips elsewhere."""
    if not ok:
        (pytest.fail if CI else pytest.skip)(f"needs {what}")


@pytest.fixture(autouse=True)
def _root() -> None:
    """Raw sockets, the ping_group_range sysctl and namespaces all need root."""
    need("root (raw ICMP sockets)", os.geteuid() == 0)


def fping_rtts(targets: list[str], count: int, period_ms: int, gap_ms: float) -> list[float]:
    done = subprocess.run(
        ["fping", "-C", str(count), "-q", "-p", str(period_ms), "-i", f"{gap_ms:g}", *targets],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    rtts: list[float] = []
    for line in done.stderr.splitlines():
        _host, _, values = line.partition(" : ")
        rtts += [float(v) for v in values.split() if v != "-"]
    assert len(rtts) == count * len(targets), done.stderr
    return rtts


def engine_rtts(targets: list[str], count: int, period_ms: int, gap_ms: float) -> list[float]:
    run = ping_many(targets, count=count, period=period_ms / 1000, interval=gap_ms / 1000)
    rtts = [s.rtt_ms for t in targets for s in run.replies[t] if s.rtt_ms is not None]
    assert len(rtts) == count * len(targets)
    return rtts


def test_median_rtt_matches_fping_within_50us() -> None:
    need("fping", shutil.which("fping") is not None)
    # Interleaved rounds on the same targets and pacing, so load on the box hits both alike.
    ours, theirs = [], []
    for _ in range(3):
        theirs.append(statistics.median(fping_rtts(LOOPBACK8, 10, 20, 1)))
        ours.append(statistics.median(engine_rtts(LOOPBACK8, 10, 20, 1)))
    diff_us = abs(statistics.median(ours) - statistics.median(theirs)) * 1000
    assert diff_us < 50, f"netsonde {ours} ms vs fping {theirs} ms"


def test_500_targets_at_once_lose_nothing_and_p99_stays_under_1ms() -> None:
    base = int(ipaddress.ip_address("127.0.10.1"))
    targets = [str(ipaddress.ip_address(base + i)) for i in range(500)]
    run = ping_many(targets, count=3, period=0.2, interval=0.0002, timeout=2)
    assert all(run.sent[t] == 3 for t in targets)
    short = [t for t in targets if [s.seq for s in run.replies[t]] != [1, 2, 3]]
    assert not short, short[:5]
    rtts = sorted(s.rtt_ms for t in targets for s in run.replies[t] if s.rtt_ms is not None)
    assert rtts[0] > 0 and rtts[int(len(rtts) * 0.99)] < 1.0, rtts[-10:]


@pytest.fixture
def ping_group_root() -> Iterator[None]:
    """Let gid 0 open ICMP datagram sockets for the test; the old range comes back after."""
    path = "/proc/sys/net/ipv4/ping_group_range"
    with open(path) as f:
        old = f.read().split()
    with open(path, "w") as f:
        f.write("0 0")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(" ".join(old))


@pytest.mark.parametrize("mode", ["raw", "dgram"])
def test_raw_and_datagram_sockets_on_v4_and_v6(mode: str, ping_group_root: None) -> None:
    targets = ["127.0.0.1", "127.0.0.3", "::1"]
    run = ping_many(targets, count=3, period=0.01, interval=0.001, mode=mode)
    assert run.modes == {4: mode, 6: mode}
    for t in targets:
        assert [s.seq for s in run.replies[t]] == [1, 2, 3]
        assert all(
            s.ttl == 64 and s.size == 64 and 0 < (s.rtt_ms or 0) < 100 for s in run.replies[t]
        )


def test_datagram_sockets_refused_without_the_group_range() -> None:
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = map(int, f.read().split())
    need("gid 0 outside net.ipv4.ping_group_range", not low <= 0 <= high)
    with pytest.raises(PermissionError, match="ping_group_range"):
        ping_many(["127.0.0.1"], mode="dgram")
    assert ping_many(["127.0.0.1"], mode="auto").modes == {4: "raw"}  # root: raw


def sniff(family: int) -> socket.socket:
    """A raw socket that sees every ICMP packet on loopback, our echo requests included."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    s = socket.socket(family, socket.SOCK_RAW, proto)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    s.setblocking(False)
    return s


def requests_seen(s: socket.socket, v6: bool, dst: str, length: int) -> list[int]:
    """TTL / hop limit of each echo request of ICMP ``length`` bytes that went to ``dst``."""
    hops = []
    while True:
        try:
            data, anc, _, addr = s.recvmsg(70_000, 256)
        except BlockingIOError:
            return hops
        if v6:
            if data[0] == 128 and len(data) == length and addr[0] == dst:
                hops += [int.from_bytes(a[2][:4], sys.byteorder) for a in anc if a[1] == 52]
        elif data[20] == 8 and len(data) - 20 == length and socket.inet_ntoa(data[16:20]) == dst:
            hops.append(data[8])


@pytest.mark.parametrize(
    ("target", "size", "ttl"), [("127.0.0.9", 333, 7), ("::1", 333, 9), ("127.0.0.9", 0, 200)]
)
def test_ttl_and_packet_size_are_honoured(target: str, size: int, ttl: int) -> None:
    v6 = ":" in target
    with sniff(socket.AF_INET6 if v6 else socket.AF_INET) as s:
        run = ping_many([target], count=2, period=0.01, size=size, ttl=ttl)
        time.sleep(0.05)
        assert requests_seen(s, v6, target, 8 + size) == [ttl, ttl]
    replies = run.replies[target]
    assert [(r.seq, r.size, r.ttl) for r in replies] == [(1, 8 + size, 64), (2, 8 + size, 64)]


def test_priming_probe_is_sent_and_discarded() -> None:
    run = ping_many(["127.0.0.1", "::1"], count=3, period=0.01, prime=True)
    assert run.primed == 2 and run.sent == {"127.0.0.1": 3, "::1": 3}
    assert all([s.seq for s in run.replies[t]] == [1, 2, 3] for t in run.replies)


def test_a_concurrent_fping_is_foreign_not_ours() -> None:
    need("fping", shutil.which("fping") is not None)
    fping = subprocess.Popen(
        ["fping", "-C", "40", "-q", "-p", "5", *LOOPBACK8[:4]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.05)
        run = ping_many(LOOPBACK8[:4], count=10, period=0.01, interval=0.001, mode="raw")
    finally:
        fping.wait(timeout=10)
    assert run.foreign > 0  # its replies reached our raw socket
    assert all([s.seq for s in run.replies[t]] == list(range(1, 11)) for t in LOOPBACK8[:4])


def test_ping_tool_runs_on_the_engine() -> None:
    params = ping.Params(count=3, interval=0.02, packet_size=100)
    result = ping.run("127.0.0.1", params, time.time() + ping.default_timeout(params))
    assert result.error is None and result.sent == 3
    assert [(p.seq, p.size, p.ttl) for p in result.replies] == [(k, 108, 64) for k in (1, 2, 3)]
    assert result.values["lossPercent"] == 0.0 and result.extra["socket"] == "raw"
    assert result.values["duplicates"] == 0


RESPONDER = r"""
import json, socket, sys, threading
from netsonde.engines.icmp import ping_many
from netsonde.engines.icmp.packet import checksum

def respond(s):
    requests = {}
    while len(requests) < 4:
        data, _ = s.recvfrom(2048)
        icmp = data[(data[0] & 15) * 4:]
        if icmp[0] == 8:
            requests[len(requests) + 1] = icmp
    for k in (1, 3, 3, 2):  # probe 4 lost, 3 duplicated, 2 late
        body = b"\0\0\0\0" + requests[k][4:]
        s.sendto(body[:2] + checksum(body).to_bytes(2, "big") + body[4:], ("127.0.0.1", 0))

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
threading.Thread(target=respond, args=(s,), daemon=True).start()
run = ping_many(["127.0.0.1"], count=4, period=0.01, timeout=0.5)
print(json.dumps([[p.seq, p.rtt_ms, p.ttl] for p in run.replies["127.0.0.1"]]))
"""


@pytest.fixture
def quiet_netns() -> Iterator[str]:
    """A namespace whose kernel does not answer pings (the test's responder does)."""
    need("root and ip netns", os.geteuid() == 0 and shutil.which("ip") is not None)
    name = "ns-icmp-" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        subprocess.run(
            ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"],
            check=True,
            timeout=10,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def test_duplicates_and_reordering_are_counted(quiet_netns: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", quiet_netns, sys.executable, "-c", RESPONDER],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    samples = json.loads(done.stdout)
    assert [seq for seq, _, _ in samples] == [1, 3, 3, 2]
    assert all(rtt > 0 and ttl == 64 for _, rtt, ttl in samples)
    summary = pinger_summary(4, [PacketSample(seq, rtt, ttl) for seq, rtt, ttl in samples])
    assert summary["duplicates"] == 1 and summary["outOfOrder"] == 1
    assert summary["lossPercent"] == 25.0
