"""Lookup service benchmark: registrations, keepalives and queries at 10,000 services × 20
metadata, side by side in one run.

What is measured
    A lookup registry is filled in process (``LookupRegistry.register``, timed: the in-process
    rate) with ``--services`` services, each a ``service`` record and ``--metadata``
    ``psmetadata`` records (source, destination, eventType, tool, the MA's locator), cached
    under ``--data``. A real daemon (``netsonde run`` with ``[ls] enabled``, 2 API workers) is
    started on a fresh copy on 127.0.0.1, and:

      registrations  wrk (``--connections``, ``--seconds``) POSTs new records, each prepared
                     request sent once (a service and its metadata records, in turn) over the
                     JSON API; services/s = records/s ÷ (1 + metadata)
      keepalives     JSON bulk renew (``POST /api/v1/lookup/renew``, 1,000 uris a request) and
                     single renew (``POST /api/v1/lookup/records/{uri}``): records renewed/s
      key=value      one client, one request at a time (so the latency is the server's, not a
                     queue's), ``--queries`` of each kind: p50 / p99 ms over HTTP

Targets (issue 12): ≥ 1,000 keepalives/s, ≥ 200 registrations/s, key=value query p99 < 20 ms,
XQuery p99 < 200 ms.

Usage: python bench/lookup.py [--services 10000] [--metadata 20] [--seconds 10] [--write FILE]
Smoke test: python bench/lookup.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api import free_port, run_wrk, wait_for_port, wrk_script
from netsonde.services.lookup.records import record_in
from netsonde.services.lookup.registry import LookupRegistry
from report import write_section
from scheduler import machine

SECTION = "## Lookup service benchmark"
TOKEN = "bench-lookup-token-0123456789"
RECORDS = "/api/v1/lookup/records"
RENEW = "/api/v1/lookup/renew"
PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
OWAMP = "http://ggf.org/ns/nmwg/tools/owamp/2.0/"
SERVICE_TYPES = ("MA", "MP", "owamp", "bwctl", "ping")
BULK = 1000  # uris in one bulk renew: the most the API takes


# ---- what is registered -------------------------------------------------------------------


def host_of(i: int) -> str:
    return f"h{i // 4}.bench.example.net"  # four services a host


def locator(i: int) -> str:
    return f"http://{host_of(i)}:8075/perfSONAR_PS/services/s{i % 4}"


def dst(i: int, j: int) -> str:
    return f"10.{j}.{(i >> 8) & 255}.{i & 255}"


def event_type(j: int) -> str:
    return PINGER if j % 2 == 0 else OWAMP


def service_record(i: int) -> dict[str, list[str]]:
    return {
        "service-type": [SERVICE_TYPES[i % len(SERVICE_TYPES)]],
        "service-name": [f"bench service {i}"],
        "service-locator": [locator(i)],
        "service-host": [host_of(i)],
        "psservice-eventtypes": [PINGER, OWAMP],
    }


def metadata_record(i: int, j: int) -> dict[str, list[str]]:
    return {
        "psmetadata-ma-locator": [locator(i)],
        "psmetadata-src-address": [host_of(i)],
        "psmetadata-dst-address": [dst(i, j)],
        "psmetadata-event-types": [event_type(j)],
        "psmetadata-tool-name": ["ping" if j % 2 == 0 else "owping"],
    }


def registrant(i: int) -> str:
    """Who registers service ``i``: its host, as a fleet would (each holds a few records, well
    within max_records_per_registrant, which the registry counts at every registration)."""
    return host_of(i)


def json_records(i: int, metadata: int) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """Service ``i`` as records: the service, then its metadata."""
    yield "service", service_record(i)
    for j in range(metadata):
        yield "psmetadata", metadata_record(i, j)


# ---- the fill ------------------------------------------------------------------------------


def registry_at(path: Path) -> LookupRegistry:
    return LookupRegistry(path, max_ttl=366 * 86400)


def fill(path: Path, services: int, metadata: int) -> float:
    """``services`` × (1 + ``metadata``) records registered in process; records/s."""
    registry = registry_at(path)
    records = 0
    started = time.perf_counter()
    for i in range(services):
        for kind, values in json_records(i, metadata):
            registry.register(record_in(kind, values), registrant=registrant(i), ttl=30 * 86400)
            records += 1
        if i % 500 == 0:
            print(f"  {i:,}/{services:,} services…", file=sys.stderr, end="\r")
    spent = time.perf_counter() - started
    registry.close()
    return records / spent


def cached_fill(args: argparse.Namespace) -> tuple[Path, float]:
    """The filled registry (built once per size under ``--data``) and its fill rate."""
    where = args.data / f"{args.services}x{args.metadata}"
    db, done = where / "lookup.sqlite", where / "complete.json"
    if not done.exists():
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        print(f"filling {args.services:,} services × {args.metadata} metadata…", file=sys.stderr)
        rate = fill(db, args.services, args.metadata)
        done.write_text(json.dumps({"records_per_s": rate}))
    return db, float(json.loads(done.read_text())["records_per_s"])


# ---- the daemon ----------------------------------------------------------------------------


@dataclass
class Daemon:
    base: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)


def start_daemon(data: Path, db: Path) -> Daemon:
    port = free_port()
    config = data / "bench.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
        f'[ls]\nenabled = true\ntoken = "{TOKEN}"\ndb = "{db}"\nmax_ttl = "366d"\n'
    )
    netsonde = Path(sys.executable).parent / "netsonde"
    proc = subprocess.Popen(
        [str(netsonde), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port)
        end = time.monotonic() + 60
        while time.monotonic() < end:  # every worker up and answering the lookup API
            try:
                if httpx.get(base + RECORDS, params={"limit": 1}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(2)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return Daemon(base, proc)


# ---- loads ---------------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Load:
    """A throughput row: what, requests/s, items (records, services…) per request, latency."""

    name: str
    rps: float
    per_request: float
    unit: str
    p50: float
    p99: float
    non2xx: int
    note: str = ""


def wrk_load(
    d: Daemon,
    scripts: Path,
    name: str,
    reqs: list[tuple[str, str, str | None]],
    args: argparse.Namespace,
    *,
    headers: dict[str, str],
    per_request: float,
    unit: str,
) -> Load:
    script = scripts / f"{len(list(scripts.iterdir()))}.lua"
    wrk_script(script, reqs, headers=headers, cycle=True)
    print(f"running {name}…", file=sys.stderr)
    r = run_wrk(d.base, script, args.seconds, args.connections)
    sent = r["rps"] * args.seconds
    note = f"{sent / len(reqs):.1f} rounds of {len(reqs):,} prepared" if sent > len(reqs) else ""
    return Load(name, r["rps"], per_request, unit, r["p50"], r["p99"], int(r["non2xx"]), note)


def json_registrations(
    d: Daemon, scripts: Path, args: argparse.Namespace
) -> tuple[Load, list[tuple[str, str, str | None]]]:
    """New services over the JSON API, record by record (the service, then its metadata)."""
    first = args.services  # beyond the fill: new registrations, not upserts
    reqs: list[tuple[str, str, str | None]] = [
        (
            "POST",
            RECORDS,
            json.dumps({"type": kind, **values, "registrant": registrant(i), "ttl": 86400}),
        )
        for i in range(first, first + args.http_services)
        for kind, values in json_records(i, args.metadata)
    ]
    headers = {**AUTH, "Content-Type": "application/json"}
    load = wrk_load(
        d, scripts, "JSON register (POST /lookup/records)", reqs, args,
        headers=headers, per_request=1, unit="records",
    )  # fmt: skip
    return load, reqs


def uris(db: Path, n: int) -> list[str]:
    """``n`` live uris of the fill, at random."""
    registry = registry_at(db)
    from netsonde.services.lookup.registry import Query

    found: list[str] = []
    offset = 0
    while len(found) < n * 2:
        page = registry.query(Query({}, limit=1000, offset=offset))
        if not page:
            break
        found += [r.uri for r in page]
        offset += len(page)
    registry.close()
    random.Random(3).shuffle(found)
    return found[:n]


def json_keepalives(d: Daemon, scripts: Path, db: Path, args: argparse.Namespace) -> list[Load]:
    pool = uris(db, min(args.services * (1 + args.metadata), 50 * BULK))
    bulk = [
        ("POST", RENEW, json.dumps({"records": pool[k : k + BULK], "ttl": 86400}))
        for k in range(0, len(pool) - BULK + 1, BULK)
    ]
    headers = {**AUTH, "Content-Type": "application/json"}
    single = [("POST", f"{RECORDS}/{u}", "{}") for u in pool[:20_000]]
    return [
        wrk_load(
            d, scripts, f"JSON bulk renew ({BULK:,} uris a request)", bulk, args,
            headers=headers, per_request=BULK, unit="renewals",
        ),
        wrk_load(
            d, scripts, "JSON renew, one record a request", single, args,
            headers=headers, per_request=1, unit="renewals",
        ),
    ]  # fmt: skip


# ---- queries -------------------------------------------------------------------------------


@dataclass
class Latency:
    name: str
    p50: float
    p99: float
    answered: float  # mean items answered
    n: int


def latency(name: str, ask: Callable[[int], int], n: int) -> Latency:
    times, answered = [], 0
    for k in range(n):
        t = time.perf_counter()
        answered += ask(k)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return Latency(
        name, statistics.median(times), times[min(n - 1, int(n * 0.99))], answered / n, n
    )


def key_value_queries(d: Daemon, args: argparse.Namespace) -> list[Latency]:
    rnd = random.Random(11)
    services = args.services

    def ask(http: httpx.Client, params: dict[str, Any]) -> int:
        r = http.get(RECORDS, params=params)
        r.raise_for_status()
        return len(r.json())

    kinds: dict[str, Callable[[httpx.Client, int], int]] = {
        "one service by locator": lambda h, k: ask(
            h, {"service-locator": locator(rnd.randrange(services))}
        ),
        "a host's services (wildcard)": lambda h, k: ask(
            h, {"service-locator": f"http://{host_of(rnd.randrange(services))}:*"}
        ),
        "one path's metadata (src and dst)": lambda h, k: ask(
            h,
            {
                "psmetadata-src-address": host_of(i := rnd.randrange(services)),
                "psmetadata-dst-address": dst(i, rnd.randrange(args.metadata)),
            },
        ),
        "type and eventType, first 100": lambda h, k: ask(
            h,
            {
                "service-type": rnd.choice(SERVICE_TYPES),
                "psservice-eventtypes": PINGER,
                "limit": 100,
            },
        ),
        "eventType, page 50 of 100": lambda h, k: ask(
            h, {"psmetadata-event-types": OWAMP, "limit": 100, "offset": 4900}
        ),
    }
    found = []
    with httpx.Client(base_url=d.base, timeout=30) as http:
        for name, fn in kinds.items():
            print(f"querying: {name}…", file=sys.stderr)
            for k in range(20):  # warm-up: both workers, their caches
                fn(http, k)
            found.append(latency(name, lambda k, fn=fn: fn(http, k), args.queries))  # type: ignore[misc]
    return found


# ---- report --------------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    fill_rate: float,
    loads: list[Load],
    queries: list[Latency],
) -> str:
    cmd = shlex.join(["python", "bench/lookup.py", *sys.argv[1:]])
    per_service = 1 + args.metadata
    lines = [
        f"{SECTION}\n",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        machine(),
        f"- registry: {args.services:,} services × {args.metadata} metadata = "
        f"{args.services * per_service:,} records, filled in process at {fill_rate:,.0f} "
        f"records/s ({fill_rate / per_service:,.0f} services/s)",
        f"- server: `netsonde run` with `[ls] enabled`, 2 API workers (default), on the same "
        f"cores as the load; wrk -t1 -c{args.connections} -d{args.seconds}s per load; "
        f"queries one at a time from one client, {args.queries} each\n",
        "| load | requests/s | per second | p50 ms | p99 ms | non-2xx | note |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in loads:
        rate = r.rps * r.per_request
        also = ""
        if r.unit == "records":
            also = f" ({rate / per_service:,.0f} services with {args.metadata} metadata)"
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {rate:,.0f} {r.unit}{also} | {r.p50:.2f} "
            f"| {r.p99:.2f} | {r.non2xx:,} | {r.note} |"
        )
    lines += [
        "",
        "| query | p50 ms | p99 ms | answered (mean) | queries |",
        "|---|---:|---:|---:|---:|",
    ]
    for q in queries:
        lines.append(f"| {q.name} | {q.p50:.2f} | {q.p99:.2f} | {q.answered:,.1f} | {q.n:,} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--metadata", type=int, default=20, help="per service")
    ap.add_argument("--http-services", type=int, default=1000, help="registered over HTTP")
    ap.add_argument("--seconds", type=int, default=10, help="per wrk load")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--queries", type=int, default=500, help="of each kind")
    ap.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "netsonde-bench-lookup"
    )
    ap.add_argument("--quick", action="store_true", help="a smoke test: small and short")
    ap.add_argument("--write", type=Path, help="put the section into this file (BENCHMARKS.md)")
    args = ap.parse_args()
    if args.quick:
        args.services, args.metadata, args.http_services = 200, 5, 100
        args.seconds, args.queries = 2, 30
    if args.services < 10 or args.metadata < 1:
        ap.error("need at least 10 services and 1 metadata each")

    filled, fill_rate = cached_fill(args)
    with tempfile.TemporaryDirectory(prefix="netsonde-bench-lookup-") as tmp:
        work = Path(tmp)
        db = work / "lookup.sqlite"
        shutil.copyfile(filled, db)  # WAL checkpointed at close: the one file is the registry
        scripts = work / "wrk"
        scripts.mkdir()
        d = start_daemon(work, db)
        try:
            queries = key_value_queries(d, args)
            loads = [json_registrations(d, scripts, args)[0]]
            loads += json_keepalives(d, scripts, db, args)
        finally:
            d.stop()
    text = report(args, fill_rate, loads, queries)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
