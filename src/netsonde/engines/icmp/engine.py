"""The ICMP echo engine: many targets, one socket per address family, one select loop.

Timing (like fping): the send time is CLOCK_REALTIME (``time.time_ns()``) read immediately
before ``sendto``; the receive time is the kernel's SO_TIMESTAMPNS stamp of the reply, also
CLOCK_REALTIME, so RTT = kernel receive time - send time on one clock and does not depend on
when this loop gets round to reading the socket. Taking the send stamp *before* the syscall
matters on loopback, where the reply is generated and stamped inside ``sendto`` itself.

Pacing (like fping's -i and -p): ``interval`` is the minimum gap between any two sends of the
run, ``period`` the gap between two probes to one target. Targets start in the order given;
each target's next probe is due ``period`` after its previous send.

Matching: each probe gets a wire seq (a 16-bit run-wide counter) and its payload carries a
random per-run cookie plus the 32-bit probe number, so replies from other pingers on the host,
from an earlier run, or to a seq that has wrapped are rejected (counted in ``foreign``).
Duplicates and reordered replies are kept: one PacketSample per reply, in arrival order. A
reply counts whenever it arrives before the run ends (``timeout`` after the last send, or as
soon as every probe has had a reply), as with iputils ping; there is no per-probe timeout.
"""

from __future__ import annotations

import ctypes
import heapq
import ipaddress
import os
import select
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from netsonde.engines.icmp.packet import echo_request, parse_reply, payload
from netsonde.engines.icmp.sockets import Mode, open_icmp, read_one
from netsonde.engines.icmp.table import ProbeTable
from netsonde.model import PacketSample

NS = 1_000_000_000
PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 29, 30
BURST = 64  # sends between two reads when the pacing allows back-to-back sends


@dataclass(slots=True)
class PingRun:
    """What one ``ping_many`` call measured.

    ``replies[target]``: one sample per received reply (duplicates included), arrival order;
    sample seqs are the target's probe numbers 1..count (0 is the discarded priming probe).
    ``sent[target]``: probes sent, priming probe excluded.
    """

    replies: dict[str, list[PacketSample]]
    sent: dict[str, int]
    modes: dict[int, str] = field(default_factory=dict)  # 4 / 6 → "raw" | "dgram"
    errors: dict[str, str] = field(default_factory=dict)  # target → first send error
    foreign: int = 0  # echo replies that belong to no probe of this run
    primed: int = 0  # priming replies received and discarded
    start_ns: int = 0  # CLOCK_REALTIME of the first send
    end_ns: int = 0


@dataclass(slots=True)
class _Target:
    name: str
    address: str  # canonical text form, as recvmsg reports the source
    sockaddr: tuple
    v6: bool
    next_k: int


def ping_many(
    targets: Sequence[str],
    *,
    count: int = 1,
    period: float = 1.0,
    interval: float = 0.01,
    size: int = 56,
    ttl: int = 64,
    timeout: float = 1.0,
    prime: bool = False,
    mode: Mode = "auto",
) -> PingRun:
    """Ping every target ``count`` times and return all replies.

    targets   IP literals only (no name is ever resolved here); duplicates refused.
    period    seconds between two probes to one target (fping -p)
    interval  minimum seconds between any two sends (fping -i)
    size      ICMP data bytes (fping -b, ping -s)
    ttl       IPv4 TTL / IPv6 hop limit of the requests
    timeout   seconds to wait after the last send for outstanding replies; the run ends
              earlier once every probe has been answered
    prime     send one extra probe per target first and discard its reply (PingER)
    mode      "auto" (raw if permitted, else datagram), "raw" or "dgram"
    """
    if count < 1 or period < 0 or interval < 0 or timeout < 0 or not 0 <= size <= 65_000:
        raise ValueError("count >= 1, period/interval/timeout >= 0, 0 <= size <= 65000")
    if not 1 <= ttl <= 255:
        raise ValueError("ttl must be 1..255")
    tlist = _targets(targets, 0 if prime else 1)
    socks: dict[bool, socket.socket] = {}
    run = PingRun(replies={t.name: [] for t in tlist}, sent={t.name: 0 for t in tlist})
    try:
        for v6 in sorted({t.v6 for t in tlist}):
            family = socket.AF_INET6 if v6 else socket.AF_INET
            socks[v6], run.modes[6 if v6 else 4] = open_icmp(family, mode, ttl)
        with _fine_timers():
            _Loop(tlist, socks, run, count, period, interval, size, timeout).run()
    finally:
        for s in socks.values():
            s.close()
    return run


