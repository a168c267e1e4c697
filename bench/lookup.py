"""Lookup service benchmark: registrations, keepalives and queries at 10,000 services × 20
metadata, NMWG and JSON side by side in one run, and the XQuery engine beside a plain lxml
XPath scan of the same documents.

What is measured
    A lookup registry is filled in process, through the real app (no network), with
    ``--services`` NMWG registrations (LSRegisterRequest: a service and ``--metadata`` items,
    each a source, a destination, an eventType and a tool), timed: the in-process rate. The
    LS keeps each as a ``service`` record and ``psmetadata`` records (the JSON view) and as
    one XQuery document. The fill is cached under ``--data``. A real daemon (``netsonde
    run`` with ``[ls] enabled``, 2 API workers, the default) is started on a fresh copy on
    127.0.0.1, and in this order:

      key=value   one client, one request at a time (the latency is the server's, not a
                  queue's), ``--queries`` of each kind over HTTP: p50 / p99
      XQuery      the same, LSQueryRequest (lsOutput native) to /perfSONAR_PS/services/LS,
                  SaxonC in the LS's sandboxed worker (first loaded by warm-up queries)
      lxml peer   the same queries as XPath 1.0, compiled once, run over every document of
                  the same collection (``LookupRegistry.documents``, parsed once), in this
                  process: no HTTP, no sandbox
      register    wrk (``--connections``, ``--seconds``) sends new registrations, each
                  prepared request once: NMWG LSRegisterRequests (a service and its items in
                  one message), then JSON records one by one (a service, then its metadata;
                  services/s = records/s ÷ (1 + metadata))
      keepalive   NMWG LSKeepaliveRequest by key (renews a service and its items); JSON bulk
                  renew (1,000 uris a request) and single renew

Targets (issue 12): ≥ 1,000 keepalives/s, ≥ 200 registrations/s, key=value query p99 < 20 ms,
XQuery p99 < 200 ms.

With ``--db postgresql://…`` (an empty database) the registry is on PostgreSQL: it is filled
there (not cached) and the daemon uses it as it stands.

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
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from lxml import etree

from api import free_port, run_wrk, wait_for_port, wrk_script
from netsonde.api.app import create_app
from netsonde.archive import connections
from netsonde.nmwg import ns
from netsonde.nmwg.client import SOAP_ACTION, exchange, request_body
from netsonde.nmwg.ls import ServiceInfo, keepalive_request, ls_key, read_reply, register_request
from netsonde.services.base import Host
from netsonde.services.lookup import lsquery
from netsonde.services.lookup.registry import LookupRegistry, Query
from netsonde.services.lookup.settings import LookupSection
from report import write_section
from scheduler import machine

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SECTION = "## Lookup service benchmark"
TOKEN = "bench-lookup-token-0123456789"
RECORDS = lsquery.RECORDS_PATH
RENEW = RECORDS.rsplit("/", 1)[0] + "/renew"
LS = lsquery.NMWG_PATH
PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
OWAMP = "http://ggf.org/ns/nmwg/tools/owamp/2.0/"
SERVICE_TYPES = ("MA", "MP", "owamp", "bwctl", "ping")
BULK = 1000  # uris in one bulk renew: the most the API takes
LEASE = 30 * 86400  # the fill outlives any run
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SOAP = {**AUTH, "Content-Type": "text/xml", "SOAPAction": SOAP_ACTION}
NS = {
    "nmwg": ns.NMWG,
    "nmwgt": ns.NMWGT,
    "perfsonar": ns.PERFSONAR,
    "psservice": ns.PSSERVICE,
}
DECLARE = " ".join(f'declare namespace {p}="{u}";' for p, u in NS.items())


# ---- what is registered -------------------------------------------------------------------


def host_of(i: int) -> str:
    return f"h{i // 4}.bench.example.net"  # four services a host


def locator(i: int) -> str:
    return f"http://{host_of(i)}:8075/perfSONAR_PS/services/s{i % 4}"


def dst(i: int, j: int) -> str:
    return f"10.{j}.{(i >> 8) & 255}.{i & 255}"


def event_type(j: int) -> str:
    return PINGER if j % 2 == 0 else OWAMP


def service_info(i: int) -> ServiceInfo:
    kind = SERVICE_TYPES[i % len(SERVICE_TYPES)]
    return ServiceInfo(f"bench service {i}", locator(i), kind, f"a {kind} on {host_of(i)}")


def item(i: int, j: int) -> etree._Element:
    """One measurement a service holds, as a registrar sends it."""
    md = etree.Element(f"{{{ns.NMWG}}}metadata", {"id": f"m{j}"}, nsmap={"nmwg": ns.NMWG})
    subject = etree.SubElement(md, f"{{{ns.NMWG}}}subject", {"id": f"s{j}"})
    pair = etree.SubElement(subject, f"{{{ns.NMWGT}}}endPointPair", nsmap={"nmwgt": ns.NMWGT})
    etree.SubElement(pair, f"{{{ns.NMWGT}}}src", {"type": "hostname", "value": host_of(i)})
    etree.SubElement(pair, f"{{{ns.NMWGT}}}dst", {"type": "ipv4", "value": dst(i, j)})
    etree.SubElement(md, f"{{{ns.NMWG}}}eventType").text = event_type(j)
    params = etree.SubElement(md, f"{{{ns.NMWG}}}parameters", {"id": f"p{j}"})
    tool = etree.SubElement(params, f"{{{ns.NMWG}}}parameter", {"name": "toolName"})
    tool.text = "ping" if j % 2 == 0 else "owping"
    return md


def nmwg_registration(i: int, metadata: int) -> bytes:
    """Service ``i`` and its items: one LSRegisterRequest, as a bare message."""
    message = register_request(service_info(i), [item(i, j) for j in range(metadata)], ttl=LEASE)
    return etree.tostring(message)


def soap(message: bytes) -> str:
    return request_body(message).decode()


def json_records(i: int, metadata: int) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """Service ``i`` as JSON records: the service, then its metadata (the sLS shapes)."""
    info = service_info(i)
    yield (
        "service",
        {
            "service-type": [info.type],
            "service-name": [info.name],
            "service-locator": [info.access_point],
        },
    )
    for j in range(metadata):
        yield (
            "psmetadata",
            {
                "psmetadata-ma-locator": [info.access_point],
                "psmetadata-src-address": [host_of(i)],
                "psmetadata-dst-address": [dst(i, j)],
                "psmetadata-event-types": [event_type(j)],
                "psmetadata-tool-name": ["ping" if j % 2 == 0 else "owping"],
            },
        )


# ---- the fill ------------------------------------------------------------------------------


def ls_section(db: str | Path) -> LookupSection:
    return LookupSection(enabled=True, token=TOKEN, db=str(db), max_ttl=366 * 86400)


def fill(work: Path, services: int, metadata: int, db: str | Path) -> float:
    """``services`` NMWG registrations into ``db`` through the real app in process;
    services/s."""
    host = Host(
        archive=connections(f"sqlite:///{work / 'archive.sqlite'}"),
        sections={"ls": ls_section(db)},
    )
    url = "http://bench" + LS
    with TestClient(create_app(host), base_url="http://bench") as client:
        client.headers.update(AUTH)
        started = time.perf_counter()
        for i in range(services):
            reply = read_reply(exchange(url, nmwg_registration(i, metadata), client=client))
            if not reply.ok:
                raise SystemExit(f"registration {i} refused: {reply.describe()}")
            if i % 200 == 0:
                print(f"  {i:,}/{services:,} services…", file=sys.stderr, end="\r")
        spent = time.perf_counter() - started
    return services / spent


def cached_fill(args: argparse.Namespace) -> tuple[Path, float]:
    """The filled registry (built once per size under ``--data``) and its fill rate."""
    where = args.data / f"{args.services}x{args.metadata}"
    db, done = where / "lookup.sqlite", where / "complete.json"
    if not done.exists():
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        print(f"filling {args.services:,} services × {args.metadata} metadata…", file=sys.stderr)
        rate = fill(where, args.services, args.metadata, db)
        registry = LookupRegistry(db)  # a checkpoint: the one file is the whole registry
        registry.close()
        done.write_text(json.dumps({"services_per_s": rate}))
    return db, float(json.loads(done.read_text())["services_per_s"])


# ---- the daemon ----------------------------------------------------------------------------


@dataclass
class Daemon:
    base: str
    proc: subprocess.Popen[bytes]
    data: Path

    def worker_restarts(self) -> int:
        status = json.loads((self.data / "status.json").read_text())
        return int(status.get("api_worker_restarts") or 0)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)


def start_daemon(data: Path, db: str | Path, max_worker_rss: str | None) -> Daemon:
    port = free_port()
    config = data / "bench.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
        f'[ls]\nenabled = true\ntoken = "{TOKEN}"\ndb = "{db}"\nmax_ttl = "366d"\n'
        # The first XQuery of a worker loads the whole collection: let it (it is reported).
        'query_timeout = "300s"\n[api]\nrequest_timeout = "300s"\n'
        + (f'max_worker_rss = "{max_worker_rss}"\n' if max_worker_rss else "")
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
    return Daemon(base, proc, data)


# ---- loads ---------------------------------------------------------------------------------


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


Request = tuple[str, str, str | None]


def wrk_load(
    d: Daemon,
    scripts: Path,
    name: str,
    reqs: list[Request],
    args: argparse.Namespace,
    *,
    headers: dict[str, str],
    per_request: float,
    unit: str,
    check: Callable[[httpx.Response], bool],
) -> Load:
    """``reqs`` sent in turn by wrk; the first is sent once before, and must pass ``check``
    (an NMWG refusal is an HTTP 200: wrk would count it as done)."""
    method, path, body = reqs[0]
    probe = httpx.request(method, d.base + path, content=body, headers=headers, timeout=60)
    if not check(probe):
        raise SystemExit(f"{name}: refused: {probe.status_code} {probe.text[:500]}")
    script = scripts / f"{len(list(scripts.iterdir()))}.lua"
    wrk_script(script, reqs, headers=headers, cycle=True)
    print(f"running {name}…", file=sys.stderr)
    r = run_wrk(d.base, script, args.seconds, args.connections)
    sent = r["rps"] * args.seconds
    note = f"{sent / len(reqs):.1f} rounds of {len(reqs):,} prepared" if sent > len(reqs) else ""
    return Load(name, r["rps"], per_request, unit, r["p50"], r["p99"], int(r["non2xx"]), note)


def nmwg_ok(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    return read_reply(etree.fromstring(response.content).find(f".//{{{ns.NMWG}}}message")).ok


def json_ok(response: httpx.Response) -> bool:
    return response.status_code in (200, 201)


def services_in(db: str | Path) -> int:
    registry = LookupRegistry(db)
    try:
        return len([1 for _ in _pages(registry, {"service-name": ["bench service *"]})])
    finally:
        registry.close()


def _pages(registry: LookupRegistry, filters: dict[str, list[str]]) -> Iterator[Any]:
    offset = 0
    while page := registry.query(Query(filters, limit=1000, offset=offset)):
        yield from page
        offset += len(page)


def registrations(d: Daemon, scripts: Path, db: str | Path, args: argparse.Namespace) -> list[Load]:
    """New services (beyond the fill: registrations, not refreshes): NMWG, then JSON."""
    first, n = args.services, args.http_services
    before = services_in(db)
    nmwg: list[Request] = [
        ("POST", LS, soap(nmwg_registration(i, args.metadata))) for i in range(first, first + n)
    ]
    loads = [
        wrk_load(
            d, scripts, f"NMWG LSRegisterRequest (a service and {args.metadata} items)", nmwg,
            args, headers=SOAP, per_request=1, unit="services", check=nmwg_ok,
        )
    ]  # fmt: skip
    added = services_in(db) - before
    sent = round(loads[0].rps * args.seconds)
    stored = f"{added:,} new services stored (≈{sent:,} sent)"
    loads[0].note = f"{loads[0].note}; {stored}" if loads[0].note else stored
    json_reqs: list[Request] = [
        # Each host registers its own (max_records_per_registrant holds per registrant).
        ("POST", RECORDS, json.dumps({"type": kind, **values, "registrant": host_of(i)}))
        for i in range(first + n, first + 2 * n)
        for kind, values in json_records(i, args.metadata)
    ]
    loads.append(
        wrk_load(
            d, scripts, "JSON POST /lookup/records (one record)", json_reqs, args,
            headers={**AUTH, "Content-Type": "application/json"}, per_request=1,
            unit="records", check=json_ok,
        )
    )  # fmt: skip
    return loads


def live_uris(db: str | Path, n: int) -> list[str]:
    """``n`` live uris of the fill, at random."""
    registry = LookupRegistry(db)
    try:
        found = [r.uri for r in registry.query(Query({}, limit=1000))]
        offset = len(found)
        while len(found) < n and (page := registry.query(Query({}, limit=1000, offset=offset))):
            found += [r.uri for r in page]
            offset += len(page)
    finally:
        registry.close()
    random.Random(3).shuffle(found)
    return found[:n]


def keepalives(d: Daemon, scripts: Path, db: str | Path, args: argparse.Namespace) -> list[Load]:
    keys = [ls_key(locator(i)) for i in range(args.services)]
    random.Random(5).shuffle(keys)
    nmwg: list[Request] = [
        ("POST", LS, soap(etree.tostring(keepalive_request(k, ttl=LEASE)))) for k in keys
    ]
    pool = live_uris(db, min(args.services * (1 + args.metadata), 50 * BULK))
    bulk: list[Request] = [
        ("POST", RENEW, json.dumps({"records": pool[k : k + BULK], "ttl": LEASE}))
        for k in range(0, max(1, len(pool) - BULK + 1), BULK)
    ]
    single: list[Request] = [("POST", f"{RECORDS}/{u}", "{}") for u in pool[:20_000]]
    renew_headers = {**AUTH, "Content-Type": "application/json"}
    return [
        wrk_load(
            d, scripts, f"NMWG LSKeepaliveRequest (renews a service and its {args.metadata} items)",
            nmwg, args, headers=SOAP, per_request=1, unit="keepalives", check=nmwg_ok,
        ),
        wrk_load(
            d, scripts, f"JSON bulk renew ({BULK:,} uris a request)", bulk, args,
            headers=renew_headers, per_request=min(BULK, len(pool)), unit="records renewed",
            check=json_ok,
        ),
        wrk_load(
            d, scripts, "JSON renew (one record)", single, args,
            headers=renew_headers, per_request=1, unit="records renewed", check=json_ok,
        ),
    ]  # fmt: skip


# ---- queries -------------------------------------------------------------------------------


@dataclass
class Latency:
    name: str
    how: str
    p50: float
    p99: float
    answered: float  # mean items answered
    n: int


def latency(
    name: str, how: str, ask: Callable[[int], int], n: int, warmup: int, budget: float
) -> Latency:
    """``n`` queries after ``warmup`` unmeasured ones, or fewer if ``budget`` seconds run out
    (a slow kind still gets a few; the table says how many)."""
    for k in range(-warmup, 0):
        ask(k)
    times, answered = [], 0
    end = time.monotonic() + budget
    for k in range(n):
        t = time.perf_counter()
        answered += ask(k)
        times.append((time.perf_counter() - t) * 1000)
        if time.monotonic() > end and k >= 9:
            break
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return Latency(name, how, statistics.median(times), p99, answered / len(times), len(times))


def key_value_queries(d: Daemon, args: argparse.Namespace) -> list[Latency]:
    rnd = random.Random(11)
    services, metadata = args.services, args.metadata

    def path_of(i: int) -> dict[str, Any]:
        return {"psmetadata-src-address": host_of(i), "psmetadata-dst-address": dst(i, 0)}

    kinds: dict[str, Callable[[], dict[str, Any]]] = {
        "one service by locator": lambda: {"service-locator": locator(rnd.randrange(services))},
        "a host's services (wildcard)": lambda: {
            "service-locator": f"http://{host_of(rnd.randrange(services))}:*"
        },
        "one path's metadata (src and dst)": lambda: path_of(rnd.randrange(services)),
        "service type, first 100": lambda: {
            "service-type": rnd.choice(SERVICE_TYPES),
            "limit": 100,
        },
        "eventType (half the records), first 100": lambda: {
            "psmetadata-event-types": OWAMP,
            "limit": 100,
        },
        f"eventType, 100 from offset {metadata * services // 4:,}": lambda: {
            "psmetadata-event-types": OWAMP,
            "limit": 100,
            "offset": metadata * services // 4,
        },
    }
    found = []
    with httpx.Client(base_url=d.base, timeout=60) as http:
        for name, params in kinds.items():
            print(f"key=value: {name}…", file=sys.stderr)

            def ask(k: int, params: Callable[[], dict[str, Any]] = params) -> int:
                r = http.get(RECORDS, params=params())
                r.raise_for_status()
                return len(r.json())

            found.append(latency(name, "HTTP", ask, args.queries, 20, args.query_seconds))
    return found


@dataclass(frozen=True)
class XQueryKind:
    name: str
    xquery: str  # the query's body, after the namespace declarations
    xpath: str  # the same as XPath 1.0 over one document, $v the parameter
    value: Callable[[random.Random, argparse.Namespace], str]  # query k's: Random(k)


XQUERIES = (
    XQueryKind(
        "a service by key (the seed's query)",
        ' /nmwg:store[@type="LSStore"]/nmwg:metadata[@id="{v}"]',
        '/nmwg:store[@type="LSStore"]/nmwg:metadata[@id=$v]',
        lambda r, a: ls_key(locator(r.randrange(a.services))),
    ),
    XQueryKind(
        "a host's services",
        " /nmwg:store/nmwg:metadata[contains(perfsonar:subject/psservice:service/"
        'psservice:accessPoint, "://{v}:")]',
        "/nmwg:store/nmwg:metadata[contains(perfsonar:subject/psservice:service/"
        'psservice:accessPoint, concat("://", $v, ":"))]',
        lambda r, a: host_of(r.randrange(a.services)),
    ),
    XQueryKind(
        "who measures a destination (every item)",
        " /nmwg:store[nmwg:data/nmwg:metadata/nmwg:subject/nmwgt:endPointPair/nmwgt:dst/"
        '@value = "{v}"]/nmwg:metadata',
        "/nmwg:store[nmwg:data/nmwg:metadata/nmwg:subject/nmwgt:endPointPair/nmwgt:dst/"
        "@value = $v]/nmwg:metadata",
        lambda r, a: dst(r.randrange(a.services), r.randrange(a.metadata)),
    ),
    XQueryKind(
        "count the items of an eventType",
        ' count( /nmwg:store/nmwg:data[nmwg:metadata/nmwg:eventType = "{v}"])',
        "count(/nmwg:store/nmwg:data[nmwg:metadata/nmwg:eventType = $v])",
        lambda r, a: r.choice((PINGER, OWAMP)),
    ),
)


def xqueries(d: Daemon, args: argparse.Namespace) -> list[Latency]:
    """Each kind through the LS's XQuery (LSQueryRequest over HTTP)."""
    found = []
    with httpx.Client(timeout=600) as http:
        started = time.perf_counter()
        lsquery.xquery(d.base + LS, DECLARE + " count( /nmwg:store)", client=http, timeout=600)
        first = (time.perf_counter() - started) * 1000
        found.append(
            Latency(
                "the first query (the worker loads the collection)", "XQuery", first, first, 1, 1
            )
        )
        for kind in XQUERIES:
            print(f"XQuery: {kind.name}…", file=sys.stderr)

            def ask(k: int, kind: XQueryKind = kind) -> int:
                query = DECLARE + kind.xquery.format(v=kind.value(random.Random(k), args))
                answer = lsquery.xquery(d.base + LS, query, client=http, timeout=600)
                return _answered(answer)

            how = "XQuery (SaxonC, LS over HTTP)"
            found.append(latency(kind.name, how, ask, args.queries, 5, args.query_seconds))
    return found


