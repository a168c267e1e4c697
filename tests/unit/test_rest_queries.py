"""REST reads (/tests, /runs, /results, /aggregate) against a real archive (SQLite, then
PostgreSQL) filled with hand-made runs, so every expected number below is worked out by hand."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from hosting import host, sqlite_url
from netsonde.archive import open_archive
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import noop, ping
from netsonde.services.archive.rest import build_router
from netsonde.services.archive.schemas import MAX_TIME_US
from pgcluster import PgCluster

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

S = 1_000_000  # µs per second
T0_S = 1_700_000_000  # 2023-11-14T22:13:20Z, a multiple of 40 s
T0 = T0_S * S
REGISTERED = T0 - 3600 * S

A = TestSpec("loop-a", "ping", "127.0.0.1", Schedule(interval=10), ping.Params(count=4))
A2 = TestSpec("loop-a", "ping", "127.0.0.1", Schedule(interval=10), ping.Params(count=8))
B = TestSpec("loop-b", "ping", "::1", Schedule(interval=10), ping.Params(count=4))
N = TestSpec("idle", "noop", "nowhere", Schedule(interval=10), noop.Params())

# Test A, one run every 10 s from T0: (state, medianRtt, lossPercent); None = no result.
A_RUNS: list[tuple[RunState, Any, Any]] = [
    (RunState.FINISHED, 1.0, 0.0),  # k=0, window [T0, T0+40 s)
    (RunState.FINISHED, 2.0, 0.0),
    (RunState.FINISHED, 4.0, 50.0),
    (RunState.FINISHED, 8.0, 25.0),
    (RunState.MISSED, None, None),  # k=4, window [T0+40 s, T0+80 s): no result
    (RunState.FINISHED, None, 100.0),  # every probe lost: no RTT
    (RunState.FINISHED, 3.0, 0.0),
    (RunState.FAILED, "result", None),  # a result without values
]


def make_run(spec: TestSpec, k: int, state: RunState, median: Any, loss: Any) -> Run:
    planned = T0 + k * 10 * S
    result = None
    if state is RunState.FINISHED:
        rtt = median
        result = Result(
            tool=spec.tool,
            target=spec.target,
            sent=2,
            replies=[PacketSample(1, rtt, 64, 64, planned + 1000), PacketSample(2, None)],
            values={"minRtt": rtt, "medianRtt": median, "lossPercent": loss},
            extra={"path": ["10.0.0.1", "*"], "socket": "raw"},
        )
    elif median == "result":
        result = Result(tool=spec.tool, target=spec.target, error="unreachable")
    return Run(
        run_id=run_id_for(spec.key, planned),
        test_id=spec.id,
        test_key=spec.key,
        slot=k,
        planned_us=planned,
        state=state,
        actual_us=None if state is RunState.MISSED else planned + 250,
        end_us=None if state is RunState.MISSED else planned + 2 * S,
        error="busy" if state is RunState.MISSED else None,
        result=result,
    )


def a_run(k: int) -> Run:
    return make_run(A, k, *A_RUNS[k])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An archive for the whole module on each backend (filled once: the tests only read)."""
    if request.param == "sqlite":
        yield sqlite_url(Path(tmp_path_factory.mktemp("rest")) / "archive.sqlite")
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.database()
    yield url
    cluster.drop(url)


