"""Network namespaces a test builds and tears down: hosts, routers, veth links, shaping.

A ``NetnsLab`` names every namespace it makes ``ns<role>-<random>``, creates both ends of a
veth pair directly inside their namespaces (no interface ever appears on the host), and on
close kills whatever still runs inside them and deletes them (their links go with them). Only
addresses from 10.99.0.0/16 and fd00:99::/32 belong in here, by convention of the test suite.

Inside a lab namespace, ICMP rate limiting is off (a router that answers a traceroute probe
only when its token bucket allows makes hops come and go at random) and so is IPv6 duplicate
address detection (addresses are usable at once). The kernel's separate 1/s limit on
"unreachable" errors of a router without a route stays: do not count on every !N.

Use::

    from netns import netns_lab, require_netns   # tests/ is on sys.path

    def test_x(netns_lab):
        a, b = netns_lab.add("a"), netns_lab.add("b")
        netns_lab.link(a, b, "10.99.1.1/24", "10.99.1.2/24")
        a.run("ping", "-c1", "10.99.1.2")
        a.inside(some_function, arg)    # called on a thread that lives in namespace a
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CLONE_NEWNET = 0x40000000


def _cmd(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (Python 3.11 has no setns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Netns:
    """One namespace of a lab."""

    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role
        self._thread: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def ip(self, *args: str) -> str:
        """``ip -n NAME ARGS…``; its stdout."""
        return _cmd("ip", "-n", self.name, *args).stdout

    def run(
        self, *argv: str, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a program inside the namespace."""
        full = ("ip", "netns", "exec", self.name, *argv)
        if check:
            return _cmd(*full, timeout=timeout)
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)

    def argv(self, *argv: str) -> list[str]:
        """The command line that runs ``argv`` inside the namespace (for Popen, configs…)."""
        return [shutil.which("ip") or "ip", "netns", "exec", self.name, *argv]

    def sysctl(self, key: str, value: str | int) -> None:
        """A per-namespace sysctl (net.*): the host's own value is not touched."""
        self.run("sysctl", "-qw", f"{key}={value}")

    def forward(self) -> None:
        """Make it a router (IPv4 and IPv6)."""
        self.sysctl("net.ipv4.ip_forward", 1)
        self.sysctl("net.ipv6.conf.all.forwarding", 1)

    def shape(self, dev: str, rate: str, burst: str = "32kbit", latency: str = "400ms") -> None:
        """Token-bucket shaping of ``dev``'s egress (tbf; netem is not available here)."""
        self.run("tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                 "rate", rate, "burst", burst, "latency", latency)  # fmt: skip

    def link_state(self, dev: str, state: str) -> None:
        self.ip("link", "set", dev, state)

    def listening(self, port: int, proto: str = "tcp") -> bool:
        out = self.run("ss", "-Hln" + ("t" if proto == "tcp" else "u")).stdout
        return any(line.split()[3].endswith(f":{port}") for line in out.splitlines() if line)

    def wait_listening(self, port: int, timeout: float = 10, proto: str = "tcp") -> None:
        end = time.monotonic() + timeout
        while not self.listening(port, proto):
            if time.monotonic() > end:
                raise TimeoutError(f"nothing listens on {proto} port {port} in {self.name}")
            time.sleep(0.1)

    def inside(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on a thread that lives in the namespace: the sockets it opens, and the
        programs it starts (they inherit the thread's namespace), are in there."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(self.name,))
        return self._thread.submit(fn, *args, **kwargs).result(timeout=120)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        # What still runs in here was started by the test (directly or by the code under test).
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)


@dataclass(frozen=True)
class Link:
    a: Netns
    a_dev: str
    b: Netns
    b_dev: str


class NetnsLab:
    """Namespaces of one test, all with one random suffix; ``close`` removes them."""

    def __init__(self) -> None:
        self.suffix = f"{os.getpid() % 100000}-{secrets.token_hex(3)}"
        self.namespaces: list[Netns] = []

    def add(self, role: str) -> Netns:
        ns = Netns(f"ns{role}-{self.suffix}", role)
        _cmd("ip", "netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        ns.sysctl("net.ipv4.icmp_ratelimit", 0)
        ns.sysctl("net.ipv6.icmp.ratelimit", 0)
        # No duplicate address detection: until it ends (~1 s) a link's fe80:: address is
        # tentative and neighbour discovery through it fails.
        ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
        ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
        return ns

    def link(
        self,
        a: Netns,
        b: Netns,
        addr_a: str | None = None,
        addr_b: str | None = None,
        *,
        a_dev: str | None = None,
        b_dev: str | None = None,
    ) -> Link:
        """A veth pair between ``a`` and ``b`` (``a_dev`` in a, ``b_dev`` in b; by default
        named after the namespace at the other end), addresses as ``10.99.1.1/24``, both up."""
        a_dev = a_dev or f"to-{b.role}"[:15]
        b_dev = b_dev or f"to-{a.role}"[:15]
        _cmd("ip", "link", "add", a_dev, "netns", a.name, "type", "veth",
             "peer", "name", b_dev, "netns", b.name)  # fmt: skip
        for ns, dev, addr in ((a, a_dev, addr_a), (b, b_dev, addr_b)):
            # Up first: an IPv6 address added while the link is down answers the first
            # neighbour solicitation only after a 1 s retransmission.
            ns.ip("link", "set", dev, "up")
            if addr is not None:
                # nodad: an IPv6 address is usable at once, not after duplicate detection.
                ns.ip("addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
        return Link(a, a_dev, b, b_dev)

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            ns.close()
        self.namespaces.clear()


def missing(*programs: str) -> str | None:
    """Why a namespace test cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for prog in ("ip", "ss", *programs):
        if shutil.which(prog) is None:
            return f"{prog} not installed"
    return None


def require_netns(*programs: str) -> None:
    """Skip without root or a program; under CI (env CI set) fail instead: there the set-up
    installs everything and runs as root, so a missing piece is a broken set-up."""
    if why := missing(*programs):
        if os.environ.get("CI"):
            pytest.fail(f"network namespace test cannot run: {why}")
        pytest.skip(why)


@pytest.fixture
def netns_lab() -> Iterator[NetnsLab]:
    """An empty lab; everything added to it is removed after the test."""
    require_netns()
    lab = NetnsLab()
    try:
        yield lab
    finally:
        lab.close()
