"""Achievable throughput through ``iperf3 -c TARGET -J`` (iperf3 ≥ 3.1, JSON output).

Schedule it in the ``exclusive`` class (``class = "exclusive"`` in the test's config): a
throughput test saturates the path and the host's CPU, so anything running beside it measures
the test rather than the network, and the test measures its neighbours (pScheduler and IEPM-BW
ran throughput tests one at a time for the same reason). Its ``TOOL`` says so: a test that
does not name its class runs in ``exclusive``.

The values are iperf3's own: TCP throughput is what the receiver got (``sum_received``), UDP
throughput is the received rate, and UDP jitter (RFC 3550, as iperf3 computes it) and loss are
iperf3's numbers, not recomputed. A server that is not there gives ``Result.error`` with
iperf3's message ("unable to connect to server: Connection refused").
"""

from __future__ import annotations

import json
import shutil
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from netsonde.model import Result, SchedClass
from netsonde.probes.base import Tool
from netsonde.probes.external import DidNotFinish, last_line, run_program
from netsonde.probes.targets import check_host, family_of

NAME = "iperf3"

_RATE = r"^\d+(?:\.\d+)?[KMG]?$"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    port: int = Field(5201, ge=1, le=65535, description="the server's port (-p)")
    duration: int = Field(10, ge=1, le=3600, description="seconds of measured transfer (-t)")
    protocol: Literal["tcp", "udp"] = "tcp"
    bandwidth: str | None = Field(
        None,
        pattern=_RATE,
        description="target rate in bits/s, K/M/G suffix allowed (-b); iperf3's UDP default "
        "is 1M, TCP unlimited",
    )
    parallel: int = Field(1, ge=1, le=128, description="parallel streams (-P)")
    reverse: bool = Field(False, description="the server sends, the client receives (-R)")
    omit: int = Field(0, ge=0, le=600, description="seconds of slow start left out (-O)")
    bytes_per_read: int | None = Field(
        None, ge=1, le=16 * 1024 * 1024, description="read/write buffer length in bytes (-l)"
    )
    connect_timeout: float = Field(
        5.0, gt=0, le=120, description="seconds to set up the control connection"
    )
    family: Literal["auto", "ipv4", "ipv6"] = "auto"

    @field_validator("bandwidth", mode="before")
    @classmethod
    def _number_is_bits(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def check_target(target: str) -> str:
    return check_host(target)


def default_timeout(params: Params) -> float:
    # Control-connection set-up, the omitted and measured seconds, and the result exchange.
    return params.connect_timeout + params.omit + params.duration + 10.0


def command_line(program: str, target: str, params: Params) -> list[str]:
    argv = [program, "-c", target, "-J", "-p", str(params.port), "-t", str(params.duration)]
    argv += ["--connect-timeout", str(round(params.connect_timeout * 1000))]
    if params.protocol == "udp":
        argv.append("-u")
    if params.bandwidth is not None:
        argv += ["-b", params.bandwidth]
    if params.parallel > 1:
        argv += ["-P", str(params.parallel)]
    if params.reverse:
        argv.append("-R")
    if params.omit:
        argv += ["-O", str(params.omit)]
    if params.bytes_per_read is not None:
        argv += ["-l", str(params.bytes_per_read)]
    family = {"ipv4": 4, "ipv6": 6}.get(params.family) or family_of(target)
    if family:
        argv.append(f"-{family}")
    return argv


class ReportError(ValueError):
    """iperf3 reported an error, or its report lacks what a result needs."""


def _mbps(section: dict[str, Any]) -> float:
    return round(section["bits_per_second"] / 1e6, 6)


def summarise(report: dict[str, Any]) -> tuple[dict[str, float | int | None], dict[str, Any]]:
    """Values and extra of one iperf3 JSON report; raises ReportError for a failed test."""
    if error := report.get("error"):
        raise ReportError(f"iperf3: {error}")
    start, end = report.get("start", {}), report.get("end", {})
    test = start.get("test_start", {})
    udp = test.get("protocol") == "UDP"
    try:
        sent = end.get("sum_sent") or end["sum"]
        # Older iperf3 UDP reports have only "sum" (the sender's rate, the receiver's loss).
        received = end.get("sum_received") or end["sum"]
        values: dict[str, float | int | None] = {
            "throughput_mbps": _mbps(received),
            "sender_mbps": _mbps(sent),
        }
        if udp:
            values["jitter_ms"] = round(received["jitter_ms"], 6)
            values["lossPercent"] = round(received["lost_percent"], 6)
            values["lost_packets"] = received["lost_packets"]
            # iperf3's lost_percent is over the datagrams sent; keep packets its denominator.
            values["packets"] = sent.get("packets", received["packets"])
        else:
            values["retransmits"] = sent.get("retransmits")  # absent where unsupported
    except (KeyError, TypeError) as e:
        raise ReportError(f"iperf3 report lacks {e}") from None
    reverse = bool(test.get("reverse"))
    cpu = end.get("cpu_utilization_percent", {})
    host, remote = cpu.get("host_total"), cpu.get("remote_total")
    connected = (start.get("connected") or [{}])[0]
    extra: dict[str, Any] = {
        "protocol": "udp" if udp else "tcp",
        "reverse": reverse,
        "streams": test.get("num_streams"),
        "seconds": received.get("seconds"),
        "bytes_received": received.get("bytes"),
        # The client is the sender unless reversed.
        "cpu": {
            "sender_percent": remote if reverse else host,
            "receiver_percent": host if reverse else remote,
            "host_total": host,
            "remote_total": remote,
        },
        "local": connected.get("local_host"),
        "remote": connected.get("remote_host"),
        "version": start.get("version"),
    }
    if not udp:
        extra["tcp_mss"] = start.get("tcp_mss_default")
        extra["congestion"] = end.get("sender_tcp_congestion")
    return values, extra


def run(target: str, params: Params, deadline: float) -> Result:
    program = shutil.which("iperf3")
    if program is None:
        return Result(tool=NAME, target=target, error="iperf3 not found: install iperf3")
    try:
        proc = run_program(command_line(program, target, params), deadline)
    except DidNotFinish as e:
        return Result(tool=NAME, target=target, error=str(e))
    try:
        report = json.loads(proc.stdout)
        if not isinstance(report, dict):
            raise ValueError
    except ValueError:
        reason = last_line(proc.stderr) or f"exit status {proc.returncode}"
        return Result(tool=NAME, target=target, error=f"iperf3 printed no JSON report: {reason}")
    try:
        values, extra = summarise(report)
    except ReportError as e:
        return Result(tool=NAME, target=target, error=str(e))
    return Result(tool=NAME, target=target, values=values, extra=extra)


TOOL = Tool(NAME, Params, check_target, default_timeout, run, default_class=SchedClass.EXCLUSIVE)
