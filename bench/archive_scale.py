"""Archive benchmark: ingest and long windows on PostgreSQL and SQLite, side by side.

What is measured, in one run
    ingest    ``--ingest`` ping results (10 samples each, ``--tests`` tests) stored in batches of
              5,000 through ``Archive.store_runs``: PostgreSQL (binary COPY), SQLite, and the
              naive way, one INSERT per run and per result into PostgreSQL (commit per batch).
              Then the rollup worker's rate (``process_rollups`` until nothing waits).
    scale     ``--results`` results across ``--tests`` tests over one year (10 M × 1,000 by
              default: a run every 53 minutes per test), loaded the same way, rolled up, then
              random tests queried ``--queries`` times each:
                - a 30-day window at 1-hour resolution (REST ``aggregate``, 720 windows);
                - a 1-year window at 1-day resolution (REST ``aggregate``, 365 windows);
                - the PingER consolidation (AVERAGE, 3,600 s) of a 30-day window;
              and the same 30-day query answered from the raw runs (a window no rollup
              divides), which is what every query cost before the rollups.
    disk      bytes per million results on each backend (PostgreSQL: every relation of the
              database; SQLite: the file and its WAL after a checkpoint).

A private PostgreSQL server is started for the run (``tests/pgcluster.py``; fsync and
synchronous commit ON, as in production). Nothing here asserts a speed.

Usage: python bench/archive_scale.py [--results 10000000] [--tests 1000] [--ingest 200000]
       [--sqlite-results N] [--queries 100] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # pgcluster
sys.path.insert(0, str(Path(__file__).resolve().parent))  # report

import pgcluster
from netsonde.archive import Archive, open_archive
from netsonde.archive import pg as archive_pg
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.probes import ping
from netsonde.services.pinger import views
from report import write_section

HEADING = "## Archive benchmark: PostgreSQL and SQLite, ingest and long windows"
YEAR_S = 365 * 86400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
BATCH = 5_000
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000


def specs(n: int) -> list[TestSpec]:
    return [
        TestSpec(
            id=f"scale-{i:04d}",
            tool="ping",
            target=f"127.1.{i // 250}.{i % 250 + 1}",
            schedule=Schedule(interval=60),
            params=ping.Params(count=10, interval=0.2),
        )
        for i in range(n)
    ]


class Results:
    """Deterministic ping results: a pool of packet patterns, each run with its own times."""

    def __init__(self, seed: int = 42) -> None:
        rng = random.Random(seed)
        self._pool: list[tuple[list[float | None], dict[str, Any]]] = []
        for _ in range(500):
            base = rng.uniform(0.05, 80.0)
            rtts: list[float | None] = [
                None if rng.random() < 0.02 else round(base * rng.uniform(0.9, 1.6), 3)
                for _ in range(10)
            ]
            replies = [PacketSample(s + 1, r, 64, 64, None) for s, r in enumerate(rtts) if r]
            self._pool.append((rtts, ping._rounded(ping.summary(10, replies))))

    def run(self, spec: TestSpec, planned_us: int, n: int) -> Run:
        rtts, values = self._pool[n % len(self._pool)]
        replies = [
            PacketSample(s + 1, r, 64, 64, planned_us + s * 200_000 + 1000)
            for s, r in enumerate(rtts)
            if r is not None
        ]
        return Run.of(
            spec,
            planned_us,
            state=RunState.FINISHED,
            actual_us=planned_us + 1000,
            end_us=planned_us + 2_000_000,
            result=Result("ping", spec.target, 10, replies, values),
        )


def spread_runs(tests: list[TestSpec], total: int, span_s: int) -> Iterator[list[Run]]:
    """``total`` runs over ``span_s`` seconds, round-robin over the tests, in batches."""
    gen = Results()
    per_test = max(1, total // len(tests))
    step_us = span_s * 1_000_000 // per_test
    batch: list[Run] = []
    n = 0
    for k in range(per_test):
        for i, spec in enumerate(tests):
            batch.append(gen.run(spec, T0 * 1_000_000 + k * step_us + i * 1000, n))
            n += 1
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


# ---- ingest ----------------------------------------------------------------------------------


def timed_store(archive: Archive, batches: list[list[Run]]) -> float:
    t = time.perf_counter()
    for b in batches:
        archive.store_runs(b)
    return time.perf_counter() - t


def naive_insert(url: str, batches: list[list[Run]]) -> float:
    """One INSERT per run and per result, a commit per batch: what a plain ORM-ish writer does."""
    import json

    conn = archive_pg.connect(url, autocommit=False)
    conn.execute(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, test_key TEXT, slot BIGINT, state TEXT,"
        " planned_us BIGINT, actual_us BIGINT, end_us BIGINT, error TEXT)"
    )
    conn.execute(
        "CREATE TABLE results (run_id TEXT PRIMARY KEY, sent INT, summary TEXT, samples TEXT,"
        " extra TEXT)"
    )
    conn.commit()
    t = time.perf_counter()
    for b in batches:
        for r in b:
            conn.execute(
                "INSERT INTO runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (r.run_id, r.test_key, r.slot, str(r.state), r.planned_us, r.actual_us,
                 r.end_us, r.error),
            )  # fmt: skip
            res = r.result
            assert res is not None
            conn.execute(
                "INSERT INTO results VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (r.run_id, res.sent, json.dumps(res.values),
                 json.dumps([[p.seq, p.rtt_ms, p.ttl, p.size, p.recv_us] for p in res.replies]),
                 json.dumps(res.detail())),
            )  # fmt: skip
        conn.commit()
    elapsed = time.perf_counter() - t
    conn.close()
    return elapsed


def roll_up(archive: Archive) -> tuple[int, float]:
    t = time.perf_counter()
    done = 0
    while (n := archive.process_rollups(5000)) > 0:
        done += n
    return done, time.perf_counter() - t


def ingest(cluster: pgcluster.PgCluster, tmp: Path, n: int, n_tests: int) -> list[list[str]]:
    tests = specs(n_tests)
    batches = list(spread_runs(tests, n, 7 * 86400))
    stored = sum(len(b) for b in batches)
    rows: list[list[str]] = []
    for name, url in (
        ("PostgreSQL, COPY", cluster.database("ingest")),
        ("SQLite", f"sqlite:///{tmp / 'ingest.sqlite'}"),
    ):
        archive = open_archive(url)
        archive.register_tests(tests, T0 * 1_000_000)
        seconds = timed_store(archive, batches)
        rolled, roll_s = roll_up(archive)
        again = timed_store(archive, batches[:4])  # a re-delivery: nothing new
        archive.close()
        rows.append(
            [name, f"{stored / seconds:,.0f}", f"{rolled / roll_s:,.0f}",
             f"{4 * BATCH / again:,.0f}"]
        )  # fmt: skip
        print(f"  ingest {name}: {stored / seconds:,.0f}/s", file=sys.stderr)
    seconds = naive_insert(cluster.database("naive"), batches)
    rows.append(["PostgreSQL, row-by-row INSERT", f"{stored / seconds:,.0f}", "–", "–"])
    return rows


# ---- scale -----------------------------------------------------------------------------------


def load(url: str, tests: list[TestSpec], total: int) -> tuple[Archive, float, float]:
    archive = open_archive(url)
    archive.register_tests(tests, T0 * 1_000_000)
    t = time.perf_counter()
    stored = 0
    for b in spread_runs(tests, total, YEAR_S):
        stored += archive.store_runs(b)
        if stored % 500_000 < BATCH:
            print(f"  {url.split(':')[0]}: {stored:,} results…", file=sys.stderr)
    load_s = time.perf_counter() - t
    rolled, roll_s = roll_up(archive)
    print(f"  rolled up {rolled:,} in {roll_s:.0f} s", file=sys.stderr)
    return archive, stored / load_s, rolled / roll_s if roll_s else math.inf


def latencies(fn: Callable[[], object], n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)]


def queries(archive: Archive, tests: list[TestSpec], n: int) -> dict[str, tuple[float, float]]:
    rng = random.Random(7)
    end = T0 + YEAR_S
    month0 = end - 30 * 86400

    def key() -> str:
        return rng.choice(tests).key

    return {
        "30 days at 1 h (aggregate, 720 windows)": latencies(
            lambda: archive.aggregate(
                "meanRtt", HOUR_US, test_key=key(), since_us=month0 * 10**6, until_us=end * 10**6
            ),
            n,
        ),
        "1 year at 1 d (aggregate, 365 windows)": latencies(
            lambda: archive.aggregate(
                "meanRtt", DAY_US, test_key=key(), since_us=T0 * 10**6, until_us=end * 10**6
            ),
            n,
        ),
        "30 days, PingER AVERAGE per 3,600 s": latencies(
            lambda: views.data(
                archive, key(), month0, end, consolidation="AVERAGE", resolution=3600
            ),
            n,
        ),
        "30 days from the raw runs (59-min windows)": latencies(
            lambda: archive.aggregate(
                "meanRtt",
                59 * 60 * 10**6,
                test_key=key(),
                since_us=month0 * 10**6,
                until_us=end * 10**6,
            ),
            max(10, n // 5),
        ),
    }


def pg_bytes(url: str) -> int:
    conn = archive_pg.connect(url)
    (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone() or (0,)
    conn.close()
    return int(size)


def sqlite_bytes(path: Path) -> int:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


# ---- the report ------------------------------------------------------------------------------


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--results", type=int, default=10_000_000)
    ap.add_argument("--sqlite-results", type=int, default=None, help="default: --results")
    ap.add_argument("--tests", type=int, default=1000)
    ap.add_argument("--ingest", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--write", type=Path, default=None, help="BENCHMARKS.md to update")
    args = ap.parse_args()
    sqlite_n = args.sqlite_results or args.results
    load_at_start = os.getloadavg()[0]  # other work on the machine shows in every figure
    tests = specs(args.tests)
    with (
        tempfile.TemporaryDirectory(prefix="netsonde-bench-") as tmp_s,
        pgcluster.running(fsync=True) as cluster,
    ):
        tmp = Path(tmp_s)
        print("ingest…", file=sys.stderr)
        ingest_rows = ingest(cluster, tmp, args.ingest, args.tests)
        scale_rows: list[list[str]] = []
        disk_rows: list[list[str]] = []
        query_rows: dict[str, list[str]] = {}
        for name, url, n, size in (
            ("PostgreSQL", cluster.database("scale"), args.results, pg_bytes),
            ("SQLite", f"sqlite:///{tmp / 'scale.sqlite'}", sqlite_n, None),
        ):
            print(f"scale: {name}, {n:,} results…", file=sys.stderr)
            archive, load_rate, roll_rate = load(url, tests, n)
            for q, (p50, p99) in queries(archive, tests, args.queries).items():
                query_rows.setdefault(q, [q]).extend([f"{p50:.1f}", f"{p99:.1f}"])
            archive.close()
            nbytes = size(url) if size else sqlite_bytes(tmp / "scale.sqlite")
            scale_rows.append([name, f"{n:,}", f"{load_rate:,.0f}", f"{roll_rate:,.0f}"])
            disk_rows.append([name, f"{nbytes / n * 1e6 / 2**20:,.0f} MiB"])
    command = "python bench/archive_scale.py " + shlex.join(sys.argv[1:])
    text = "\n".join(
        [
            HEADING,
            "",
            f"`{command}` on {platform.node() or 'this machine'} ({os.cpu_count()} cores,"
            f" Python {platform.python_version()}), {time.strftime('%Y-%m-%d')}; a private"
            " PostgreSQL server with fsync and synchronous commit on; load average"
            f" {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
            "",
            f"Ingest of {args.ingest:,} ping results (10 samples each) in batches of {BATCH:,}:",
            "",
            table(["store", "results/s", "rolled up/s", "re-delivered (all known)/s"], ingest_rows),
            "",
            f"Scale: results across {args.tests:,} tests over one year:",
            "",
            table(["backend", "results", "loaded/s", "rolled up/s"], scale_rows),
            "",
            "Query latency, ms (one random test per query):",
            "",
            table(
                ["query", "PostgreSQL p50", "PostgreSQL p99", "SQLite p50", "SQLite p99"],
                list(query_rows.values()),
            ),
            "",
            "Disk per million results:",
            "",
            table(["backend", "disk / 1 M results"], disk_rows),
            "",
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, HEADING, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
