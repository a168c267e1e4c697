"""/api/v1/lookup/… through the real app, the [ls] section, and the expiry worker."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hosting import host, lookup_client
from netsonde import config
from netsonde import probes as tools
from netsonde.api.app import create_app
from netsonde.config import Config, ConfigError
from netsonde.services import SECTIONS
from netsonde.services import lookup as lookup_service
from netsonde.services.lookup.records import record_in
from netsonde.services.lookup.registry import LookupRegistry
from netsonde.services.lookup.settings import LookupSection

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "lookup-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORDS = "/api/v1/lookup/records"


def client_for(tmp_path: Path, **section: Any) -> TestClient:
    return lookup_client(tmp_path, TOKEN, **section)


@pytest.fixture
def client(tmp_path: Path, store_location: str) -> Iterator[TestClient]:
    """The REST routes with the registry on each backend in turn."""
    with client_for(tmp_path, db=store_location) as c:
        yield c


def service(locator: str, **more: Any) -> dict[str, Any]:
    return {"type": ["service"], "service-locator": [locator], **more}


def register(c: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = c.post(RECORDS, json=body, headers=AUTH)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def test_register_answers_the_record_and_registering_again_is_an_upsert(
    client: TestClient,
) -> None:
    first = client.post(RECORDS, json=service("http://a/", ttl="PT1H"), headers=AUTH)
    assert first.status_code == 201
    body = first.json()
    assert body["uri"].startswith("lookup/service/") and body["state"] == "registered"
    assert body["type"] == ["service"] and body["service-locator"] == ["http://a/"]
    assert "ttl" not in body and body["registrant"] == "token"
    assert body["expires"].endswith("Z")
    again = client.post(RECORDS, json=service("http://a/", **{"service-name": "A"}), headers=AUTH)
    assert again.status_code == 200 and again.json()["state"] == "renewed"
    assert again.json()["uri"] == body["uri"] and again.json()["service-name"] == ["A"]
    got = client.get(f"{RECORDS}/{body['uri']}")
    assert got.status_code == 200 and got.json()["service-name"] == ["A"]
    assert got.json()["expires"] > body["expires"]  # default ttl 2h > the 1h asked first


def test_writes_need_the_token_and_reads_do_not(client: TestClient) -> None:
    uri = register(client, service("http://a/"))["uri"]
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    for headers in ({}, wrong):
        for method, path, body in [
            ("POST", RECORDS, service("http://b/")),
            ("POST", f"{RECORDS}/{uri}", {}),
            ("POST", "/api/v1/lookup/renew", {"records": [uri]}),
            ("DELETE", f"{RECORDS}/{uri}", None),
        ]:
            answer = client.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401, (method, path)
            assert answer.json()["error"].startswith("missing or wrong token")
            assert TOKEN not in answer.text
    assert client.get(f"{RECORDS}/{uri}").status_code == 200
    assert [r["uri"] for r in client.get(RECORDS).json()] == [uri]


def test_renew_bulk_renew_delete_and_not_found(client: TestClient) -> None:
    a = register(client, service("http://a/", ttl=60))
    b = register(client, service("http://b/", ttl=60))
    renewed = client.post(f"{RECORDS}/{a['uri']}", json={"ttl": "2h"}, headers=AUTH)
    assert renewed.status_code == 200 and renewed.json()["expires"] > a["expires"]
    bare = client.post(f"{RECORDS}/{a['uri']}", headers=AUTH)  # no body: the default ttl
    assert bare.status_code == 200
    bulk = client.post(
        "/api/v1/lookup/renew",
        json={"records": [b["uri"], "lookup/x/y"], "ttl": ["PT3H"]},
        headers=AUTH,
    )
    assert bulk.status_code == 200
    assert [r["uri"] for r in bulk.json()["renewed"]] == [b["uri"]]
    assert bulk.json()["missing"] == ["lookup/x/y"]
    assert bulk.json()["renewed"][0]["expires"] > b["expires"]
    gone = client.delete(f"{RECORDS}/{a['uri']}", headers=AUTH)
    assert gone.status_code == 200 and gone.json() == {"uri": a["uri"], "state": "deleted"}
    for method in ("GET", "DELETE", "POST"):
        answer = client.request(method, f"{RECORDS}/{a['uri']}", headers=AUTH)
        assert answer.status_code == 404 and "no live record" in answer.json()["error"]


def test_query_by_key_value_with_operator_type_and_paging(client: TestClient) -> None:
    register(client, service("http://a/", **{"service-type": ["owamp"]}))
    register(client, service("http://b/", **{"service-type": ["bwctl"]}))
    register(client, {"type": "host", "host-name": ["ps.example.org"], "service-type": "owamp"})

    def uris_of(params: str) -> list[str]:
        answer = client.get(f"{RECORDS}?{params}")
        assert answer.status_code == 200, answer.text
        return sorted(r.get("service-locator", r.get("host-name"))[0] for r in answer.json())

    assert uris_of("service-type=owamp") == ["http://a/", "ps.example.org"]
    assert uris_of("service-type=owamp&type=service") == ["http://a/"]
    assert uris_of("service-type=owamp&service-locator=http://b/") == []
    assert uris_of("service-type=owamp&service-locator=http://b/&operator=any") == [
        "http://a/",
        "http://b/",
        "ps.example.org",
    ]
    assert uris_of("service-type=OWAMP&service-type=bwctl&type=service") == [
        "http://a/",
        "http://b/",
    ]
    assert uris_of("host-name=PS.*") == ["ps.example.org"]
    assert uris_of("service-locator=http://?/&limit=1") == ["http://a/"]
    assert uris_of("service-locator=http://?/&limit=1&offset=1") == ["http://b/"]
    assert uris_of("service-locator=http://?/&offset=2") == []


def test_an_expired_record_is_not_answered(tmp_path: Path, store_location: str) -> None:
    with client_for(tmp_path, db=store_location) as c:
        uri = register(c, service("http://a/", ttl=1))["uri"]
        time.sleep(2.1 - time.time() % 1)  # into the second after the one it expires at
        assert c.get(f"{RECORDS}/{uri}").status_code == 404
        assert c.get(RECORDS).json() == []


def test_a_registry_that_cannot_be_opened_is_a_503_to_retry(tmp_path: Path) -> None:
    """The PostgreSQL server is not there: 503 with Retry-After, naming the database."""
    gone = f"postgresql://netsonde@/lookup?host={tmp_path / 'no-server'}"
    with client_for(tmp_path, db=gone) as c:
        for answer in (c.get(RECORDS), c.post(RECORDS, json=service("http://a/"), headers=AUTH)):
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
            assert "cannot open lookup registry postgresql://netsonde@" in answer.json()["error"]


def test_hostile_bodies_get_4xx_naming_what_is_wrong(tmp_path: Path, store_location: str) -> None:
    limits = {"max_records_per_registrant": 2, "max_record_bytes": 2048}
    with client_for(tmp_path, db=store_location, **limits) as c:

        def post(**kw: Any) -> tuple[int, str]:
            answer = c.post(RECORDS, headers=AUTH, **kw)
            return answer.status_code, answer.json()["error"]

        status, why = post(content=b"{not json")
        assert status == 400 and why.startswith("body is not valid JSON")
        too_deep = (400, "body is nested too deeply (more than 8 levels)")
        assert post(content=b"[" * 1500) == too_deep
        assert post(content=b"[" * 9 + b"]" * 9) == too_deep  # valid JSON, still too deep

        assert post(content=b"[" * 3000) == (413, "request body larger than 2048 bytes")
        assert post(json=["service"]) == (422, "body: must be a JSON object")
        assert post(json={"service-locator": ["x"]})[0] == 422
        status, why = post(json={"type": "service", "k": {"deep": ["x"]}})
        assert (status, why) == (422, "k: must be a list of strings")
        assert post(json=service("http://a/", k=[1]))[1] == "k[0]: must be a string"
        assert post(json=service("http://a/", uri=["mine"]))[1].startswith("uri: is set by")
        assert post(json=service("http://a/", ttl="soon"))[1].startswith("ttl:")
        assert post(json=service("http://a/", ttl=-1)) == (
            400,
            "ttl must be a positive number of seconds, got -1.0",
        )
        assert post(json=service("http://a/", registrant="a\nb"))[1].startswith("registrant")
        answer = c.post(RECORDS, headers=AUTH, json=service("http://a/", k=[1]))
        assert answer.json()["errors"] == [{"field": "k[0]", "message": "must be a string"}]
        register(c, service("http://a/"))
        register(c, service("http://b/"))
        status, why = post(json=service("http://c/"))
        assert status == 409 and "max_records_per_registrant (2)" in why
        assert c.post(RECORDS, headers=AUTH, json=service("http://c/", registrant="other"))
        bulk = c.post("/api/v1/lookup/renew", headers=AUTH, json={"records": "x"})
        assert bulk.status_code == 422 and bulk.json()["error"].startswith("records:")
        # The service keeps answering.
        assert len(c.get(RECORDS).json()) == 3


def test_hostile_queries_get_4xx(client: TestClient) -> None:
    for params, status, words in [
        ("limit=0", 422, "limit"),
        ("limit=1001", 422, "limit"),
        ("offset=-1", 422, "offset"),
        ("operator=none", 422, "operator"),
        ("k=" + "*a" * 9, 400, "wildcards"),
        ("k=" + "a" * 300, 400, "256 characters"),
        ("&".join(f"k{i}=v" for i in range(33)), 400, "32 keys"),
    ]:
        answer = client.get(f"{RECORDS}?{params}")
        assert answer.status_code == status, params
        assert words in answer.json()["error"], (params, answer.json())


def test_off_by_default_the_lookup_paths_say_so(tmp_path: Path) -> None:
    with TestClient(create_app(host(tmp_path / "a.sqlite"))) as c:
        for method in ("GET", "POST", "DELETE"):
            answer = c.request(method, f"{RECORDS}/x")
            assert answer.status_code == 404
            assert answer.json() == {"error": lookup_service.DISABLED}


def parse(tmp_path: Path, *lines: str, archive: str | None = None) -> Config:
    head = ["[daemon]", f'data_dir = "{tmp_path}"']
    if archive is not None:
        head += ["[archive]", f'url = "{archive}"']
    text = "\n".join([*head, "[ls]", *lines]) + "\n"
    return config.parse(text, Path("t.toml"), tools.TOOLS, base=tmp_path, sections=SECTIONS)


def test_the_ls_section(tmp_path: Path) -> None:
    off = parse(tmp_path).sections["ls"]
    assert isinstance(off, LookupSection) and not off.enabled
    assert lookup_service.feed(parse(tmp_path)) is None
    (tmp_path / "tok").write_text(TOKEN + "\n")
    on = parse(tmp_path, "enabled = true", 'token_file = "tok"', 'ttl = "1h"')
    ls = on.sections["ls"]
    assert isinstance(ls, LookupSection) and ls.token == TOKEN and ls.ttl == 3600
    assert ls.db == str(tmp_path / "lookup.sqlite") and ls.max_ttl == 86400
    assert ls.max_record_bytes == 65536 and ls.max_records_per_registrant == 1000
    assert TOKEN not in repr(ls)
    # A fleet's archive on PostgreSQL holds the registry too, unless [ls] db says otherwise.
    fleet = "postgresql://netsonde@db.example/fleet"
    for lines, db in [([], fleet), ([f'db = "{fleet}2"'], fleet + "2")]:
        settled = parse(tmp_path, *lines, archive=fleet).sections["ls"]
        assert isinstance(settled, LookupSection) and settled.db == db
    (tmp_path / "sub").mkdir()
    for lines, words in [
        (["enabled = true"], "needs a token"),
        (['token = "short-secret"'], "at least 16"),
        (['token_file = "missing"'], "token_file"),
        (['ttl = "2d"'], "longer than max_ttl"),
        (['db = "sub"'], "is a directory"),
        (
            ['db = "postgresql://netsonde:short-secret@db.example/fleet"'],
            "must not hold a password",
        ),
    ]:
        with pytest.raises(ConfigError, match=words) as e:
            parse(tmp_path, *lines)
        assert "short-secret" not in str(e.value)  # a token is never echoed


def test_expiry_runs_as_a_supervised_worker(tmp_path: Path, store_location: str) -> None:
    lines = [
        "enabled = true",
        f'token = "{TOKEN}"',
        'expire_every = "1s"',
        f'db = "{store_location}"',
    ]
    feed = lookup_service.feed(parse(tmp_path, *lines))
    assert feed is not None
    other = LookupRegistry(store_location)
    now = time.time()
    other.register(record_in("host", {"host-name": ["a"]}), ttl=1, now=now - 5)
    other.register(record_in("host", {"host-name": ["b"]}), now=now)
    feed.worker.start()
    try:
        deadline = time.monotonic() + 5
        while feed.stats.stored < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed.stats.stored == 1 and feed.stats.error is None
        assert len(other) == 1 and feed.worker.is_alive()
        assert feed.worker.beat > time.monotonic() - 2
        assert feed.submit(None, None) == 0  # type: ignore[arg-type]
    finally:
        feed.close()
    assert not feed.worker.is_alive()


def test_nesting_counts_brackets_outside_strings_only() -> None:
    from netsonde.services.lookup.rest import nesting

    assert nesting(b'{"a": ["[[[[[[[[[[", "\\"[{"]}') == 2  # in strings, escaped quote too
    assert nesting(b"[[[]]]") == 3 and nesting(b"{}") == 1 and nesting(b"1") == 0
