"""ICMP echo through netsonde's own engine (``netsonde.engines.icmp``), one target per run.

Kernel receive timestamps and one socket per address family, as fping does; no external
program. The engine takes IP literals only: a host name target is resolved here with
getaddrinfo (a literal never is). Per-packet samples (seq 1..count, RTT, TTL, size, arrival
time) in arrival order, duplicates included; the PingER statistics are derived from them.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from netsonde.engines.icmp import ping_many
from netsonde.metrics import delay_summary, pinger_summary
from netsonde.model import PacketSample, Result
from netsonde.probes import deadline as deadlines
from netsonde.probes.base import Tool
from netsonde.probes.targets import check_host

NAME = "ping"
CLOCK = "CLOCK_REALTIME: send before sendto, receive SO_TIMESTAMPNS"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(10, ge=1, le=10_000, description="echo requests per run")
    interval: float = Field(1.0, ge=0.002, le=60, description="seconds between requests")
    packet_size: int = Field(56, ge=0, le=65_000, description="ICMP payload bytes")
    ttl: int = Field(64, ge=1, le=255)
    wait: float = Field(2.0, gt=0, le=60, description="seconds to wait for the last reply")
    family: Literal["auto", "ipv4", "ipv6"] = "auto"
    prime: bool = Field(False, description="send one priming ping first and discard it")
    socket: Literal["auto", "raw", "dgram"] = Field(
        "auto", description="raw ICMP socket, datagram ICMP socket, or raw when permitted"
    )


def check_target(target: str) -> str:
    return check_host(target)


def default_timeout(params: Params) -> float:
    return _run_seconds(params) + 5.0


def _run_seconds(params: Params) -> int:
    return math.ceil(_sending_seconds(params) + params.wait)


def _sending_seconds(params: Params) -> float:
    return (params.count + int(params.prime) - 1) * params.interval


def resolve(target: str, family: str) -> str:
    """The IP address to ping: a literal as is (checked against ``family``), a host name
    through getaddrinfo, first answer of the wanted family."""
    want = {"ipv4": 4, "ipv6": 6}.get(family)
    try:
        literal = ipaddress.ip_address(target)
    except ValueError:
        literal = None
    if literal is not None:
        if want and literal.version != want:
            raise ValueError(f"{target}: Address family for hostname not supported")
        return target
    fam = {4: socket.AF_INET, 6: socket.AF_INET6}.get(want or 0, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(target, None, fam, socket.SOCK_RAW)
    except socket.gaierror as e:
        raise ValueError(f"{target}: {e.strerror}") from None
    return str(infos[0][4][0])


def summary(sent: int, replies: list[PacketSample]) -> dict[str, float | int | None]:
    """The PingER set plus IPDV, PDV, jitter, reordering, MOS and the Mathis estimate."""
    return {**pinger_summary(sent, replies), **delay_summary(sent, replies)}


def _rounded(values: dict[str, float | int | None]) -> dict[str, float | int | None]:
    """RTTs come in ns; keep 6 decimals of ms so float noise doesn't reach the archive."""
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}


def run_many(targets: Sequence[str], params: Params, gap: float = 0.001) -> list[Result]:
    """One Result per target, all pinged together by one engine call; ``gap`` is the minimum
    time between any two sends (fping -i), ``params.interval`` the per-target period."""
    results: list[Result | None] = [None] * len(targets)
    address: dict[int, str] = {}
    for i, target in enumerate(targets):
        try:
            address[i] = resolve(target, params.family)
        except ValueError as e:
            results[i] = Result(tool=NAME, target=target, error=str(e))
    if address:
        try:
            found = ping_many(
                list(dict.fromkeys(address.values())),
                count=params.count,
                period=params.interval,
                interval=gap,
                size=params.packet_size,
                ttl=params.ttl,
                timeout=params.wait,
                prime=params.prime,
                mode=params.socket,
            )
        except (OSError, ValueError) as e:
            for i in address:
                results[i] = Result(tool=NAME, target=targets[i], error=str(e))
            return [r for r in results if r is not None]
        for i, addr in address.items():
            replies = found.replies[addr]
            for r in replies:
                r.rtt_ms = None if r.rtt_ms is None else round(r.rtt_ms, 6)
            v6 = ipaddress.ip_address(addr).version
            results[i] = Result(
                tool=NAME,
                target=targets[i],
                sent=found.sent[addr],
                replies=replies,
                values=_rounded(summary(found.sent[addr], replies)),
                extra={
                    "packet_size": params.packet_size,
                    "ttl": params.ttl,
                    "address": addr,
                    "socket": found.modes[v6],
                    "clock": CLOCK,
                    **({"send_error": found.errors[addr]} if addr in found.errors else {}),
                },
            )
    return [r for r in results if r is not None]


def run(target: str, params: Params, deadline: float) -> Result:
    # The wait for the last replies is cut to end within the deadline's budget; when not
    # even the requests fit, none is sent.
    sending = _sending_seconds(params)
    wait = deadlines.budget(deadline, sending + params.wait) - sending
    if wait <= 0:
        return Result(tool=NAME, target=target, error=deadlines.NO_TIME_LEFT)
    if wait < params.wait:
        params = params.model_copy(update={"wait": wait})
    return run_many([target], params)[0]


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
