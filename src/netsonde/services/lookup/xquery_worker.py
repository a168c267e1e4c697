"""The XQuery worker process: SaxonC-HE over the registry's documents, nothing else.

Started by ``xquery.py`` as ``python -I xquery_worker.py MEMORY_BYTES`` with an empty
environment (no token or path to read through ``environment-variable()``), it imports only the
standard library and saxonche. Saxon may reach no URI at all (``allowedProtocols`` empty:
``doc()``, ``collection()``, ``unparsed-text()``, module and schema imports of files or URLs
fail); the registry reaches it as the external variable ``$Q{urn:netsonde:lookup}collection``,
one document per registration. Its data segment is capped (RLIMIT_DATA: a query that builds
too much kills this process, not the service) and the parent kills it at the deadline.

Frames on stdin/stdout: 8-byte big-endian length, then UTF-8 JSON. Requests:
``{"op": "load", "docs": {name: xml}, "namespaces": {prefix: uri}}`` (a new collection, and
the prefixes a query may use undeclared), ``{"op": "update", "put": {name: xml},
"drop": [name]}``, ``{"op": "query", "query": text, "max_bytes": n, "alarm": seconds}``.
A load or update with ``"more": true`` is not answered: more pages follow, and the first
frame without it answers for all of them (the collection arrives in bounded frames).
Answers: ``{"ok": true, "result": text}`` or ``{"ok": false, "kind":
"query"|"too_large"|"document", "text": …}``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

COLLECTION = "{urn:netsonde:lookup}collection"
_HEADER = struct.Struct(">Q")


def read_frame(stream: BinaryIO) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    return json.loads(stream.read(size))


def write_frame(stream: BinaryIO, message: object) -> None:
    body = json.dumps(message).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


class Worker:
    def __init__(self) -> None:
        from saxonche import PySaxonProcessor  # type: ignore[import-not-found]

        self.saxon = PySaxonProcessor(license=False)
        # No URI may be read: the registry is all a query sees.
        self.saxon.set_configuration_property("http://saxon.sf.net/feature/allowedProtocols", "")
        self.xquery = self.saxon.new_xquery_processor()
        self.xquery.set_property("!omit-xml-declaration", "yes")
        self.docs: dict[str, Any] = {}
        self.stale = True  # the collection parameter needs rebuilding
        self.failed: list[str] = []  # documents of unanswered pages that did not parse

    def put(self, docs: dict[str, str]) -> None:
        """Parse and keep ``docs``; those that fail to parse are noted in ``failed``."""
        for name, xml in docs.items():
            try:
                self.docs[name] = self.saxon.parse_xml(xml_text=xml)
            except Exception:
                self.docs.pop(name, None)
                self.failed.append(name)
        self.stale = True

    def query(self, text: str, max_bytes: int) -> dict[str, object]:
        if self.stale:
            collection = self.saxon.empty_sequence()
            for doc in self.docs.values():
                collection.add_xdm_item(doc)
            self.xquery.set_parameter(COLLECTION, collection)
            self.stale = False
        try:
            result = self.xquery.run_query_to_string(query_text=text) or ""
        except Exception as e:
            return {"ok": False, "kind": "query", "text": " ".join(str(e).split())}
        if len(result.encode()) > max_bytes:
            return {"ok": False, "kind": "too_large", "text": f"more than {max_bytes} bytes"}
        return {"ok": True, "result": result}

    def handle(self, request: dict[str, Any]) -> dict[str, object] | None:
        """The answer to ``request``; None for a page that more pages follow."""
        op = request.get("op")
        if op == "load":
            for prefix, uri in request.get("namespaces", {}).items():
                self.xquery.declare_namespace(prefix, uri)
            self.docs.clear()
            self.failed = []
            self.put(request.get("docs", {}))
        elif op == "update":
            for name in request.get("drop", ()):
                self.docs.pop(name, None)
            self.stale = True
            self.put(request.get("put", {}))
        elif op == "query":
            # SIGALRM's default action ends this process: a query outlives its deadline by a
            # second at most, even when the service that asked is gone.
            signal.alarm(int(request.get("alarm", 0)))
            try:
                return self.query(request["query"], int(request["max_bytes"]))
            finally:
                signal.alarm(0)
        else:
            return {"ok": False, "kind": "document", "text": f"unknown op {op!r}"}
        if request.get("more"):
            return None
        failed, self.failed = self.failed, []
        if failed:
            return {"ok": False, "kind": "document", "text": f"unparsable: {failed[:5]}"}
        return {"ok": True, "result": ""}


def main() -> None:
    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Frames go to a private copy of stdout; whatever the engine prints goes to stderr.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    worker = Worker()
    stdin = sys.stdin.buffer
    while (request := read_frame(stdin)) is not None:
        if (answer := worker.handle(request)) is not None:
            write_frame(stdout, answer)


if __name__ == "__main__":
    main()
