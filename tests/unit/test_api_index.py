"""/api/v1/ answers with an index of the REST API, and /api/v1/docs works offline: the page names
only netsonde's own URLs, and each of them answers with the right content."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosting import host
from netsonde import __version__
from netsonde.api.app import create_app
from netsonde.services.status.settings import StatusSection

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    status = StatusSection(db=str(tmp_path / "status.sqlite"))  # serves /links, too
    with TestClient(create_app(host(tmp_path / "a.sqlite", sections={"status": status}))) as c:
        yield c


def test_api_root_is_an_index_of_the_served_routes(client: TestClient) -> None:
    answer = client.get("/api/v1/")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    index = answer.json()
    assert (index["version"], index["docs"], index["openapi"]) == (
        __version__,
        "/api/v1/docs",
        "/api/v1/openapi.json",
    )
    listed = {(r["path"], m) for r in index["resources"] for m in r["methods"]}
    for main in ("tests", "runs", "results", "aggregate", "links"):
        assert (f"/api/v1/{main}", "GET") in listed, main
    assert ("/api/v1/store", "POST") in listed
    # Every documented route is in the index, with its methods.
    documented = client.get("/api/v1/openapi.json").json()["paths"]
    assert {(p, m.upper()) for p, ops in documented.items() for m in ops} == listed
    assert all(r["summary"] for r in index["resources"])
    # Without the slash, too (a redirect to the index), and the root names it.
    assert client.get("/api/v1").json() == index
    assert client.get("/").json()["rest"] == "/api/v1/"


def page_urls(html: str) -> list[str]:
    """Every URL the Swagger UI page makes the browser load: src, href and the spec's url."""
    return re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"url: '([^']*)'", html)


def test_docs_page_loads_only_local_assets_that_answer(client: TestClient) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http:" not in page.text and "https:" not in page.text and "//" not in page.text
    urls = page_urls(page.text)
    expected = {
        ".js": "javascript",
        ".css": "text/css",
        ".png": "image/png",
        ".json": "application/json",
    }
    assert sorted(Path(u).suffix for u in urls) == sorted(expected)
    for url in urls:
        assert url.startswith("/api/v1/"), url
        got = client.get(url)
        assert got.status_code == 200, url
        assert expected[Path(url).suffix] in got.headers["content-type"], url
    js = next(u for u in urls if u.endswith(".js"))
    assert b"SwaggerUIBundle" in client.get(js).content
    # Swagger UI 4 cannot render an OpenAPI 3.1 document (FastAPI writes 3.1): the bundle is 5.x.
    assert client.get("/api/v1/openapi.json").json()["openapi"].startswith("3.1")
    assert re.search(r"/swagger-ui-5\.", str(_bundle_dir()))


def _bundle_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def test_only_the_pages_assets_are_served_and_counted_under_one_label(
    client: TestClient,
) -> None:
    for name in ("no-such-file.js", "swagger-ui-bundle.js.map", "index.html", "..%2Fsetup.py"):
        missing = client.get(f"/api/v1/docs/assets/{name}")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}, name
    assert client.head("/api/v1/docs/assets/swagger-ui.css").status_code == 200
    scrape = client.get("/metrics").text
    counted = set(re.findall(r'netsonde_http_requests_total\{[^}]*path="([^"]*)"', scrape))
    assert "/api/v1/docs/assets/{name}" in counted
    assert not any(p.startswith("/api/v1/docs/assets/") and "{" not in p for p in counted)
