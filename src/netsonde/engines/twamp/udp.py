"""UDP sockets for TWAMP-Test: kernel receive timestamps and the arriving TTL / hop limit.

The kernel stamps a datagram when it reaches the socket layer (SO_TIMESTAMPNS, CLOCK_REALTIME),
which keeps the time our process took to get scheduled out of the measurement. Python's socket
module does not export these Linux constants, so they are spelled out here (x86-64, arm64 and
most other architectures share these values).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS, the control message type
SO_TIMESTAMPING = 37  # also SCM_TIMESTAMPING
_SOF_TX_SOFTWARE = 1 << 1
_SOF_SOFTWARE = 1 << 4
_SOF_OPT_ID = 1 << 7
_SOF_OPT_TSONLY = 1 << 11
_IP_RECVERR, _IPV6_RECVERR = 11, 25  # the control message types of an error queue entry
_SO_EE_ORIGIN_TIMESTAMPING = 4
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_SCM_TIMESTAMPING = struct.Struct("@qq")  # the first of its three timespecs: software
IP_RECVTTL = 12
IP_TTL = 2  # the control message type that carries the TTL
_TIMESPEC = struct.Struct("@qq")
_INT = struct.Struct("@i")
MAX_DATAGRAM = 65_535
# Room for every control message a datagram can bring here (a TX-stamping socket also gets a
# 48-octet SCM_TIMESTAMPING on receive); too little and the kernel silently drops the rest.
_ANC = 512


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    peer: tuple[Any, ...]  # as recvmsg gave it: an IPv6 one keeps its scope for the answer
    received_ns: int  # kernel receive time (epoch ns); user-space time if the kernel gave none
    ttl: int | None  # the IP TTL / IPv6 hop limit it arrived with
    kernel_stamp: bool
    tos: int | None = None  # the IPv4 TOS / IPv6 traffic class octet: DSCP << 2 | ECN


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``127.0.0.1:862``, ``[::1]:862`` (or a bare address with ``default_port``) → (ip, port).

    IP literals only: a host name would need a DNS lookup.
    """
    host, port_text = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: use [IPv6]:PORT")
        port_text = rest[1:] or None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad address {text!r}: the host must be an IP address") from None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"bad address {text!r}: no port")
        port = default_port
    else:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"bad address {text!r}: port must be 0..65535")
        port = int(port_text)
    return str(ip), port


def sockaddr(ip: str, port: int) -> tuple[Any, ...]:
    """The address to bind or send to; a scoped IPv6 one (``fe80::1%eth0``) gets its interface
    index, which socket calls do not take from the string."""
    addr, _, scope = ip.partition("%")
    if not scope:
        return (ip, port)
    index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
    return (addr, port, 0, index)


def family_for(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def open_udp(family: socket.AddressFamily, *, ttl: int = 255, dscp: int = 0) -> socket.socket:
    """A UDP socket that reports kernel receive times, arriving TTLs and TOS octets, sending
    with ``ttl`` and the DSCP ``dscp`` (ECN bits left 0)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
    except BaseException:
        sock.close()
        raise
    return sock


def receive(sock: socket.socket) -> Datagram | None:
    """One datagram with its receive time and TTL; None for a truncated one (larger than any
    TWAMP-Test packet we would send or answer)."""
    data, ancdata, flags, peer = sock.recvmsg(MAX_DATAGRAM, _ANC)
    fallback_ns = time.time_ns()
    if flags & socket.MSG_TRUNC:
        return None
    stamp_ns: int | None = None
    ttl: int | None = None
    tos: int | None = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(payload)
            stamp_ns = sec * 1_000_000_000 + nsec
        elif (level, kind) in (
            (socket.IPPROTO_IP, IP_TTL),
            (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT),
        ):
            ttl = _INT.unpack_from(payload)[0]
        elif level == socket.IPPROTO_IP and kind == socket.IP_TOS:
            tos = payload[0]  # one octet for IPv4
        elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_TCLASS:
            tos = _INT.unpack_from(payload)[0]
    return Datagram(
        data=data,
        peer=peer,
        received_ns=fallback_ns if stamp_ns is None else stamp_ns,
        ttl=ttl,
        kernel_stamp=stamp_ns is not None,
        tos=tos,
    )


def send_with_tos(sock: socket.socket, data: bytes, peer: tuple[Any, ...], tos: int) -> None:
    """Send ``data`` to ``peer`` with this TOS / traffic class octet (this datagram only)."""
    if sock.family == socket.AF_INET6:
        cmsg = (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, _INT.pack(tos))
    else:
        cmsg = (socket.IPPROTO_IP, socket.IP_TOS, _INT.pack(tos))
    sock.sendmsg([data], [cmsg], 0, peer)


def enable_tx_stamps(sock: socket.socket) -> bool:
    """Ask the kernel for the time each datagram left (software TX timestamps, numbered from 0
    per successful send, read back from the error queue). False where it cannot."""
    flags = _SOF_TX_SOFTWARE | _SOF_SOFTWARE | _SOF_OPT_ID | _SOF_OPT_TSONLY
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
    except OSError:
        return False
    return True


def tx_stamps(sock: socket.socket) -> list[tuple[int, int]]:
    """(send number, epoch ns) of every TX timestamp queued so far; never blocks."""
    found: list[tuple[int, int]] = []
    while True:
        try:
            _, ancdata, _, _ = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except OSError:  # EAGAIN: nothing (more) queued
            return found
        stamp_ns: int | None = None
        key: int | None = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
                sec, nsec = _SCM_TIMESTAMPING.unpack_from(payload)
                stamp_ns = sec * 1_000_000_000 + nsec
            elif (level, kind) in (
                (socket.IPPROTO_IP, _IP_RECVERR),
                (socket.IPPROTO_IPV6, _IPV6_RECVERR),
            ):
                _, origin, _, _, _, _, data = _EXTENDED_ERR.unpack_from(payload)
                if origin == _SO_EE_ORIGIN_TIMESTAMPING:
                    key = data
        if stamp_ns and key is not None:
            found.append((key, stamp_ns))
