"""The REST JSON API, mounted at ``/api/v1``: tests, runs, results and aggregates read from the
archive, and an authenticated store through which remote measurement points deliver runs.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so SQLite work never blocks the
event loop, and each pool thread has its own connection (``ArchiveConnections``). The SQL lives
in ``netsonde.archive.sqlite``. Every error is JSON ``{"error": "..."}``; bad input gets a 4xx
naming what was wrong, never a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, Security
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException  # FastAPI raises this base class too
from starlette.requests import Request

from netsonde.archive import Archive, UnknownTestError
from netsonde.http.rest import (
    ERRORS,
    TIME_FORMS,
    ApiRoute,
    ErrorBody,
    Handler,
    parse_time,
    parse_window,
    store_route,
)
from netsonde.metrics.digest import Bucket, Digest
from netsonde.model import RunState, from_us, to_us
from netsonde.services.archive.run_json import run_page_json
from netsonde.services.archive.schemas import (
    MAX_TIME_US,
    SUMMARY_KEY,
    Aggregation,
    RollupBucket,
    Rollups,
    StoredRun,
    StoredRunPage,
    StoredTest,
    StoredTestPage,
    StoreReply,
    StoreRequest,
    Window,
)
from netsonde.services.base import Host

MAX_LIMIT = 1000
TEST_ID_LEN, TEST_KEY_LEN, TIME_LEN, CURSOR_LEN = 128, 64, 64, 512  # longest accepted
MAX_OFFSET = 2**31 - 1
PERCENTILES = (50, 90, 95, 99)

Order = Literal["asc", "desc"]


# ---- parameters --------------------------------------------------------------------------------


def encode_cursor(position: Sequence[int | str]) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, *types: type) -> Any:
    """The position (a tuple of ``types``) a cursor from ``encode_cursor`` holds; None for none."""
    if cursor is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):  # also bad UTF-8 and bad JSON, both ValueErrors
        value = None
    if (
        not isinstance(value, list)
        or len(value) != len(types)
        or not all(type(v) is t for v, t in zip(value, types, strict=True))  # bool is no int
        or any(type(v) is int and not -(2**63) <= v < 2**63 for v in value)
    ):
        raise HTTPException(400, "cursor: invalid; pass next_cursor of the previous page as is")
    return tuple(value)


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int
    cursor: str | None


LimitQ = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
OffsetQ = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
CursorQ = Annotated[
    str | None, Query(max_length=CURSOR_LEN, description="next_cursor of the previous page")
]


def make_paging(limit: int, offset: int, cursor: str | None) -> Paging:
    if cursor is not None and offset:
        raise HTTPException(400, "offset and cursor: give one or the other, not both")
    return Paging(limit, offset, cursor)


async def paging(limit: LimitQ = 100, offset: OffsetQ = 0, cursor: CursorQ = None) -> Paging:
    return make_paging(limit, offset, cursor)


@dataclass(frozen=True)
class RunFilter:
    test_id: str | None
    test_key: str | None
    since_us: int | None
    until_us: int | None


TestIdQ = Annotated[str | None, Query(max_length=TEST_ID_LEN, description="any key it had")]
TestKeyQ = Annotated[str | None, Query(max_length=TEST_KEY_LEN, description="one key only")]
FromQ = Annotated[
    str | None, Query(alias="from", max_length=TIME_LEN, description=f"inclusive; {TIME_FORMS}")
]
UntilQ = Annotated[str | None, Query(max_length=TIME_LEN, description="exclusive")]


def make_run_filter(
    test_id: str | None, test_key: str | None, from_: str | None, until: str | None
) -> RunFilter:
    """Which test and which planned starts: the half-open range [from, until)."""
    since_us = None if from_ is None else parse_time("from", from_)
    until_us = None if until is None else parse_time("until", until)
    if since_us is not None and until_us is not None and until_us < since_us:
        raise HTTPException(400, "until: must not be before from")
    return RunFilter(test_id, test_key, since_us, until_us)


async def run_filter(
    test_id: TestIdQ = None, test_key: TestKeyQ = None, from_: FromQ = None, until: UntilQ = None
) -> RunFilter:
    return make_run_filter(test_id, test_key, from_, until)


# ---- responses -------------------------------------------------------------------------------


def _next_cursor(rows: list[dict[str, Any]], limit: int, *fields: str) -> str | None:
    """Rows were fetched with ``limit + 1``: a row beyond the page means there is a next one."""
    return encode_cursor([rows[limit - 1][f] for f in fields]) if len(rows) > limit else None


def window_of(row: dict[str, Any], window_us: int) -> Window:
    """An archive aggregate row → Window; percentiles from its digest (exact while it is)."""
    digest: Digest | None = row["digest"]
    return Window.model_validate(
        {
            "start_us": row["start_us"],
            # The last window may reach past 9999-12-31: it ends where times end.
            "end_us": min(row["start_us"] + window_us, MAX_TIME_US),
            "runs": row["runs"],
            "count": row["count"],
            "min": row["min"],
            "mean": row["mean"],
            "max": row["max"],
            **{f"p{p}": None if digest is None else digest.percentile(p) for p in PERCENTILES},
            "mean_loss_percent": row["mean_loss"],
        }
    )


# ---- the router --------------------------------------------------------------------------------

ArchiveOf = Callable[[], Archive]  # this thread's connection


def build_router(host: Host) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, responses=ERRORS, tags=["archive"])
    archive = host.archive.get
    _test_routes(router, archive)
    _run_routes(router, archive, inline=host.inline_queries)
    _aggregate_route(router, archive)
    _rollups_route(router, archive)
    _store_route(router, archive, host)
    return router


def _test_routes(router: APIRouter, archive: ArchiveOf) -> None:
    @router.get("/tests", response_model=StoredTestPage, summary="List and search tests")
    def list_tests(
        page: Annotated[Paging, Depends(paging)],
        tool: Annotated[str | None, Query(max_length=64)] = None,
        target: Annotated[str | None, Query(max_length=255)] = None,
        test_id: Annotated[str | None, Query(max_length=128, description="exact")] = None,
        test_id_contains: Annotated[str | None, Query(max_length=128)] = None,
        key: Annotated[str | None, Query(max_length=64)] = None,
    ) -> StoredTestPage:
        rows = archive().find_tests(
            key=key,
            test_id=test_id,
            test_id_contains=test_id_contains,
            tool=tool,
            target=target,
            after=decode_cursor(page.cursor, str, str),
            offset=page.offset,
            limit=page.limit + 1,
        )
        return StoredTestPage(
            items=[StoredTest.model_validate(r) for r in rows[: page.limit]],
            limit=page.limit,
            offset=page.offset,
            next_cursor=_next_cursor(rows, page.limit, "test_id", "key"),
        )

    @router.get(
        "/tests/{key}",
        response_model=StoredTest,
        summary="One test by key",
        responses={404: {"model": ErrorBody, "description": "no such test"}},
    )
    def get_test(key: Annotated[str, Path(max_length=64)]) -> StoredTest:
        rows = archive().find_tests(key=key, limit=1)
        if not rows:
            raise HTTPException(404, f"no test with key {key!r}")
        return StoredTest.model_validate(rows[0])


def _run_routes(router: APIRouter, archive: ArchiveOf, *, inline: bool, plain: bool = True) -> None:
    """``plain``: plain queries skip FastAPI's parameter solving (:class:`PlainQueryRoute`)."""
    for path, results_only, summary in (
        ("/runs", False, "Runs of every state"),
        ("/results", True, "Runs that have a result"),
    ):
        router.add_api_route(
            path,
            _run_pages(archive, results_only=results_only, inline=inline),
            methods=["GET"],
            response_model=StoredRunPage,
            summary=summary,
            route_class_override=PlainQueryRoute if plain else ApiRoute,
        )


