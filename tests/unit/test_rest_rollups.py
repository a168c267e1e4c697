"""REST /rollups (the dashboard's per-bucket summaries) on both backends, by hand-computed
values: the same answer before and after the rollup worker has run."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, get_args

import pytest
from fastapi import FastAPI

from hosting import host
from netsonde.archive import open_archive, rollups
from netsonde.http.rest import parse_window
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping
from netsonde.services.archive.rest import Resolution, build_router

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

S = 1_000_000
T0 = 1_700_006_400 * S  # a day's start: 2023-11-15T00:00:00Z
A = TestSpec("loop-a", "ping", "127.0.0.1", Schedule(interval=100), ping.Params(count=4))


def run(k: int, state: RunState, replies: list[tuple[int, float | None]], sent: int) -> Run:
    planned = T0 + k * 100 * S
    rtts = sorted({seq: rtt for seq, rtt in reversed(replies) if rtt is not None}.values())
    median = (rtts[(len(rtts) - 1) // 2] + rtts[len(rtts) // 2]) / 2 if rtts else None
    result = None
    if state is RunState.FINISHED:
        samples = [PacketSample(seq, rtt) for seq, rtt in replies]
        result = Result("ping", A.target, sent, samples, {"medianRtt": median})
    elif state is RunState.FAILED:
        result = Result("ping", A.target, error="unreachable")
    return Run(run_id_for(A.key, planned), A.id, A.key, k, planned, state, result=result)


RUNS = [
    # [T0, T0+5 min): seq 3 lost, seq 2 answered twice (the first counts): RTTs 1, 2, 3
    run(0, RunState.FINISHED, [(1, 1.0), (2, 2.0), (3, None), (2, 9.0), (4, 3.0)], 4),
    run(1, RunState.FINISHED, [(1, 4.0), (2, 5.0), (3, 6.0), (4, 7.0)], 4),
    run(2, RunState.MISSED, [], 0),
    # [T0+5 min, T0+10 min)
    run(3, RunState.FAILED, [], 0),  # a result without values
    run(4, RunState.FINISHED, [], 2),  # every probe lost
    run(5, RunState.FINISHED, [(1, 10.0)], 2),
]

FIRST = {
    "start_us": T0,
    "start_iso": "2023-11-15T00:00:00.000000Z",
    "end_us": T0 + 300 * S,
    "end_iso": "2023-11-15T00:05:00.000000Z",
    "runs": 3,
    "results": 2,
    "sent": 8,
    "received": 7,
    "loss_percent": 12.5,
    # RTTs 1..7: R-7 percentiles at h = 6·p/100
    "rtt": {
        "count": 7,
        "min": 1.0,
        "p5": pytest.approx(1.3),
        "p25": 2.5,
        "p50": 4.0,
        "p75": 5.5,
        "p95": pytest.approx(6.7),
        "max": 7.0,
        "mean": 4.0,
    },
    "metric": {"count": 2, "min": 2.0, "mean": 3.75, "max": 5.5, "last": 5.5},
}
SECOND = {
    "start_us": T0 + 300 * S,
    "start_iso": "2023-11-15T00:05:00.000000Z",
    "end_us": T0 + 600 * S,
    "end_iso": "2023-11-15T00:10:00.000000Z",
    "runs": 3,
    "results": 3,
    "sent": 4,
    "received": 1,
    "loss_percent": 75.0,
    "rtt": {"count": 1, "min": 10.0, "max": 10.0, "mean": 10.0}
    | {f"p{p}": 10.0 for p in (5, 25, 50, 75, 95)},
    "metric": {"count": 1, "min": 10.0, "mean": 10.0, "max": 10.0, "last": 10.0},
}


@pytest.fixture
def client(store_url: str) -> Iterator[tuple[TestClient, Any]]:
    archive = open_archive(store_url)
    archive.register_tests([A], T0)
    archive.store_runs(RUNS)
    app = FastAPI()
    app.include_router(build_router(host(store_url)), prefix="/api/v1")
    with TestClient(app) as c:
        yield c, archive
    archive.close()


def get(c: TestClient, **params: Any) -> Any:
    test = {"test_key": A.key} if "test_id" not in params else {}
    response = c.get("/api/v1/rollups", params=test | params)
    assert response.status_code == 200, response.text
    return response.json()


def test_rollups_by_hand_before_and_after_rolling_up(client: tuple[TestClient, Any]) -> None:
    c, archive = client
    for rolled_up in (False, True):
        if rolled_up:
            assert archive.process_rollups() == len(RUNS)
        body = get(c, resolution="5m")
        assert (body["resolution_s"], body["metric"], body["next_cursor"]) == (
            300.0,
            "medianRtt",
            None,
        )
        assert body["buckets"] == [FIRST, SECOND]
        (hour,) = get(c, resolution="1h", test_id="loop-a")["buckets"]
        assert (hour["runs"], hour["results"], hour["sent"], hour["received"]) == (6, 5, 12, 8)
        assert hour["rtt"]["p50"] == 4.5 and hour["rtt"]["max"] == 10.0  # RTTs 1..7 and 10
        assert hour["metric"] == {
            "count": 3,
            "min": 2.0,
            "mean": 17.5 / 3,
            "max": 10.0,
            "last": 10.0,
        }


def test_rollups_page_by_bucket_and_need_a_test(client: tuple[TestClient, Any]) -> None:
    c, _ = client
    first = get(c, resolution="5m", limit=1)
    assert first["buckets"] == [FIRST] and first["next_cursor"]
    rest = get(c, resolution="5m", cursor=first["next_cursor"])
    assert rest["buckets"] == [SECOND] and rest["next_cursor"] is None
    assert get(c, resolution="5m", metric="noSuchKey")["buckets"][0]["metric"] is None
    response = c.get("/api/v1/rollups", params={"resolution": "5m"})
    assert response.status_code == 400 and "test_id or test_key" in response.json()["error"]
    response = c.get("/api/v1/rollups", params={"test_key": A.key, "resolution": "2h"})
    assert response.status_code == 422


def test_the_resolutions_offered_are_the_rollups() -> None:
    assert tuple(parse_window(r) for r in get_args(Resolution)) == rollups.RESOLUTIONS_US
