"""fping-class ICMP echo: one socket per address family, kernel receive timestamps, a
fixed-rate send clock, many targets per call. See ``engine`` for timing and matching."""

from netsonde.engines.icmp.engine import PingRun, ping_many
from netsonde.engines.icmp.packet import checksum
from netsonde.engines.icmp.sockets import Mode

__all__ = ["Mode", "PingRun", "checksum", "ping_many"]