# ---- plain queries -----------------------------------------------------------------------------

# The run pages' parameters in their plainest form: (endpoint argument, maximum length) of the
# text ones, (least, most) of the counts; anything else (state, a repeated or empty parameter,
# "on" for true, a count with a sign or leading zero) goes through FastAPI as before.
_TEXTS = {
    "test_id": ("test_id", TEST_ID_LEN),
    "test_key": ("test_key", TEST_KEY_LEN),
    "from": ("from_", TIME_LEN),
    "until": ("until", TIME_LEN),
    "cursor": ("cursor", CURSOR_LEN),
}
_COUNTS = {"limit": (1, MAX_LIMIT), "offset": (0, MAX_OFFSET)}
_CHOICES: dict[str, dict[str, Any]] = {
    "samples": {"true": True, "false": False},
    "order": {"asc": "asc", "desc": "desc"},
}


def plain_query(params: QueryParams) -> dict[str, Any] | None:
    """The endpoint's arguments, as FastAPI would parse them, when every parameter is plain;
    None when FastAPI must parse them (and answer any error, as it always did)."""
    items = params.multi_items()
    if len(items) != len(params):
        return None  # a name given twice
    args: dict[str, Any] = {}
    for name, value in items:
        if not value:
            return None
        if name in _TEXTS:
            arg, most = _TEXTS[name]
            if len(value) > most:
                return None
            args[arg] = value
        elif name in _COUNTS:
            least, most = _COUNTS[name]
            if not (value.isascii() and value.isdigit()) or (value[0] == "0" and value != "0"):
                return None
            if not least <= (n := int(value)) <= most:
                return None
            args[name] = n
        elif name in _CHOICES and value in _CHOICES[name]:
            args[name] = _CHOICES[name][value]
        else:
            return None
    return args


