"""`netsonde stop`: ask the daemon named by the pidfile to stop, and wait until it has."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from netsonde.daemon.pidfile import running_pid


class StopFailed(Exception):
    pass


def stop(pidfile: Path, timeout: float = 30.0) -> int | None:
    """SIGTERM the running daemon and wait until its pidfile lock is released (it has flushed
    and cleaned up); SIGKILL it if it is still there after ``timeout``. Returns the pid that
    was stopped, or None if nothing was running."""
    pid = running_pid(pidfile)
    if pid is None:
        return None
    if pid <= 0:
        raise StopFailed(f"{pidfile} is locked but names no process")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid  # it went away on its own
    if _wait_gone(pidfile, timeout):
        return pid
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return pid
    if not _wait_gone(pidfile, 10.0):
        raise StopFailed(f"pid {pid} did not stop, even after SIGKILL")
    return pid


def _wait_gone(pidfile: Path, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if running_pid(pidfile) is None:
            return True
        time.sleep(0.05)
    return False
