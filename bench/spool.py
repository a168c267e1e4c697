"""Spool benchmark: results/s delivered from a measurement point's spool to a remote archive.

What is measured
    ``--results`` ping-like runs (10 packets each, over ``--tests`` tests) are built up front.
    The remote is the real daemon (``netsonde run`` with an [api] token and no tests, so it
    only serves), started as a separate process on 127.0.0.1 with a fresh archive per workload.
      spool, live     every run submitted at once to a running spool with the remote up: time
                      from the first submit until the remote has all of them (encode, outbox
                      commit, POST /api/v1/store in batches, delete)
      spool, outage   the remote is down while every run is submitted and committed to the
                      outbox (the fill rate); then the remote starts and the backlog drains
                      (the drain rate, timed from the first delivery after the remote listens)
      spool, NMWG     the same as live through protocol "nmwg" to the PingER MA; ``--nmwg``
                      results
    Side by side, in the same run:
      BatchWriter     the local path: archive/writer.py into raw SQLite, no HTTP at all
      naive HTTP      one POST /api/v1/store per result over one keep-alive connection (the
                      test inline), what a sender without a spool would do; ``--naive`` results

Usage: python bench/spool.py [--results 50000] [--tests 100] [--batch 500] [--naive 5000]
       [--nmwg 10000] [--workers 0] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from netsonde.archive import open_archive
from netsonde.archive.writer import BatchWriter
from netsonde.metrics import pinger_summary
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.mp.spool import Spool, rest_run, rest_test
from netsonde.probes import ping
from report import write_section

T0 = 1_700_000_000_000_000  # first run, epoch µs
STEP = 60_000_000  # one run a minute per test
TOKEN = "bench-token-0123456789"
SECTION = "## Spool benchmark"


def workload(n_tests: int, n_results: int) -> list[tuple[TestSpec, Run]]:
    """n_results finished ping runs of 10 packets, round-robin over n_tests tests."""
    rng = random.Random(7)
    specs = [
        TestSpec(
            id=f"bench-{i:04d}",
            tool="ping",
            target=f"127.0.{i // 250}.{i % 250 + 1}",
            schedule=Schedule(interval=60),
            params=ping.Params(count=10, interval=0.2),
            source="bench-mp",
        )
        for i in range(n_tests)
    ]
    out = []
    for k in range(n_results):
        spec = specs[k % n_tests]
        planned = T0 + (k // n_tests) * STEP
        replies = [
            PacketSample(seq, round(rng.uniform(0.2, 5.0), 3), 64, 64, planned + seq * 200_000)
            for seq in range(1, 11)
        ]
        result = Result("ping", spec.target, 10, replies, pinger_summary(10, replies))
        run = Run.of(
            spec,
            planned,
            state=RunState.FINISHED,
            actual_us=planned + 120,
            end_us=planned + 2_100_000,
            result=result,
        )
        out.append((spec, run))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Remote:
    """The real daemon as the remote archive, in a process (and session) of its own."""

    def __init__(self, data: Path, port: int, workers: int) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.db = data / "archive.sqlite"
        self.config = data / "remote.toml"
        self.config.write_text(
            f'[daemon]\ndata_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
            f'[archive]\nurl = "sqlite:///{self.db}"\n'
            f'[api]\ntoken = "{TOKEN}"\nworkers = {workers}\n'
        )
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        netsonde = Path(sys.executable).parent / "netsonde"
        self.proc = subprocess.Popen(
            [str(netsonde), "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise SystemExit(f"the remote did not come up on {self.url}")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)

    def count(self) -> int:
        with sqlite3.connect(self.db) as db:
            return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])


def wait_until(what: Callable[[], bool], timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not what():
        if time.monotonic() > end:
            raise SystemExit("timed out")
        time.sleep(0.01)


def spool_delivery(
    runs: list[tuple[TestSpec, Run]], work: Path, args: argparse.Namespace, protocol: str
) -> dict:
    """Submit ``runs`` to a spool delivering to a fresh remote; time until all are stored."""
    remote = Remote(work / f"{protocol}-remote", free_port(), args.workers)
    remote.start()
    spool = Spool(
        work / f"{protocol}-outbox.sqlite", remote.url, protocol=protocol,  # type: ignore[arg-type]
        token=TOKEN, batch_size=args.batch,
    )  # fmt: skip
    spool.start()
    try:
        started = time.monotonic()
        for spec, run in runs:
            spool.submit(spec, run)
        wait_until(lambda: spool.stats["delivered"] >= len(runs) and spool.stats["backlog"] == 0)
        elapsed = time.monotonic() - started
        stored = remote.count()
    finally:
        spool.close()
        remote.stop()
    assert stored == len(runs), (stored, len(runs))
    note = "submit → stored at the remote" if protocol == "rest" else (
        "PingER MeasurementArchiveStoreRequest"
    )  # fmt: skip
    return {"n": len(runs), "s": elapsed, "note": note}


def spool_outage(runs: list[tuple[TestSpec, Run]], work: Path, args: argparse.Namespace) -> list:
    remote = Remote(work / "outage-remote", free_port(), args.workers)
    spool = Spool(
        work / "outage-outbox.sqlite", remote.url, token=TOKEN, batch_size=args.batch,
        max_backoff=1.0,
    )  # fmt: skip
    spool.start()
    try:
        started = time.monotonic()
        for spec, run in runs:
            spool.submit(spec, run)
        wait_until(lambda: spool.stats["backlog"] == len(runs))
        fill = time.monotonic() - started
        size = (work / "outage-outbox.sqlite").stat().st_size
        remote.start()
        up = time.monotonic()
        wait_until(lambda: spool.stats["delivered"] > 0)
        first, first_n = time.monotonic(), spool.stats["delivered"]
        wait_until(lambda: spool.stats["backlog"] == 0)
        drain = time.monotonic() - first
        stored = remote.count()
    finally:
        spool.close()
        remote.stop()
    assert stored == len(runs), (stored, len(runs))
    return [
        {"n": len(runs), "s": fill, "note": f"remote down; outbox {size / 1e6:.0f} MB"},
        {
            "n": len(runs) - first_n,
            "s": drain,
            "note": f"after the first delivery, {first - up:.2f} s after the remote listened",
        },
    ]


def batch_writer(runs: list[tuple[TestSpec, Run]], work: Path) -> dict:
    archive = open_archive(f"sqlite:///{work / 'local.sqlite'}")
    archive.register_tests({s.key: s for s, _ in runs}.values(), T0)
    writer = BatchWriter(archive)
    started = time.monotonic()
    for _, run in runs:
        writer.submit(run)
    writer.close(600)
    elapsed = time.monotonic() - started
    assert writer.stored == len(runs), writer.stored
    archive.close()
    return {"n": len(runs), "s": elapsed, "note": "in process, no HTTP"}


def naive_http(runs: list[tuple[TestSpec, Run]], work: Path, args: argparse.Namespace) -> dict:
    remote = Remote(work / "naive-remote", free_port(), args.workers)
    remote.start()
    sample = runs[: args.naive]
    try:
        with httpx.Client(
            headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            trust_env=False,
            timeout=30,
        ) as client:
            started = time.monotonic()
            for spec, run in sample:
                inline = {**json.loads(rest_test(spec)), **json.loads(rest_run(run))}
                del inline["test_key"]
                r = client.post(
                    remote.url + "/api/v1/store", content=json.dumps({"runs": [inline]})
                )
                r.raise_for_status()
            elapsed = time.monotonic() - started
        stored = remote.count()
    finally:
        remote.stop()
    assert stored == len(sample), stored
    return {"n": len(sample), "s": elapsed, "note": "one keep-alive connection, no outbox"}


def section(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    cmd = " ".join([".venv/bin/python", "bench/spool.py", *map(shlex.quote, sys.argv[1:])])
    lines = [
        SECTION,
        "",
        f"- command: `{cmd}`",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"CPython {platform.python_version()}; the remote (`netsonde run`, [api] workers = "
        f"{args.workers}) on the same cores",
        f"- results: ping-like runs with 10 packets each, over {args.tests} tests; spool batch "
        f"{args.batch}",
        "",
        "| workload | results | seconds | results/s | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['n']:,} | {r['s']:.2f} | {r['n'] / r['s']:,.0f} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--results", type=int, default=50_000)
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--batch", type=int, default=500, help="spool batch_size")
    ap.add_argument("--naive", type=int, default=5_000, help="results for the naive sender")
    ap.add_argument("--nmwg", type=int, default=10_000, help="results for the NMWG protocol")
    ap.add_argument("--workers", type=int, default=0, help="the remote's [api] workers")
    ap.add_argument("--write", type=Path, help="put the section into this file (BENCHMARKS.md)")
    args = ap.parse_args()

    print(f"building {args.results:,} runs…", file=sys.stderr)
    runs = workload(args.tests, args.results)
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="netsonde-bench-spool-") as tmp:
        work = Path(tmp)
        print("spool, live…", file=sys.stderr)
        rows.append(
            ("spool → remote REST store, remote up", spool_delivery(runs, work, args, "rest"))
        )
        print("spool, nmwg…", file=sys.stderr)
        rows.append(
            (
                "spool → remote PingER MA (NMWG), remote up",
                spool_delivery(runs[: args.nmwg], work, args, "nmwg"),
            )
        )
        print("spool, outage…", file=sys.stderr)
        fill, drain = spool_outage(runs, work, args)
        rows.append(("spool, outage: submit → outbox (fill)", fill))
        rows.append(("spool, outage: backlog drain after the remote starts", drain))
        print("BatchWriter…", file=sys.stderr)
        rows.append(("peer: BatchWriter → local raw SQLite", batch_writer(runs, work)))
        print("naive sender…", file=sys.stderr)
        rows.append(("peer: naive, one HTTP request per result", naive_http(runs, work, args)))
    text = section(rows, args)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