@pytest.fixture(scope="module")
def client(filled_url: str) -> Iterator[TestClient]:
    archive = open_archive(filled_url)
    archive.register_tests([A, A2, B, N], REGISTERED)
    archive.store_runs([a_run(k) for k in range(len(A_RUNS))])
    archive.store_runs(
        [
            make_run(A2, 10, RunState.FINISHED, 16.0, 0.0),  # T0+100 s, same id, another key
            make_run(B, 0, RunState.FINISHED, 0.5, 0.0),
            make_run(B, 1, RunState.FINISHED, 0.25, 0.0),
        ]
    )
    archive.close()
    app = FastAPI()
    app.include_router(build_router(host(filled_url)), prefix="/api/v1")
    with TestClient(app) as c:
        yield c


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(f"/api/v1{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def error(client: TestClient, path: str, status: int, **params: Any) -> str:
    response = client.get(f"/api/v1{path}", params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"error", "errors"}
    return str(body["error"])


def slots(page: dict[str, Any]) -> list[tuple[str, int]]:
    return [(item["test_key"], item["slot"]) for item in page["items"]]


# ---- /tests ------------------------------------------------------------------------------------


def test_tests_lists_every_test_with_counts_and_times(client: TestClient) -> None:
    page = get(client, "/tests")
    assert [t["key"] for t in page["items"]] == in_order(A, A2, B, N)
    a = next(t for t in page["items"] if t["key"] == A.key)
    assert a == {
        "key": A.key,
        "test_id": "loop-a",
        "source": "",
        "tool": "ping",
        "target": "127.0.0.1",
        "params": A.params_dict(),
        "first_seen_us": REGISTERED,
        "first_seen_iso": "2023-11-14T21:13:20.000000Z",
        "last_seen_us": REGISTERED,
        "last_seen_iso": "2023-11-14T21:13:20.000000Z",
        "runs": 8,
        "last_run_us": T0 + 70 * S,
        "last_run_iso": "2023-11-14T22:14:30.000000Z",
    }
    idle = next(t for t in page["items"] if t["key"] == N.key)
    assert (idle["runs"], idle["last_run_us"], idle["last_run_iso"]) == (0, None, None)
    assert (page["limit"], page["offset"], page["next_cursor"]) == (100, 0, None)


def in_order(*specs: TestSpec) -> list[str]:
    """Keys in the API's order for tests: by test id, then key."""
    return [s.key for s in sorted(specs, key=lambda s: (s.id, s.key))]


@pytest.mark.parametrize(
    ("params", "specs"),
    [
        ({"tool": "noop"}, [N]),
        ({"target": "::1"}, [B]),
        ({"test_id": "loop-a"}, [A, A2]),
        ({"test_id": "loop"}, []),  # exact
        ({"test_id_contains": "oop-"}, [A, A2, B]),
        ({"test_id_contains": "%"}, []),  # no LIKE wildcards
        ({"key": B.key}, [B]),
        ({"tool": "ping", "target": "127.0.0.1", "key": A2.key}, [A2]),
    ],
)
def test_tests_filters(client: TestClient, params: dict[str, str], specs: list[TestSpec]) -> None:
    assert [t["key"] for t in get(client, "/tests", **params)["items"]] == in_order(*specs)


def test_tests_pages_by_cursor_and_offset(client: TestClient) -> None:
    everything = in_order(A, A2, B, N)
    assert [t["key"] for t in get(client, "/tests")["items"]] == everything
    seen, cursor = [], None
    for _ in range(4):
        page = get(client, "/tests", limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [t["key"] for t in page["items"]]
        cursor = page["next_cursor"]
    assert seen == everything and cursor is None  # 4 tests, 4 pages, no 5th
    two = get(client, "/tests", limit=2, offset=2)
    assert [t["key"] for t in two["items"]] == everything[2:] and two["next_cursor"] is None
    assert get(client, "/tests", limit=3)["next_cursor"] is not None


def test_one_test_by_key(client: TestClient) -> None:
    assert get(client, f"/tests/{B.key}")["test_id"] == "loop-b"
    assert error(client, "/tests/0123456789abcdef", 404) == "no test with key '0123456789abcdef'"


# ---- /runs and /results -----------------------------------------------------------------------


def test_runs_of_a_test_id_cover_every_key_it_had(client: TestClient) -> None:
    page = get(client, "/runs", test_id="loop-a")
    assert slots(page) == [(A.key, k) for k in range(8)] + [(A2.key, 10)]
    assert slots(get(client, "/runs", test_key=A2.key)) == [(A2.key, 10)]


def test_run_fields(client: TestClient) -> None:
    items = get(client, "/runs", test_key=A.key)["items"]
    assert items[2] == {
        "run_id": run_id_for(A.key, T0 + 20 * S),
        "test_id": "loop-a",
        "test_key": A.key,
        "tool": "ping",
        "target": "127.0.0.1",
        "slot": 2,
        "state": "finished",
        "planned_us": T0 + 20 * S,
        "planned_iso": "2023-11-14T22:13:40.000000Z",
        "actual_us": T0 + 20 * S + 250,
        "actual_iso": "2023-11-14T22:13:40.000250Z",
        "end_us": T0 + 22 * S,
        "end_iso": "2023-11-14T22:13:42.000000Z",
        "lateness_us": 250,
        "error": None,
        "result": {
            "sent": 2,
            "values": {"minRtt": 4.0, "medianRtt": 4.0, "lossPercent": 50.0},
            "samples": None,
            "extra": None,
        },
    }
    missed = items[4]
    assert (missed["state"], missed["error"], missed["result"]) == ("missed", "busy", None)
    assert (missed["actual_us"], missed["actual_iso"], missed["lateness_us"]) == (None, None, None)
    assert items[7]["result"] == {"sent": 0, "values": {}, "samples": None, "extra": None}


def test_samples_only_on_request(client: TestClient) -> None:
    item = get(client, "/runs", test_key=A.key, samples="true", limit=1)["items"][0]
    assert item["result"]["samples"] == [
        {"seq": 1, "rtt_ms": 1.0, "ttl": 64, "size": 64, "recv_us": T0 + 1000},
        {"seq": 2, "rtt_ms": None, "ttl": None, "size": None, "recv_us": None},
    ]
    # and the tool's detail (traceroute hops, TWAMP timestamps) with them
    assert item["result"]["extra"] == {"path": ["10.0.0.1", "*"], "socket": "raw"}


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (str(T0_S + 10), str(T0_S + 30)),
        (f"{T0_S + 9}.9999995", f"{T0_S + 29}.9999995"),  # rounds to the µs: same edges
        ("2023-11-14T22:13:30Z", "2023-11-14T22:13:50Z"),
        ("2023-11-14T23:13:30+01:00", "2023-11-14T17:13:50-05:00"),
        ("2023-11-14T22:13:30.000000+00:00", "2023-11-14T22:13:49.999999Z"),
    ],
)
def test_time_range_is_half_open(client: TestClient, since: str, until: str) -> None:
    page = get(client, "/runs", test_key=A.key, **{"from": since, "until": until})
    assert slots(page) == [(A.key, 1), (A.key, 2)]  # T0+10 s in, T0+30 s out


