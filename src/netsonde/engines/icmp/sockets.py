"""Opening the one ICMP socket per address family, and reading one reply with its ancillary
data (kernel receive timestamp, TTL / hop limit).

Modes:
  raw    SOCK_RAW: needs CAP_NET_RAW. The id is ours; IPv4 replies come with the IP header.
  dgram  SOCK_DGRAM + IPPROTO_ICMP[V6] ("ping socket"): needs the process's group inside
         net.ipv4.ping_group_range. The kernel rewrites the id to the socket's port and only
         delivers replies to that id, without an IP header.
  auto   raw if permitted, else dgram.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Literal

from netsonde.engines.icmp.packet import ICMP6_ECHO_REPLY, ICMP_ECHO_REPLY

Mode = Literal["auto", "raw", "dgram"]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # CLOCK_REALTIME, struct timespec
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
SOL_RAW = 255
ICMP_FILTER = 1  # linux/icmp.h: bit set = type dropped
ICMP6_FILTER = 1  # linux/icmpv6.h: bit set = type blocked
RCVBUF = 8 << 20  # room for thousands of replies between two reads
_TIMESPEC = struct.Struct("@qq")
_INT = struct.Struct("@i")
ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_INT.size) * 2


def open_icmp(family: int, mode: Mode, ttl: int) -> tuple[socket.socket, str]:
    """A non-blocking ICMP socket for ``family`` and the mode actually used."""
    if mode in ("auto", "raw"):
        try:
            return _configure(_raw(family), family, ttl, raw=True), "raw"
        except PermissionError:
            if mode == "raw":
                raise PermissionError("raw ICMP sockets need CAP_NET_RAW") from None
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    except PermissionError:
        raise PermissionError(
            "no raw socket permission and ICMP datagram sockets are not allowed for this group "
            "(see sysctl net.ipv4.ping_group_range)"
        ) from None
    return _configure(sock, family, ttl, raw=False), "dgram"


def _raw(family: int) -> socket.socket:
    if family == socket.AF_INET6:
        sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        # Only echo replies reach us: on loopback every request we send is seen too.
        blocked = [0xFFFFFFFF] * 8
        blocked[ICMP6_ECHO_REPLY >> 5] &= ~(1 << (ICMP6_ECHO_REPLY & 31))
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
        return sock
    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF))
    return sock


def _configure(sock: socket.socket, family: int, ttl: int, *, raw: bool) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            if not raw:  # raw IPv4 has the TTL in the IP header
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def read_one(sock: socket.socket) -> tuple[bytes, str, int | None, int | None] | None:
    """(packet, source address, kernel receive time in CLOCK_REALTIME ns, TTL from ancillary
    data) of one queued datagram, or None when the queue is empty."""
    try:
        data, anc, _flags, addr = sock.recvmsg(65_535, ANCILLARY)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:  # e.g. a queued ICMP error on a datagram socket: not a reply
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return None
        return b"", "", None, None
    stamp = ttl = None
    for level, kind, body in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(body)
            stamp = sec * 1_000_000_000 + nsec
        elif (level, kind) in (
            (socket.IPPROTO_IP, socket.IP_TTL),
            (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT),
        ):
            ttl = _INT.unpack_from(body)[0] if len(body) >= 4 else body[0]
    return data, addr[0], stamp, ttl
