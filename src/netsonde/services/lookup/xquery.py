"""The LS's XQuery, sandboxed: a SaxonC-HE worker process (``xquery_worker.py``) kept in step
with the registry, killed at the deadline.

Saxon cannot be interrupted inside a process, so a query runs in a separate process that is
reused across queries and killed (SIGKILL) when a query outlives its time; the next query
starts a fresh one. The worker holds the collection parsed, one document per registration
(``LookupRegistry.documents``); before each query the engine sends it only what changed
since the last (``changes_since``) and the documents whose first record has expired since
(renewed ones come back, the others leave), so an unchanged registry is never re-parsed and
an expired record is never answered. Documents go a page at a time (``PAGE``, read from the
registry page by page, one frame each), so the service's process never holds the whole
collection (10,000 services × 20 items is ~150 MB of XML), only the worker does.

A query is rewritten as the seed did (``LS.pm``: each ``/`` after whitespace becomes
``collection('…')/``, here also a ``/`` opening the query), and ``collection(…)`` and
``doc(…)`` calls are bound to the registry: ``collection`` is every document whatever its
argument, ``doc("…/KEY")`` the registration of KEY; anything else that names a URI fails in
the worker (no protocol is allowed). The canonical NMWG prefixes (``nmwg``, ``psservice``,
``nmwgt`` …) are declared for every query; a query may declare its own.

Limits: the time (the request's deadline, at most ``timeout``), the worker's memory
(``memory`` bytes of data segment) and the answer's size (``max_bytes``): past any of them
the query fails with an NMWG error and the LS goes on.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netsonde.nmwg import codes, ns
from netsonde.services.lookup.registry import LookupRegistry

WORKER = Path(__file__).with_name("xquery_worker.py")
NS = "urn:netsonde:lookup"
_HEADER_SIZE = 8
PAGE = 200  # documents read from the registry and sent in one frame (~3 MB at 20 items each)
# A root path: "/" after whitespace (as LS.pm), and also opening an argument or a sequence
# member ("count(/…)", "(a, /…)"), where the seed left the context item absent.
_SLASH = re.compile(r"(^|[\s(,])/")
_CALL = re.compile(r"(?<![\w.:}$-])(?:fn:)?(collection|doc)(\s*\()")
_PROLOG_PART = re.compile(
    r"""\s*(?:
        \(:.*?:\)
      | xquery\s+(?:version|encoding)\b[^;]*;
      | declare\s+(?:namespace|default\s+(?:element|function|collation|order|decimal-format)
            |boundary-space|base-uri|construction|ordering|copy-namespaces|decimal-format)\b[^;]*;
      | import\s+(?:module|schema)\b[^;]*;
    )""",
    re.VERBOSE | re.DOTALL,
)
# One line: the user's line numbers in error messages stay right.
_DECLARATIONS = (
    " ".join(
        f"""
