"""/runs and /results: a plain query skips FastAPI's parameter solving (rest.PlainQueryRoute);
every answer, good or bad, must be the one FastAPI's own route gives."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi import APIRouter, FastAPI
from starlette.datastructures import QueryParams

from hosting import host, sqlite_url
from netsonde.archive import open_archive
from netsonde.http.rest import ApiRoute
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping
from netsonde.services.archive import rest

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

S = 1_000_000
T0 = 1_700_000_000
SPEC = TestSpec("plain", "ping", "127.0.0.1", Schedule(interval=10), ping.Params(count=2))
KEY = SPEC.key


def make_run(k: int) -> Run:
    planned = (T0 + 10 * k) * S
    state = RunState.MISSED if k % 4 == 3 else RunState.FINISHED
    result = None
    if state is RunState.FINISHED:
        replies = [PacketSample(1, 0.5 + k, 64, 64, planned + 100), PacketSample(2, None)]
        result = Result("ping", SPEC.target, 2, replies, {"minRtt": 0.5 + k, "lossPercent": 50.0})
    return Run(
        run_id=run_id_for(KEY, planned),
        test_id=SPEC.id,
        test_key=KEY,
        slot=k,
        planned_us=planned,
        state=state,
        actual_us=None if result is None else planned + 5,
        end_us=None if result is None else planned + S,
        error=None,
        result=result,
    )


def app(path: Path, *, inline: bool, plain: bool) -> FastAPI:
    router = APIRouter(route_class=ApiRoute)
    rest._run_routes(router, host(path).archive.get, inline=inline, plain=plain)
    out = FastAPI()
    out.include_router(router, prefix="/api/v1")
    return out


@pytest.fixture(scope="module", params=[False, True], ids=["pool", "inline"])
def clients(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, TestClient]]:
    path = Path(tmp_path_factory.mktemp("plain")) / "archive.sqlite"
    archive = open_archive(sqlite_url(path))
    archive.register_tests([SPEC], T0 * S)
    archive.store_runs([make_run(k) for k in range(12)])
    archive.close()
    inline = bool(request.param)
    with (
        TestClient(app(path, inline=inline, plain=True)) as fast,
        TestClient(app(path, inline=inline, plain=False)) as solved,
    ):
        yield fast, solved


QUERIES = [
    "",
    f"test_key={KEY}",
    f"test_key={KEY}&from={T0}&until={T0 + 60}",
    f"test_key={KEY}&from={T0 + 20}&until={T0 + 21}&samples=true",
    "test_id=plain&limit=3&order=desc",
    "test_id=plain&limit=3&offset=4&samples=false&order=asc",
    "test_id=nope",
    "from=2023-11-14T22:13:30Z&until=2023-11-14T22:14:00Z",
    "limit=1",
    "limit=1000",
    "limit=1001",
    "limit=0",
    "limit=01",
    "limit=+5",
    "limit=-1",
    "limit=abc",
    "limit=%D9%A3",  # an Arabic-Indic 3: a digit to str.isdigit, not to FastAPI
    "offset=0",
    "offset=2147483647",
    "offset=2147483648",
    "cursor=xyz",
    "offset=1&cursor=abc",
    "samples=1",
    "samples=on",
    "samples=TRUE",
    "order=DESC",
    "order=up",
    "state=finished",
    "state=missed&state=finished",
    "test_id=",
    f"test_key={KEY}&test_key=0000000000000000",
    "from=bad",
    f"from={T0 + 5}&until={T0}",
    "test_key=" + "a" * 64,
    "test_key=" + "a" * 65,
    "test_id=" + quote("é" * 128),
    "test_id=" + quote("é" * 129),
    "cursor=" + "A" * 513,
    "unknown=1",
    "from_=1",
]


@pytest.mark.parametrize("path", ["/runs", "/results"])
def test_every_answer_is_fastapis(clients: tuple[TestClient, TestClient], path: str) -> None:
    fast, solved = clients
    plain = 0
    for query in QUERIES:
        url = f"/api/v1{path}?{query}"
        got, want = fast.get(url), solved.get(url)
        assert (got.status_code, got.content) == (want.status_code, want.content), query
        assert got.headers["content-type"] == want.headers["content-type"], query
        plain += rest.plain_query(QueryParams(query)) is not None
    assert 10 < plain < len(QUERIES)  # both paths were taken
    # A next page by its cursor, the usual second request.
    first = fast.get(f"/api/v1{path}?test_key={KEY}&limit=2").json()
    url = f"/api/v1{path}?test_key={KEY}&limit=2&cursor={first['next_cursor']}"
    assert fast.get(url).content == solved.get(url).content
    assert fast.get(url).json()["items"]


def test_plain_queries_are_parsed_as_fastapi_parses_them() -> None:
    query = "test_id=a&test_key=b&from=1&until=2&limit=7&offset=0&cursor=c&samples=true&order=desc"
    assert rest.plain_query(QueryParams(query)) == {
        "test_id": "a",
        "test_key": "b",
        "from_": "1",
        "until": "2",
        "limit": 7,
        "offset": 0,
        "cursor": "c",
        "samples": True,
        "order": "desc",
    }
    for odd in ("limit=01", "samples=1", "state=finished", "a=1", "test_id=", "limit=1&limit=2"):
        assert rest.plain_query(QueryParams(odd)) is None, odd
