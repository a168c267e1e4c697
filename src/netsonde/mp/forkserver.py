"""A fork server for runs: a small single-threaded process that has the tools imported and
forks one child per run on request.

Why not ``multiprocessing``'s forkserver: its children re-run the parent's main script (for
the daemon, the whole CLI with typer and rich) before the tool starts — about 20-60 ms of CPU
per run, which caps a 2-core host well below 100 runs/s — and they import from disk while the
daemon runs, so an upgrade under a running daemon mixes versions. Forking from a process that
has everything imported costs about a millisecond, and forking from it instead of from the
daemon avoids forking a process that has threads (the archive writer).

Protocol over one Unix stream socket, each message a 4-byte length and a pickle:
    daemon → server   ("run", token, spec, deadline)
                      ("ping", token)        the supervisor's heartbeat: is the loop turning?
    server → daemon   ("pong", token)
                      ("started", token, pid)
                      ("done", token, wait_status, payload)  payload: pickled (start, Result)
                                                             or b"" if the child sent nothing
The child makes itself a process-group leader and a child subreaper before running the tool:
a process the tool leaves behind, even one that double-forked into a session of its own
(``( setsid sleep 300 & ) &``), is reparented to the run's child instead of the daemon, so it
stays below the run, where the runner's deadline kill (a snapshot of the group and everything
below it) reaches it. When the tool returns, the child ends whatever is still below it before
it exits: a run leaves nothing behind. The server lives in a session of its own (a signal to
the daemon's group does not reach it), and when the daemon's end of the socket closes it kills
every run it started, with everything below each, and exits.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

from netsonde import proctree

_HEADER = struct.Struct("!I")
# What a run's leftovers get between SIGTERM and SIGKILL when the tool has returned, at most:
# the run's deadline comes first (the tool stops deadline.MARGIN before it).
_SWEEP_GRACE = 1.0
_SWEEP_MARGIN = 0.1  # kept back from the deadline for reaping and exiting


def encode(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class _Frames:
    """Reassembles length-prefixed messages from a byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        self._buf += data
        out = []
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if len(self._buf) < _HEADER.size + size:
                break
            out.append(pickle.loads(self._buf[_HEADER.size : _HEADER.size + size]))
            del self._buf[: _HEADER.size + size]
        return out


# ---- the server process ---------------------------------------------------------------------


class _Child:
    __slots__ = ("data", "pidfd", "pipe", "status", "token")

    def __init__(self, token: int, pipe: int, pidfd: int) -> None:
        self.token = token
        self.pipe: int | None = pipe
        self.pidfd: int | None = pidfd
        self.data = bytearray()
        self.status: int | None = None


def _child_main(spec: Any, deadline: float, write_fd: int) -> None:
    """In the forked child: run the tool, write (start time, result), exit. Never returns."""
    code = 0
    try:
        os.setpgid(0, 0)
        proctree.become_subreaper()  # False on a kernel without it: the daemon's reaper remains
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        from netsonde import probes as tools
        from netsonde.model import Result

        started = time.time()
        try:
            result = tools.get(spec.tool).run(spec.target, spec.params, deadline)
        except Exception as e:  # a tool bug becomes a failed run, not a lost one
            result = Result(tool=spec.tool, target=spec.target, error=f"{type(e).__name__}: {e}")
        payload = pickle.dumps((started, result), protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_fd, "wb") as f:
            f.write(payload)
    except BaseException:
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            grace = min(_SWEEP_GRACE, deadline - time.time() - _SWEEP_MARGIN)
            proctree.end_descendants(max(0.0, grace))
        os._exit(code)


def serve(sock: socket.socket) -> None:
    """The server's loop: fork on request, forward results, reap children."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sel = selectors.DefaultSelector()
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ, "control")
    frames = _Frames()
    children: dict[int, _Child] = {}  # pid → child
    outbox = bytearray()

    def send(message: tuple[Any, ...]) -> None:
        outbox.extend(encode(message))
        flush()

    def flush() -> None:
        while outbox:
            try:
                sent = sock.send(outbox)
            except BlockingIOError:
                sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, "control")
                return
            del outbox[:sent]
        sel.modify(sock, selectors.EVENT_READ, "control")

    def start(token: int, spec: Any, deadline: float) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            sock.close()
            os.close(read_fd)
            for other in children.values():
                for fd in (other.pipe, other.pidfd):
                    if fd is not None:
                        with contextlib.suppress(OSError):
                            os.close(fd)
            _child_main(spec, deadline, write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        pidfd = os.pidfd_open(pid)
        children[pid] = _Child(token, read_fd, pidfd)
        sel.register(read_fd, selectors.EVENT_READ, ("pipe", pid))
        sel.register(pidfd, selectors.EVENT_READ, ("exit", pid))
        send(("started", token, pid))

    def finish_if_done(pid: int) -> None:
        child = children[pid]
        if child.pipe is None and child.status is not None:
            del children[pid]
            send(("done", child.token, child.status, bytes(child.data)))

    def read_pipe(pid: int) -> None:
        child = children[pid]
        assert child.pipe is not None
        try:
            chunk = os.read(child.pipe, 1 << 16)
        except BlockingIOError:
            return
        if chunk:
            child.data += chunk
            return
        sel.unregister(child.pipe)
        os.close(child.pipe)
        child.pipe = None
        finish_if_done(pid)

    def reap(pid: int) -> None:
        child = children[pid]
        assert child.pidfd is not None
        sel.unregister(child.pidfd)
        os.close(child.pidfd)
        child.pidfd = None
        _, child.status = os.waitpid(pid, 0)
        # Everything the child wrote is in the pipe now. Don't wait for EOF: a grandchild that
        # inherited the write end (a fork without exec) could hold it open for ever.
        while child.pipe is not None:
            try:
                chunk = os.read(child.pipe, 1 << 16)
            except BlockingIOError:
                chunk = b""
            if chunk:
                child.data += chunk
            else:
                sel.unregister(child.pipe)
                os.close(child.pipe)
                child.pipe = None
        finish_if_done(pid)

    try:
        while True:
            for key, events in sel.select():
                tag = key.data
                if tag == "control":
                    if events & selectors.EVENT_WRITE:
                        flush()
                    if events & selectors.EVENT_READ:
                        try:
                            data = sock.recv(1 << 16)
                        except BlockingIOError:
                            continue
                        if not data:
                            return  # the daemon is gone
                        for message in frames.feed(data):
                            if message[0] == "run":
                                start(*message[1:])
                            elif message[0] == "ping":
                                send(("pong", message[1]))
                elif tag[0] == "pipe" and tag[1] in children:
                    read_pipe(tag[1])
                elif tag[0] == "exit" and tag[1] in children:
                    reap(tag[1])
    except (BrokenPipeError, ConnectionResetError):
        return  # the daemon closed its end (it is stopping): nobody to answer
    finally:
        _kill_runs(list(children))


def _kill_runs(pids: list[int]) -> None:
    """SIGKILL each run's group and everything below its members (the run's child adopts what
    its tool left behind; a setsid()'d process is in no group)."""
    if not pids:
        return
    table = proctree.snapshot(cmdline=False)  # before the first signal: orphans move up
    trees = [proctree.group_tree(pid, table) for pid in pids]
    for pid, tree in zip(pids, trees, strict=True):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        proctree.signal_all(tree, signal.SIGKILL)


def main() -> None:
    import netsonde.probes  # noqa: F401  (preload: every run's fork starts with it imported)

    fd = int(sys.argv[1])
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main()