declare variable $Q{{{NS}}}collection as document-node()* external;
declare function Q{{{NS}}}collection() as document-node()* {{ $Q{{{NS}}}collection }};
declare function Q{{{NS}}}collection($uri as xs:string?) as document-node()* {{
  $Q{{{NS}}}collection
}};
declare function Q{{{NS}}}doc($uri as xs:string?) as document-node() {{
  let $key := tokenize(string($uri), '/')[last()]
  let $found := $Q{{{NS}}}collection[*/*/@id = $key][1]
  return if (exists($found)) then $found else error(
    QName('{NS}', 'doc'),
    concat('doc() reads only the registrations of this LS, by key: no ', $uri)
  )
}};
""".split()
    )
    + " "
)


class XQueryError(Exception):
    """A query that failed: ``code`` is the NMWG result code to answer."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code, self.text = code, text


def rewrite(query: str) -> str:
    """The query as the worker runs it: the user's prolog setters first, then the registry's
    declarations, then the rest with ``/`` and ``collection``/``doc`` bound to the registry."""
    end = 0
    while m := _PROLOG_PART.match(query, end):
        end = m.end()
    body = _CALL.sub(rf"Q{{{NS}}}\1\2", query[end:])
    body = _SLASH.sub(rf"\1$Q{{{NS}}}collection/", body)
    return query[:end] + _DECLARATIONS + body


class _Process:
    """One worker process and its pipes."""

    def __init__(self, memory: int) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), str(memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},
            cwd="/",
            close_fds=True,
        )
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.stdin, self.stdout = self.popen.stdin, self.popen.stdout
        os.set_blocking(self.stdin.fileno(), False)  # a write waits within a deadline only
        self._header: bytes | None = None  # of an answer whose body is not read yet
        self._partial = bytearray()  # what a read cut short by its deadline got so far
        self._unsent = bytearray()  # what a write cut short by its deadline left

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    def _read_exactly(self, size: int, end: float) -> bytes:
        out = self._partial  # kept across a timeout: the stream stays in step
        fd = self.stdout.fileno()
        while len(out) < size:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, min(size - len(out), 1 << 20))
            if not chunk:
                raise EOFError
            out += chunk
        self._partial = bytearray()
        return bytes(out)

    def send(self, request: dict[str, Any], end: float) -> None:
        """Write one frame; TimeoutError at ``end`` (a later call writes the rest first)."""
        body = json.dumps(request).encode()
        self._unsent += len(body).to_bytes(_HEADER_SIZE, "big")
        self._unsent += body
        del body
        self.flush(end)

    def flush(self, end: float) -> None:
        """Write what is left of the frames sent; TimeoutError at ``end``."""
        fd = self.stdin.fileno()
        while self._unsent:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            _, ready, _ = select.select([], [fd], [], left)
            if not ready:
                raise TimeoutError
            with contextlib.suppress(BlockingIOError):
                del self._unsent[: os.write(fd, self._unsent[: 1 << 20])]

    def receive(self, end: float) -> dict[str, Any]:
        """The next answer; TimeoutError at ``end`` (a later call reads on where it was)."""
        if self._header is None:
            self._header = self._read_exactly(_HEADER_SIZE, end)
        size = int.from_bytes(self._header, "big")
        answer = json.loads(self._read_exactly(size, end))
        self._header = None
        if not isinstance(answer, dict):
            raise EOFError
        return answer


@dataclass
class _Sync:
    """Documents on their way to the worker, sent a page at a time: a load (every document
    of the registry, from ``after`` on) or an update (the ``names`` left to send)."""

    high: int  # the change log as far as these documents reach
    load: bool  # they replace the worker's collection
    after: str | int | None = None  # a load: where the registry's next page starts
    names: list[str] = field(default_factory=list)  # an update: documents left to send
    expires: dict[str, int] = field(default_factory=dict)  # documents sent → first expiry
    dropped: list[str] = field(default_factory=list)  # documents sent as gone
    sent: bool = False  # every page written: the worker's answer is next


class XQueryEngine:
    """One worker per engine, one query at a time (queries wait their turn within their
    deadline). ``close`` stops the worker."""

    def __init__(self, timeout: float = 10.0, memory: int = 2 << 30) -> None:
        self.timeout = timeout
        self.memory = memory
        self._lock = threading.Lock()
        self._process: _Process | None = None
        self._seq = 0  # the registry's change log, as far as the worker has it
        self._expires: dict[str, int] = {}  # document → when its first record expires
        self._next_expiry = 0
        self._pending: _Sync | None = None  # documents on their way to the worker
        self.started = 0  # workers started, each loaded with every document
        self.sent = 0  # documents sent or dropped since: what changed, not what stayed
        self.pages = 0  # frames of documents sent (one per page of a load or update)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process = None
        self._pending = None

    def run(self, registry: LookupRegistry, query: str, *, deadline: float, max_bytes: int) -> str:
        """The query's serialized result ("" when empty), or XQueryError."""
        end = min(deadline, time.monotonic() + self.timeout)
        if not self._lock.acquire(timeout=max(0.0, end - time.monotonic())):
            raise XQueryError(codes.LS_QUERY_TIMEOUT, self._late())
        try:
            return self._run(registry, rewrite(query), end, max_bytes)
        finally:
            self._lock.release()

    def _late(self) -> str:
        return f"the query did not finish within its time (at most {self.timeout:g} s)"

    def _run(self, registry: LookupRegistry, query: str, end: float, max_bytes: int) -> str:
        try:
            try:
                self._sync(registry, end)
            except TimeoutError:
                # Documents take as long as they take to parse: the worker is kept, the next
                # query collects its answer first.
                raise XQueryError(codes.LS_QUERY_TIMEOUT, self._loading()) from None
            try:
                # The worker ends itself a second past the deadline, should nobody be left
                # to kill it.
                alarm = max(1, math.ceil(end - time.monotonic()) + 1)
                request = {"op": "query", "query": query, "max_bytes": max_bytes, "alarm": alarm}
                answer = self._call(request, end)
            except TimeoutError:
                self._drop()  # a query is never waited for beyond its deadline
                raise XQueryError(codes.LS_QUERY_TIMEOUT, self._late()) from None
        except (EOFError, OSError, ValueError):
            self._drop()
            raise XQueryError(
                codes.LS_XMLDB, "the query exhausted the XQuery engine's memory or crashed it"
            ) from None
        if answer.get("ok"):
            return str(answer.get("result", ""))
        text = str(answer.get("text", ""))
        if answer.get("kind") == "too_large":
            raise XQueryError(
                codes.LS_QUERY_TOO_LARGE, f"the answer is {text} (max_response_bytes)"
            )
        raise XQueryError(codes.LS_XMLDB, text)

    def _loading(self) -> str:
        return (
            f"the XQuery engine is still taking in the registry ({len(self._expires)}"
            " documents known); the query did not run, try again"
        )

    def _call(self, request: dict[str, Any], end: float) -> dict[str, Any]:
        assert self._process is not None
        self._process.send(request, end)
        return self._process.receive(end)

    def _sync(self, registry: LookupRegistry, end: float) -> None:
        """Bring the worker's collection up to the registry (a new worker: all of it).
        TimeoutError when the documents are not sent or taken in by ``end``: the worker goes
        on, and the next call finishes sending them and collects its answer first."""
        if self._pending is not None:
            self._finish(registry, end)
        if self._start(registry, end):
            self._finish(registry, end)

    def _start(self, registry: LookupRegistry, end: float) -> bool:
        """Begin a load (a new worker, or a change log that no longer reaches back) or an
        update of what changed and what expired; False when nothing did."""
        high, changed = registry.changes_since(self._seq)
        if self._process is None or changed is None:
            self._drop()
            self._process = _Process(self.memory)
            self.started += 1
            self._pending = _Sync(high, load=True)
            self._process.send({"op": "load", "namespaces": ns.PREFIXES, "more": True}, end)
            return True
        names, now = set(changed), time.time()
        if now >= self._next_expiry:
            names |= {d for d, e in self._expires.items() if e <= now}
        if not names:
            self._seq = high
            return False
        self._pending = _Sync(high, load=False, names=sorted(names))
        return True

    def _finish(self, registry: LookupRegistry, end: float) -> None:
        """Send the pending documents a page at a time (this process holds one page, never
        the collection), then collect the worker's answer."""
        assert self._process is not None and self._pending is not None
        p = self._pending
        while not p.sent:
            self._process.flush(end)  # the page before is in the worker's hands
            now = time.time()
            if p.load:
                docs, p.after = registry.document_page(p.after, now, PAGE)
                p.sent = p.after is None
            else:
                chunk, p.names = p.names[:PAGE], p.names[PAGE:]
                docs = registry.documents(chunk, now)
                p.sent = not p.names
                self.sent += len(docs)
            put = {d: v.xml for d, v in docs.items() if v.xml is not None}
            drop = [d for d, v in docs.items() if v.xml is None]
            p.expires.update((d, docs[d].expires) for d in put)
            p.dropped += drop
            del docs
            if not (put or drop or p.sent):
                continue  # an empty page (the end of the lease keys): nothing to say
            self.pages += bool(put or drop)
            # Noted above before it is sent: a send cut short finishes at the next call.
            self._process.send({"op": "update", "put": put, "drop": drop, "more": not p.sent}, end)
        self._process.flush(end)
        self._collect(end)

    def _collect(self, end: float) -> None:
        """The worker's answer to the documents sent, and what they change here."""
        assert self._process is not None and self._pending is not None
        answer = self._process.receive(end)
        p, self._pending = self._pending, None
        if p.load:
            self._expires = p.expires
        else:
            for d in p.dropped:
                self._expires.pop(d, None)
            self._expires.update(p.expires)
        self._next_expiry = min(self._expires.values(), default=2**62)
        self._seq = p.high
        if not answer.get("ok"):
            raise XQueryError(codes.LS_XMLDB, str(answer.get("text", "")))