def test_open_ended_ranges(client: TestClient) -> None:
    assert slots(get(client, "/runs", test_key=A.key, **{"from": T0_S + 60})) == [
        (A.key, 6),
        (A.key, 7),
    ]
    assert slots(get(client, "/runs", test_key=A.key, until=T0_S + 10)) == [(A.key, 0)]
    assert get(client, "/runs", test_key=A.key, **{"from": T0_S, "until": T0_S})["items"] == []


def test_runs_page_by_cursor_to_the_exact_end(client: TestClient) -> None:
    pages, cursor = [], None
    for _ in range(4):
        page = get(
            client, "/runs", test_id="loop-a", limit=3, **({"cursor": cursor} if cursor else {})
        )
        pages.append([k for _, k in slots(page)])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [[0, 1, 2], [3, 4, 5], [6, 7, 10]]  # 9 runs: no empty 4th page


def test_runs_offset_and_limit_boundaries(client: TestClient) -> None:
    assert [k for _, k in slots(get(client, "/runs", test_key=A.key, limit=3, offset=3))] == [
        3,
        4,
        5,
    ]
    assert get(client, "/runs", test_key=A.key, limit=3, offset=8)["items"] == []
    last = get(client, "/runs", test_key=A.key, limit=1, offset=7)
    assert [k for _, k in slots(last)] == [7] and last["next_cursor"] is None
    assert len(get(client, "/runs", limit=1000)["items"]) == 11


def test_runs_newest_first(client: TestClient) -> None:
    first = get(client, "/runs", test_id="loop-a", order="desc", limit=2)
    assert [k for _, k in slots(first)] == [10, 7]
    second = get(client, "/runs", test_id="loop-a", order="desc", cursor=first["next_cursor"])
    assert [k for _, k in slots(second)] == [6, 5, 4, 3, 2, 1, 0]


def test_runs_by_state(client: TestClient) -> None:
    page = client.get("/api/v1/runs", params=[("state", "missed"), ("state", "failed")]).json()
    assert slots(page) == [(A.key, 4), (A.key, 7)]
    assert slots(get(client, "/runs", test_key=A.key, state="timeout")) == []


def test_results_are_the_runs_with_a_result(client: TestClient) -> None:
    page = get(client, "/results", test_id="loop-a")
    assert [k for _, k in slots(page)] == [0, 1, 2, 3, 5, 6, 7, 10]
    page = get(client, "/results", test_key=A.key, limit=2, offset=3)
    assert [k for _, k in slots(page)] == [3, 5]
    page = get(client, "/results", test_key=A.key, cursor=page["next_cursor"])
    assert [k for _, k in slots(page)] == [6, 7]


# ---- /aggregate ----------------------------------------------------------------------------------


