"""TWAMP-Light end to end: netsonde's sender against netsonde's reflector, as real processes on
loopback (IPv4 and IPv6), across two network namespaces joined by a veth pair, and the
reflector kept alive as a `netsonde run` server with a scheduled twamp test."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import DaemonProcess
from netsonde.engines.twamp.clock import read_estimate
from netsonde.probes import twamp

PY = sys.executable


class Reflector:
    """``python -m netsonde.engines.twamp.reflector`` (optionally inside a namespace) and the
    addresses it reports once bound."""

    def __init__(self, *listen: str, netns: str | None = None, cli: bool = False) -> None:
        netsonde = str(Path(PY).parent / "netsonde")
        argv = (
            [netsonde, "twamp-reflector"] if cli else [PY, "-m", "netsonde.engines.twamp.reflector"]
        )
        for addr in listen:
            argv += ["--listen", addr]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        self.ports: list[int] = []
        for _ in listen:
            line = self.proc.stdout.readline()
            assert "listening on" in line, line + self.proc.stdout.read()
            self.ports.append(int(line.rsplit(":", 1)[1]))

    def stop(self) -> str:
        """SIGTERM; the rest of its output. It must exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=5)
        assert self.proc.returncode == 0, out
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def reflectors() -> Iterator[Callable[..., Reflector]]:
    made: list[Reflector] = []

    def make(*listen: str, netns: str | None = None, cli: bool = False) -> Reflector:
        made.append(Reflector(*listen, netns=netns, cli=cli))
        return made[-1]

    yield make
    for r in made:
        r.kill()


def measure(target: str, **params: Any) -> tuple[twamp.Params, Any]:
    p = twamp.Params(**params)
    return p, twamp.run(target, p, time.time() + twamp.default_timeout(p))


# ---- loopback --------------------------------------------------------------------------------


@pytest.mark.parametrize(("padding", "dscp"), [(0, 0), (27, 46), (200, 10)])
def test_loopback_v4_and_v6(reflectors: Callable[..., Reflector], padding: int, dscp: int) -> None:
    refl = reflectors("127.0.0.1:0", "[::1]:0")
    for target, port in (("127.0.0.1", refl.ports[0]), ("::1", refl.ports[1])):
        _, r = measure(
            target, count=5, interval=0.01, port=port, padding=padding, ttl=64, dscp=dscp
        )
        assert r.error is None and r.sent == 5
        assert sorted(s.seq for s in r.replies) == [0, 1, 2, 3, 4]  # seq preserved, none lost
        v = r.values
        assert v["lossPercent"] == 0.0 and v["duplicates"] == 0
        assert 0 < v["minRtt"] <= v["meanRtt"] <= v["maxRtt"]
        reply_size = max(41, 14 + padding)  # padding ≥ 27: same size both ways
        assert {s.size for s in r.replies} == {reply_size}
        assert r.extra["packet_size"] == 14 + padding
        for pkt in r.extra["packets"]:
            # One host, one clock: the four times are ordered and the one-way delays real.
            assert pkt["t1_ns"] <= pkt["t2_ns"] <= pkt["t3_ns"] <= pkt["t4_ns"]
            assert pkt["forward_ms"] >= 0 and pkt["backward_ms"] >= 0
            assert pkt["rtt_ms"] == pytest.approx(pkt["forward_ms"] + pkt["backward_ms"])
            assert pkt["sender_ttl"] == 64  # the TTL we sent with, as the reflector saw it
            assert pkt["reply_ttl"] == 255  # the reflector answers with 255
            assert pkt["reply_dscp"] == dscp  # … and with the DSCP our packet had
        # Kernel stamps both ways: when each packet left (TX) and when each answer came.
        assert all(pkt["t1_kernel"] and pkt["t4_kernel"] for pkt in r.extra["packets"])
        assert r.extra["kernel_send_stamps"] == 5
        # One host, one kernel clock: both ends claim the same error estimate, adjtimex's.
        assert r.extra["reflector_clock"] == r.extra["clock"]
        assert r.extra["clock"]["synchronized"] == read_estimate().synchronized
    # The reflector's own sequence numbers count every answer, over both sockets.
    assert "stopped after 10 packets" in refl.stop()