def _answered(answer: list[etree._Element | str]) -> int:
    """Elements answered, or the number an aggregate answered."""
    if len(answer) == 1 and isinstance(answer[0], str) and answer[0].isdigit():
        return int(answer[0])
    return len(answer)


def lxml_peer(db: str | Path, args: argparse.Namespace) -> list[Latency]:
    """Each kind as XPath over every document of the same collection, in process."""
    registry = LookupRegistry(db)
    try:
        docs = [etree.fromstring(d.xml.encode()) for d in registry.documents().values() if d.xml]
    finally:
        registry.close()
    found = []
    how = f"lxml XPath scan of {len(docs):,} documents"
    for kind in XQUERIES:
        print(f"lxml: {kind.name}…", file=sys.stderr)
        xpath = etree.XPath(kind.xpath, namespaces=NS)

        def ask(k: int, xpath: etree.XPath = xpath, kind: XQueryKind = kind) -> int:
            v = kind.value(random.Random(k), args)
            hits: list[bytes] = []
            total = 0
            for doc in docs:
                got = xpath(doc, v=v)
                if isinstance(got, float):
                    total += int(got)
                else:
                    hits += [etree.tostring(e) for e in got]  # serialized, as the LS answers
            return total or len(hits)

        found.append(latency(kind.name, how, ask, args.queries, 1, args.query_seconds))
    return found


