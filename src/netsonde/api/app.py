"""The one HTTP app: NMWG/SOAP at the historic perfSONAR-PS paths, REST under /api/v1 (with its
OpenAPI document at /api/v1/openapi.json), Prometheus text at /metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from netsonde import __version__
from netsonde.api.context import ApiContext
from netsonde.api.links import build_links_router
from netsonde.api.metrics import Metrics, MetricsMiddleware, metrics_route
from netsonde.api.pinger import PINGER_MA
from netsonde.api.rest import build_router
from netsonde.api.soap import NMWGService, soap_routes
from netsonde.api.status import STATUS_MA

PINGER_MA_PATH = "/perfSONAR_PS/services/pinger/ma"
PINGER_MP_PATH = "/perfSONAR_PS/services/pinger/mp"
STATUS_PATH = "/perfSONAR_PS/services/status"

# Later services (status, LS, realtime) add their paths here.
ENDPOINTS: Mapping[str, Sequence[NMWGService]] = {
    PINGER_MA_PATH: [PINGER_MA],
    PINGER_MP_PATH: [],  # the MP answers Echo only, as the original did
    STATUS_PATH: [STATUS_MA],
}


def create_app(ctx: ApiContext, metrics: Metrics | None = None) -> FastAPI:
    metrics = metrics or Metrics(ctx.status)
    app = FastAPI(
        title="netsonde",
        version=__version__,
        description="Measurement archive: REST JSON API. NMWG/SOAP endpoints are at "
        + ", ".join(ENDPOINTS)
        + "; Prometheus metrics at /metrics.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.include_router(build_router(ctx), prefix="/api/v1")
    app.include_router(build_links_router(ctx), prefix="/api/v1")
    app.router.routes.extend(soap_routes(ctx, ENDPOINTS))
    app.router.routes.append(metrics_route(metrics))

    @app.get("/", include_in_schema=False)
    def index() -> JSONResponse:
        return JSONResponse(
            {
                "service": "netsonde",
                "version": __version__,
                "nmwg": list(ENDPOINTS),
                "rest": "/api/v1/",
                "openapi": "/api/v1/openapi.json",
                "metrics": "/metrics",
            }
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Paths no route matches (404/405) answer in the REST API's error shape too.
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
