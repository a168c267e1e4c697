"""REST /links and /links/{id}/status against a real link status store filled by hand (on each
backend in turn), so every expected range below can be read off the fixture."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI

from hosting import host
from netsonde.archive.stores import open_store
from netsonde.services import status as status_service
from netsonde.services.status.settings import StatusSection
from netsonde.services.status.store import COMPONENT, MIGRATIONS, LinkStatusStore
from netsonde.units import iso_seconds
from pgcluster import PgCluster

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
ISO0 = "2023-11-14T22:13:20Z"
A = "urn:ogf:network:domain=test:host=sw1:port=ge-0/0/1:link=a"  # a slash inside, too
B = "urn:ogf:network:domain=test:host=sw1:port=2:link=b"


def rng(start: int, end: int, oper: str, admin: str = "normaloperation") -> dict[str, Any]:
    return {
        "start": T0 + start,
        "start_iso": iso_seconds(T0 + start),
        "end": T0 + end,
        "end_iso": iso_seconds(T0 + end),
        "oper": oper,
        "admin": admin,
        "knowledge": "full",
    }


# A: up [0, 10], down [11, 20] (maintenance), up [21, 30]; B: unknown [5, 5] then up [6, 8].
A_UP1, A_DOWN, A_UP2 = rng(0, 10, "up"), rng(11, 20, "down", "maintenance"), rng(21, 30, "up")
B_UNK, B_UP = rng(5, 5, "unknown", "unknown"), rng(6, 8, "up")


def app_of(tmp_path: Path, status: StatusSection) -> FastAPI:
    served = status_service.serve(host(tmp_path / "a.sqlite", sections={"status": status}))
    app = FastAPI()
    for router in served.routers():
        app.include_router(router, prefix="/api/v1")
    return app


@pytest.fixture
def client(tmp_path: Path, store_location: str) -> Iterator[TestClient]:
    with LinkStatusStore(store_location) as store:
        for t in range(0, 31):
            oper, admin = ("down", "maintenance") if 11 <= t <= 20 else ("up", "normal")
            store.update(A, T0 + t, oper, admin)
        store.update(B, T0 + 5, "unknown", "unknown")
        for t in (6, 7, 8):
            store.update(B, T0 + t, "up", "normal")
    with TestClient(app_of(tmp_path, StatusSection(db=store_location))) as c:
        yield c


def status(client: TestClient, link: str, **params: Any) -> Any:
    return client.get(f"/api/v1/links/{link}/status", params=params)


def test_links_lists_every_link_with_its_latest_range(client: TestClient) -> None:
    r = client.get("/api/v1/links")
    assert r.status_code == 200
    assert r.json() == {"links": [{"link_id": B, "latest": B_UP}, {"link_id": A, "latest": A_UP2}]}
    assert A_UP2["start_iso"] == "2023-11-14T22:13:41Z"


def test_latest_when_no_query(client: TestClient) -> None:
    r = status(client, A)
    assert r.status_code == 200
    assert r.json() == {"link_id": A, "query": {**NONE, "kind": "latest"}, "ranges": [A_UP2]}


NONE = {"at": None, "at_iso": None, "from": None, "from_iso": None, "to": None, "to_iso": None}


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (str(T0), [A_UP1]),  # first second of the first range
        (str(T0 + 10), [A_UP1]),  # its last second: edges inclusive
        (str(T0 + 11), [A_DOWN]),
        (f"{T0 + 20}.999", [A_DOWN]),  # fractions floored
        ("2023-11-14T23:13:31+01:00", [A_DOWN]),  # = 22:13:31Z = T0 + 11
        (str(T0 + 31), []),  # after the last observation: nothing known
        (str(T0 - 1), []),
    ],
)
def test_point(client: TestClient, at: str, expected: list[dict[str, Any]]) -> None:
    r = status(client, A, at=at)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ranges"] == expected
    assert body["query"]["kind"] == "at"
    assert body["query"]["at_iso"] == iso_seconds(body["query"]["at"])


def test_point_iso_exact(client: TestClient) -> None:
    r = status(client, A, at=ISO0)
    assert r.json()["query"] == {**NONE, "kind": "at", "at": T0, "at_iso": ISO0}
    assert r.json()["ranges"] == [A_UP1]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 30, [A_UP1, A_DOWN, A_UP2]),
        (10, 11, [A_UP1, A_DOWN]),  # both edges touch
        (11, 20, [A_DOWN]),  # exactly one range: not clipped, no neighbours
        (12, 12, [A_DOWN]),
        (-100, -1, []),
        (31, 100, []),
        (25, 100, [A_UP2]),
    ],
)
def test_range(client: TestClient, start: int, end: int, expected: list[dict[str, Any]]) -> None:
    r = status(client, A, **{"from": str(T0 + start), "to": str(T0 + end)})
    assert r.status_code == 200, r.text
    assert r.json()["ranges"] == expected
    q = r.json()["query"]
    assert (q["kind"], q["from"], q["to"]) == ("range", T0 + start, T0 + end)


def test_history(client: TestClient) -> None:
    assert status(client, A, history="true").json()["ranges"] == [A_UP1, A_DOWN, A_UP2]
    assert status(client, B, history="true").json()["ranges"] == [B_UNK, B_UP]
    # history=false is the same as not asking for it
    assert status(client, B, history="false").json()["ranges"] == [B_UP]


def test_link_id_percent_encoded_works_too(client: TestClient) -> None:
    r = status(client, quote(A, safe=""), history="true")
    assert r.status_code == 200 and r.json()["link_id"] == A and len(r.json()["ranges"]) == 3


def test_unknown_link_is_404(client: TestClient) -> None:
    r = status(client, "urn:ogf:network:domain=test:host=nope", at=str(T0))
    assert r.status_code == 404
    assert r.json() == {"error": "no such link: 'urn:ogf:network:domain=test:host=nope'"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"at": str(T0), "history": "true"}, "give one of at, from and to, or history"),
        ({"at": str(T0), "from": str(T0), "to": str(T0)}, "give one of at, from and to"),
        ({"from": str(T0)}, "from and to: give both (a range) or neither"),
        ({"to": str(T0)}, "from and to: give both (a range) or neither"),
        ({"from": str(T0 + 1), "to": str(T0)}, f"from ({iso_seconds(T0 + 1)}) is after to"),
        ({"at": "yesterday"}, "at: invalid time 'yesterday'"),
        ({"at": "2023-11-14T22:13:20"}, "at: invalid time"),  # no offset: means nothing here
        ({"from": "x", "to": str(T0)}, "from: invalid time 'x'"),
        # Times no answer could print back (they once made a 500):
        ({"at": "999999999999"}, "at: time 999999999999 is out of range"),
        ({"at": "253402300800"}, "at: time 253402300800 is out of range"),
        ({"at": "9999-12-31T23:59:59-05:00"}, "at: time 253402318799 is out of range"),
        ({"at": "0001-01-01T00:00:00+01:00"}, "at: time -62135600400 is out of range"),
        ({"at": "-999999999999"}, "at: time -999999999999 is out of range"),
        ({"at": "1e30"}, "at: invalid time '1e30'"),
        ({"at": str(2**63 - 1)}, "at: invalid time '9223372036854775807'"),
        ({"from": str(T0), "to": "999999999999"}, "to: time 999999999999 is out of range"),
        ({"from": "999999999999", "to": "999999999999"}, "from: time 999999999999 is out of"),
    ],
)
def test_bad_queries_are_400(client: TestClient, params: dict[str, str], message: str) -> None:
    r = status(client, A, **params)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert set(r.json()) == {"error"}


def test_the_ends_of_the_time_range_are_times(client: TestClient) -> None:
    for at, iso in (
        ("253402300799", "9999-12-31T23:59:59Z"),
        ("-62135596800", "0001-01-01T00:00:00Z"),
    ):
        r = status(client, A, at=at)
        assert r.status_code == 200, r.text
        assert r.json()["query"]["at_iso"] == iso and r.json()["ranges"] == []


def test_a_row_stored_past_9999_does_not_break_the_other_links(
    tmp_path: Path, store_location: str
) -> None:
    """A store written before stores refused such times: every link still answers."""
    with LinkStatusStore(store_location) as store:
        store.update(A, T0, "up", "normal")
        store.update(B, T0, "down", "normal")
    raw = open_store(store_location, COMPONENT, MIGRATIONS)
    raw.execute("UPDATE link_status SET end_time = 253402300800 WHERE link_id = ?", (B,))
    raw.close()
    with TestClient(app_of(tmp_path, StatusSection(db=store_location))) as c:
        r = c.get("/api/v1/links")
        assert r.status_code == 200, r.text
        latest = {x["link_id"]: x["latest"] for x in r.json()["links"]}
        assert latest[A] == rng(0, 0, "up")
        assert (latest[B]["end"], latest[B]["end_iso"]) == (253402300799, "9999-12-31T23:59:59Z")
        assert c.get(f"/api/v1/links/{B}/status", params={"history": "true"}).status_code == 200


def test_bad_history_value_is_422(client: TestClient) -> None:
    r = status(client, A, history="perhaps")
    assert r.status_code == 422 and r.json()["error"].startswith("history: ")


def test_no_store_is_404(tmp_path: Path) -> None:
    with TestClient(app_of(tmp_path, StatusSection(enabled=False))) as c:
        r = c.get("/api/v1/links")
    assert r.status_code == 404
    assert r.json() == {"error": "this server keeps no link states ([status] enabled = false)"}


def test_a_lost_database_connection_is_503_then_answers_again(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str
) -> None:
    """PostgreSQL drops the API's connection (a restart): that request is 503 with
    Retry-After, and the next one answers from a new connection."""
    with LinkStatusStore(pg_url) as store:
        store.update(A, T0, "up", "normal")
    with TestClient(app_of(tmp_path, StatusSection(db=pg_url))) as c:
        assert c.get("/api/v1/links").status_code == 200
        pg_cluster.disconnect(pg_url)
        r = c.get("/api/v1/links")
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        assert r.json()["error"].startswith("link status store unavailable: ")
        r = c.get("/api/v1/links")
        assert r.status_code == 200, r.text
        assert [x["link_id"] for x in r.json()["links"]] == [A]
