"""The process tree as /proc shows it, and safe ways to signal and reap parts of it.

A run can leave processes behind that no process group reaches: a child that called setsid()
is in a session of its own, and once its parent dies it is reparented and no longer below the
run at all. So whoever cleans up first takes a snapshot of the tree, then signals what it found.
Signals go only to the process that was seen (same pid *and* same start time, through a pidfd),
never to a process that has since taken over a recycled pid.

Linux only. This is a bottom-layer module: it imports nothing from netsonde.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import time
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_DEAD = frozenset("ZXx")  # zombie or dead: nothing left to signal


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  # R, S, D, Z, T … as in /proc/PID/stat
    start_ticks: int  # clock ticks after boot: with the pid, what identifies the process
    start: float = field(compare=False)  # epoch seconds (as of boot_time(): jitters by µs)
    comm: str
    cmdline: str = ""  # argv joined by spaces; "" for zombies, kernel threads, or not read

    @property
    def dead(self) -> bool:
        return self.state in _DEAD

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.start


def boot_time() -> float:
    """The epoch time of boot. Not /proc/stat's btime: that is whole seconds, and ages of a
    fraction of a second matter (the same clock, CLOCK_BOOTTIME, counts the start ticks)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def _read(path: str, limit: int = 1 << 17) -> bytes | None:
    # os.open/os.read rather than open(): half the cost, and a scan is ~500 of these.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # the process went away (or is not ours to look at)
    try:
        data = os.read(fd, 4096)
        if len(data) < 4096:
            return data  # /proc fills a read as far as it can: this was all of it
        chunks = [data]
        size = len(data)
        while size < limit and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except ProcessLookupError:  # reading /proc/PID/* after the process was reaped
        return None
    finally:
        os.close(fd)


def read_cmdline(pid: int) -> str:
    raw = _read(f"/proc/{pid}/cmdline")
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace") if raw else ""


def read_proc(pid: int, *, cmdline: bool = True, boot: float | None = None) -> ProcInfo | None:
    """One process, or None if it does not exist (any more)."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # comm may hold spaces and parentheses: it ends at the *last* ")".
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    # fields[0] is field 3 (state); field N of proc(5) is fields[N - 3].
    ticks = int(fields[19])
    return ProcInfo(  # positional: a scan builds ~500 of these
        pid,
        int(fields[1]),  # ppid
        int(fields[2]),  # pgid
        int(fields[3]),  # sid
        fields[0].decode(),  # state
        ticks,
        (boot_time() if boot is None else boot) + ticks / _CLK_TCK,
        head.partition(b"(")[2].decode(errors="replace"),  # comm
        read_cmdline(pid) if cmdline else "",
    )


def snapshot(*, cmdline: bool = True) -> dict[int, ProcInfo]:
    """Every process, by pid, from one pass over /proc. Processes that end during the pass are
    simply missing. ``cmdline=False`` skips one file read per process (the expensive part)."""
    boot = boot_time()
    table: dict[int, ProcInfo] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := read_proc(int(name), cmdline=cmdline, boot=boot)):
            table[info.pid] = info
    return table


def descendants(root: int, table: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """Every process below ``root`` (not root itself), parents before their children."""
    if table is None:
        table = snapshot()
    return _below([root], _children(table))


def descendants_of(roots: Iterable[int], table: dict[int, ProcInfo]) -> list[ProcInfo]:
    """Every process below any of ``roots`` (roots excluded), each once."""
    return _below(list(roots), _children(table))


def group_tree(pgid: int, table: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """Every member of process group ``pgid`` and every descendant of a member: a run's group
    plus what escaped it with setsid() while its parent is still alive."""
    if table is None:
        table = snapshot(cmdline=False)
    members = [p for p in table.values() if p.pgid == pgid]
    return members + _below([m.pid for m in members], _children(table))


def _children(table: dict[int, ProcInfo]) -> dict[int, list[ProcInfo]]:
    index: dict[int, list[ProcInfo]] = {}
    for info in table.values():
        index.setdefault(info.ppid, []).append(info)
    return index


def _below(roots: list[int], children: dict[int, list[ProcInfo]]) -> list[ProcInfo]:
    """Breadth first below ``roots`` (roots excluded), each process once."""
    found: list[ProcInfo] = []
    seen = set(roots)
    todo = deque(roots)
    while todo:
        for child in children.get(todo.popleft(), ()):
            if child.pid not in seen:  # pid 0 is its own "parent" (the idle task)
                seen.add(child.pid)
                found.append(child)
                todo.append(child.pid)
    return found


def same_process(info: ProcInfo) -> bool:
    """True if ``info.pid`` is still the process that ``info`` describes (dead or alive)."""
    now = read_proc(info.pid, cmdline=False, boot=0.0)
    return now is not None and now.start_ticks == info.start_ticks


def is_alive(info: ProcInfo) -> bool:
    """True if the process ``info`` describes still runs (a zombie does not)."""
    now = read_proc(info.pid, cmdline=False, boot=0.0)
    return now is not None and now.start_ticks == info.start_ticks and not now.dead


def send_signal(info: ProcInfo, sig: int) -> bool:
    """Signal the process ``info`` describes; False if it is gone (or its pid was recycled).

    The pidfd is opened *before* the start time is checked: if the check passes, the pidfd
    refers to the process that was seen (a recycled pid would have started later), and the
    signal cannot reach anything else even if the pid is recycled in between.
    """
    try:
        fd = os.pidfd_open(info.pid)
    except ProcessLookupError:
        return False
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EPERM):
            raise
        return _send_signal_by_pid(info, sig)  # kernel < 5.3, or a seccomp filter
    try:
        if not same_process(info):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(fd)


def _send_signal_by_pid(info: ProcInfo, sig: int) -> bool:
    # Without pidfds a recycle between the check and the kill remains possible, if unlikely:
    # pids are handed out in order, so the pid space would have to wrap within microseconds.
    if not same_process(info):
        return False
    try:
        os.kill(info.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_all(procs: Iterable[ProcInfo], sig: int) -> list[ProcInfo]:
    """Signal each live process in ``procs`` (zombies are skipped); returns those signalled."""
    return [p for p in procs if not p.dead and send_signal(p, sig)]


def wait_gone(procs: Iterable[ProcInfo], timeout: float, step: float = 0.02) -> list[ProcInfo]:
    """Wait until none of ``procs`` runs any more, at most ``timeout`` s; returns survivors."""
    left = [p for p in procs if is_alive(p)]
    end = time.monotonic() + timeout
    while left and time.monotonic() < end:
        time.sleep(step)
        left = [p for p in left if is_alive(p)]
    return left


def kill_tree(
    root: int, grace: float = 2.0, *, exclude: Collection[int] = (), include_root: bool = False
) -> list[ProcInfo]:
    """SIGTERM everything below ``root``, SIGKILL what is still there after ``grace`` s (and
    whatever was started meanwhile). Blocks. Returns every process that was signalled."""
    table = snapshot(cmdline=False)
    first = [p for p in descendants(root, table) if p.pid not in exclude]
    if include_root and root in table and root not in exclude:
        first.insert(0, table[root])
    hit = {p.pid: p for p in signal_all(first, signal.SIGTERM)}
    survivors = wait_gone(first, grace)
    # A survivor's new children, or an escapee whose parent just died, are below root still
    # or below a survivor: rescan rather than trust the first picture.
    table = snapshot(cmdline=False)
    again = descendants_of([root, *(s.pid for s in survivors)], table)
    for p in signal_all([*survivors, *(p for p in again if p.pid not in exclude)], signal.SIGKILL):
        hit.setdefault(p.pid, p)
    return list(hit.values())


def become_subreaper() -> bool:
    """Make orphans of this process's descendants its children instead of init's, so that they
    stay findable and it can reap them. Not inherited across fork. False if refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    return ok and flag.value != 0


