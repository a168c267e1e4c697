"""fping-class ICMP echo: one socket per address family, kernel receive timestamps, a
fixed-rate send clock, many targets per call. See ``engine`` for timing and matching."""

from netsonde.mp.icmp.engine import PingRun, ping_many
from netsonde.mp.icmp.packet import checksum
from netsonde.mp.icmp.sockets import Mode

__all__ = ["Mode", "PingRun", "checksum", "ping_many"]
