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
