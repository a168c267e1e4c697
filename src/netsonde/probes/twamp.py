"""TWAMP-Light Session-Sender (RFC 5357 Appendix I): UDP test packets to a reflector.

Each packet carries its send time T1; the reflector answers with its receive time T2 and its
send time T3; T4 is the kernel's receive time of the answer here. Where the kernel reports when
a packet actually left (software TX timestamps), that time is our T1 for the arithmetic (the
one in the packet is read before the send system call). The RTT of a packet is the
two-way delay without the reflector's own time, (T4 − T1) − (T3 − T2), which needs no clock
synchronisation. The one-way delays T2 − T1 (forward) and T4 − T3 (backward) in ``extra`` do:
they mean something only when both clocks are synchronised (or on one host, one clock).

``values`` are the PingER set (``pinger_summary``: RTT statistics, lossPercent, duplicates…)
and ``delay_summary`` (IPDV, PDV, RFC 3550 jitter, RFC 4737 reordering, MOS, Mathis) computed
on the RTT, or on a one-way delay if ``variation_of`` says so. Per-answer detail (T1–T4, one-way
delays, the reflector's sequence number and the TTL our packet arrived with) is in
``extra["packets"]``.

The target must be an IP address: a host name would need a DNS lookup in the probe. Packets
are numbered from 0; a send error (no route, link down) counts as a lost packet, not a failed
run, and a late answer (after ``timeout``) is lost too.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from netsonde.engines.twamp.clock import read_estimate
from netsonde.engines.twamp.packets import (
    SENDER_SIZE,
    SYMMETRIC_PADDING,
    ErrorEstimate,
    ReflectorPacket,
    SenderPacket,
)
from netsonde.engines.twamp.udp import (
    Datagram,
    enable_tx_stamps,
    family_for,
    open_udp,
    receive,
    sockaddr,
    tx_stamps,
)
from netsonde.metrics import delay_summary, pinger_summary
from netsonde.model import PacketSample, Result
from netsonde.probes import deadline as deadlines
from netsonde.probes.base import Tool

NAME = "twamp"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(10, ge=1, le=10_000, description="test packets per run")
    interval: float = Field(1.0, ge=0.001, le=60, description="seconds between packets")
    padding: int = Field(
        SYMMETRIC_PADDING,
        ge=0,
        le=65_000,
        description="padding octets per packet (27 and up: the answers are the same size)",
    )
    port: int = Field(862, ge=1, le=65_535, description="the reflector's UDP port")
    timeout: float = Field(2.0, gt=0, le=60, description="seconds to wait for the last answer")
    ttl: int = Field(255, ge=1, le=255, description="IP TTL / hop limit (RFC 5357: 255)")
    dscp: int = Field(0, ge=0, le=63, description="DiffServ code point of the test packets")
    variation_of: Literal["rtt", "forward", "backward"] = Field(
        "rtt",
        description="the delay IPDV, PDV, jitter and MOS are computed on; forward and backward"
        " are one-way delays and need both clocks synchronised",
    )


def check_target(target: str) -> str:
    try:
        ipaddress.ip_address(target)
    except ValueError:
        raise ValueError(f"target {target!r} must be an IP address (no DNS lookups)") from None
    return target


def default_timeout(params: Params) -> float:
    return (params.count - 1) * params.interval + params.timeout + 5.0


@dataclass
class _Session:
    """What one run sent and got back.

    T1 is the time written into the packet (read just before the send; the reflector copies it
    and answers are matched on it) unless the kernel told us when the packet actually left
    (a software TX timestamp): then RTT and the forward delay use that, which leaves the
    send system call's own time out of them.
    """

    peer: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None = None  # the reflector
    sent_ns: dict[int, int] = field(default_factory=dict)  # seq → T1 as in the packet
    tx_ns: dict[int, int] = field(default_factory=dict)  # seq → kernel TX time, when known
    tx_order: list[int] | None = None  # seq of the k-th successful send (TX stamp number k)
    tx_frozen: bool = False  # after a failed send: later numbers may be off by one
    answers: list[tuple[ReflectorPacket, Datagram]] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)  # seqs with at least one answer
    replies: list[PacketSample] = field(default_factory=list)
    packets: list[dict[str, Any]] = field(default_factory=list)  # per answer, arrival order
    send_errors: dict[str, int] = field(default_factory=dict)
    ignored: int = 0  # datagrams that answer nothing we sent
    icmp_errors: int = 0

    def sent(self, seq: int, t1: int, error: OSError | None) -> None:
        self.sent_ns[seq] = t1
        if error is not None:
            name = type(error).__name__ if error.errno is None else os.strerror(error.errno)
            self.send_errors[name] = self.send_errors.get(name, 0) + 1
            # Whether a failed send used up a TX stamp number is unknown: stop numbering.
            self.tx_frozen = True
        elif self.tx_order is not None and not self.tx_frozen:
            self.tx_order.append(seq)

    def take_tx(self, key: int, stamp_ns: int) -> None:
        if self.tx_order is not None and key < len(self.tx_order):
            seq = self.tx_order[key]
            if stamp_ns >= self.sent_ns[seq]:  # it cannot have left before we stamped it
                self.tx_ns[seq] = stamp_ns

    def take(self, got: Datagram) -> None:
        if self.peer is not None and _source(got) != self.peer:
            self.ignored += 1
            return
        try:
            answer = ReflectorPacket.unpack(got.data)
        except ValueError:
            self.ignored += 1
            return
        t1 = self.sent_ns.get(answer.sender_seq)
        if t1 is None or answer.sender_timestamp_ns != t1:
            self.ignored += 1  # not ours, or from an earlier run that reused the port
            return
        self.answers.append((answer, got))
        self.answered.add(answer.sender_seq)

    def collate(self) -> None:
        """Per-answer samples and detail, in arrival order, from everything taken so far."""
        self.replies, self.packets = [], []
        for answer, got in self.answers:
            seq = answer.sender_seq
            t1 = self.tx_ns.get(seq, self.sent_ns[seq])
            t2, t3, t4 = answer.receive_ns, answer.timestamp_ns, got.received_ns
            rtt_ms = ((t4 - t1) - (t3 - t2)) / 1e6
            self.replies.append(
                PacketSample(
                    seq=seq, rtt_ms=rtt_ms, ttl=got.ttl, size=len(got.data), recv_us=t4 // 1000
                )
            )
            self.packets.append(
                {
                    "seq": seq,
                    "t1_ns": t1,
                    "t2_ns": t2,
                    "t3_ns": t3,
                    "t4_ns": t4,
                    "t1_kernel": seq in self.tx_ns,
                    "t4_kernel": got.kernel_stamp,
                    "rtt_ms": rtt_ms,
                    "forward_ms": (t2 - t1) / 1e6,
                    "backward_ms": (t4 - t3) / 1e6,
                    "reflector_ms": (t3 - t2) / 1e6,
                    "reflector_seq": answer.seq,
                    "sender_ttl": answer.sender_ttl,  # our packet's TTL on arrival there
                    "reply_ttl": got.ttl,
                    "reply_dscp": None if got.tos is None else got.tos >> 2,
                    "size": len(got.data),
                }
            )

    @property
    def reflector_clock(self) -> dict[str, Any] | None:
        """The reflector's clock as its latest answer describes it."""
        return _clock(ErrorEstimate.unpack(self.answers[-1][0].error)) if self.answers else None

    def one_way_ms(self, key: str) -> dict[int, float]:
        """seq → one-way delay (``forward_ms`` or ``backward_ms``) of its first answer."""
        delays: dict[int, float] = {}
        for pkt in self.packets:
            delays.setdefault(pkt["seq"], pkt[key])
        return delays


