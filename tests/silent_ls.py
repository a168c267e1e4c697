"""A lookup service that accepts every connection and never answers: what a registrar must
survive without delaying anything (tests/unit/test_registrar.py, tests/integration/
test_registration.py)."""

from __future__ import annotations

import socket
import threading

from netsonde.services.lookup import ENDPOINTS

LS_PATH = ENDPOINTS[0]


class Silent:
    """Accepts every connection on a loopback port, reads nothing, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}{LS_PATH}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hold(conn)

    def hold(self, conn: socket.socket) -> None:
        """What is done with an accepted connection: here, nothing but keeping it open."""
        self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()
