"""Every request's work bounded in time and a serving process's memory bounded, enforced from
outside the request (the seed daemon killed a request's process when it ran too long).

:class:`BoundedRequests` (ASGI middleware) gives each request one deadline, from the moment
its headers are complete: ``scope[DEADLINE]``, which the NMWG endpoint also answers by. A
request with no response at its deadline gets a 504 in the REST error shape; its work is
abandoned (its late output dropped) but stays tracked. :class:`Overruns` tracks every piece of
request work — requests, and threads abandoned at a deadline — and a watchdog thread calls
``on_overrun`` when one is still running ``grace`` seconds past its deadline: work that does
not stop when told to (a thread cannot be killed) ends with its process. After each request
the process's resident memory is compared with ``max_rss``; past it ``on_memory`` is called
once, so the process can be replaced between requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DEADLINE = "netsonde.deadline"  # scope key: the request's time.monotonic() deadline
OVERRUNS = "netsonde.overruns"  # scope key: the process's Overruns, when it has one
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``: a few µs)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class Overruns:
    """Request work in progress, by deadline; a watchdog thread reports what runs on too long."""

    def __init__(
        self, grace: float, on_overrun: Callable[[str, float], object], every: float = 0.5
    ) -> None:
        self.grace = grace
        self.on_overrun = on_overrun
        self._work: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._reported = False
        self._every = every
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="overruns", daemon=True)
        self._thread.start()

    def enter(self, what: str, deadline: float) -> int:
        key = next(self._ids)
        with self._lock:
            self._work[key] = (what, deadline)
        return key

    def leave(self, key: int) -> None:
        with self._lock:
            self._work.pop(key, None)

    @contextmanager
    def running(self, what: str, deadline: float) -> Iterator[None]:
        key = self.enter(what, deadline)
        try:
            yield
        finally:
            self.leave(key)

    def overdue(self, now: float | None = None) -> tuple[str, float] | None:
        """(what, seconds past its deadline) of the most overdue work past ``grace``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [(what, now - deadline) for what, deadline in self._work.values()]
        worst = max(late, key=lambda w: w[1], default=None)
        return worst if worst is not None and worst[1] > self.grace else None

    def _watch(self) -> None:
        while not self._reported:
            time.sleep(self._every)
            found = self.overdue()
            if found is not None:
                self._reported = True
                self.on_overrun(*found)

    @property
    def in_progress(self) -> int:
        with self._lock:
            return len(self._work)


def tracked(scope: Scope, what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as work of the request ``scope``: for a thread that may be abandoned at the
    deadline (the request is answered, the thread runs on): it stays tracked until it ends."""
    overruns: Overruns | None = scope.get(OVERRUNS)
    deadline: float | None = scope.get(DEADLINE)
    if overruns is None or deadline is None:
        return fn

    def run(*args: Any) -> Any:
        with overruns.running(what, deadline):
            return fn(*args)

    return run


def _timeout_body(limit: float) -> bytes:
    text = f"request timed out: it took longer than request_timeout ({limit:g} s)"
    return json.dumps({"error": text}).encode()


class BoundedRequests:
    """ASGI middleware: a deadline per request (504 past it), work tracked, memory watched."""

    def __init__(
        self,
        app: ASGIApp,
        request_timeout: float,
        overruns: Overruns | None = None,
        max_rss: int | None = None,
        on_memory: Callable[[int], object] | None = None,
    ) -> None:
        self.app = app
        self.request_timeout = request_timeout
        self.overruns = overruns
        self.max_rss = max_rss
        self.on_memory = on_memory
        self._memory_reported = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.request_timeout
        scope[DEADLINE] = deadline
        scope[OVERRUNS] = self.overruns
        state = {"started": False, "abandoned": False}

        async def guarded(message: Message) -> None:
            if state["abandoned"]:
                return  # the late answer of a request already answered with a 504
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        key = self.overruns.enter(scope.get("path", "?"), deadline) if self.overruns else None
        task = asyncio.ensure_future(self.app(scope, receive, guarded))
        task.add_done_callback(lambda t: self._finished(t, key, state["abandoned"]))
        # The NMWG endpoint answers its own timeout at the deadline: a little later here.
        done, _ = await asyncio.wait({task}, timeout=self.request_timeout + 0.5)
        if task in done:
            task.result()  # the app's exception, if any, to the server as usual
            return
        if state["started"]:
            await asyncio.shield(task)  # a response under way (a stream): let it finish
            return
        state["abandoned"] = True
        log.warning("%s %s: no answer in %gs", scope["method"], scope["path"], self.request_timeout)
        body = _timeout_body(self.request_timeout)
        await send(
            {
                "type": "http.response.start",
                "status": 504,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _finished(self, task: asyncio.Future[None], key: int | None, abandoned: bool) -> None:
        if key is not None and self.overruns is not None:
            self.overruns.leave(key)
        if abandoned and not task.cancelled() and (exc := task.exception()) is not None:
            # Nobody awaits an abandoned request: its failure is logged here or nowhere.
            log.error("abandoned request failed: %r", exc)
        self._check_memory()

    def _check_memory(self) -> None:
        if self.max_rss is None or self.on_memory is None or self._memory_reported:
            return
        rss = resident_bytes()
        if rss > self.max_rss:
            self._memory_reported = True
            self.on_memory(rss)
