"""ICMP echo through the system's iputils ``ping``, one run per target.

The program is run without a shell, its per-reply lines are parsed into per-packet samples
(seq, RTT, TTL, size, arrival time), and the PingER statistics are derived from those.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from netsonde.metrics import pinger_summary
from netsonde.model import PacketSample, Result, to_us
from netsonde.mp.tools.targets import check_host, family_of

NAME = "ping"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(10, ge=1, le=10_000, description="echo requests per run")
    interval: float = Field(1.0, ge=0.002, le=60, description="seconds between requests")
    packet_size: int = Field(56, ge=0, le=65_000, description="ICMP payload bytes")
    ttl: int = Field(64, ge=1, le=255)
    wait: float = Field(2.0, gt=0, le=60, description="seconds to wait for the last reply")
    family: Literal["auto", "ipv4", "ipv6"] = "auto"


def check_target(target: str) -> str:
    return check_host(target)


def default_timeout(params: Params) -> float:
    return _run_seconds(params) + 5.0


def _run_seconds(params: Params) -> int:
    return math.ceil((params.count - 1) * params.interval + params.wait)


def command_line(ping: str, target: str, params: Params) -> list[str]:
    argv = [ping, "-n", "-D", "-c", str(params.count), "-i", f"{params.interval:g}"]
    argv += ["-s", str(params.packet_size), "-t", str(params.ttl)]
    argv += ["-W", f"{params.wait:g}", "-w", str(_run_seconds(params))]
    family = {"ipv4": 4, "ipv6": 6}.get(params.family) or family_of(target)
    if family:
        argv.append(f"-{family}")
    argv.append(target)  # validated by check_host: never starts with '-'
    return argv


_REPLY = re.compile(
    r"^\[(?P<ts>\d+\.\d+)\] (?P<bytes>\d+) bytes from \S+?: icmp_seq=(?P<seq>\d+)"
    r" ttl=(?P<ttl>\d+) time=(?P<rtt>[\d.]+) ms"
)
_SENT = re.compile(r"^(\d+) packets transmitted")


def parse_output(text: str) -> tuple[int | None, list[PacketSample]]:
    """Per-reply samples in arrival order (duplicates kept) and the sent count, if printed."""
    sent: int | None = None
    replies: list[PacketSample] = []
    for line in text.splitlines():
        if m := _REPLY.match(line):
            replies.append(
                PacketSample(
                    seq=int(m["seq"]),
                    rtt_ms=float(m["rtt"]),
                    ttl=int(m["ttl"]),
                    size=int(m["bytes"]),
                    recv_us=to_us(float(m["ts"])),
                )
            )
        elif m := _SENT.match(line):
            sent = int(m[1])
    return sent, replies


def _rounded(values: dict[str, float | int | None]) -> dict[str, float | int | None]:
    """ping reports µs (3 decimals in ms); keep 6 so float noise doesn't reach the archive."""
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}


def run(target: str, params: Params, deadline: float) -> Result:
    ping = shutil.which("ping")
    if ping is None:
        return Result(tool=NAME, target=target, error="ping not found: install iputils-ping")
    proc = subprocess.run(
        command_line(ping, target, params), capture_output=True, text=True, check=False
    )
    sent, replies = parse_output(proc.stdout)
    if sent is None:
        # No summary line: ping refused to run (unknown host, bad option…).
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"ping exited with status {proc.returncode}"
        return Result(tool=NAME, target=target, error=reason)
    return Result(
        tool=NAME,
        target=target,
        sent=sent,
        replies=replies,
        values=_rounded(pinger_summary(sent, replies)),
        extra={"packet_size": params.packet_size, "ttl": params.ttl},
    )
