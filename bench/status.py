"""Link-state store benchmark: an SNMP-like poller feeding the Status MA's store.

What is measured
    ``--links`` links are polled in ``--rounds`` rounds, ``--interval`` seconds apart; in each
    round ``--change`` (1 %) of the links, chosen at random, change operational state and every
    link is stored (one update per link per round), round by round, each round one batch in one
    transaction. Store rate = updates / seconds spent in the store calls (building the rows is
    not timed). Then query latency, ``--queries`` times each with random links and times:
      point     state of 100 links at one time
      range     states of 100 links over a window of a tenth of the polled span
      history   one link's whole history
    Side by side, in the same run, on the same rows:
      netsonde  ``LinkStatusStore.update_many`` (ranges: an unchanged state extends its range)
      naive     raw sqlite3, one INSERT per poll into (link_id, time) — no range compression,
                the same WAL file settings; its queries answer with the raw polls (point: the
                newest poll at or before the time)

Issue targets: >= 20,000 updates/s; point query for 100 links < 10 ms; one link's history
< 20 ms. The issue's full size is 10,000 links × 1,000 rounds (10M updates).

Usage: python bench/status.py [--links 10000] [--rounds 1000] [--change 0.01] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from netsonde.services.status.store import LinkStatusStore

T0 = 1_700_000_000  # first round, unix seconds
OPER = ("up", "down", "degraded")
ADMIN = "normaloperation"

Row = tuple[str, int, str, str, str]


class Naive:
    """The peer: every poll is a row."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE polls (link_id TEXT NOT NULL, time INTEGER NOT NULL, oper TEXT NOT NULL,"
            " admin TEXT NOT NULL, knowledge TEXT NOT NULL, PRIMARY KEY (link_id, time))"
            " WITHOUT ROWID"
        )

    def store(self, rows: list[Row]) -> None:
        with self.db:
            self.db.executemany("INSERT INTO polls VALUES (?, ?, ?, ?, ?)", rows)

    def point(self, links: list[str], t: int) -> int:
        sql = "SELECT * FROM polls WHERE link_id = ? AND time <= ? ORDER BY time DESC LIMIT 1"
        return sum(len(self.db.execute(sql, (link, t)).fetchall()) for link in links)

    def range(self, links: list[str], start: int, end: int) -> int:
        sql = "SELECT * FROM polls WHERE link_id = ? AND time BETWEEN ? AND ? ORDER BY time"
        return sum(len(self.db.execute(sql, (link, start, end)).fetchall()) for link in links)

    def history(self, link: str) -> int:
        sql = "SELECT * FROM polls WHERE link_id = ? ORDER BY time"
        return len(self.db.execute(sql, (link,)).fetchall())

    def rows(self) -> int:
        return self.db.execute("SELECT count(*) FROM polls").fetchone()[0]


class Netsonde:
    def __init__(self, path: Path) -> None:
        self.store_ = LinkStatusStore(path)

    def store(self, rows: list[Row]) -> None:
        self.store_.update_many(rows)

    def point(self, links: list[str], t: int) -> int:
        return sum(r is not None for r in self.store_.at(links, t).values())

    def range(self, links: list[str], start: int, end: int) -> int:
        return sum(len(v) for v in self.store_.between(links, start, end).values())

    def history(self, link: str) -> int:
        return len(self.store_.history(link))

    def rows(self) -> int:
        return len(self.store_)


def link_id(i: int) -> str:
    return (
        f"urn:ogf:network:domain=bench.example.net:host=r{i // 48}:port=ge-0/0/{i % 48}:link=l{i}"
    )


def poll_rounds(args: argparse.Namespace, rnd: random.Random):
    """Yield each round's rows: every link's current state, 1 % of them just changed."""
    ids = [link_id(i) for i in range(args.links)]
    state = [OPER[0]] * args.links
    changes = max(1, round(args.links * args.change))
    for r in range(args.rounds):
        for i in rnd.sample(range(args.links), changes) if r else ():
            state[i] = rnd.choice([s for s in OPER if s != state[i]])
        t = T0 + r * args.interval
        yield [(ids[i], t, state[i], ADMIN, "full") for i in range(args.links)]


