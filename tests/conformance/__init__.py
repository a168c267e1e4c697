"""Conformance tests against the legacy perfSONAR-PS data in ../shared/conformance.

The data live next to the repository, never inside it. When they are missing every test that
needs them fails and says where they were expected: nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE_DIR = REPO.parent / "shared" / "conformance"


def vectors(*patterns: str) -> list[Any]:
    """pytest params, one per file matching ``patterns`` (globs under the conformance dir).

    A missing directory or an empty match gives a single ``None`` param instead of an empty
    list, because pytest would silently skip a test parametrised with nothing.
    """
    if not CONFORMANCE_DIR.is_dir():
        return [pytest.param(None, id="conformance-dir-missing")]
    files = sorted({p for pattern in patterns for p in CONFORMANCE_DIR.glob(pattern)})
    if not files:
        return [pytest.param(None, id="no-matching-vectors")]
    return [pytest.param(p, id=str(p.relative_to(CONFORMANCE_DIR))) for p in files]


def conformance_path(relative: str | Path | None = None) -> Path:
    """A path under the conformance dir; fails the test clearly if the data are absent."""
    if not CONFORMANCE_DIR.is_dir():
        pytest.fail(
            f"conformance data not found at {CONFORMANCE_DIR} "
            "(expected ../shared/conformance next to the repository)"
        )
    if relative is None:
        pytest.fail(f"no conformance vector matched under {CONFORMANCE_DIR}")
    path = CONFORMANCE_DIR / relative
    if not path.exists():
        pytest.fail(f"conformance file missing: {path}")
    return path
