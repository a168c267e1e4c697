"""A real Net-SNMP agent (Debian's ``snmpd``) in a network namespace the test owns.

snmpd reports the interfaces of the namespace it runs in, so the whole arrangement lives in a
fresh namespace: a veth pair ``vA``/``vB`` created directly inside it, ``lo`` up, and snmpd
bound to that namespace's 127.0.0.1. Nothing touches the host's interfaces, and a fresh
namespace has every port free.

The poller has to reach that 127.0.0.1 too. Rather than a subprocess per poll, the agent
carries a one-thread executor whose thread has entered the namespace with setns(2): network
namespaces are per thread on Linux, so every socket the code under test opens from that thread
(pysnmp's asyncio loop runs there) is inside the namespace, and the rest of pytest is not.

Use: ``from snmp_fixture import SnmpAgent, snmp_agent`` in a test module (tests/ is on sys.path).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from netns import enter_netns

T = TypeVar("T")

AGENT_PORT = 16161
LINK_A, LINK_B = "vA", "vB"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class SnmpAgent:
    """snmpd on 127.0.0.1:``port`` inside namespace ``netns``, read community ``community``."""

    host = "127.0.0.1"

    def __init__(self, netns: str, workdir: Path) -> None:
        self.netns = netns
        self.workdir = workdir
        self.port = AGENT_PORT
        self.community = "ns-" + secrets.token_hex(8)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "snmpd.log"
        self._inside = ThreadPoolExecutor(max_workers=1, initializer=enter_netns, initargs=(netns,))

    def inside(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on the thread that lives in the namespace; its sockets are in there."""
        return self._inside.submit(fn, *args, **kwargs).result(timeout=60)

    def link(self, name: str, state: str) -> None:
        """``ip link set NAME up|down`` inside the namespace."""
        _ip("-n", self.netns, "link", "set", name, state)

    def start(self) -> None:
        conf = self.workdir / "snmpd.conf"
        conf.write_text(
            f"agentaddress udp:{self.host}:{self.port}\nrocommunity {self.community} {self.host}\n"
        )
        conf.chmod(0o600)  # it holds the community
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "SNMP_PERSISTENT_DIR": str(self.workdir / "persist"),  # not /var/lib/snmp
            "MIBS": "",  # numeric OIDs only: skip loading MIB files
        }
        argv = ["ip", "netns", "exec", self.netns, shutil.which("snmpd") or "snmpd"]
        # -f foreground, -Lo log to stdout, -C no system config, only ours.
        argv += ["-f", "-Lo", "-C", "-c", str(conf), "-p", str(self.workdir / "snmpd.pid")]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        """Until snmpd's UDP socket is bound in the namespace (or it died)."""
        end = time.monotonic() + timeout
        needle = f"{self.host}:{self.port}"
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpd exited: {self.log.read_text()}")
            out = subprocess.run(
                ["ip", "netns", "exec", self.netns, "ss", "-Hlun"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            if needle in out:
                return
            time.sleep(0.05)
        raise RuntimeError(f"snmpd not listening on {needle} after {timeout}s: {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        self._inside.shutdown(wait=True)


def _create_netns(name: str) -> None:
    _ip("netns", "add", name)
    # Both ends are created inside the namespace: no name ever appears on the host.
    _ip("link", "add", "name", LINK_A, "netns", name, "type", "veth",
        "peer", "name", LINK_B, "netns", name)  # fmt: skip
    for dev in ("lo", LINK_A, LINK_B):
        _ip("-n", name, "link", "set", dev, "up")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for prog in ("snmpd", "ip", "ss"):
        if shutil.which(prog) is None:
            return f"{prog} not installed (apt-get install snmpd iproute2)"
    return None


@pytest.fixture
def snmp_agent(tmp_path: Path) -> Iterator[SnmpAgent]:
    """A running snmpd in a fresh namespace with an up veth pair vA/vB; all gone afterwards."""
    if why := _unavailable():
        # `make test` installs the tools and CI runs as root: there a missing piece is a
        # broken set-up, not a reason to pass quietly. Elsewhere (a developer without root)
        # the test says why it did not run.
        if os.environ.get("CI"):
            pytest.fail(f"SNMP end-to-end tests cannot run: {why}")
        pytest.skip(why)
    name = f"nsnmp-{os.getpid()}-{secrets.token_hex(3)}"
    agent: SnmpAgent | None = None
    try:
        _create_netns(name)
        agent = SnmpAgent(name, tmp_path)
        agent.start()
        yield agent
    finally:
        if agent is not None:
            agent.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
