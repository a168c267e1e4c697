"""The NMWG service contract and dispatch (PROTOCOL.md §3), free of any HTTP: a request body in,
response bytes out. ``netsonde.http.soap`` mounts services at their endpoints.

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

Handlers run in a worker thread. ``rctx`` (:class:`RequestContext`) carries ``state`` (the
``state`` of the service the unit was routed to: its store, its token ...), ``endpoint``,
``deadline`` (a ``time.monotonic()`` value), ``limits`` (the request's
:class:`~netsonde.limits.RequestLimits`), ``ids`` (this response's id generator) and the
cancellation hook: at the deadline the client is answered ``error.common.timeout`` at once, the
thread's late result is dropped, ``rctx.cancelled`` turns true, ``rctx.check()`` raises and
callbacks given to ``rctx.on_cancel`` run, e.g. ``sqlite3.Connection.interrupt`` to abort a
query. Parsing, resolving and dispatch call ``rctx.check()`` throughout; a handler calls it in
its loops, or ``rctx.charge(n)`` for each ``n`` datums (rows) it is about to add to the answer:
that also counts them against ``max_response_datums``.

Per request:

* unparsable XML → ``error.transport.parse_error`` (:mod:`netsonde.nmwg.parse`); a type no
  service handles → ``error.common.action_not_supported``.
* past a limit, an error whose text names the ``[api]`` key (:class:`LimitExceeded`): more
  elements or namespace declarations → ``error.transport.parse_error``; more metadata and data
  than ``max_units`` → ``error.common.structure``, both for the whole message. A chain longer than
  ``max_chain`` or merges creating more than ``max_elements`` (``error.common.merge``), a
  metadata with more than ``max_event_types`` (``error.common.structure``) or an answer past
  ``max_response_datums`` (``error.ma.select``: the select asks for too much) fail their unit.
  An answer larger than ``max_response_bytes`` becomes an ``error.common.transport``
  ErrorResponse.
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
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from lxml import etree

from netsonde.auth import Refusal, bearer, refusal
from netsonde.limits import RequestLimits
from netsonde.nmwg import build, codes
from netsonde.nmwg.codes import LimitExceeded, NMWGError
from netsonde.nmwg.message import Message, Unit, UnitFailure
from netsonde.nmwg.parse import parse_message

log = logging.getLogger(__name__)

TIMEOUT_TEXT = (
    "Timeout occurred, current limit is {limit:g} seconds. "
    "Try decreasing the breadth of your search if possible."
)


class Cancelled(Exception):
    """Raised by :meth:`RequestContext.check` once the request is past its time limit."""


S = TypeVar("S")


@dataclass(eq=False)
class RequestContext(Generic[S]):
    """What a handler gets besides its unit: its service's state, response ids, cancellation.
    ``state`` is set to the state of the service each unit is routed to."""

    endpoint: str
    state: S = None  # type: ignore[assignment]  # set by dispatch before each handler
    deadline: float = float("inf")  # time.monotonic() value at which the request times out
    authorization: str | None = None  # the HTTP Authorization header (store requests)
    limits: RequestLimits = field(default_factory=RequestLimits)
    ids: build.IdGen = field(default_factory=build.IdGen)
    splices: build.Splices = field(default_factory=build.Splices)  # prebuilt rows, see build
    datums: int = 0  # datums charged to the answer so far
    _event: threading.Event = field(default_factory=threading.Event, repr=False)
    _callbacks: list[Callable[[], object]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled

    @property
    def datums_left(self) -> int:
        """How many more datums the answer may take (``max_response_datums``)."""
        return max(0, self.limits.max_response_datums - self.datums)

    def charge(self, datums: int) -> None:
        """Count ``datums`` more in the answer, before building them: past
        ``max_response_datums`` the unit fails (and is not counted). Checks cancellation too,
        so row loops need only this."""
        self.check()
        if datums > self.datums_left:
            limit = self.limits.max_response_datums
            what = f"the answer would have more than {limit} datums; narrow the select"
            raise LimitExceeded(codes.MA_SELECT, what, "max_response_datums")
        self.datums += datums

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


UnitHandler = Callable[[Unit, Message, RequestContext[S]], Sequence[etree._Element]]


@dataclass(frozen=True)
class NMWGService(Generic[S]):
    """A service on an endpoint. ``event_types`` are compared as exact strings with all
    whitespace removed (PROTOCOL.md §7.4); None means every unit of the message types,
    including units without eventType. ``event_type_pattern`` (``re.match``) adds more."""

    name: str
    handlers: Mapping[str, UnitHandler[S]]
    state: S = None  # type: ignore[assignment]  # what its handlers read as ``rctx.state``
    event_types: frozenset[str] | None = frozenset()
    event_type_pattern: re.Pattern[str] | None = None
    output_metadata: bool = True

    def accepts(self, event_type: str) -> bool:
        if self.event_types is None or event_type in self.event_types:
            return True
        return bool(self.event_type_pattern and self.event_type_pattern.match(event_type))


# --- dispatch (runs in a worker thread) ------------------------------------------------------


def handle(
    body: bytes, services: Sequence[NMWGService[Any]], rctx: RequestContext[Any]
) -> bytes | None:
    """Request body → response bytes, within ``rctx.limits``; None once the request was
    cancelled (nobody waits)."""
    limits = rctx.limits
    request_id: str | None = None
    try:
        element = parse_message(body, limits.max_body_bytes, limits=limits, check=rctx.check)
        message = Message.from_element(element)
        request_id = message.id
        response = dispatch(message, services, rctx)
        rctx.check()
        out = rctx.splices.envelope(response)
        if len(out) > limits.max_response_bytes:
            what = f"the answer is larger than {limits.max_response_bytes} bytes"
            raise LimitExceeded(codes.TRANSPORT, what, "max_response_bytes")
        return out
    except NMWGError as err:
        response = build.error_response(err.code, err.text, request_id)
    except Cancelled:
        return None
    except Exception:
        log.exception("NMWG request on %s failed", rctx.endpoint)
        response = build.error_response(codes.INTERNAL_ERROR, codes.INTERNAL_ERROR_TEXT, request_id)
    return build.envelope(response)


def dispatch(
    message: Message, services: Sequence[NMWGService[Any]], rctx: RequestContext[Any]
) -> etree._Element:
    """The response message; NMWGError for a whole-message failure."""
    if not message.type:
        raise NMWGError(codes.ACTION_NOT_SUPPORTED, "No message type specified")
    candidates = [s for s in services if message.type in s.handlers]
    if not candidates:
        raise NMWGError(
            codes.ACTION_NOT_SUPPORTED, f"Messages of type {message.type} are unsupported"
        )
    units = message.resolve(limits=rctx.limits, check=rctx.check)
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
    unit: Unit, services: Sequence[NMWGService[Any]], message_type: str
) -> tuple[NMWGService[Any], str | None]:
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
    services: Sequence[NMWGService[Any]],
    rctx: RequestContext[Any],
    echoed: set[str],
) -> list[etree._Element]:
    message_type = message.type or ""
    try:
        service, event_type = _route(unit, services, message_type)
    except NMWGError as err:
        return build.result_pair(rctx.ids, err.code, err.text, unit.ref)
    try:
        handler = service.handlers[message_type]
        rctx.state = service.state
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


def require_store_token(expected: str | None, message: Message, rctx: RequestContext[Any]) -> None:
    """A store needs the API token: as ``Authorization: Bearer`` or, for perfSONAR-PS clients
    that cannot set headers, a message parameter ``authToken``."""
    given = bearer(rctx.authorization) or message.parameters.get("authToken")
    why = refusal(expected, given)
    if why is Refusal.DISABLED:
        raise NMWGError(codes.MA_STORAGE, why.value)
    if why is Refusal.DENIED:
        raise NMWGError(codes.AUTHENTICATION, "store requests need the API token")