@pytest.mark.parametrize("variation_of", ["rtt", "forward", "backward"])
def test_delay_variation_keys(reflectors: Callable[..., Reflector], variation_of: str) -> None:
    refl = reflectors("127.0.0.1:0")
    _, r = measure(
        "127.0.0.1", count=6, interval=0.005, port=refl.ports[0], variation_of=variation_of
    )
    v = r.values
    assert v["lossPercent"] == 0.0
    assert v["delayOneWay"] == (variation_of != "rtt") and v["ipdvCount"] == 5
    assert v["reorderedCount"] == 0 and 0 <= v["pdvP50"] <= v["pdvMax"]
    d = [p[f"{variation_of}_ms"] for p in r.extra["packets"]]
    assert v["pdvMax"] == pytest.approx(max(d) - min(d), abs=1e-6)  # PDV on the chosen delay


def test_netsonde_twamp_reflector_command(reflectors: Callable[..., Reflector]) -> None:
    refl = reflectors("[::1]:0", cli=True)
    _, r = measure("::1", count=3, interval=0.01, port=refl.ports[0])
    assert r.values["lossPercent"] == 0.0
    assert "stopped after 3 packets" in refl.stop()


def test_no_reflector_is_full_loss_not_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, so nobody else answers there; never read
        _, r = measure("127.0.0.1", count=3, interval=0.01, port=port, timeout=0.3)
    assert r.error is None and r.sent == 3 and r.replies == []
    assert r.values["lossPercent"] == 100.0 and r.values["minRtt"] is None


