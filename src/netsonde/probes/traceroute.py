"""The path to a target through the system's traceroute (Debian's ``traceroute``, Dmitry
Butskoy's "modern traceroute for Linux").

The program runs without a shell and always with ``-n``: hop addresses are never resolved. Its
hop lines are parsed into per-probe addresses, RTTs and ICMP annotations (``!H`` …). A path is
summarised by ``path_id``, a short hash of the first responding address of each hop (``*`` for
a hop where none answered), so a route change shows as a new id — IEPM-BW's ROUTENO.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from netsonde.model import Result
from netsonde.probes.base import Tool
from netsonde.probes.external import DidNotFinish, last_line, run_program
from netsonde.probes.targets import check_host, family_of

NAME = "traceroute"
PROGRAM = "/usr/sbin/traceroute"  # Debian installs the modern one here (alternatives)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_hops: int = Field(30, ge=1, le=255, description="largest TTL probed (-m)")
    queries: int = Field(3, ge=1, le=10, description="probes per hop (-q)")
    wait: float = Field(2.0, gt=0, le=60, description="seconds to wait for a probe's reply (-w)")
    first_ttl: int = Field(1, ge=1, le=255, description="TTL of the first hop probed (-f)")
    method: Literal["udp", "icmp", "tcp"] = Field(
        "udp", description="udp: classic UDP to rising ports; icmp: echo (-I); tcp: SYN (-T)"
    )
    port: int | None = Field(None, ge=1, le=65535, description="destination (base) port (-p)")
    packet_size: int | None = Field(
        None, ge=0, le=65000, description="total packet length; traceroute's default if unset"
    )
    family: Literal["auto", "ipv4", "ipv6"] = "auto"

    @model_validator(mode="after")
    def _ttls(self) -> Params:
        if self.first_ttl > self.max_hops:
            raise ValueError(f"first_ttl ({self.first_ttl}) exceeds max_hops ({self.max_hops})")
        return self


def check_target(target: str) -> str:
    return check_host(target)


def default_timeout(params: Params) -> float:
    # Upper bound: every probe waits its full time (traceroute overlaps them, so it is faster).
    probes = (params.max_hops - params.first_ttl + 1) * params.queries
    return math.ceil(probes * params.wait) + 5.0


def command_line(program: str, target: str, params: Params) -> list[str]:
    argv = [program, "-n", "-m", str(params.max_hops), "-q", str(params.queries)]
    argv += ["-w", f"{params.wait:g}", "-f", str(params.first_ttl)]
    argv += {"udp": [], "icmp": ["-I"], "tcp": ["-T"]}[params.method]
    if params.port is not None:
        argv += ["-p", str(params.port)]
    family = {"ipv4": 4, "ipv6": 6}.get(params.family) or family_of(target)
    if family:
        argv.append(f"-{family}")
    argv.append(target)  # validated by check_host: never starts with '-'
    if params.packet_size is not None:
        argv.append(str(params.packet_size))
    return argv


@dataclass(slots=True)
class Probe:
    addr: str | None  # None: no reply ("*")
    rtt_ms: float | None
    annotation: str | None = None  # "!H", "!N", "!X", "!F-1500" …: ICMP unreachable kinds

    def as_dict(self) -> dict[str, Any]:
        return {"addr": self.addr, "rtt_ms": self.rtt_ms, "annotation": self.annotation}


@dataclass(slots=True)
class Hop:
    ttl: int
    probes: list[Probe] = field(default_factory=list)

    @property
    def first_responder(self) -> str | None:
        return next((p.addr for p in self.probes if p.addr is not None), None)

    def as_dict(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "probes": [p.as_dict() for p in self.probes]}


class ParseError(ValueError):
    pass


_HEADER = re.compile(r"^traceroute to \S+ \((?P<addr>[^)]+)\)")
_HOP = re.compile(r"^\s*(?P<ttl>\d+)\s+(?P<rest>.*)$")
_RTT = re.compile(r"^\d+(?:\.\d+)?$")
_ANNOTATION = re.compile(r"^!(?:[A-Z]|F-\d+|<?\d+>?)?$")


def _is_address(token: str) -> bool:
    try:
        ipaddress.ip_address(token)
    except ValueError:
        return False
    return True


def _parse_hop(ttl: int, rest: str) -> Hop:
    """One hop line after its TTL: ``ADDR RTT ms [!X] [RTT ms] [ADDR RTT ms] [*] …``."""
    hop = Hop(ttl)
    addr: str | None = None
    tokens = rest.split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "*":
            hop.probes.append(Probe(None, None))
        elif _is_address(tok):
            addr = tok
        elif _RTT.match(tok) and i + 1 < len(tokens) and tokens[i + 1] == "ms":
            if addr is None:
                raise ParseError(f"hop {ttl}: an RTT before any address: {rest!r}")
            hop.probes.append(Probe(addr, float(tok)))
            i += 1
        elif _ANNOTATION.match(tok) and hop.probes and hop.probes[-1].addr is not None:
            hop.probes[-1].annotation = tok
        elif tok.startswith("<") and tok.endswith(">"):
            pass  # extension details (-e: MPLS labels …): not ours to interpret
        else:
            raise ParseError(f"hop {ttl}: unexpected {tok!r} in {rest!r}")
        i += 1
    if not hop.probes:
        raise ParseError(f"hop {ttl}: no probes in {rest!r}")
    return hop


def parse_output(text: str) -> tuple[str | None, list[Hop]]:
    """The destination address from the header (if printed) and the hops, in TTL order."""
    dest: str | None = None
    hops: list[Hop] = []
    for line in text.splitlines():
        if m := _HEADER.match(line):
            dest = m["addr"]
        elif m := _HOP.match(line):
            hops.append(_parse_hop(int(m["ttl"]), m["rest"]))
        elif line.strip():
            raise ParseError(f"unexpected line {line!r}")
    return dest, hops


def path_of(hops: list[Hop]) -> list[str]:
    return [hop.first_responder or "*" for hop in hops]


def path_id(path: list[str]) -> str:
    """12 hex digits of SHA-256 over the path: equal paths, equal ids, across runs and hosts."""
    return hashlib.sha256(" ".join(path).encode()).hexdigest()[:12]


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def summarise(dest: str, hops: list[Hop]) -> tuple[dict[str, float | int | None], dict[str, Any]]:
    """Values and extra of a parsed run. ``hops``: the TTL of the last hop printed;
    ``reached``: a probe of the last hop was answered by the destination itself;
    ``lastHopRtt``: the smallest RTT at the last hop (ms), None if it did not answer."""
    last = hops[-1]
    reached = any(p.addr is not None and _same_address(p.addr, dest) for p in last.probes)
    rtts = [p.rtt_ms for p in last.probes if p.rtt_ms is not None]
    path = path_of(hops)
    pid = path_id(path)
    values: dict[str, float | int | None] = {
        "hops": last.ttl,
        "reached": int(reached),
        "lastHopRtt": min(rtts) if rtts else None,
        # The id as a number (48 bits: exact in a float) so it lives with the values, where
        # archives, /metrics and `results` see it; a change of value is a change of path.
        "pathId": int(pid, 16),
    }
    extra = {
        "destination": dest,
        "hops": [h.as_dict() for h in hops],
        "path": path,
        "path_id": pid,
    }
    return values, extra


def run(target: str, params: Params, deadline: float) -> Result:
    program = PROGRAM if os.access(PROGRAM, os.X_OK) else shutil.which("traceroute")
    if program is None:
        return Result(tool=NAME, target=target, error="traceroute not found: install traceroute")
    if params.method == "tcp" and os.geteuid() != 0:
        return Result(tool=NAME, target=target, error="method tcp needs root (raw sockets)")
    try:
        proc = run_program(command_line(program, target, params), deadline)
    except DidNotFinish as e:
        return Result(tool=NAME, target=target, error=str(e))
    try:
        dest, hops = parse_output(proc.stdout)
    except ParseError as e:
        return Result(tool=NAME, target=target, error=f"cannot parse traceroute output: {e}")
    if not hops:
        reason = last_line(proc.stderr) or f"traceroute exited with status {proc.returncode}"
        return Result(tool=NAME, target=target, error=reason)
    values, extra = summarise(dest or target, hops)
    extra["method"] = params.method
    return Result(tool=NAME, target=target, values=values, extra=extra)


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
