"""ICMP echo packets: build requests, parse replies. Pure functions, no sockets.

Payload layout (what lets a reply be matched to exactly one probe of exactly this run):

    cookie (8 bytes, random per run) | probe number (4 bytes, big-endian) | zero padding

A payload shorter than 12 bytes carries a truncated prefix of that; the matcher then checks
what is there (a 0-byte payload is matched by id/seq alone).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129

HEADER = struct.Struct("!BBHHH")  # type, code, checksum, id, seq
COOKIE_LEN = 8
TAG = struct.Struct("!I")


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum: one's complement of the one's complement sum of 16-bit
    words, an odd trailing byte padded with a zero byte."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def payload(cookie: bytes, probe: int, size: int) -> bytes:
    """The echo data of probe number ``probe``: cookie, probe number, zeros; ``size`` bytes."""
    body = cookie + TAG.pack(probe & 0xFFFFFFFF)
    return body[:size] + b"\0" * max(0, size - len(body))


def echo_request(ipv6: bool, ident: int, seq: int, data: bytes) -> bytes:
    """An echo request. ICMPv6's checksum covers a pseudo-header only the kernel knows (source
    address), and Linux fills it in for ICMPv6 sockets, so it is left 0 there."""
    kind = ICMP6_ECHO_REQUEST if ipv6 else ICMP_ECHO_REQUEST
    head = HEADER.pack(kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    if ipv6:
        return head + data
    csum = checksum(head + data)
    return head[:2] + struct.pack("!H", csum) + head[4:] + data


@dataclass(frozen=True, slots=True)
class Reply:
    """An echo reply as read from a socket."""

    ident: int
    seq: int
    data: bytes  # the echo data (payload)
    size: int  # ICMP bytes (header + data), as ping prints it
    ttl: int | None  # from the IPv4 header (raw IPv4 only); else from ancillary data


def parse_reply(packet: bytes, *, ipv6: bool, has_ip_header: bool) -> Reply | None:
    """The echo reply in ``packet``, or None if it is anything else (our own requests seen on
    loopback, errors, truncated junk). ``has_ip_header``: a raw IPv4 socket hands over the IP
    header too; it is stripped here and its TTL kept."""
    ttl = None
    if has_ip_header:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return None
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            return None
        ttl = packet[8]
        packet = packet[ihl:]
    if len(packet) < HEADER.size:
        return None
    kind, code, _csum, ident, seq = HEADER.unpack_from(packet)
    if kind != (ICMP6_ECHO_REPLY if ipv6 else ICMP_ECHO_REPLY) or code != 0:
        return None
    return Reply(ident, seq, packet[HEADER.size :], len(packet), ttl)


def matches(data: bytes, cookie: bytes, probe: int, size: int) -> bool:
    """Does the echo data of a reply carry this run's cookie and this probe's number?"""
    return len(data) >= size and data[: min(size, 12)] == payload(cookie, probe, min(size, 12))