def _clock(estimate: ErrorEstimate) -> dict[str, Any]:
    return {"synchronized": estimate.synchronized, "error_ms": estimate.seconds * 1e3}


def _source(got: Datagram) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    return ipaddress.ip_address(got.peer[0].partition("%")[0]), got.peer[1]


def _drain(sock: socket.socket, session: _Session, until: float, want: int) -> None:
    """Take answers until the monotonic time ``until`` or until ``want`` distinct seqs came."""
    while True:
        left = until - time.monotonic()
        if left <= 0 or len(session.answered) >= want:
            return
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return
        for key, stamp_ns in tx_stamps(sock):
            session.take_tx(key, stamp_ns)
        try:
            got = receive(sock)
        except BlockingIOError:  # it was only TX stamps
            continue
        except OSError:  # a queued ICMP error
            session.icmp_errors += 1
            continue
        if got is not None:
            session.take(got)


def run(target: str, params: Params, deadline: float) -> Result:
    # The last moment to send or wait for an answer, on the monotonic clock.
    last = deadlines.monotonic_end(deadline)
    if last <= time.monotonic():
        return Result(tool=NAME, target=target, error=deadlines.NO_TIME_LEFT)
    # Not connect()ed: with no route connect() fails at once, and an unreachable reflector is
    # a measurement (every packet lost), not a failed run. take() checks the source instead.
    try:
        peer_addr = sockaddr(target, params.port)
    except OSError as e:  # a scope naming no interface here
        return Result(tool=NAME, target=target, error=f"bad scope in {target!r}: {e.strerror}")
    try:
        sock = open_udp(family_for(target), ttl=params.ttl, dscp=params.dscp)
    except OSError as e:
        return Result(tool=NAME, target=target, error=f"cannot open a UDP socket: {e.strerror}")
    clock = read_estimate()  # what our T1s claim: RFC 4656 error estimate from adjtimex
    error = clock.pack()
    # Random padding (RFC 4656 §4.1.2) so that link compression cannot shrink the packets.
    padding = os.urandom(params.padding)
    session = _Session(peer=(ipaddress.ip_address(target.partition("%")[0]), params.port))
    with sock:
        sock.setblocking(False)  # TX stamps make it readable with no datagram to read
        if enable_tx_stamps(sock):
            session.tx_order = []
        start = time.monotonic()
        sent = 0
        for seq in range(params.count):
            _drain(sock, session, min(start + seq * params.interval, last), params.count)
            if time.monotonic() >= last:
                break
            packet = SenderPacket(seq, time.time_ns(), error, padding)
            sent += 1
            try:
                sock.sendto(packet.pack(), peer_addr)
            except OSError as e:  # no route, link down, full buffer: a lost packet
                session.sent(seq, packet.timestamp_ns, e)
            else:
                session.sent(seq, packet.timestamp_ns, None)
        _drain(sock, session, min(time.monotonic() + params.timeout, last), sent)
        for key, stamp_ns in tx_stamps(sock):
            session.take_tx(key, stamp_ns)
    session.collate()
    one_way = None
    if params.variation_of != "rtt":
        one_way = session.one_way_ms(f"{params.variation_of}_ms")
    values = {
        **pinger_summary(sent, session.replies, first_seq=0),
        **delay_summary(sent, session.replies, first_seq=0, one_way_ms=one_way),
    }
    return Result(
        tool=NAME,
        target=target,
        sent=sent,
        replies=session.replies,
        values={k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()},
        extra={
            "port": params.port,
            "packet_size": SENDER_SIZE + params.padding,
            "ttl": params.ttl,
            "dscp": params.dscp,
            "packets": session.packets,
            "clock": _clock(clock),
            "reflector_clock": session.reflector_clock,
            "one_way_delays": "forward_ms/backward_ms need synchronised clocks (exact on one host)",
            "send_errors": session.send_errors,
            "icmp_errors": session.icmp_errors,
            "ignored": session.ignored,
            "kernel_send_stamps": len(session.tx_ns),
        },
    )


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