class PlainQueryRoute(ApiRoute):
    """A run page's route: a plain query (:func:`plain_query`) goes to the endpoint directly,
    anything else through FastAPI. Solving the ten declared parameters was ~20 % of the time
    of a 60-row results query."""

    def get_route_handler(self) -> Handler:
        solved = super().get_route_handler()  # FastAPI's, errors as ErrorBody
        endpoint = self.endpoint
        on_loop = inspect.iscoroutinefunction(endpoint)

        async def handle(request: Request) -> Response:
            args = plain_query(request.query_params)
            if args is None:
                return await solved(request)

            async def direct(admitted: Request) -> Response:
                if on_loop:
                    return await endpoint(**args)
                return await run_in_threadpool(endpoint, **args)  # as FastAPI runs a def

            return await self.answer(request, direct)

        return handle


def _run_pages(archive: ArchiveOf, *, results_only: bool, inline: bool) -> Callable[..., Any]:
    # The filter and paging parameters are declared here rather than as dependencies:
    # FastAPI's dependency solving was ~45 % of the time of a small results query.
    def endpoint(
        test_id: TestIdQ = None,
        test_key: TestKeyQ = None,
        from_: FromQ = None,
        until: UntilQ = None,
        limit: LimitQ = 100,
        offset: OffsetQ = 0,
        cursor: CursorQ = None,
        state: Annotated[list[RunState] | None, Query(description="any of these")] = None,
        samples: Annotated[bool, Query(description="include per-packet samples")] = False,
        order: Annotated[Order, Query(description="by planned start")] = "asc",
    ) -> Response:
        return _runs_page(
            archive(),
            make_run_filter(test_id, test_key, from_, until),
            make_paging(limit, offset, cursor),
            results_only=results_only,
            states=state,
            samples=samples,
            order=order,
        )

    if not inline:
        return endpoint

    # In an API worker (a process that only serves HTTP) the query runs on the event loop:
    # the hop to a pool thread and back costs more than a bounded (≤ 1,000 rows) query.
    @functools.wraps(endpoint)
    async def on_loop(*args: Any, **kwargs: Any) -> Response:
        return endpoint(*args, **kwargs)

    return on_loop


def _runs_page(
    archive: Archive,
    f: RunFilter,
    page: Paging,
    *,
    results_only: bool,
    states: list[RunState] | None,
    samples: bool,
    order: Order,
) -> Response:
    rows = archive.find_runs(
        test_id=f.test_id,
        test_key=f.test_key,
        states=[str(s) for s in states or ()],
        since_us=f.since_us,
        until_us=f.until_us,
        results_only=results_only,
        samples=samples,
        after=decode_cursor(page.cursor, int, str),
        descending=order == "desc",
        offset=page.offset,
        limit=page.limit + 1,
    )
    items = rows[: page.limit]
    next_cursor = _next_cursor(rows, page.limit, "planned_us", "run_id")
    # The rows straight to JSON; the models only for a row run_json cannot vouch for. Either
    # way the body is built once: returning a model would make FastAPI validate every row
    # again on the way out (a third of the time of a busy results query).
    body = run_page_json(
        items, limit=page.limit, offset=page.offset, next_cursor=next_cursor, samples=samples
    )
    if body is None:
        body = (
            StoredRunPage(
                items=[StoredRun.from_row(r, samples=samples) for r in items],
                limit=page.limit,
                offset=page.offset,
                next_cursor=next_cursor,
            )
            .model_dump_json()
            .encode()
        )
    return Response(body, media_type="application/json")


def _aggregate_route(router: APIRouter, archive: ArchiveOf) -> None:
    @router.get("/aggregate", response_model=Aggregation, summary="Statistics per time window")
    def aggregate(
        f: Annotated[RunFilter, Depends(run_filter)],
        window: Annotated[
            str, Query(max_length=32, description="seconds, or 60s, 15m, 1h, 1d")
        ] = "1h",
        metric: Annotated[
            str, Query(pattern=SUMMARY_KEY, description="a numeric summary key")
        ] = "medianRtt",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="windows per page")] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Aggregation:
        _require_test(f, "a test to aggregate")
        window_us = parse_window(window)
        rows = archive().aggregate(
            metric,
            window_us,
            test_id=f.test_id,
            test_key=f.test_key,
            since_us=_page_start(f, cursor),
            until_us=f.until_us,
            limit=limit + 1,
        )
        more = len(rows) > limit
        return Aggregation(
            test_id=f.test_id,
            test_key=f.test_key,
            metric=metric,
            window_s=from_us(window_us),
            windows=[window_of(r, window_us) for r in rows[:limit]],
            next_cursor=encode_cursor([rows[limit]["start_us"]]) if more else None,
        )