# ---- report --------------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    fill_rate: float,
    loads: list[Load],
    queries: list[Latency],
    restarts: int,
) -> str:
    cmd = shlex.join(["python", "bench/lookup.py", *sys.argv[1:]])
    per_service = 1 + args.metadata
    lines = [
        f"{SECTION}\n",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        machine(),
        f"- registry: {'PostgreSQL, ' if args.db else 'SQLite, '}"
        f"{args.services:,} services × {args.metadata} metadata "
        f"({args.services * per_service:,} records; {args.services:,} XQuery documents), "
        f"filled with LSRegisterRequests through the app in process at {fill_rate:,.0f} "
        "services/s",
        f"- server: `netsonde run` with `[ls] enabled`, 2 API workers (the default; "
        f"max_worker_rss {args.max_worker_rss or 'the default'}, {restarts} worker "
        "replacements in the run), "
        "on the same "
        f"2 cores as the load; wrk -t1 -c{args.connections} -d{args.seconds}s per load; "
        f"queries one at a time from one client, {args.queries} of each kind (fewer when "
        f"{args.query_seconds:g} s run out)\n",
        "| load | requests/s | per second | p50 ms | p99 ms | non-2xx | note |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in loads:
        rate = r.rps * r.per_request
        also = f" ({rate / per_service:,.0f} services)" if r.unit == "records" else ""
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {rate:,.0f} {r.unit}{also} | {r.p50:.2f} "
            f"| {r.p99:.2f} | {r.non2xx:,} | {r.note} |"
        )
    lines += [
        "",
        "| query | how | p50 ms | p99 ms | answered (mean) | queries |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for q in queries:
        lines.append(
            f"| {q.name} | {q.how} | {q.p50:.2f} | {q.p99:.2f} | {q.answered:,.1f} | {q.n:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--metadata", type=int, default=20, help="per service")
    ap.add_argument(
        "--http-services", type=int, default=2500, help="prepared registrations over HTTP, each"
    )
    ap.add_argument("--seconds", type=int, default=10, help="per wrk load")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--queries", type=int, default=200, help="of each kind")
    ap.add_argument("--query-seconds", type=float, default=60, help="at most, for each kind")
    ap.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "netsonde-bench-lookup"
    )
    ap.add_argument(
        "--max-worker-rss",
        help="[api] max_worker_rss (default: the daemon's): a worker replaced drops the XQuery"
        " collection it loaded, and the next query loads it again",
    )
    ap.add_argument(
        "--db", help="the registry in this empty PostgreSQL database (postgresql://USER@HOST/DB)"
    )
    ap.add_argument("--quick", action="store_true", help="a smoke test: small and short")
    ap.add_argument("--write", type=Path, help="put the section into this file (BENCHMARKS.md)")
    args = ap.parse_args()
    if args.quick:
        args.services, args.metadata, args.http_services = 200, 5, 200
        args.seconds, args.queries = 2, 20
    if args.services < 10 or args.metadata < 1:
        ap.error("need at least 10 services and 1 metadata each")

    with tempfile.TemporaryDirectory(prefix="netsonde-bench-lookup-") as tmp:
        work = Path(tmp)
        db: str | Path
        if args.db:
            db = args.db
            if services_in(db):
                ap.error(f"{args.db}: the registry there is not empty")
            print(
                f"filling {args.services:,} services × {args.metadata} metadata…", file=sys.stderr
            )
            fill_rate = fill(work, args.services, args.metadata, db)
        else:
            filled, fill_rate = cached_fill(args)
            db = work / "lookup.sqlite"
            shutil.copyfile(filled, db)
        scripts = work / "wrk"
        scripts.mkdir()
        queries = lxml_peer(db, args)
        d = start_daemon(work, db, args.max_worker_rss)
        try:
            queries = key_value_queries(d, args) + xqueries(d, args) + queries
            loads = registrations(d, scripts, db, args) + keepalives(d, scripts, db, args)
            restarts = d.worker_restarts()
        finally:
            d.stop()
    text = report(args, fill_rate, loads, queries, restarts)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