def own_children() -> list[int] | None:
    """Pids of this process's children, from /proc/self/task/*/children (one small read per
    thread, no scan), or None if the kernel does not list them (no CONFIG_PROC_CHILDREN)."""
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except FileNotFoundError:
        return None
    for tid in tasks:
        raw = _read(f"/proc/self/task/{tid}/children")
        if raw is None:
            if not os.path.exists(f"/proc/self/task/{tid}"):
                continue  # the thread ended meanwhile
            return None
        pids += map(int, raw.split())
    return pids


def end_descendants(grace: float, reap_for: float = 1.0) -> list[ProcInfo]:
    """For a process about to exit that must leave nothing behind (a run's child, a subreaper
    whose orphans are its children): SIGTERM everything below it, SIGKILL what is left after
    ``grace`` s, then reap its children for at most ``reap_for`` s. Returns what was signalled.

    Reaps with waitpid(-1): it takes every child's exit status, so it is only for the end of a
    process's life. Cheap when nothing is left (the usual case): no scan of /proc."""
    if own_children() == []:
        return []
    hit = kill_tree(os.getpid(), grace)
    end = time.monotonic() + reap_for
    while True:  # a SIGKILLed process becomes a zombie a moment after the signal
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # no child left at all
        if pid == 0:
            if time.monotonic() >= end:
                break
            time.sleep(0.005)
    return hit


def reap_orphans(keep: Collection[int], table: dict[int, ProcInfo] | None = None) -> list[int]:
    """Reap the zombie children of this process whose pid is not in ``keep``; returns their pids.

    ``keep`` must hold every child that someone else waits for (Popen, asyncio/uvloop
    subprocesses): reaping one of those steals its exit status (libuv would then never report
    the exit). That is also why this never calls waitpid(-1).
    """
    me = os.getpid()
    if table is None:
        table = snapshot(cmdline=False)
    reaped = []
    for info in table.values():
        if info.ppid != me or info.state != "Z" or info.pid in keep:
            continue
        with contextlib.suppress(ChildProcessError):  # someone else just reaped it
            pid, _ = os.waitpid(info.pid, os.WNOHANG)
            if pid:
                reaped.append(pid)
    return reaped
