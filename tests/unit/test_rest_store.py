"""POST /api/v1/store: the token, validation of every field, one transaction, idempotence; on
each archive backend."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from hosting import host
from netsonde.archive import open_archive
from netsonde.model import Schedule, TestSpec
from netsonde.probes import ping
from netsonde.services.archive.rest import build_router

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "store-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000_000_000
LOCAL = TestSpec("local", "ping", "127.0.0.1", Schedule(interval=10), ping.Params(count=2))


def remote_test(test_id: str = "remote-a", target: str = "192.0.2.1") -> dict[str, Any]:
    return {
        "test_id": test_id,
        "source": "mp-1",
        "tool": "ping",
        "target": target,
        "params": {"count": 2},
    }


def remote_key(test: dict[str, Any]) -> str:
    return TestSpec(
        test["test_id"],
        test["tool"],
        test["target"],
        Schedule(interval=1),
        test["params"],
        source=test["source"],
    ).key


def finished(run_id: str, k: int, **ref: Any) -> dict[str, Any]:
    planned = T0 + k * 10_000_000
    return {
        "run_id": run_id,
        **ref,
        "slot": k,
        "state": "finished",
        "planned_us": planned,
        "actual_us": planned + 100,
        "end_us": planned + 1_000_000,
        "result": {
            "sent": 2,
            "values": {"medianRtt": 1.25, "lossPercent": 50.0, "duplicates": 0},
            "samples": [
                {"seq": 1, "rtt_ms": 1.25, "ttl": 63, "size": 64, "recv_us": planned + 1350},
                {"seq": 2, "rtt_ms": None},
            ],
            "extra": {"address": "192.0.2.1"},
        },
    }


def batch() -> dict[str, Any]:
    test = remote_test()
    return {
        "tests": [test],
        "runs": [
            finished("r-0", 0, test_key=remote_key(test)),
            {"run_id": "r-1", "test_key": remote_key(test), "slot": 1, "state": "missed",
             "planned_us": T0 + 10_000_000, "error": "busy"},
            finished("r-2", 2, **remote_test("remote-b", "192.0.2.2")),
        ],
    }  # fmt: skip


def make_client(url: str, **ctx: Any) -> TestClient:
    app = FastAPI()
    app.include_router(build_router(host(url, **ctx)), prefix="/api/v1")
    return TestClient(app)


@pytest.fixture
def db(store_url: str) -> str:
    archive = open_archive(store_url)
    archive.register_tests([LOCAL], T0)
    archive.close()
    return store_url


@pytest.fixture
def client(db: str) -> Iterator[TestClient]:
    with make_client(db, token=TOKEN) as c:
        yield c


def store(client: TestClient, body: Any, status: int = 200, **headers: str) -> dict[str, Any]:
    response = client.post("/api/v1/store", json=body, headers={**AUTH, **headers})
    assert response.status_code == status, response.text
    return dict(response.json())


def stored_runs(client: TestClient) -> list[dict[str, Any]]:
    return list(client.get("/api/v1/runs", params={"samples": "true"}).json()["items"])


# ---- the token ---------------------------------------------------------------------------------


def test_no_token_configured_refuses_to_store(db: str) -> None:
    with make_client(db) as c:
        response = c.post("/api/v1/store", json=batch(), headers=AUTH)
    assert response.status_code == 403
    assert response.json() == {
        "error": "storing is disabled: this server has no API token configured ([api] token)"
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcd"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_or_wrong_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/api/v1/store", json=batch(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"].startswith("missing or wrong token")
    assert stored_runs(client) == []


def test_token_is_checked_before_the_body_is_read(client: TestClient) -> None:
    response = client.post(
        "/api/v1/store", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


# ---- storing -----------------------------------------------------------------------------------


def test_store_then_read_back_exactly(client: TestClient) -> None:
    assert store(client, batch()) == {"tests": 2, "runs": 3, "new": 3, "duplicates": 0}
    runs = {r["run_id"]: r for r in stored_runs(client)}
    assert set(runs) == {"r-0", "r-1", "r-2"}
    r0 = runs["r-0"]
    assert (r0["test_id"], r0["test_key"], r0["target"], r0["slot"], r0["state"]) == (
        "remote-a",
        remote_key(remote_test()),
        "192.0.2.1",
        0,
        "finished",
    )
    assert (r0["planned_us"], r0["actual_us"], r0["end_us"], r0["lateness_us"]) == (
        T0,
        T0 + 100,
        T0 + 1_000_000,
        100,
    )
    assert r0["result"] == {
        "sent": 2,
        "values": {"medianRtt": 1.25, "lossPercent": 50.0, "duplicates": 0},
        "samples": [
            {"seq": 1, "rtt_ms": 1.25, "ttl": 63, "size": 64, "recv_us": T0 + 1350},
            {"seq": 2, "rtt_ms": None, "ttl": None, "size": None, "recv_us": None},
        ],
        "extra": {"address": "192.0.2.1"},  # stored as sent
    }
    assert (runs["r-1"]["state"], runs["r-1"]["error"], runs["r-1"]["result"]) == (
        "missed",
        "busy",
        None,
    )
    assert runs["r-2"]["test_key"] == remote_key(remote_test("remote-b", "192.0.2.2"))  # inline
    tests = client.get("/api/v1/tests", params={"test_id_contains": "remote"}).json()["items"]
    assert [(t["test_id"], t["source"], t["runs"]) for t in tests] == [
        ("remote-a", "mp-1", 2),
        ("remote-b", "mp-1", 1),
    ]


def test_store_is_idempotent_by_run_id(client: TestClient) -> None:
    store(client, batch())
    before = stored_runs(client)
    assert store(client, batch()) == {"tests": 2, "runs": 3, "new": 0, "duplicates": 3}
    changed = batch()
    changed["runs"][0]["result"]["values"]["medianRtt"] = 99.0  # same run id: kept as first stored
    changed["runs"].append(finished("r-3", 3, test_key=LOCAL.key))
    assert store(client, changed) == {"tests": 2, "runs": 4, "new": 1, "duplicates": 3}
    after = stored_runs(client)
    assert after[:3] == before and after[3]["run_id"] == "r-3"
    twice = {"runs": [finished("r-4", 4, test_key=LOCAL.key)] * 2}
    assert store(client, twice) == {"tests": 0, "runs": 2, "new": 1, "duplicates": 1}


def test_runs_may_name_a_test_already_stored(client: TestClient) -> None:
    assert store(client, {"runs": [finished("l-0", 0, test_key=LOCAL.key)]})["new"] == 1
    assert stored_runs(client)[0]["test_id"] == "local"


def test_unknown_test_key_stores_nothing_at_all(client: TestClient) -> None:
    body = batch()
    body["runs"].append(finished("r-9", 9, test_key="0123456789abcdef"))
    message = store(client, body, 422)["error"]
    assert message == (
        "runs: unknown test key(s): 0123456789abcdef; send the test in tests or inline"
    )
    assert stored_runs(client) == []  # one transaction: not even the valid runs
    tests = client.get("/api/v1/tests").json()["items"]
    assert [t["test_id"] for t in tests] == ["local"]  # nor the tests sent along


def test_empty_batch_is_fine(client: TestClient) -> None:
    assert store(client, {}) == {"tests": 0, "runs": 0, "new": 0, "duplicates": 0}


# ---- validation --------------------------------------------------------------------------------


def with_change(path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    """batch() with the field at ``path`` (``runs.0.result.sent``) set or deleted."""
    body = copy.deepcopy(batch())
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if delete:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return body


INVALID = [
    ("runs.0.state", "done", "runs[0].state: Input should be 'finished', 'failed', 'timeout'"),
    ("runs.0.planned_us", -1, "runs[0].planned_us: Input should be greater than or equal to 0"),
    ("runs.0.planned_us", 10**30, "runs[0].planned_us: Input should be less than or equal"),
    ("runs.0.planned_us", "1700000000", "runs[0].planned_us: Input should be a valid integer"),
    ("runs.0.planned_us", 1.5, "runs[0].planned_us: Input should be a valid integer"),
    ("runs.0.slot", True, "runs[0].slot: Input should be a valid integer"),
    ("runs.0.run_id", "", "runs[0].run_id: String should match pattern"),
    ("runs.0.run_id", "x" * 200, "runs[0].run_id: String should match pattern"),
    ("runs.0.test_key", "ABC", "runs[0].test_key: String should match pattern"),
    ("runs.0.error", "e" * 5000, "runs[0].error: String should have at most 4096 characters"),
    ("runs.0.result.sent", -2, "runs[0].result.sent: Input should be greater than or equal to 0"),
    ("runs.0.result.values.medianRtt", "1.0", "runs[0].result.values.medianRtt: must be a finite"),
    ("runs.0.result.values.medianRtt", True, "runs[0].result.values.medianRtt: must be a finite"),
    ("runs.0.result.values.bad key", 1, "runs[0].result.values.bad key.[key]: String should"),
    ("runs.0.result.samples.0.rtt_ms", -1.0, "runs[0].result.samples[0].rtt_ms: Input should be"),
    ("runs.0.result.samples.0.ttl", 256, "runs[0].result.samples[0].ttl: Input should be less"),
    ("runs.0.result.samples.0.seq", None, "runs[0].result.samples[0].seq: Input should be a valid"),
    ("runs.0.surprise", 1, "runs[0].surprise: Extra inputs are not permitted"),
    ("tests.0.tool", "Ping!", "tests[0].tool: String should match pattern"),
    ("tests.0.test_id", "has space", "tests[0].test_id: String should match pattern"),
    ("tests.0.target", "a\nb", "tests[0].target: String should match pattern"),
    ("tests.0.params", {"x": "y" * 20000}, "tests[0].params: at most 16384 bytes"),
    ("runs.1.result", {"sent": 1}, "runs[1]: a missed run has no result"),
    ("runs.0.result", None, "runs[0]: a finished run needs its result"),
    ("runs.2.target", None, "runs[2]: give test_key, or test_id, tool and target"),
    ("runs.0.tool", "ping", "runs[0]: give either test_key or test_id"),
    ("runs", {"r": 1}, "runs: Input should be a valid list"),
    ("tests", [{}] * 10_001, "tests: List should have at most 10000 items"),
]


@pytest.mark.parametrize(("path", "value", "start"), INVALID)
def test_invalid_fields_are_named(client: TestClient, path: str, value: Any, start: str) -> None:
    body = store(client, with_change(path, value), 422)
    assert body["error"].startswith(start)
    assert stored_runs(client) == []


def test_a_missing_field_is_named(client: TestClient) -> None:
    body = store(client, with_change("runs.0.planned_us", None, delete=True), 422)
    assert body["error"] == "runs[0].planned_us: Field required"


@pytest.mark.parametrize(
    ("path", "start"),
    [
        ("runs.0.result.values.medianRtt", "runs[0].result.values.medianRtt: must be a finite"),
        ("runs.0.result.samples.0.rtt_ms", "runs[0].result.samples[0].rtt_ms: Input should be"),
    ],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_infinity_are_refused(
    client: TestClient, path: str, start: str, value: float
) -> None:
    text = json.dumps(with_change(path, value))  # NaN, Infinity: Python's JSON reads them
    response = client.post(
        "/api/v1/store", content=text, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"].startswith(start)


def test_not_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/api/v1/store", content=b"{nope", headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not valid JSON")


@pytest.mark.parametrize("chunked", [False, True])
def test_body_larger_than_the_limit_is_413(db: str, chunked: bool) -> None:
    text = json.dumps(batch()).encode()
    with make_client(db, token=TOKEN, max_body_bytes=len(text) - 1) as c:
        content: Any = iter([text[:100], text[100:]]) if chunked else text
        response = c.post(
            "/api/v1/store", content=content, headers={**AUTH, "content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json() == {"error": f"request body larger than {len(text) - 1} bytes"}
    with make_client(db, token=TOKEN, max_body_bytes=len(text)) as c:
        assert store(c, batch())["new"] == 3


def test_body_that_is_not_utf8_is_400(client: TestClient) -> None:
    response = client.post(
        "/api/v1/store",
        content=b'{"runs": "\xff"}',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "There was an error parsing the body"}
