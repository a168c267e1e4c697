from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from netsonde.http.limits import RequestLimits
from netsonde.http.soap import soap_routes

from .rng import RngCache

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ENDPOINT = "/perfSONAR_PS/services/pinger/ma"


@pytest.fixture(scope="session")
def rng(tmp_path_factory: pytest.TempPathFactory) -> RngCache:
    return RngCache(tmp_path_factory.mktemp("rng"))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """An endpoint with no services of its own: only the Echo every endpoint gets."""
    return TestClient(Starlette(routes=soap_routes(RequestLimits(), {ENDPOINT: []})))
