from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsonde import proctree
from netsonde.proctree import ProcInfo

sys.path.insert(0, str(Path(__file__).parent))

import pgcluster  # found through the path above


@pytest.fixture
def netsonde_bin() -> Path:
    """The installed console script, next to the interpreter running the tests."""
    path = Path(sys.executable).parent / "netsonde"
    assert path.exists(), f"{path} missing: run the tests through `make test`"
    return path


@pytest.fixture
def cleanup() -> Iterator[list[ProcInfo]]:
    """Kill, after the test, every process it left below us and those it lists here."""
    extra: list[ProcInfo] = []
    yield extra
    left = proctree.descendants(os.getpid(), proctree.snapshot(cmdline=False))
    proctree.signal_all([*left, *extra], signal.SIGKILL)
    for p in left:
        if p.ppid == os.getpid():
            os.waitpid(p.pid, 0)


# ---- PostgreSQL: one private server for the whole run, a fresh database per test --------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.PgCluster]:
    """The suite's own PostgreSQL server (initdb into a temporary directory, a Unix socket)."""
    with pgcluster.running() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: pgcluster.PgCluster) -> Iterator[str]:
    """A new empty database on the suite's server, dropped after the test."""
    url = pg_cluster.database()
    yield url
    pg_cluster.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test once per archive backend."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a test's archive (or a service's store) lives, on each backend in turn: a SQLite
    file, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'archive.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a service's own tables live, as ``Paths.store`` gives it, on each backend in
    turn: a SQLite file path, or a fresh PostgreSQL database's URL."""
    if backend == "sqlite":
        return str(tmp_path / "store.sqlite")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_store_location(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``store_location`` for a module's shared fixtures: the module runs once per backend."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("store") / "store.sqlite")
        return
    cluster: pgcluster.PgCluster = request.getfixturevalue("pg_cluster")
    url = cluster.database()
    yield url
    cluster.drop(url)
