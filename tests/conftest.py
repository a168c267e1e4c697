from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def netsonde_bin() -> Path:
    """The installed console script, next to the interpreter running the tests."""
    path = Path(sys.executable).parent / "netsonde"
    assert path.exists(), f"{path} missing: run the tests through `make test`"
    return path
