from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from netsonde.http.soap import soap_routes
from netsonde.limits import RequestLimits

from . import CONFORMANCE_DIR, LEGACY_MARKER, legacy_corpus_present
from .rng import RngCache

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ENDPOINT = "/perfSONAR_PS/services/pinger/ma"

_LEGACY_TESTS = pytest.StashKey[int]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[_LEGACY_TESTS] = sum(1 for i in items if i.get_closest_marker(LEGACY_MARKER))


def _absent(count: int) -> str:
    return (
        f"legacy perfSONAR-PS corpus not found at {CONFORMANCE_DIR}: its {count} tests are "
        "skipped; the project's own vectors (tests/vectors) ran"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip before any fixture runs. Every skip is raised here, on one line with one reason,
    so ``-rs`` folds them into a single summary line."""
    if item.get_closest_marker(LEGACY_MARKER) and not legacy_corpus_present():
        pytest.skip(_absent(item.config.stash.get(_LEGACY_TESTS, 0)))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The one line, when the skip summary (``-rs``, on by the project's ``-ra``) does not
    already print it."""
    count = config.stash.get(_LEGACY_TESTS, 0)
    if count and not legacy_corpus_present() and not terminalreporter.hasopt("s"):
        terminalreporter.write_line(_absent(count))


@pytest.fixture(scope="session")
def rng(tmp_path_factory: pytest.TempPathFactory) -> RngCache:
    return RngCache(tmp_path_factory.mktemp("rng"))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """An endpoint with no services of its own: only the Echo every endpoint gets."""
    return TestClient(Starlette(routes=soap_routes(RequestLimits(), {ENDPOINT: []})))