def load(peers: dict[str, Naive | Netsonde], args: argparse.Namespace) -> dict[str, float]:
    spent = dict.fromkeys(peers, 0.0)
    for r, rows in enumerate(poll_rounds(args, random.Random(args.seed))):
        for name, peer in peers.items():
            t = time.perf_counter()
            peer.store(rows)
            spent[name] += time.perf_counter() - t
        if r % 10 == 0:
            print(f"  round {r:,}/{args.rounds:,}", file=sys.stderr, end="\r")
    return spent


def latency(fn: Callable[[], int], n: int) -> tuple[float, float, int]:
    """p50 and p99 in ms over ``n`` calls, and the mean number of rows answered."""
    times, rows = [], 0
    for _ in range(n):
        t = time.perf_counter()
        rows += fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(n - 1, int(n * 0.99))], rows // n


def queries(peer: Naive | Netsonde, args: argparse.Namespace) -> dict[str, tuple]:
    rnd = random.Random(args.seed + 1)
    span = (args.rounds - 1) * args.interval
    window = span // 10

    def some_links() -> list[str]:
        return [link_id(i) for i in rnd.sample(range(args.links), 100)]

    def point() -> int:
        return peer.point(some_links(), T0 + rnd.randrange(span + 1))

    def range_() -> int:
        start = T0 + rnd.randrange(span - window + 1)
        return peer.range(some_links(), start, start + window)

    def history() -> int:
        return peer.history(link_id(rnd.randrange(args.links)))

    return {
        "point, 100 links": latency(point, args.queries),
        f"range, 100 links × {window:,} s": latency(range_, args.queries),
        "history, 1 link": latency(history, args.queries),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--links", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1_000)
    ap.add_argument("--change", type=float, default=0.01, help="share of links changing per round")
    ap.add_argument("--interval", type=int, default=60, help="seconds between rounds")
    ap.add_argument("--queries", type=int, default=200, help="repetitions of each query")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.rounds < 10 or args.links < 100:
        ap.error("need at least 100 links and 10 rounds")

    with tempfile.TemporaryDirectory(prefix="netsonde-bench-status-") as tmp:
        paths = {"netsonde": Path(tmp, "status.sqlite"), "naive": Path(tmp, "naive.sqlite")}
        peers = {"netsonde": Netsonde(paths["netsonde"]), "naive": Naive(paths["naive"])}
        print(f"storing {args.links * args.rounds:,} updates per peer…", file=sys.stderr)
        spent = load(peers, args)
        print("\nquerying…", file=sys.stderr)
        results = {name: queries(peer, args) for name, peer in peers.items()}
        sizes = {
            name: sum(f.stat().st_size for f in Path(tmp).glob(p.name + "*"))
            for name, p in paths.items()
        }
        rows = {name: peer.rows() for name, peer in peers.items()}
        report(args, spent, results, sizes, rows)
    return 0


def report(
    args: argparse.Namespace,
    spent: dict[str, float],
    results: dict[str, dict[str, tuple]],
    sizes: dict[str, int],
    rows: dict[str, int],
) -> None:
    updates = args.links * args.rounds
    cmd = shlex.join(["python", "bench/status.py", *sys.argv[1:]])
    print("## Link status store benchmark\n")
    print(f"- command: `{cmd}`")
    print(
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"- load: {args.links:,} links × {args.rounds:,} rounds = {updates:,} updates, "
        f"{args.change:.0%} of links changing state per round; {args.queries} queries each\n"
    )
    print(
        "| peer | updates/s | rows stored | file MB |"
        + "".join(f" {q} p50 / p99 ms (rows) |" for q in results["netsonde"])
    )
    print("|---|---:|---:|---:|" + "---:|" * len(results["netsonde"]))
    for name in results:
        cells = "".join(
            f" {p50:.2f} / {p99:.2f} ({n:,}) |" for p50, p99, n in results[name].values()
        )
        print(
            f"| {name} | {updates / spent[name]:,.0f} | {rows[name]:,} | "
            f"{sizes[name] / 1e6:.1f} |{cells}"
        )


if __name__ == "__main__":
    sys.exit(main())