def _require_test(f: RunFilter, why: str) -> None:
    if f.test_id is None and f.test_key is None:
        raise HTTPException(400, f"test_id or test_key: one is required ({why})")


def _page_start(f: RunFilter, cursor: str | None) -> int | None:
    """Where a page of windows starts: ``from``, or the window the cursor names."""
    after = decode_cursor(cursor, int)
    if after is None:
        return f.since_us
    return after[0] if f.since_us is None else max(f.since_us, after[0])


Resolution = Literal["5m", "1h", "1d"]  # the archive's rollups (archive.rollups.RESOLUTIONS_US)
RTT_BANDS = (5, 25, 50, 75, 95)


def _stats(d: Digest) -> dict[str, float | int]:
    """A digest's count, min, mean and max, as the rollup buckets show them."""
    return {"count": d.n, "min": d.min, "mean": d.mean, "max": d.max}


def rollup_bucket_of(
    start_us: int, bucket: Bucket, resolution_us: int, metric: str
) -> RollupBucket:
    rtt, value = bucket.rtt, bucket.metrics.get(metric)
    return RollupBucket.model_validate(
        {
            "start_us": start_us,
            "end_us": min(start_us + resolution_us, MAX_TIME_US),
            "runs": bucket.runs,
            "results": bucket.results,
            "sent": bucket.sent,
            "received": bucket.received,
            "loss_percent": bucket.loss_percent,
            "rtt": None
            if rtt is None
            else {**_stats(rtt), **{f"p{p}": rtt.percentile(p) for p in RTT_BANDS}},
            "metric": None if value is None else {**_stats(value), "last": value.last},
        }
    )


def _rollups_route(router: APIRouter, archive: ArchiveOf) -> None:
    @router.get("/rollups", response_model=Rollups, summary="Per-bucket summaries (dashboards)")
    def rollups(
        f: Annotated[RunFilter, Depends(run_filter)],
        resolution: Annotated[Resolution, Query(description="the bucket: kept as rollups")] = "1h",
        metric: Annotated[
            str, Query(pattern=SUMMARY_KEY, description="a numeric summary key")
        ] = "medianRtt",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="buckets per page")] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Rollups:
        """Per bucket: the runs, packet loss and RTT percentiles from the per-packet samples
        (exact up to 64 replies, within 1 % beyond), and the statistics of one summary metric.
        Read from the rollups, and from the raw runs not rolled up yet: always complete."""
        _require_test(f, "a test to summarise")
        resolution_us = parse_window(resolution)
        found = archive().windows(
            resolution_us,
            test_key=f.test_key,
            test_id=f.test_id,
            since_us=_page_start(f, cursor),
            until_us=f.until_us,
            limit=limit + 1,
            metrics=(metric,),
        )
        more = len(found) > limit
        return Rollups(
            test_id=f.test_id,
            test_key=f.test_key,
            resolution_s=from_us(resolution_us),
            metric=metric,
            buckets=[rollup_bucket_of(w, b, resolution_us, metric) for w, b in found[:limit]],
            next_cursor=encode_cursor([found[limit][0]]) if more else None,
        )


def _store_route(router: APIRouter, archive: ArchiveOf, host: Host) -> None:
    # Documents the bearer scheme in OpenAPI; the check itself is StoreRoute.admit, which runs
    # before the body is read.
    bearer = Security(HTTPBearer(auto_error=False, description="the [api] token"))

    def store(body: StoreRequest) -> StoreReply:
        specs, runs = body.to_domain()
        try:
            new = archive().store_batch(specs, runs, to_us(time.time()))
        except UnknownTestError as e:
            raise HTTPException(422, f"runs: {e}; send the test in tests or inline") from None
        return StoreReply(tests=len(specs), runs=len(runs), new=new, duplicates=len(runs) - new)

    router.add_api_route(
        "/store",
        store,
        methods=["POST"],
        response_model=StoreReply,
        summary="Store tests and runs (idempotent by run_id)",
        dependencies=[bearer],
        route_class_override=store_route(host.token, host.limits.max_body_bytes),
        responses={
            401: {"model": ErrorBody, "description": "missing or wrong token"},
            403: {"model": ErrorBody, "description": "no token configured: storing disabled"},
            413: {"model": ErrorBody, "description": "body larger than max_body_bytes"},
        },
    )
