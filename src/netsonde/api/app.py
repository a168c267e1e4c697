"""The one HTTP app, derived from the services table: each service's NMWG/SOAP endpoints at
their historic perfSONAR-PS paths and its REST routes under /api/v1 (an index at /api/v1/, the
OpenAPI document at /api/v1/openapi.json, Swagger UI served offline at /api/v1/docs), plus
Prometheus text at /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from netsonde import __version__
from netsonde.api import docs
from netsonde.api.metrics import Metrics, MetricsMiddleware, metrics_route
from netsonde.http.soap import soap_routes
from netsonde.nmwg.service import NMWGService
from netsonde.services import SERVICES
from netsonde.services.base import Host, Served, ServiceDef


def serve_all(host: Host, services: Sequence[ServiceDef] = SERVICES) -> list[Served]:
    """Each service as this process serves it (those the config leaves out are skipped)."""
    return [s for s in (d.serve(host) for d in services) if s is not None]


def create_app(
    host: Host, metrics: Metrics | None = None, services: Sequence[ServiceDef] = SERVICES
) -> FastAPI:
    metrics = metrics or Metrics(host.status)
    served = serve_all(host, services)
    endpoints: dict[str, list[NMWGService[Any]]] = {}
    for s in served:
        for path, nmwg in s.nmwg().items():
            if path in endpoints:
                raise ValueError(f"NMWG endpoint {path} is served twice")
            endpoints[path] = list(nmwg)
    app = FastAPI(
        title="netsonde",
        version=__version__,
        description="Measurement archive: REST JSON API. NMWG/SOAP endpoints are at "
        + ", ".join(endpoints)
        + "; Prometheus metrics at /metrics.",
        openapi_url=docs.OPENAPI_URL,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: docs_routes serves it
        redoc_url=None,
    )
    for s in served:
        for router in s.routers():
            app.include_router(router, prefix=docs.PREFIX)
    app.router.routes.extend(docs.docs_routes(app.title))
    app.router.routes.append(docs.index_route(app))
    app.router.routes.extend(soap_routes(host.limits, endpoints))
    app.router.routes.append(metrics_route(metrics))

    @app.get("/", include_in_schema=False)
    def index() -> JSONResponse:
        return JSONResponse(
            {
                "service": "netsonde",
                "version": __version__,
                "nmwg": list(endpoints),
                "rest": f"{docs.PREFIX}/",
                "docs": docs.DOCS_URL,
                "openapi": docs.OPENAPI_URL,
                "metrics": "/metrics",
            }
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Paths no route matches (404/405) answer in the REST API's error shape too.
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