def test_aggregate_by_hand(client: TestClient) -> None:
    body = get(client, "/aggregate", test_key=A.key, window="40s")
    assert (body["metric"], body["window_s"], body["test_key"], body["test_id"]) == (
        "medianRtt",
        40.0,
        A.key,
        None,
    )
    first, second = body["windows"]
    # medianRtt 1, 2, 4, 8: mean 15/4; R-7 percentiles at h = 3·p/100 between sorted values.
    assert first == {
        "start_us": T0,
        "start_iso": "2023-11-14T22:13:20.000000Z",
        "end_us": T0 + 40 * S,
        "end_iso": "2023-11-14T22:14:00.000000Z",
        "runs": 4,
        "count": 4,
        "min": 1.0,
        "mean": 3.75,
        "max": 8.0,
        "p50": 3.0,  # h=1.5: 2 + .5·(4−2)
        "p90": pytest.approx(6.8),  # h=2.7: 4 + .7·(8−4)
        "p95": pytest.approx(7.4),  # h=2.85
        "p99": pytest.approx(7.88),  # h=2.97
        "mean_loss_percent": 18.75,  # (0 + 0 + 50 + 25) / 4
    }
    # k=4 missed (no result); k=5 lost everything (no RTT, loss 100); k=6 3 ms; k=7 failed with
    # an empty result: 3 results, 1 RTT, loss over the 2 that have one.
    assert {k: second[k] for k in ("start_us", "runs", "count", "min", "mean", "max")} == {
        "start_us": T0 + 40 * S,
        "runs": 3,
        "count": 1,
        "min": 3.0,
        "mean": 3.0,
        "max": 3.0,
    }
    assert [second[p] for p in ("p50", "p90", "p95", "p99")] == [3.0] * 4
    assert second["mean_loss_percent"] == 50.0
    assert body["next_cursor"] is None


def test_aggregate_by_test_id_other_metric_and_range(client: TestClient) -> None:
    body = get(client, "/aggregate", test_id="loop-a", window="40", metric="lossPercent")
    assert [(w["start_us"], w["count"], w["max"]) for w in body["windows"]] == [
        (T0, 4, 50.0),
        (T0 + 40 * S, 2, 100.0),
        (T0 + 80 * S, 1, 0.0),  # the other key's run at T0+100 s
    ]
    body = get(client, "/aggregate", test_key=A.key, window="20s", **{"from": T0_S + 10})
    # windows [T0, T0+20 s) (only k=1 inside the range), [T0+20 s, T0+40 s), …
    assert [(w["start_us"], w["runs"], w["mean"]) for w in body["windows"]] == [
        (T0, 1, 2.0),
        (T0 + 20 * S, 2, 6.0),
        (T0 + 40 * S, 1, None),
        (T0 + 60 * S, 2, 3.0),
    ]


def test_aggregate_window_forms_agree(client: TestClient) -> None:
    bodies = [
        get(client, "/aggregate", test_key=A.key, window=w) for w in ("60", "60s", "1m", "60.0")
    ]
    assert all(b["windows"] == bodies[0]["windows"] for b in bodies)
    assert get(client, "/aggregate", test_key=A.key, window="1h")["window_s"] == 3600.0
    hourly = get(client, "/aggregate", test_key=A.key)["windows"]  # default 1h: all in one window
    assert [(w["start_iso"], w["runs"], w["count"]) for w in hourly] == [
        ("2023-11-14T22:00:00.000000Z", 7, 5)
    ]


def test_aggregate_pages_by_window(client: TestClient) -> None:
    first = get(client, "/aggregate", test_key=A.key, window="10s", limit=3)
    assert [w["start_us"] for w in first["windows"]] == [T0, T0 + 10 * S, T0 + 20 * S]
    rest = get(client, "/aggregate", test_key=A.key, window="10s", cursor=first["next_cursor"])
    # 30 s, then 50, 60, 70 s: the missed run's window (40 s) has no result
    assert [w["start_us"] for w in rest["windows"]] == [T0 + s * S for s in (30, 50, 60, 70)]
    assert [w["count"] for w in rest["windows"]] == [1, 0, 1, 0]
    assert rest["next_cursor"] is None


def test_aggregate_of_a_missing_metric_counts_runs_only(client: TestClient) -> None:
    (window,) = get(client, "/aggregate", test_key=B.key, metric="noSuchKey")["windows"]
    assert (window["runs"], window["count"], window["min"], window["p99"]) == (2, 0, None, None)


