"""Conformance tests: the project's own protocol vectors (``tests/vectors``, always run) and
the legacy perfSONAR-PS corpus in ../shared/conformance (run in addition when present).

The legacy data live next to the repository, never inside it. A module that needs them says
so with ``pytestmark = LEGACY``; when the directory is absent, conftest.py skips those tests
with one line saying so. When it is present but a file is missing, :func:`conformance_path`
fails the test and names the file: a broken corpus is an error, not a skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE_DIR = REPO.parent / "shared" / "conformance"
OWN_VECTORS = REPO / "tests" / "vectors"

LEGACY_MARKER = "legacy_corpus"
LEGACY = getattr(pytest.mark, LEGACY_MARKER)
"""Marks a test (or, as ``pytestmark``, a module) that reads the legacy corpus."""


def legacy_corpus_present() -> bool:
    return CONFORMANCE_DIR.is_dir()


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