@contextmanager
def _fine_timers() -> Iterator[None]:
    """Linux pads every timed sleep by the thread's timer slack (50 µs by default), which would
    stretch each sub-millisecond send gap; ask for 1 µs for the run and restore it after."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        old = libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    except (OSError, AttributeError):
        yield
        return
    libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    try:
        yield
    finally:
        if old > 0:
            libc.prctl(PR_SET_TIMERSLACK, old, 0, 0, 0)


def _targets(targets: Sequence[str], first_k: int) -> list[_Target]:
    out: list[_Target] = []
    seen: set[str] = set()
    for name in targets:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            raise ValueError(
                f"{name!r} is not an IP address (the engine resolves no names)"
            ) from None
        if name in seen:
            raise ValueError(f"target {name!r} given twice")
        seen.add(name)
        v6 = ip.version == 6
        addr = ip.compressed
        out.append(_Target(name, addr, (addr, 0, 0, 0) if v6 else (addr, 0), v6, first_k))
    return out


class _Loop:
    """One run's send schedule and receive loop around a ProbeTable."""

    def __init__(
        self,
        tlist: list[_Target],
        socks: dict[bool, socket.socket],
        out: PingRun,
        count: int,
        period: float,
        interval: float,
        size: int,
        timeout: float,
    ) -> None:
        self.tlist, self.socks, self.out = tlist, socks, out
        self.count, self.size = count, size
        self.period_ns, self.interval_ns = round(period * NS), round(interval * NS)
        self.timeout_ns = round(timeout * NS)
        self.raw = {v6: out.modes[6 if v6 else 4] == "raw" for v6 in socks}
        ident = int.from_bytes(os.urandom(2), "big")
        # Raw sockets see every echo reply on the host: insist on our id. (With both a raw
        # and a dgram socket the cookie and probe number still tell replies apart.)
        self.ident = ident
        self.table = ProbeTable(os.urandom(8), ident if all(self.raw.values()) else None, size)
        self.by_fd = {s.fileno(): (v6, s) for v6, s in socks.items()}

    def run(self) -> None:
        now = time.monotonic_ns()
        due = [(now, i) for i in range(len(self.tlist))]  # already a heap: equal times, by i
        next_gap = now
        end = None
        fds = list(self.by_fd)
        while True:
            now = time.monotonic_ns()
            burst = 0
            while due and due[0][0] <= now and next_gap <= now and burst < BURST:
                _, i = heapq.heappop(due)
                sent_at = self._send(i)
                if sent_at is None:  # kernel queue full: retry shortly
                    heapq.heappush(due, (now + 100_000, i))
                    break
                # Gaps run from the start of a send, as fping's do: the time spent in sendto
                # and in this loop's bookkeeping is part of the gap, not added to it.
                next_gap = sent_at + self.interval_ns
                burst += 1
                if self.tlist[i].next_k <= self.count:
                    heapq.heappush(due, (sent_at + self.period_ns, i))
                now = time.monotonic_ns()
            if not due:
                if end is None:
                    end = now + self.timeout_ns
                if self.table.unanswered == 0 or now >= end:
                    break
                wake = end
            else:
                wake = max(due[0][0], next_gap)
            wait = 0.0 if burst >= BURST else max(0, wake - now) / NS
            ready, _, _ = select.select(fds, [], [], wait)
            for fd in ready:
                self._drain(*self.by_fd[fd])
        self.out.end_ns = time.time_ns()
        self.out.foreign = self.table.foreign

    def _send(self, i: int) -> int | None:
        """Send target ``i``'s next probe; the monotonic time of the send, or None if the
        socket's queue was full."""
        t = self.tlist[i]
        table = self.table
        data = payload(table.cookie, table.next_number, self.size)
        packet = echo_request(t.v6, self.ident, table.next_seq, data)
        sock = self.socks[t.v6]
        sent_at = time.monotonic_ns()
        sent_ns = time.time_ns()
        try:
            sock.sendto(packet, t.sockaddr)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:  # unreachable etc.: the probe counts as sent and lost
            self.out.errors.setdefault(t.name, e.strerror or str(e))
        if not self.out.start_ns:
            self.out.start_ns = sent_ns
        table.add(i, t.next_k, t.address, sent_ns)
        if t.next_k > 0:
            self.out.sent[t.name] += 1
        t.next_k += 1
        return sent_at

    def _drain(self, v6: bool, sock: socket.socket) -> None:
        strip = self.raw[v6] and not v6
        while (got := read_one(sock)) is not None:
            data, source, stamp, anc_ttl = got
            reply = parse_reply(data, ipv6=v6, has_ip_header=strip)
            if reply is None:
                continue
            recv_ns = stamp if stamp is not None else time.time_ns()
            hit = self.table.match(reply, source, recv_ns, anc_ttl)
            if hit is None:
                continue
            probe, sample = hit
            if probe.k == 0:
                self.out.primed += 1
            else:
                self.out.replies[self.tlist[probe.target].name].append(sample)