# ---- bad input: 4xx with a clear JSON error ------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["yesterday", "2023-11-14T22:13:20", "2023-11-14", "1e9", "nan", "", "17000000000000"]
)
def test_bad_times_are_400_naming_the_forms(client: TestClient, value: str) -> None:
    message = error(client, "/runs", 400, **{"from": value})
    assert message.startswith("from: invalid time") and "ISO 8601" in message
    assert "epoch seconds" in error(client, "/results", 400, until=value)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("from", "999999999999", "999999999999"),
        ("until", "253402300800", "253402300800"),
        ("from", "10000-01-01T00:00:00Z", None),  # not even ISO 8601 to Python
        ("until", "9999-12-31T23:59:59-05:00", "253402318799"),
        ("from", "-999999999999", "-999999999999"),
    ],
)
@pytest.mark.parametrize("path", ["/runs", "/results", "/aggregate"])
def test_times_no_answer_could_print_are_400(
    client: TestClient, path: str, name: str, value: str, shown: str | None
) -> None:
    message = error(client, path, 400, test_id="loop-a", **{name: value})
    if shown is None:
        assert message.startswith(f"{name}: invalid time"), message
    else:
        assert message.startswith(f"{name}: time {shown} is out of range"), message


def test_the_last_window_of_time_ends_where_times_end(store_url: str) -> None:
    """A run on 9999-12-31 in a window of a day: the window's end is the last µs ISO 8601 can
    say, not a 500."""
    archive = open_archive(store_url)
    archive.register_tests([A], REGISTERED)
    late = make_run(A, 0, RunState.FINISHED, 1.0, 0.0)
    late.planned_us = late.actual_us = 253_402_300_000 * S
    late.end_us = late.planned_us + S
    archive.store_runs([late])
    archive.close()
    app = FastAPI()
    app.include_router(build_router(host(store_url)), prefix="/api/v1")
    with TestClient(app) as c:
        body = get(c, "/aggregate", test_key=A.key, window="1d")
    (window,) = body["windows"]
    assert window["start_iso"] == "9999-12-31T00:00:00.000000Z"
    assert (window["end_us"], window["end_iso"]) == (MAX_TIME_US, "9999-12-31T23:59:59.999999Z")


@pytest.mark.parametrize(
    ("path", "params", "status", "start"),
    [
        ("/runs", {"limit": 1001}, 422, "limit: Input should be less than or equal to 1000"),
        ("/runs", {"limit": 0}, 422, "limit:"),
        ("/tests", {"offset": -1}, 422, "offset:"),
        ("/runs", {"state": "done"}, 422, "state[0]: Input should be 'finished'"),
        ("/runs", {"samples": "maybe"}, 422, "samples:"),
        ("/runs", {"order": "up"}, 422, "order:"),
        ("/runs", {"cursor": "abc", "offset": 1}, 400, "offset and cursor"),
        ("/runs", {"cursor": "not a cursor"}, 400, "cursor: invalid"),
        ("/tests", {"cursor": "WzEsMl0"}, 400, "cursor: invalid"),  # [1,2]: not (str, str)
        ("/runs", {"from": T0_S + 1, "until": T0_S}, 400, "until: must not be before from"),
        ("/aggregate", {}, 400, "test_id or test_key: one is required"),
        ("/aggregate", {"test_key": "k", "window": "fortnight"}, 400, "window: invalid duration"),
        ("/aggregate", {"test_key": "k", "window": "0.5"}, 400, "window: must be between"),
        ("/aggregate", {"test_key": "k", "window": "400d"}, 400, "window: must be between"),
        ("/aggregate", {"test_key": "k", "metric": "$.x"}, 422, "metric: String should match"),
    ],
)
def test_bad_parameters(
    client: TestClient, path: str, params: dict[str, Any], status: int, start: str
) -> None:
    assert error(client, path, status, **params).startswith(start)


def test_validation_errors_list_every_field(client: TestClient) -> None:
    body = client.get("/api/v1/runs", params={"limit": 0, "offset": -1}).json()
    assert body["error"].endswith("(and 1 more)")
    assert {e["field"] for e in body["errors"]} == {"limit", "offset"}


def test_an_archive_that_cannot_be_opened_is_503(tmp_path: Path) -> None:
    app = FastAPI()
    ctx = host(tmp_path)  # a directory: SQLite cannot open it
    app.include_router(build_router(ctx), prefix="/api/v1")
    with TestClient(app) as c:
        response = c.get("/api/v1/tests")
    assert response.status_code == 503
    assert response.json()["error"].startswith(f"cannot open archive {tmp_path}")
    assert response.headers["retry-after"] == "5"


def test_a_postgresql_archive_that_cannot_be_reached_is_503(pg_cluster: PgCluster) -> None:
    url = pg_cluster.url("no_such_database")
    app = FastAPI()
    app.include_router(build_router(host(url)), prefix="/api/v1")
    with TestClient(app) as c:
        response = c.get("/api/v1/tests")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("cannot connect to postgresql://netsonde@"), error
    assert "no_such_database" in error
    assert response.headers["retry-after"] == "5"
