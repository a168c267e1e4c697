"""Rollups: summaries of each test per 5 minutes, 1 hour and 1 day, kept up to date as runs
arrive, so that long windows read a few rows instead of every run. (Being written, issue 14.)

Both backends keep the same two tables (same DDL): ``rollup_pending``, the runs stored but not
yet rolled up (a backend inserts every newly stored run into it in the transaction that stores
the run), and ``rollups``, one digest per (test, resolution, bucket start).
"""

from __future__ import annotations

from netsonde.archive.stores import Migration

RESOLUTIONS_US = (300_000_000, 3_600_000_000, 86_400_000_000)  # 5 min, 1 h, 1 d

_DDL = """
CREATE TABLE rollup_pending (
    run_id TEXT PRIMARY KEY,
    test_key TEXT NOT NULL,
    planned_us BIGINT NOT NULL
);
CREATE TABLE rollups (
    test_key TEXT NOT NULL,
    resolution_us BIGINT NOT NULL,
    start_us BIGINT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (test_key, resolution_us, start_us)
);
"""

MIGRATIONS = [Migration(1, sqlite=_DDL, postgresql=_DDL)]

# What a backend runs (in the storing transaction) for each newly stored run:
# (run_id, test_key, planned_us).
ENQUEUE = (
    "INSERT INTO rollup_pending (run_id, test_key, planned_us) VALUES (?, ?, ?)"
    " ON CONFLICT (run_id) DO NOTHING"
)
