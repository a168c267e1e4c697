"""The probes in flight of one run and the matching of replies to them. No sockets.

A probe gets a wire seq (run-wide 16-bit counter) and a 32-bit probe number carried in the
payload next to the run's random cookie; a reply counts only if its seq, cookie, probe number,
source address (and on raw sockets its id) all agree. A probe stays in the table after its
first reply so that duplicates are matched too; it leaves only when its seq wraps around.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsonde.engines.icmp.packet import Reply, matches
from netsonde.model import PacketSample


@dataclass(slots=True)
class Probe:
    number: int  # run-wide probe number (in the payload)
    target: int  # the caller's target index
    k: int  # the target's probe number: 0 priming, 1..count
    address: str  # where it went; a reply must come from there
    send_ns: int
    answered: bool = False


class ProbeTable:
    def __init__(self, cookie: bytes, ident: int | None, size: int) -> None:
        """``ident``: the echo id to insist on, or None when the kernel already matched it
        (datagram sockets rewrite the id and deliver only their own replies)."""
        self.cookie, self.ident, self.size = cookie, ident, size
        self.by_seq: dict[int, Probe] = {}
        self.number = 0
        self.unanswered = 0  # probes sent whose first reply has not come
        self.foreign = 0  # echo replies that belong to no probe of this run

    def add(self, target: int, k: int, address: str, send_ns: int) -> None:
        """Record the probe just sent with wire seq ``next_seq`` and number ``next_number``."""
        seq = self.next_seq
        old = self.by_seq.get(seq)
        if old is not None and not old.answered:
            self.unanswered -= 1  # wrapped: a late reply could no longer be told apart
        self.by_seq[seq] = Probe(self.number, target, k, address, send_ns)
        self.unanswered += 1
        self.number += 1

    @property
    def next_seq(self) -> int:
        return self.number & 0xFFFF

    @property
    def next_number(self) -> int:
        return self.number

    def match(
        self, reply: Reply, source: str, recv_ns: int, ttl: int | None = None
    ) -> tuple[Probe, PacketSample] | None:
        """The probe a reply answers and its sample (RTT from ``recv_ns``), or None for a
        reply that is not ours. A duplicate gets a sample like the first arrival."""
        probe = self.by_seq.get(reply.seq)
        if (
            probe is None
            or (self.ident is not None and reply.ident != self.ident)
            or source != probe.address
            or not matches(reply.data, self.cookie, probe.number, self.size)
        ):
            self.foreign += 1
            return None
        if not probe.answered:
            probe.answered = True
            self.unanswered -= 1
        sample = PacketSample(
            seq=probe.k,
            rtt_ms=(recv_ns - probe.send_ns) / 1e6,
            ttl=reply.ttl if reply.ttl is not None else ttl,
            size=reply.size,
            recv_us=recv_ns // 1000,
        )
        return probe, sample
