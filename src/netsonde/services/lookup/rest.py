"""REST for the lookup registry, mounted at ``/api/v1``, in the sLS shapes:

* ``POST /lookup/records`` — register a record (JSON: ``type``, key → list of strings, optional
  ``ttl`` and ``registrant``); answers it with its ``uri`` and ``expires``. The same thing again
  (same type and locator values) is an upsert: same uri, 200 instead of 201.
* ``POST /lookup/records/{uri}`` — renew (optional body ``{"ttl": …}``);
  ``POST /lookup/renew`` — renew many (``{"records": [uri, …], "ttl": …}``);
  ``DELETE /lookup/records/{uri}``.
* ``GET /lookup/records/{uri}``; ``GET /lookup/records?key=value&…`` with ``operator=all|any``,
  ``type``, ``limit``, ``offset``: values match case-insensitively, ``*`` and ``?`` wildcards; a
  key given twice matches either value.

Writes need the ``[ls]`` token (``Authorization: Bearer``; checked, like the body's size, before
the body is read); reads are open. ``ttl``: seconds, ``"2h"``, or ISO 8601 (``"PT2H"``,
``["PT2H"]`` as the sLS sends it). Errors are ``{"error": …}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from netsonde.archive import PerThread
from netsonde.archive.stores import StoreError
from netsonde.http.rest import ERRORS, ApiRoute, ErrorBody, FieldError, error_response, store_route
from netsonde.services.lookup.records import RecordError, record_in
from netsonde.services.lookup.registry import (
    DEFAULT_REGISTRANT,
    MAX_LIMIT,
    LimitError,
    LookupRegistry,
    Record,
    RegistryError,
)
from netsonde.services.lookup.registry import (
    Query as RegistryQuery,
)
from netsonde.units import iso_seconds, parse_duration

T = TypeVar("T")
PREFIX = "/lookup"
MAX_RENEW = 1000  # uris in one bulk renew
QUERY_PARAMS = frozenset({"operator", "type", "limit", "offset"})
REGISTRANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,127}")
_ISO_DURATION = re.compile(
    r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", re.IGNORECASE
)
_WRITE_ERRORS = {
    401: {"model": ErrorBody, "description": "missing or wrong token"},
    409: {"model": ErrorBody, "description": "the registrant holds as many records as it may"},
    413: {"model": ErrorBody, "description": "body larger than max_record_bytes"},
}
URI = Path(min_length=1, max_length=300, description="the record's uri (lookup/TYPE/UUID)")


def record_json(r: Record, state: str | None = None) -> dict[str, Any]:
    """A record as the sLS answers it: values and ``type`` as lists, server keys added."""
    out: dict[str, Any] = {"type": [r.type], **{k: list(v) for k, v in r.values.items()}}
    out.update(uri=r.uri, expires=iso_seconds(r.expires), registrant=r.registrant)
    out.update(created=iso_seconds(r.created), renewed=iso_seconds(r.renewed))
    if state:
        out["state"] = state
    return out


def parse_ttl(value: object) -> float | None:
    """A ttl as a client may send it → seconds (None: none asked)."""
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (m := _ISO_DURATION.fullmatch(value)) and any(m.groups()):
        w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        return (((w * 7 + d) * 24 + h) * 60 + mi) * 60 + s
    try:
        return parse_duration(value)
    except (ValueError, TypeError):
        raise RecordError("ttl", "seconds, a duration (2h) or ISO 8601 (PT2H)") from None


MAX_NESTING = 8  # a record is an object of lists of strings: 2 levels; bulk renew, 3


def nesting(raw: bytes) -> int:
    """How deep ``[``/``{`` nest in a JSON text, strings skipped: checked before parsing, so
    the answer does not depend on the interpreter's recursion limit."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


async def json_body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if optional and not raw.strip():
        return {}
    if nesting(raw) > MAX_NESTING:
        raise HTTPException(400, f"body is nested too deeply (more than {MAX_NESTING} levels)")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise HTTPException(400, "body is nested too deeply") from None
    except ValueError as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RecordError("body", "must be a JSON object")
    return body


def _registrant(body: dict[str, Any]) -> str:
    who = body.pop("registrant", DEFAULT_REGISTRANT)
    if not isinstance(who, str) or not REGISTRANT.fullmatch(who):
        raise RecordError("registrant", f"must match {REGISTRANT.pattern}")
    return who


def lookup_router(
    connections: PerThread[LookupRegistry], token: str | None, max_record_bytes: int
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, responses=ERRORS, tags=["lookup"])
    writes = store_route(token, max_record_bytes)
    bearer = Security(HTTPBearer(auto_error=False, description="the [ls] token"))

    def registry(use: Callable[[LookupRegistry], T]) -> T:
        """``use`` on this thread's registry, its refusals turned into HTTP answers."""
        try:
            return use(connections.get())
        except LimitError as e:
            raise HTTPException(409, str(e)) from None
        except StoreError as e:  # locked beyond the timeout, disk or server gone
            raise HTTPException(
                503, f"lookup registry unavailable: {e}", headers={"Retry-After": "5"}
            ) from None
        except RegistryError as e:
            raise HTTPException(400, str(e)) from None

    def refused(e: RecordError) -> JSONResponse:
        return error_response(422, str(e), errors=[FieldError(field=e.field, message=e.reason)])

    async def register(request: Request) -> JSONResponse:
        try:
            body = await json_body(request)
            ttl, who = parse_ttl(body.pop("ttl", None)), _registrant(body)
            record = record_in(body.pop("type", None), body)
        except RecordError as e:
            return refused(e)
        done = await run_in_threadpool(
            registry, lambda r: r.register(record, registrant=who, ttl=ttl)
        )
        state = "registered" if done.new else "renewed"
        return JSONResponse(record_json(done.record, state), status_code=201 if done.new else 200)

    async def renew(request: Request, uri: Annotated[str, URI]) -> JSONResponse:
        try:
            ttl = parse_ttl((await json_body(request, optional=True)).get("ttl"))
        except RecordError as e:
            return refused(e)
        renewed = await run_in_threadpool(registry, lambda r: r.renew(uri, ttl))
        if renewed is None:
            raise HTTPException(404, f"no live record {uri!r}")
        return JSONResponse(record_json(renewed, "renewed"))

    async def renew_many(request: Request) -> JSONResponse:
        try:
            body = await json_body(request)
            ttl, uris = parse_ttl(body.get("ttl")), body.get("records")
            if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
                raise RecordError("records", "must be a list of record uris")
            if len(uris) > MAX_RENEW:
                raise RecordError("records", f"more than {MAX_RENEW} uris in one renewal")
        except RecordError as e:
            return refused(e)
        renewed = await run_in_threadpool(registry, lambda r: r.renew_many(uris, ttl))
        found = {r.uri for r in renewed}
        return JSONResponse(
            {
                "renewed": [record_json(r, "renewed") for r in renewed],
                "missing": [u for u in dict.fromkeys(uris) if u not in found],
            }
        )

    def delete(uri: Annotated[str, URI]) -> dict[str, str]:
        if not registry(lambda r: r.delete(uri)):
            raise HTTPException(404, f"no live record {uri!r}")
        return {"uri": uri, "state": "deleted"}

    def get(uri: Annotated[str, URI]) -> dict[str, Any]:
        found = registry(lambda r: r.get(uri))
        if found is None:
            raise HTTPException(404, f"no live record {uri!r}")
        return record_json(found)

    def query(
        request: Request,
        operator: Annotated[str, Query(pattern="^(all|any)$")] = "all",
        type: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> list[dict[str, Any]]:
        filters: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            if key not in QUERY_PARAMS:
                filters.setdefault(key, []).append(value)
        q = RegistryQuery(filters, "any" if operator == "any" else "all", type, limit, offset)
        return [record_json(r) for r in registry(lambda r: r.query(q))]

    writing: dict[str, Any] = {
        "route_class_override": writes,
        "dependencies": [bearer],
        "responses": _WRITE_ERRORS,
    }
    router.add_api_route(
        f"{PREFIX}/records", register, methods=["POST"], summary="Register a record", **writing
    )
    router.add_api_route(
        f"{PREFIX}/renew", renew_many, methods=["POST"], summary="Renew many records", **writing
    )
    router.add_api_route(
        f"{PREFIX}/records/{{uri:path}}", renew, methods=["POST"], summary="Renew", **writing
    )
    router.add_api_route(
        f"{PREFIX}/records/{{uri:path}}", delete, methods=["DELETE"], summary="Delete", **writing
    )
    router.add_api_route(
        f"{PREFIX}/records", query, methods=["GET"], summary="Query records by key=value"
    )
    router.add_api_route(
        f"{PREFIX}/records/{{uri:path}}", get, methods=["GET"], summary="One record"
    )
    return router
