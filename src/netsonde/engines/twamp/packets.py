"""TWAMP-Test packets of unauthenticated mode (RFC 5357 §4.1.2, §4.2.1) and the fields they
borrow from OWAMP (RFC 4656 §4.1.2): the 64-bit NTP timestamp and the error estimate.

Pure: bytes in, values out. Times are integer epoch nanoseconds (UTC) on the Python side.

Session-Sender packet (14 octets + padding)::

    0-3    Sequence Number
    4-11   Timestamp (NTP: 32-bit seconds since 1900, 32-bit fraction)
    12-13  Error Estimate
    14-    Packet Padding

Session-Reflector packet (41 octets + padding)::

    0-3    Sequence Number (the reflector's own)
    4-11   Timestamp (T3: when the reflector sent it)
    12-13  Error Estimate
    14-15  MBZ
    16-23  Receive Timestamp (T2: when the reflector received the sender's packet)
    24-27  Sender Sequence Number   \
    28-35  Sender Timestamp (T1)     | copied from the sender's packet
    36-37  Sender Error Estimate    /
    38-39  MBZ
    40     Sender TTL (the IP TTL / hop limit the sender's packet arrived with)
    41-    Packet Padding
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
NS_PER_S = 1_000_000_000
_ERA = 1 << 32  # an NTP era: the 32-bit seconds field wraps on 2036-02-07

SENDER_SIZE = 14
REFLECTOR_SIZE = 41
# A reflected packet is this much longer than the packet it answers; a sender that pads by at
# least this much gets same-size packets both ways (RFC 5357 §4.2.1).
SYMMETRIC_PADDING = REFLECTOR_SIZE - SENDER_SIZE  # 27

_SENDER = struct.Struct("!IQH")
_REFLECTOR = struct.Struct("!IQH2xQIQH2xB")


# ---- timestamps ------------------------------------------------------------------------------


def ntp_from_ns(epoch_ns: int) -> int:
    """Epoch nanoseconds → the 64-bit NTP timestamp (seconds << 32 | fraction).

    The fraction is truncated (2^-32 s ≈ 0.23 ns, finer than a nanosecond), so ``ns_from_ntp``
    gives the nanoseconds back exactly. The seconds wrap modulo 2^32 (NTP era 1 from 2036).
    """
    seconds, ns = divmod(epoch_ns, NS_PER_S)
    fraction = (ns << 32) // NS_PER_S
    return (((seconds + NTP_UNIX_OFFSET) % _ERA) << 32) | fraction


def ns_from_ntp(ntp: int) -> int:
    """The 64-bit NTP timestamp → epoch nanoseconds.

    The era is not on the wire; as RFC 4330 §3 suggests, a seconds field with its top bit clear
    is read as era 1 (2036-02-07 to 2104), one with it set as era 0 (1968 to 2036).
    """
    seconds, fraction = ntp >> 32, ntp & 0xFFFF_FFFF
    if not seconds & 0x8000_0000:
        seconds += _ERA
    return (seconds - NTP_UNIX_OFFSET) * NS_PER_S + ((fraction * NS_PER_S + (1 << 31)) >> 32)


@dataclass(frozen=True, slots=True)
class ErrorEstimate:
    """RFC 4656 §4.1.2: S (clock synchronised to UTC), Z (RFC 5357: timestamp format, 0 = NTP),
    Scale (6 bits) and Multiplier (8 bits, never 0). The error is Multiplier × 2^(Scale−32) s."""

    synchronized: bool = False
    z: int = 0
    scale: int = 0
    multiplier: int = 1

    def __post_init__(self) -> None:
        if self.z not in (0, 1):
            raise ValueError(f"Z is one bit, got {self.z}")
        if not 0 <= self.scale < 64:
            raise ValueError(f"scale is 6 bits (0..63), got {self.scale}")
        if not 1 <= self.multiplier < 256:
            raise ValueError(f"multiplier is 8 bits and must not be 0, got {self.multiplier}")

    @property
    def seconds(self) -> float:
        return self.multiplier * 2.0 ** (self.scale - 32)

    def pack(self) -> int:
        return (self.synchronized << 15) | (self.z << 14) | (self.scale << 8) | self.multiplier

    @classmethod
    def unpack(cls, value: int) -> ErrorEstimate:
        """Decode 16 bits. A zero multiplier (invalid per RFC 4656) is read as 1: a sloppy
        peer's packet is still measured."""
        return cls(
            synchronized=bool(value >> 15 & 1),
            z=value >> 14 & 1,
            scale=value >> 8 & 0x3F,
            multiplier=(value & 0xFF) or 1,
        )

    @classmethod
    def for_seconds(cls, error: float, *, synchronized: bool = False) -> ErrorEstimate:
        """The smallest encodable estimate that is ≥ ``error`` seconds (never understated)."""
        for scale in range(64):
            multiplier = -int(-error // 2.0 ** (scale - 32))  # ceil
            if multiplier < 256:
                return cls(synchronized, 0, scale, max(1, multiplier))
        raise ValueError(f"error estimate {error} s is too large to encode")


# ---- packets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SenderPacket:
    seq: int
    timestamp_ns: int  # T1
    error: int = ErrorEstimate().pack()  # the raw 16 bits
    padding: bytes = b""

    def pack(self) -> bytes:
        return _SENDER.pack(self.seq, ntp_from_ns(self.timestamp_ns), self.error) + self.padding

    @classmethod
    def unpack(cls, data: bytes) -> SenderPacket:
        if len(data) < SENDER_SIZE:
            raise ValueError(f"a sender packet has at least {SENDER_SIZE} octets, got {len(data)}")
        seq, ntp, error = _SENDER.unpack_from(data)
        return cls(seq, ns_from_ntp(ntp), error, bytes(data[SENDER_SIZE:]))


@dataclass(frozen=True, slots=True)
class ReflectorPacket:
    seq: int
    timestamp_ns: int  # T3
    error: int
    receive_ns: int  # T2
    sender_seq: int
    sender_timestamp_ns: int  # T1, as the sender wrote it
    sender_error: int
    sender_ttl: int
    padding: bytes = b""

    def pack(self) -> bytes:
        head = _REFLECTOR.pack(
            self.seq,
            ntp_from_ns(self.timestamp_ns),
            self.error,
            ntp_from_ns(self.receive_ns),
            self.sender_seq,
            ntp_from_ns(self.sender_timestamp_ns),
            self.sender_error,
            self.sender_ttl,
        )
        return head + self.padding

    @classmethod
    def unpack(cls, data: bytes) -> ReflectorPacket:
        if len(data) < REFLECTOR_SIZE:
            raise ValueError(
                f"a reflector packet has at least {REFLECTOR_SIZE} octets, got {len(data)}"
            )
        seq, ts, error, recv, s_seq, s_ts, s_error, ttl = _REFLECTOR.unpack_from(data)
        return cls(
            seq,
            ns_from_ntp(ts),
            error,
            ns_from_ntp(recv),
            s_seq,
            ns_from_ntp(s_ts),
            s_error,
            ttl,
            bytes(data[REFLECTOR_SIZE:]),
        )


def reflect(
    data: bytes,
    *,
    seq: int,
    receive_ns: int,
    send_ns: int,
    ttl: int,
    error: int = ErrorEstimate().pack(),
) -> bytes:
    """The reflector's answer to the sender packet ``data`` (RFC 5357 Appendix I, stateless).

    The sender's seq, timestamp and error estimate are copied as raw fields (not re-encoded, so
    they come back bit for bit). The padding is the sender's with its first 27 octets cut off,
    so a sender padding ≥ 27 octets gets a reply of exactly its own size (§4.2.1).
    """
    if len(data) < SENDER_SIZE:
        raise ValueError(f"a sender packet has at least {SENDER_SIZE} octets, got {len(data)}")
    head = struct.pack(
        "!IQH2xQ", seq & 0xFFFF_FFFF, ntp_from_ns(send_ns), error, ntp_from_ns(receive_ns)
    )
    return head + bytes(data[:SENDER_SIZE]) + b"\0\0" + bytes((ttl,)) + data[REFLECTOR_SIZE:]
