"""NMWG over SOAP/HTTP: each endpoint path serves a list of NMWG services (PROTOCOL.md §2).

Mount services with :func:`soap_routes`::

    app = Starlette(routes=soap_routes(limits, {"/perfSONAR_PS/services/pinger/ma": [pinger]}))

Echo is added to every endpoint. Any method other than POST, an unknown endpoint, an oversized
body → ``ErrorResponse`` with ``error.common.transport``; going past ``limits.request_timeout``
→ ``error.common.timeout`` at once, while the worker thread is told to stop
(``RequestContext.cancel``): parsing, resolving and the handlers check for it throughout. The
other limits travel to the work as ``RequestContext.limits``. Every answer is HTTP 200,
``text/xml``, in the SOAP envelope; SOAPAction is not checked; a bare message is accepted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from netsonde.http.bounded import DEADLINE, tracked
from netsonde.limits import RequestLimits
from netsonde.nmwg import build, codes
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.echo import echo_service
from netsonde.nmwg.parse import check_size
from netsonde.nmwg.service import TIMEOUT_TEXT, NMWGService, RequestContext, handle

log = logging.getLogger(__name__)


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


def _endpoint(
    limits: RequestLimits, path: str, services: Sequence[NMWGService[Any]]
) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        if request.method != "POST":
            return _error(
                codes.TRANSPORT,
                "Received message with an invalid HTTP request, are you using a web browser?",
            )
        try:
            body = await read_body(request, limits.max_body_bytes)
        except NMWGError as err:
            return _error(err.code, err.text)
        timeout = limits.request_timeout
        # The request's one deadline (from its headers: reading the body counts) when served
        # under BoundedRequests; else from now.
        deadline: float = request.scope.get(DEADLINE) or time.monotonic() + timeout
        rctx: RequestContext[Any] = RequestContext(
            endpoint=path,
            deadline=deadline,
            authorization=request.headers.get("authorization"),
            limits=limits,
        )
        result: bytes | None = None
        with anyio.move_on_after(deadline - time.monotonic()):
            # abandon_on_cancel: at the deadline we stop waiting; the thread is told to stop
            # (rctx.cancel) and whatever it still returns is dropped. It stays tracked: one
            # that does not stop in time ends its worker process (http/bounded.py).
            work = tracked(request.scope, f"NMWG request on {path}", handle)
            result = await anyio.to_thread.run_sync(
                work, body, services, rctx, abandon_on_cancel=True
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


def soap_routes(
    limits: RequestLimits, endpoints: Mapping[str, Sequence[NMWGService[Any]]]
) -> list[Route]:
    """Routes for ``{path: services}`` (Echo appended to each), plus one answering any other
    path under the same first segments (``/perfSONAR_PS/...``) with an unknown-endpoint error."""
    routes: list[Route] = []
    for raw_path, services in endpoints.items():
        path = canonical_path(raw_path)
        if any(path == r.path for r in routes):
            raise ValueError(f"NMWG endpoint {raw_path!r} is configured twice")
        handler = _endpoint(limits, path, [*services, echo_service()])
        routes.append(_NMWGRoute(path, handler, path.__eq__))
    roots = tuple({"/" + r.path.split("/")[1] + "/" for r in routes if r.path != "/"})
    if roots:
        under = lambda p: p.startswith(roots)  # noqa: E731
        routes.append(_NMWGRoute(roots[0] + "{path:path}", _unknown_endpoint, under))
    return routes
