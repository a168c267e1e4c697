"""One deadline policy for every tool.

The runner gives each run a hard deadline (epoch seconds: its start plus the test's timeout)
and kills the run's processes there; such a run is recorded as ``timeout``, with no result at
all. So a tool stops ``MARGIN`` seconds earlier and reports what it has (the replies so far,
the links it could not read, "did not finish"): everything it waits on — a socket, an SNMP
poll, a program — is given at most ``budget(deadline)`` seconds. The margin is the time left to
end a program, build the result and hand it to the runner, with room for a loaded machine.
"""

from __future__ import annotations

import time

MARGIN = 0.5  # seconds kept back from the run's deadline to report instead of being killed

NO_TIME_LEFT = "no time left before the deadline"


def budget(deadline: float, limit: float | None = None) -> float:
    """Seconds a tool may still wait before it must report, at most ``limit``. Zero or less:
    none left; report at once."""
    left = deadline - time.time() - MARGIN
    return left if limit is None else min(limit, left)


def monotonic_end(deadline: float, limit: float | None = None) -> float:
    """The end of ``budget(deadline, limit)`` on the monotonic clock, for tools that wait in
    steps (a wall-clock step while waiting must not move it)."""
    return time.monotonic() + budget(deadline, limit)
