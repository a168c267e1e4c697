"""NMWG/SOAP endpoints: the framework measurement services plug into (PROTOCOL.md §2, §3).

A service is an :class:`NMWGService` record::

    NMWGService(
        name="pinger-ma",
        handlers={"MetadataKeyRequest": mdk, "SetupDataRequest": setup_data},
        event_types=frozenset({PINGER, SELECT}),  # exact strings, trailing "/" significant
        output_metadata=False,                     # don't echo request metadata after output
    )

where each handler is ``handler(unit, message, rctx) -> Sequence[etree._Element]``: the
``nmwg:metadata``/``nmwg:data`` elements answering one :class:`~netsonde.nmwg.message.Unit`
(build them with :mod:`netsonde.nmwg.build`, ids from ``rctx.ids``). A handler raises
:class:`~netsonde.nmwg.codes.NMWGError` for a failure of its unit, which becomes a result-code
pair in the response; any other exception becomes ``error.common.internal_error`` for that
unit (traceback logged, never sent). Services registered earlier on an endpoint win a tie.

Handlers run in a worker thread. ``rctx`` (:class:`RequestContext`) carries ``api`` (the
:class:`~netsonde.api.context.ApiContext`: archive connections, token ...), ``endpoint``,
``deadline`` (a ``time.monotonic()`` value), ``ids`` (this response's id generator) and the
cancellation hook: at the deadline the client is answered ``error.common.timeout`` at once, the
thread's late result is dropped, ``rctx.cancelled`` turns true, ``rctx.check()`` raises and
callbacks given to ``rctx.on_cancel`` run, e.g. ``sqlite3.Connection.interrupt`` to abort a
query.

Mount services with :func:`soap_routes`::

    app = Starlette(routes=soap_routes(ctx, {"/perfSONAR_PS/services/pinger/ma": [pinger]}))

Echo is added to every endpoint. Per request:

* any method other than POST, an unknown endpoint, an oversized body → ``ErrorResponse``
  with ``error.common.transport``; unparsable XML → ``error.transport.parse_error``
  (:mod:`netsonde.nmwg.parse`); a type no service handles → ``error.common.action_not_supported``;
  going past ``ctx.request_timeout`` → ``error.common.timeout``. Every answer is HTTP 200,
  ``text/xml``, in the SOAP envelope; SOAPAction is not checked; a bare message is accepted.
* each unit goes to a service by eventType: the key's ``eventType`` parameter if the subject
  metadata has a key that carries one, else the first of the subject metadata's eventTypes a
  service registered; units with no eventType at all go to a service registered with
  ``event_types=None`` (it takes every unit of its message types, eventType or not).
* unless the service set ``output_metadata=False``, the unit's request metadata (subject
  metadata and filters, merged, each id once per response) follow the service's output.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.to_thread
from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from netsonde.api.context import ApiContext
from netsonde.nmwg import build, codes
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import Message, Unit, UnitFailure
from netsonde.nmwg.parse import check_size, parse_message

log = logging.getLogger(__name__)

TIMEOUT_TEXT = (
    "Timeout occurred, current limit is {limit:g} seconds. "
    "Try decreasing the breadth of your search if possible."
)


class Cancelled(Exception):
    """Raised by :meth:`RequestContext.check` once the request is past its time limit."""


@dataclass(eq=False)
class RequestContext:
    """What a handler gets besides its unit: the API context, response ids, cancellation."""

    api: ApiContext
    endpoint: str
    deadline: float = float("inf")  # time.monotonic() value at which the request times out
    authorization: str | None = None  # the HTTP Authorization header (store requests)
    ids: build.IdGen = field(default_factory=build.IdGen)
    _event: threading.Event = field(default_factory=threading.Event, repr=False)
    _callbacks: list[Callable[[], object]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when the request times out, or at once if it already has. It runs
        on the event loop's thread, so it must be quick and thread-safe
        (``sqlite3.Connection.interrupt``, ``threading.Event.set``)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        _call_quietly(callback)

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call_quietly(callback)


def _call_quietly(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        log.exception("cancellation callback %r failed", callback)


UnitHandler = Callable[[Unit, Message, RequestContext], Sequence[etree._Element]]


@dataclass(frozen=True)
class NMWGService:
    """A service on an endpoint. ``event_types`` are compared as exact strings with all
    whitespace removed (PROTOCOL.md §7.4); None means every unit of the message types,
    including units without eventType. ``event_type_pattern`` (``re.match``) adds more."""

    name: str
    handlers: Mapping[str, UnitHandler]
    event_types: frozenset[str] | None = frozenset()
    event_type_pattern: re.Pattern[str] | None = None
    output_metadata: bool = True
    # The lookup-service hook: what this service registers (one nmwg:metadata per thing it
    # serves). The LS registrar (netsonde.ls) sends it in LSRegisterRequest data.
    lookup_data: Callable[[ApiContext], list[etree._Element]] | None = None

    def accepts(self, event_type: str) -> bool:
        if self.event_types is None or event_type in self.event_types:
            return True
        return bool(self.event_type_pattern and self.event_type_pattern.match(event_type))


# --- dispatch (runs in the worker thread) ---------------------------------------------------


def handle(body: bytes, services: Sequence[NMWGService], rctx: RequestContext) -> bytes | None:
    """Request body → response bytes; None once the request was cancelled (nobody waits)."""
    request_id: str | None = None
    try:
        message = Message.from_element(parse_message(body, rctx.api.max_body_bytes))
        request_id = message.id
        return build.envelope(dispatch(message, services, rctx))
    except NMWGError as err:
        response = build.error_response(err.code, err.text, request_id)
    except Cancelled:
        return None
    except Exception:
        log.exception("NMWG request on %s failed", rctx.endpoint)
        response = build.error_response(codes.INTERNAL_ERROR, codes.INTERNAL_ERROR_TEXT, request_id)
    return build.envelope(response)


def dispatch(
    message: Message, services: Sequence[NMWGService], rctx: RequestContext
) -> etree._Element:
    """The response message; NMWGError for a whole-message failure."""
    if not message.type:
        raise NMWGError(codes.ACTION_NOT_SUPPORTED, "No message type specified")
    candidates = [s for s in services if message.type in s.handlers]
    if not candidates:
        raise NMWGError(
            codes.ACTION_NOT_SUPPORTED, f"Messages of type {message.type} are unsupported"
        )
    units = message.resolve()
    rctx.ids = build.IdGen(reserved=message.ids())
    response = build.message(build.response_type(message.type), rctx.ids, message.id)
    echoed: set[str] = set()
    for unit in units:
        rctx.check()
        if isinstance(unit, UnitFailure):
            response.extend(build.result_pair(rctx.ids, unit.code, unit.text, unit.ref))
        else:
            response.extend(_run(unit, message, candidates, rctx, echoed))
    return response


def _route(
    unit: Unit, services: Sequence[NMWGService], message_type: str
) -> tuple[NMWGService, str | None]:
    """(service, eventType) for the unit (§3.2)."""
    key_event_type = unit.key_event_type
    wanted = (key_event_type,) if key_event_type else unit.event_types
    for event_type in wanted:
        for service in services:
            if service.accepts(event_type):
                return service, event_type
    if not wanted:
        for service in services:
            if service.event_types is None:
                return service, None
        raise NMWGError(
            codes.EVENT_TYPE_NOT_SUPPORTED,
            f'Event type "" is not yet supported for messages with type "{message_type}"',
        )
    raise NMWGError(
        codes.EVENT_TYPE_NOT_SUPPORTED,
        f'No supported event types for message of type "{message_type}"',
    )


def _run(
    unit: Unit,
    message: Message,
    services: Sequence[NMWGService],
    rctx: RequestContext,
    echoed: set[str],
) -> list[etree._Element]:
    message_type = message.type or ""
    try:
        service, event_type = _route(unit, services, message_type)
    except NMWGError as err:
        return build.result_pair(rctx.ids, err.code, err.text, unit.ref)
    try:
        handler = service.handlers[message_type]
        out = list(handler(replace(unit, event_type=event_type), message, rctx))
        if not all(isinstance(el, etree._Element) for el in out):
            raise TypeError(f"handler of {service.name} returned something other than elements")
    except Cancelled:
        raise
    except NMWGError as err:
        out = build.result_pair(rctx.ids, err.code, err.text, unit.ref)
    except Exception:
        log.exception("service %s failed on metadata %s", service.name, unit.ref)
        out = build.result_pair(rctx.ids, codes.INTERNAL_ERROR, codes.INTERNAL_ERROR_TEXT, unit.ref)
    if service.output_metadata:
        for md in unit.request_metadata:
            if md.get("id") not in echoed:
                echoed.add(md.get("id", ""))
                out.append(deepcopy(md))
    return out


# --- HTTP ------------------------------------------------------------------------------------


def canonical_path(path: str) -> str:
    """Repeated slashes collapsed, trailing slash dropped, leading slash added (§2.2 item 2)."""
    return "/" + re.sub("/{2,}", "/", path).strip("/")


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


class _NMWGRoute(Route):
    """Matches by canonical path and takes every method: a non-POST gets an NMWG error."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], accepts: Callable[[str], bool]
    ) -> None:
        super().__init__(path, endpoint, name=f"nmwg:{path}", include_in_schema=False)
        self.methods = None
        self._accepts = accepts

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and self._accepts(canonical_path(_route_path(scope))):
            return Match.FULL, {"endpoint": self.endpoint, "path_params": {}}
        return Match.NONE, {}


