"""A status file the daemon stopped writing: its age, and the cause when the disk shows one
(a full or read-only disk is tested for real in tests/reliability/test_clean_messages.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from netsonde.mp.status import STALE_AFTER_S, stale, status_age


def test_a_fresh_status_is_not_stale_an_old_one_says_how_old(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert status_age(path) is None and stale(path) is None  # not written yet: no warning
    path.write_text("{}")
    assert stale(path) is None
    now = time.time()
    os.utime(path, (now - 45.2, now - 45.2))
    age = status_age(path, now)
    assert age is not None and abs(age - 45.2) < 0.01
    # A healthy disk: the cause is not the file system, the daemon's log says what it is.
    assert stale(path, now) == "status written 45 s ago; not written since (see the log)"
    os.utime(path, (now - STALE_AFTER_S + 0.5,) * 2)
    assert stale(path, now) is None
