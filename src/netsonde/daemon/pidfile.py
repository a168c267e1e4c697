"""A pidfile that is also a lock.

The daemon holds an exclusive ``flock`` on the file for its whole life. The kernel drops the
lock when the process dies, however it dies, so a pidfile left by a dead process is simply
taken over, and a live one can never be mistaken for stale (pid reuse cannot fool a lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class PidFileError(Exception):
    """The pidfile cannot be read or written (permissions, a read-only or full disk)."""

    def __init__(self, doing: str, path: Path, e: OSError) -> None:
        super().__init__(f"cannot {doing} the pidfile {path}: {e.strerror or e}")


class AlreadyRunning(Exception):
    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"netsonde is already running ({who}, pidfile {path})")
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the file and write our pid; raise AlreadyRunning if a live process holds it,
        PidFileError if it cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise PidFileError("create", self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(self.path, pid) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise PidFileError("write", self.path, e) from None
        self._fd = fd

    def release(self) -> None:
        """Remove the file, then drop the lock (in that order, so a newcomer never loses its
        freshly written file to our unlink)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def running_pid(path: Path) -> int | None:
    """The pid of the live process holding ``path``, or None if nobody does (absent or stale).
    Raises PidFileError when the file is there but cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise PidFileError("read", path, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        return None
    finally:
        os.close(fd)
