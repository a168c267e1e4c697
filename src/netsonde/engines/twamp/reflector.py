"""A stateless TWAMP-Light Session-Reflector (RFC 5357 Appendix I) on UDP.

    python -m netsonde.engines.twamp.reflector --listen 127.0.0.1:862 [--listen [::1]:862]

Every datagram of at least 14 octets is answered at once, to where it came from: the sender's
seq, timestamp and error estimate and the TTL it arrived with are copied in, T2 is the kernel's
receive time (SO_TIMESTAMPNS), T3 is read just before the answer is sent, and the Sequence
Number is the reflector's own count of packets it answered (one counter for all senders: no
per-session state is kept). The answer is sent with TTL 255 (RFC 5357 §4.2.1) and the DSCP
the question arrived with (ECN bits cleared), so both directions get the same per-hop
treatment, as a TWAMP session's negotiated Type-P would give them. It is at most
27 octets longer than the question (only for senders padding by less than 27), so a spoofed
source gains little; a question from the reflector's own port number is not answered, so two
reflectors cannot be made to bounce packets at each other forever. It binds 127.0.0.1 unless
told otherwise and exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence

from netsonde.engines.twamp.clock import CachedEstimate
from netsonde.engines.twamp.packets import SENDER_SIZE, reflect
from netsonde.engines.twamp.udp import (
    family_for,
    open_udp,
    parse_hostport,
    receive,
    send_with_tos,
    sockaddr,
)

DEFAULT_LISTEN = "127.0.0.1:862"  # 862: the TWAMP-Test port (RFC 8545)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Reflector:
    """Answers on every bound socket until ``serve`` is interrupted."""

    def __init__(self, listen: Sequence[tuple[str, int]]) -> None:
        self.sockets: list[socket.socket] = []
        self.answered = 0
        self.estimate = CachedEstimate()  # the error estimate of our timestamps
        try:
            for host, port in listen:
                sock = open_udp(family_for(host), ttl=255)
                self.sockets.append(sock)
                sock.bind(sockaddr(host, port))
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self.sockets]

    def handle(self, sock: socket.socket) -> None:
        try:
            got = receive(sock)
        except OSError:  # e.g. an ICMP error queued for an earlier answer
            return
        if got is None or len(got.data) < SENDER_SIZE:
            return
        if got.peer[1] in (0, sock.getsockname()[1]):
            # From port 0, or from our own port: most likely another reflector (or one spoofed
            # as the source), and answering would start an endless ping-pong between the two.
            return
        error = self.estimate.packed()
        reply = reflect(
            got.data,
            seq=self.answered,
            receive_ns=got.received_ns,
            send_ns=time.time_ns(),  # T3: as late as we can read it
            ttl=255 if got.ttl is None else got.ttl,
            error=error,
        )
        try:
            if got.tos:
                send_with_tos(sock, reply, got.peer, got.tos & 0xFC)
            else:
                sock.sendto(reply, got.peer)
        except OSError:
            return  # unreachable sender, full buffer: a lost packet, not our failure
        self.answered += 1

    def serve(self, wakeup: socket.socket | None = None) -> None:
        """Answer until ``wakeup`` becomes readable (forever without one). A signal is never
        raised into ``handle``: an answer is either sent and counted or not sent at all."""
        with selectors.DefaultSelector() as sel:
            for sock in self.sockets:
                sel.register(sock, selectors.EVENT_READ)
            if wakeup is not None:
                sel.register(wakeup, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is wakeup:
                        return
                    self.handle(key.fileobj)  # type: ignore[arg-type]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m netsonde.engines.twamp.reflector", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ADDR:PORT",
        help=f"IP:PORT or [IPv6]:PORT to answer on; repeatable (default {DEFAULT_LISTEN})",
    )
    args = parser.parse_args(argv)
    try:
        listen = [parse_hostport(a) for a in args.listen or [DEFAULT_LISTEN]]
    except ValueError as e:
        parser.error(str(e))
    return serve(listen)


def serve(listen: Sequence[tuple[str, int]]) -> int:
    """Run a reflector in the foreground until SIGTERM or SIGINT; the exit status."""
    # The signal handlers do nothing but let Python write the signal number to `wake`, which
    # the reflector's selector watches (PEP 475 would otherwise just resume the select).
    wait, wake = socket.socketpair()
    wake.setblocking(False)
    old_fd = signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
    old = {sig: signal.signal(sig, lambda signum, frame: None) for sig in _STOP_SIGNALS}
    try:
        try:
            reflector = Reflector(listen)
        except OSError as e:
            hint = " (ports below 1024 need root)" if e.errno == errno.EACCES else ""
            print(f"twamp-reflector: cannot listen: {e.strerror}{hint}", file=sys.stderr)
            return 1
        with contextlib.closing(reflector):
            for host, port in reflector.addresses:
                shown = f"[{host}]" if ":" in host else host
                print(f"twamp-reflector: listening on {shown}:{port}", flush=True)
            reflector.serve(wakeup=wait)
        print(f"twamp-reflector: stopped after {reflector.answered} packets", flush=True)
        return 0
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        wait.close()
        wake.close()


if __name__ == "__main__":
    sys.exit(main())
