"""How the REST API describes itself to a person: a JSON index at /api/v1/ and Swagger UI at
/api/v1/docs. Swagger UI's script, stylesheet and icon are served by netsonde itself (from the
swagger-ui-bundle-v2 package), so the docs work on a measurement point without internet access."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route
from swagger_ui_bundle import swagger_ui_path

from netsonde import __version__

PREFIX = "/api/v1"
OPENAPI_URL = f"{PREFIX}/openapi.json"
DOCS_URL = f"{PREFIX}/docs"
ASSETS_URL = f"{DOCS_URL}/assets"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
BUNDLE = Path(str(swagger_ui_path))  # swagger-ui-dist's files, as the package ships them


def docs_routes(title: str) -> list[BaseRoute]:
    """The Swagger UI page and the three files it loads; the page names only local URLs."""
    js, css, icon = (f"{ASSETS_URL}/{name}" for name in ASSETS)
    html = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{title} API",
        swagger_js_url=js,
        swagger_css_url=css,
        swagger_favicon_url=icon,
        # Swagger UI would otherwise ask a public validator about the document.
        swagger_ui_parameters={"validatorUrl": None},
    ).body

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    async def asset(request: Request) -> FileResponse:
        # Only the files the page loads (not the bundle's demo page or source maps); a route
        # with a template, so /metrics counts them under one label.
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(404)
        return FileResponse(BUNDLE / name)

    return [
        Route(DOCS_URL, page, methods=["GET"], include_in_schema=False),
        Route(f"{ASSETS_URL}/{{name}}", asset, methods=["GET"], include_in_schema=False),
    ]


def api_index(openapi: dict[str, Any]) -> dict[str, Any]:
    """What /api/v1/ answers: the version, where the docs are, and every REST route, read from
    the app's OpenAPI document (so it lists what this process serves, as the docs do)."""
    resources = [
        {
            "path": path,
            "methods": sorted(m.upper() for m in ops),
            "summary": "; ".join(dict.fromkeys(op.get("summary", "") for op in ops.values())),
        }
        for path, ops in openapi.get("paths", {}).items()
    ]
    return {
        "service": "netsonde",
        "api": PREFIX,
        "version": __version__,
        "docs": DOCS_URL,
        "openapi": OPENAPI_URL,
        "resources": resources,
    }


def index_route(app: FastAPI) -> Route:
    """``GET /api/v1/``: the index, built at the first request (from FastAPI's cached schema)."""
    built: list[bytes] = []

    async def index(request: Request) -> Response:
        if not built:
            built.append(json.dumps(api_index(app.openapi())).encode())
        return Response(built[0], media_type="application/json")

    return Route(f"{PREFIX}/", index, methods=["GET"], include_in_schema=False)