def _xml(body: bytes) -> Response:
    return Response(body, media_type="text/xml")


def _error(code: str, text: str) -> Response:
    return _xml(build.envelope(build.error_response(code, text)))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused by Content-Length before reading and by count while reading."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise NMWGError(codes.TRANSPORT, "Invalid Content-Length header")
        check_size(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        check_size(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _endpoint(ctx: ApiContext, path: str, services: Sequence[NMWGService]) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        if request.method != "POST":
            return _error(
                codes.TRANSPORT,
                "Received message with an invalid HTTP request, are you using a web browser?",
            )
        try:
            body = await read_body(request, ctx.max_body_bytes)
        except NMWGError as err:
            return _error(err.code, err.text)
        timeout = ctx.request_timeout
        rctx = RequestContext(
            api=ctx,
            endpoint=path,
            deadline=time.monotonic() + timeout,
            authorization=request.headers.get("authorization"),
        )
        result: bytes | None = None
        with anyio.move_on_after(timeout):
            # abandon_on_cancel: at the deadline we stop waiting; the thread is told to stop
            # (rctx.cancel) and whatever it still returns is dropped.
            result = await anyio.to_thread.run_sync(
                handle, body, services, rctx, abandon_on_cancel=True
            )
        if result is None:
            rctx.cancel()
            log.warning("NMWG request on %s exceeded %gs", path, timeout)
            return _error(codes.TIMEOUT, TIMEOUT_TEXT.format(limit=timeout))
        return _xml(result)

    return endpoint


def _unknown_endpoint(request: Request) -> Response:
    path = canonical_path(_route_path(request.scope))
    return _error(codes.TRANSPORT, f"Received message with an invalid endpoint: {path}")


def soap_routes(ctx: ApiContext, endpoints: Mapping[str, Sequence[NMWGService]]) -> list[Route]:
    """Routes for ``{path: services}`` (Echo appended to each), plus one answering any other
    path under the same first segments (``/perfSONAR_PS/...``) with an unknown-endpoint error."""
    from netsonde.api.echo import echo_service  # echo.py builds on this module

    routes: list[Route] = []
    for raw_path, services in endpoints.items():
        path = canonical_path(raw_path)
        if any(path == r.path for r in routes):
            raise ValueError(f"NMWG endpoint {raw_path!r} is configured twice")
        handler = _endpoint(ctx, path, [*services, echo_service()])
        routes.append(_NMWGRoute(path, handler, path.__eq__))
    roots = tuple({"/" + r.path.split("/")[1] + "/" for r in routes if r.path != "/"})
    if roots:
        under = lambda p: p.startswith(roots)  # noqa: E731
        routes.append(_NMWGRoute(roots[0] + "{path:path}", _unknown_endpoint, under))
    return routes
