"""REST for the Status MA's link states, mounted at ``/api/v1``:

* ``GET /links`` — every link with its latest range (its current state and since when);
* ``GET /links/{link_id}/status`` — one link's ranges, with at most one of: ``?at=T`` (the
  range covering T), ``?from=T1&to=T2`` (the ranges meeting [T1, T2], not clipped),
  ``?history=true`` (every range). With none, the latest range ("now": the state the link was
  last seen in, however long ago that was — ``end`` says when).

Link ids are URNs full of colons (``urn:ogf:network:domain=…:host=…:port=…``); the path takes
them as they are, slashes included, percent-encoded or not. Times in: ISO 8601 with an offset or
epoch seconds (fractions floored: the store speaks whole seconds). Times out: epoch seconds
(``start``, ``end``) with their ISO 8601 UTC twins. Errors are JSON ``{"error": …}``.
Handlers are plain ``def``: the store is read in the thread pool, one connection per thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from netsonde.archive import PerThread
from netsonde.archive.stores import StoreError
from netsonde.http.rest import ERRORS, ApiRoute, ErrorBody, parse_time
from netsonde.model import US_PER_S
from netsonde.services.status.store import LinkState, LinkStatusStore, StatusError
from netsonde.units import iso_seconds

T = TypeVar("T")


class LinkRange(BaseModel):
    start: int = Field(description="first second of the range, unix seconds (inclusive)")
    start_iso: str
    end: int = Field(description="last second the link was seen in these states (inclusive)")
    end_iso: str
    oper: str = Field(description="up, down, degraded or unknown")
    admin: str = Field(description="normaloperation, maintenance, troubleshooting, …")
    knowledge: str = Field(description="full or partial")

    @classmethod
    def of(cls, r: LinkState) -> LinkRange:
        return cls(
            start=r.start,
            start_iso=iso_seconds(r.start),
            end=r.end,
            end_iso=iso_seconds(r.end),
            oper=r.oper,
            admin=r.admin,
            knowledge=r.knowledge,
        )


class LinkSummary(BaseModel):
    link_id: str
    latest: LinkRange = Field(description="the link's latest range: its current state")


class LinkList(BaseModel):
    links: list[LinkSummary]


class LinkQuery(BaseModel):
    kind: Literal["latest", "at", "range", "history"]
    at: int | None = None
    at_iso: str | None = None
    start: int | None = Field(None, alias="from")
    start_iso: str | None = Field(None, alias="from_iso")
    end: int | None = Field(None, alias="to")
    end_iso: str | None = Field(None, alias="to_iso")

    model_config = {"populate_by_name": True}


class LinkStatus(BaseModel):
    link_id: str
    query: LinkQuery
    ranges: list[LinkRange] = Field(description="oldest first; empty: nothing known then")


_LINK_ERRORS = {
    **ERRORS,
    404: {"model": ErrorBody, "description": "no such link, or no link status store here"},
}


def _seconds(name: str, text: str) -> int:
    return parse_time(name, text) // US_PER_S  # floor, also before 1970


def _query(at: str | None, start: str | None, end: str | None, history: bool) -> LinkQuery:
    given = [n for n, v in (("at", at), ("from/to", start or end), ("history", history)) if v]
    if len(given) > 1:
        raise HTTPException(
            400, f"give one of at, from and to, or history; got {' and '.join(given)}"
        )
    if (start is None) != (end is None):
        raise HTTPException(400, "from and to: give both (a range) or neither")
    if at is not None:
        t = _seconds("at", at)
        return LinkQuery(kind="at", at=t, at_iso=iso_seconds(t))
    if start is not None and end is not None:
        t1, t2 = _seconds("from", start), _seconds("to", end)
        if t1 > t2:
            raise HTTPException(400, f"from ({iso_seconds(t1)}) is after to ({iso_seconds(t2)})")
        return LinkQuery(
            kind="range", start=t1, start_iso=iso_seconds(t1), end=t2, end_iso=iso_seconds(t2)
        )
    return LinkQuery(kind="history" if history else "latest")


TimeQ = Query(max_length=64, description="ISO 8601 with an offset, or epoch seconds")


def links_router(connections: PerThread[LinkStatusStore]) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, responses=_LINK_ERRORS, tags=["links"])

    def store() -> LinkStatusStore:
        try:
            return connections.get()
        except StatusError as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "5"}) from None

    def guarded(read: Callable[[], T]) -> T:
        try:
            return read()
        except StoreError as e:  # locked beyond the timeout, disk or server gone
            raise HTTPException(
                503, f"link status store unavailable: {e}", headers={"Retry-After": "5"}
            ) from None

    @router.get("/links", response_model=LinkList, summary="Every link with its latest state")
    def list_links() -> LinkList:
        rows = guarded(store().links)
        return LinkList(
            links=[LinkSummary(link_id=r.link_id, latest=LinkRange.of(r)) for r in rows]
        )

    @router.get(
        "/links/{link_id:path}/status",
        response_model=LinkStatus,
        response_model_by_alias=True,
        summary="One link's states: latest, at a time, over a range, or its whole history",
    )
    def link_status(
        link_id: Annotated[str, Path(min_length=1, max_length=1024, description="the link's URN")],
        at: Annotated[str | None, TimeQ] = None,
        start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
        end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
        history: Annotated[bool, Query(description="every range of the link")] = False,
    ) -> LinkStatus:
        q = _query(at, start, end, history)
        s = store()
        latest = guarded(lambda: s.at([link_id])[link_id])
        if latest is None:
            raise HTTPException(404, f"no such link: {link_id!r}")
        ranges: list[LinkState] = [latest]
        if q.kind == "at" and q.at is not None:
            t = q.at
            ranges = [r for r in [guarded(lambda: s.at([link_id], t)[link_id])] if r]
        elif q.kind == "range" and q.start is not None and q.end is not None:
            t1, t2 = q.start, q.end
            ranges = guarded(lambda: s.between([link_id], t1, t2)[link_id])
        elif q.kind == "history":
            ranges = guarded(lambda: s.history(link_id))
        return LinkStatus(link_id=link_id, query=q, ranges=[LinkRange.of(r) for r in ranges])

    return router
