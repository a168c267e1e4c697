"""The error estimate our timestamps carry (RFC 4656 §4.1.2), from the kernel's clock state.

adjtimex(2) with no modes set only reads: whether an NTP/PTP daemon keeps the clock
synchronised (the S bit) and its estimated error. An unsynchronised clock reports its maximum
error instead (16 s on a fresh kernel), so a receiver is never told to trust it more than it
deserves.
"""

from __future__ import annotations

import ctypes
import time

from netsonde.engines.twamp.packets import ErrorEstimate

TIME_ERROR = 5  # adjtimex's return value for an unsynchronised clock
STA_UNSYNC = 0x0040
_MIN_ERROR_US = 1  # a kernel timestamp is no better than this, whatever the daemon says


class _Timeval(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (Linux, glibc)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),  # µs
        ("esterror", ctypes.c_long),  # µs
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def estimate_from(state: int, status: int, esterror_us: int, maxerror_us: int) -> ErrorEstimate:
    """The error estimate for an adjtimex result: S set and the estimated error when
    synchronised, S clear and the maximum error otherwise."""
    synced = state != TIME_ERROR and not status & STA_UNSYNC
    error_us = max(_MIN_ERROR_US, esterror_us if synced else maxerror_us)
    return ErrorEstimate.for_seconds(error_us / 1e6, synchronized=synced)


def read_estimate() -> ErrorEstimate:
    """This host's estimate now; unsynchronised and 16 s if the kernel cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        state = -1
    if state < 0:
        return estimate_from(TIME_ERROR, STA_UNSYNC, 16_000_000, 16_000_000)
    return estimate_from(state, tx.status, tx.esterror, tx.maxerror)


class CachedEstimate:
    """``read_estimate`` at most every ``every`` seconds: a long-running reflector follows the
    clock daemon without a system call per packet."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._value = read_estimate().pack()
        self._at = time.monotonic()

    def packed(self) -> int:
        now = time.monotonic()
        if now - self._at >= self.every:
            self._value, self._at = read_estimate().pack(), now
        return self._value