def test_reflector_ignores_runts_and_its_own_port_and_refuses_host_names(
    reflectors: Callable[..., Reflector],
) -> None:
    refl = reflectors("127.0.0.1:0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(bytes(13), ("127.0.0.1", refl.ports[0]))  # one octet short of a test packet
        with pytest.raises(TimeoutError):
            s.recv(100)
        s.sendto(bytes(14), ("127.0.0.1", refl.ports[0]))
        assert len(s.recv(100)) == 41
    # From the reflector's own port number (as another reflector would send): no answer, or
    # two reflectors could be set bouncing at each other by one spoofed packet.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", refl.ports[0]))
        s.settimeout(0.3)
        s.sendto(bytes(14), ("127.0.0.1", refl.ports[0]))
        with pytest.raises(TimeoutError):
            s.recv(100)
    bad = subprocess.run(
        [PY, "-m", "netsonde.engines.twamp.reflector", "--listen", "localhost:862"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert bad.returncode == 2 and "must be an IP address" in bad.stderr


# ---- two namespaces --------------------------------------------------------------------------


@dataclass
class Pair:
    a: str  # namespace of the sender
    b: str  # namespace of the reflector
    b4: str = "10.99.7.2"
    b6: str = "fd00:99::2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Namespaces A and B joined by veth vA–vB: 10.99.7.1/24, fd00:99::1/64 and fe80::99:1 in A,
    .2, ::2 and fe80::99:2 in B. Both ends are created inside the namespaces; nothing appears on
    the host."""
    why = "network namespaces need root" if os.geteuid() != 0 else None
    if why is None and shutil.which("ip") is None:
        why = "ip (iproute2) not installed"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"TWAMP namespace tests cannot run: {why}")
        pytest.skip(why)
    tag = secrets.token_hex(3)
    p = Pair(a=f"twampA-{tag}", b=f"twampB-{tag}")
    try:
        _ip("netns", "add", p.a)
        _ip("netns", "add", p.b)
        _ip("link", "add", "vA", "netns", p.a, "type", "veth", "peer", "name", "vB", "netns", p.b)
        for ns, dev, host in ((p.a, "vA", "1"), (p.b, "vB", "2")):
            _ip("-n", ns, "addr", "add", f"10.99.7.{host}/24", "dev", dev)
            _ip("-n", ns, "addr", "add", f"fd00:99::{host}/64", "dev", dev, "nodad")
            _ip("-n", ns, "addr", "add", f"fe80::99:{host}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield p
    finally:
        for ns in (p.a, p.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


_SEND = """
import json, sys, time
from netsonde.probes import twamp
from netsonde.engines.twamp.clock import read_estimate
p = twamp.Params.model_validate(json.loads(sys.argv[2]))
r = twamp.run(sys.argv[1], p, time.time() + twamp.default_timeout(p))
print(json.dumps({"error": r.error, "sent": r.sent, "values": r.values, "extra": r.extra}))
"""


def send_from(netns: str, target: str, **params: Any) -> dict[str, Any]:
    """The twamp probe run inside ``netns`` (its sockets live there); its result as JSON."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, PY, "-c", _SEND, target, json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


def test_across_a_veth_pair(pair: Pair, reflectors: Callable[..., Reflector]) -> None:
    refl = reflectors(f"{pair.b4}:8620", f"[{pair.b6}]:8620", "[fe80::99:2%vB]:8620", netns=pair.b)
    # The link-local one needs its scope (the interface) on both sides, and the answer must
    # go back through the interface the question came in on.
    for target in (pair.b4, pair.b6, "fe80::99:2%vA"):
        r = send_from(pair.a, target, count=4, interval=0.02, port=8620, timeout=1)
        assert r["error"] is None and r["sent"] == 4
        assert r["values"]["lossPercent"] == 0.0
        assert 0 < r["values"]["minRtt"] <= r["values"]["maxRtt"]
        assert [p["seq"] for p in r["extra"]["packets"]] == [0, 1, 2, 3]
        assert all(p["sender_ttl"] == 255 for p in r["extra"]["packets"])  # one link, no hop
    assert "stopped after 12 packets" in refl.stop()


@pytest.mark.parametrize("side", ["vA", "vB"])
def test_link_down_is_full_loss(
    pair: Pair, reflectors: Callable[..., Reflector], side: str
) -> None:
    reflectors(f"{pair.b4}:8620", netns=pair.b)
    ns = pair.a if side == "vA" else pair.b
    _ip("-n", ns, "link", "set", side, "down")
    r = send_from(pair.a, pair.b4, count=3, interval=0.02, port=8620, timeout=0.5)
    assert r["error"] is None and r["sent"] == 3
    assert r["values"]["lossPercent"] == 100.0 and r["extra"]["packets"] == []
    if side == "vA":  # our own link is down: the kernel says so when we send
        assert sum(r["extra"]["send_errors"].values()) == 3


DAEMON_IN_A = """
[daemon]
data_dir = "data"

[api]
enabled = false

[status]
enabled = false

[[test]]
id = "tw"
tool = "twamp"
target = "{target}"
interval = "1s"
params = {{ count = 3, interval = 0.02, port = 8620, timeout = 0.5 }}
"""


def test_link_down_is_recorded_as_a_finished_run(
    pair: Pair,
    reflectors: Callable[..., Reflector],
    daemon_factory: Callable[[str], DaemonProcess],
) -> None:
    """A daemon measuring from namespace A: with vA down every run finishes, at 100 % loss."""
    reflectors(f"{pair.b4}:8620", netns=pair.b)
    _ip("-n", pair.a, "link", "set", "vA", "down")
    d = daemon_factory(DAEMON_IN_A.format(target=pair.b4))
    with d.log.open("a") as out:
        d.proc = subprocess.Popen(
            ["ip", "netns", "exec", pair.a, str(d.netsonde), "run", "--config", str(d.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    rows = d.wait_for(lambda: d.cli_json("results", "tw", missing=[]), 15)
    run = rows[0]
    assert run["state"] == "finished" and run["error"] is None, run
    assert run["sent"] == 3 and run["values"]["lossPercent"] == 100.0
    d.stop()


# ---- the reflector as a netsonde server ------------------------------------------------------


SERVED = """
[daemon]
data_dir = "data"

[api]
enabled = false

[status]
enabled = false

[[server]]
id = "twamp"
command = "{python}"
args = ["-m", "netsonde.engines.twamp.reflector", "--listen", "127.0.0.1:{port}"]

[[test]]
id = "tw"
tool = "twamp"
target = "127.0.0.1"
interval = "1s"
params = {{ count = 5, interval = 0.01, port = {port}, timeout = 1, padding = 100 }}
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reflector_as_a_daemon_server(
    daemon_factory: Callable[[str], DaemonProcess],
) -> None:
    d = daemon_factory(SERVED.format(python=PY, port=_free_udp_port()))
    d.start()

    def answered() -> list[dict[str, Any]]:
        rows = d.cli_json("results", "tw", "--samples", missing=[])
        # The first run may start before the reflector is bound: wait for one that got answers.
        return [r for r in rows if r["state"] == "finished" and r["values"]["lossPercent"] == 0]

    run = d.wait_for(answered, 15)[0]
    v = run["values"]
    assert run["sent"] == 5 and run["error"] is None
    assert 0 < v["minRtt"] <= v["medianRtt"] <= v["maxRtt"]
    assert d.stop() < 10
    out = d.output()
    assert "twamp-reflector: listening on 127.0.0.1:" in out
    assert "twamp-reflector: stopped after" in out  # SIGTERM from the daemon: a clean exit
