"""Become a background daemon (double fork, setsid, stdio to the log) and tell the parent
whether start-up worked, so `netsonde run --daemon` exits non-zero when the daemon could not
start (already running, bad archive…) instead of failing silently in the background."""

from __future__ import annotations

import os
import sys
from pathlib import Path


class StartupReport:
    """The daemon's side of the pipe back to the waiting parent."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def send(self, message: str) -> None:
        if self._fd is None:
            return
        os.write(self._fd, message.encode()[:4000])
        os.close(self._fd)
        self._fd = None

    def ready(self) -> None:
        self.send(f"ok {os.getpid()}")


def detach(log_file: Path) -> StartupReport | str:
    """In the parent, returns the daemon's report ("ok PID" or an error line) once it is
    ready or has failed. In the daemon, returns the StartupReport to answer with."""
    # Opened here, before forking, so that a log that cannot be written (read-only or full
    # disk, permissions) is reported by the command itself (OSError), not lost in a child.
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    read_end, write_end = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(log)
        os.close(write_end)
        os.waitpid(first, 0)
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
        os.close(read_end)
        return b"".join(chunks).decode(errors="replace") or "the daemon exited during start-up"
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.set_inheritable(write_end, False)
    return StartupReport(write_end)
