"""API benchmark: NMWG SetupDataRequest and REST result queries against a 1M-result archive.

What is measured
    A SQLite archive with ``--tests`` ping tests × ``--runs`` finished runs each (default
    100 × 10,000 = 1,000,000 results, 10 packets per run) is built once (cached under
    ``--data``). The real daemon (``netsonde run`` with no tests, so it only serves) is started
    on 127.0.0.1, and wrk drives it with keep-alive connections:
      NMWG      POST /perfSONAR_PS/services/pinger/ma, a SetupDataRequest by key for a random
                test and a random window of 1 hour (60 datums) or 5 minutes (5 datums)
      REST      GET /api/v1/results for a random test and the same windows
    Side by side, in the same run:
      backends  each ``--archive-url`` in turn: ``sqlite`` (the file cached under --data, the
                default), ``postgresql`` (a private server started for the run by
                tests/pgcluster.py and filled the same way), or the URL of an archive (filled
                the same way if it has no tests yet)
      storage   the same window query through Archive.summaries in process, per backend, and
                straight through Python's sqlite3 (no HTTP, no XML): what the storage costs,
                so the rest is visibly protocol and framework overhead.

Usage: python bench/api.py [--tests 100] [--runs 10000] [--seconds 15] [--connections 16]
                           [--archive-url sqlite --archive-url postgresql] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # pgcluster
sys.path.insert(0, str(Path(__file__).resolve().parent))  # report
import pgcluster
from netsonde.archive import Archive, open_archive, pg
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.probes import ping
from report import write_section

HEADING = "## API benchmark"
T0 = 1_700_000_000  # first run, unix seconds
STEP = 60  # one run a minute per test
TOKEN = "bench-token-0123456789"


def specs(n: int) -> list[TestSpec]:
    return [
        TestSpec(
            id=f"bench-{i:04d}",
            tool="ping",
            target=f"127.0.{i // 250}.{i % 250 + 1}",
            schedule=Schedule(interval=STEP),
            params=ping.Params(count=10, interval=0.2),
        )
        for i in range(n)
    ]


def build_archive(url: str, n_tests: int, n_runs: int) -> None:
    """Fill the archive at ``url`` with n_tests × n_runs finished ping runs (deterministic
    values), rolled up (so no backlog competes with the queries)."""
    rng = random.Random(42)
    archive = open_archive(url)
    tests = specs(n_tests)
    archive.register_tests(tests, T0 * 1_000_000)
    batch: list[Run] = []
    for k in range(n_runs):
        for spec in tests:
            planned = (T0 + k * STEP) * 1_000_000
            rtts = [round(rng.uniform(0.02, 0.2), 3) for _ in range(10)]
            replies = [
                PacketSample(s + 1, r, 64, 64, planned + s * 200_000) for s, r in enumerate(rtts)
            ]
            values = ping.pinger_summary(10, replies)
            batch.append(
                Run.of(
                    spec,
                    planned,
                    slot=k,
                    state=RunState.FINISHED,
                    actual_us=planned + 1000,
                    end_us=planned + 2_000_000,
                    result=Result("ping", spec.target, 10, replies, ping._rounded(values)),
                )
            )
        if len(batch) >= 20_000:
            archive.store_runs(batch)
            batch.clear()
            print(f"  {k * n_tests:,} results…", file=sys.stderr, end="\r")
    if batch:
        archive.store_runs(batch)
    while archive.process_rollups(20_000):
        print(f"  rolling up, {archive.rollup_backlog():,} left…", file=sys.stderr, end="\r")
    archive.close()


SD_REQUEST = """<nmwg:message xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/"
  xmlns:pinger="http://ggf.org/ns/nmwg/tools/pinger/2.0/" type="SetupDataRequest" id="bench">
  <nmwg:metadata id="m1">
    <pinger:parameters id="p1">
      <nmwg:parameter name="startTime">{start}</nmwg:parameter>
      <nmwg:parameter name="endTime">{end}</nmwg:parameter>
    </pinger:parameters>
    <nmwg:key id="{key}"/>
    <nmwg:eventType>http://ggf.org/ns/nmwg/tools/pinger/2.0/</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="m1"/>
</nmwg:message>"""

ENVELOPE = (
    '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
    "<SOAP-ENV:Header/><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
)

# wrk picks one of the prepared requests at random for every request it sends (or, cycling,
# each in turn: a registration is new only the first time).
WRK_SCRIPT = """
local requests = {}
%s
math.randomseed(os.time())
local sent = 0
request = function()
  sent = sent + 1
  if %s then return requests[(sent - 1) %% #requests + 1] end
  return requests[math.random(#requests)]
end
"""


def windows(
    keys: list[str], n_runs: int, seconds: int = 3600, count: int = 200
) -> list[tuple[str, int, int]]:
    """Random (key, start, end) windows of ``seconds`` inside the stored data."""
    rng = random.Random(7)
    last = T0 + (n_runs - seconds // STEP) * STEP
    return [
        (rng.choice(keys), (s := rng.randrange(T0, last)), s + seconds - 1) for _ in range(count)
    ]


def lua_string(s: str) -> str:
    return "[==[" + s + "]==]"


def wrk_script(
    path: Path,
    reqs: list[tuple[str, str, str | None]],
    *,
    headers: dict[str, str] | None = None,
    cycle: bool = False,
) -> None:
    """reqs: (method, path, body) → a wrk Lua script that sends them at random (``cycle``: in
    turn). ``headers`` for every request; a body is text/xml unless they say otherwise."""
    lines = []
    for method, url, body in reqs:
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "text/xml")
        table = (
            "{" + ",".join(f"[ {lua_string(k)} ]={lua_string(v)}" for k, v in sent.items()) + "}"
        )
        lines.append(
            f"table.insert(requests, wrk.format({lua_string(method)}, {lua_string(url)}, {table}"
            + (f", {lua_string(body)}))" if body is not None else "))")
        )
    path.write_text(WRK_SCRIPT % ("\n".join(lines), "true" if cycle else "false"))


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s",
         str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    lat = {
        q: _ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
        for q in ("50", "99")
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p99": lat["99"],
        "non2xx": int(errors[1]) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def sqlite_peer(db: Path, wins: list[tuple[str, int, int]], seconds: float) -> dict[str, float]:
    """The same window query straight through sqlite3: queries/s and latency percentiles."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    lat: list[float] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        key, start, stop = wins[i % len(wins)]
        t = time.perf_counter()
        rows = conn.execute(
            "SELECT r.planned_us, res.summary FROM runs r JOIN results res USING (run_id)"
            " WHERE r.test_key = ? AND r.planned_us >= ? AND r.planned_us < ?"
            " AND r.state = 'finished' ORDER BY r.planned_us",
            (key, start * 1_000_000, (stop + 1) * 1_000_000),
        ).fetchall()
        [json.loads(s) for _, s in rows]
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
    lat.sort()
    return {
        "rps": len(lat) / seconds,
        "p50": lat[len(lat) // 2],
        "p99": lat[int(len(lat) * 0.99)],
        "non2xx": 0,
    }


def archive_peer(
    archive: Archive, wins: list[tuple[str, int, int]], seconds: float
) -> dict[str, float]:
    """The window query through the archive interface in process (Archive.summaries, the
    PingER MA's query), summaries decoded: queries/s and latency percentiles."""
    lat: list[float] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        key, start, stop = wins[i % len(wins)]
        t = time.perf_counter()
        rows = archive.summaries(key, start * 1_000_000, (stop + 1) * 1_000_000, limit=1000)
        [json.loads(s) for _, s in rows]
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
    lat.sort()
    return {
        "rps": len(lat) / seconds,
        "p50": lat[len(lat) // 2],
        "p99": lat[int(len(lat) * 0.99)],
        "non2xx": 0,
    }


def wait_for_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the daemon did not listen on {port}")


def wait_for_answer(base: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), urllib.request.urlopen(base + "/", timeout=5) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{base}/ did not answer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_load(
    data: Path, url: str, keys: list[str], args: argparse.Namespace, workers: int, backend: str
) -> list[tuple[str, dict[str, float]]]:
    """Start the daemon on the archive at ``url`` with ``[api] workers`` and drive each
    workload with wrk."""
    port = free_port()
    config = data / "bench.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
        f'[archive]\nurl = "{url}"\n[api]\ntoken = "{TOKEN}"\nworkers = {workers}\n'
    )
    netsonde = Path(sys.executable).parent / "netsonde"
    daemon = subprocess.Popen(
        [str(netsonde), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    where = "in the daemon" if workers == 0 else f"{workers} API workers"
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        wait_for_answer(base)  # an API worker can take seconds to start on a busy machine
        time.sleep(1 + workers)  # let every worker come up and take connections
        scripts = Path(tempfile.mkdtemp())
        for label, seconds in (("1 h, 60 rows", 3600), ("5 min, 5 rows", 300)):
            wins = windows(keys, args.runs, seconds)
            sd = [
                ("POST", "/perfSONAR_PS/services/pinger/ma",
                 ENVELOPE.format(body=SD_REQUEST.format(key=k, start=s, end=e)))
                for k, s, e in wins
            ]  # fmt: skip
            rest = [
                ("GET", f"/api/v1/results?test_key={k}&from={s}&until={e + 1}&limit=100", None)
                for k, s, e in wins
            ]
            for kind, reqs in (("NMWG SetupData", sd), ("REST results", rest)):
                name = f"{backend}: {kind}, {label}, {where}"
                script = scripts / f"{len(rows)}.lua"
                wrk_script(script, reqs)
                print(f"running {name}…", file=sys.stderr)
                run_wrk(base, script, 2, args.connections)  # warm-up
                rows.append((name, run_wrk(base, script, args.seconds, args.connections)))
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(30)
    return rows


def archive_of(given: str, db: Path, stack: contextlib.ExitStack) -> tuple[str, str]:
    """(backend name, URL) of an --archive-url: the cached SQLite file, a private PostgreSQL
    server for this run (stopped at the end), or the URL given."""
    if given == "sqlite":
        return "SQLite", f"sqlite:///{db}"
    if given == "postgresql":
        cluster = stack.enter_context(pgcluster.running())
        return "PostgreSQL", cluster.database("bench")
    return ("PostgreSQL" if given.startswith("postgresql:") else "SQLite"), given


def archive_bytes(url: str) -> int:
    """The archive's size on disk: its file, or its PostgreSQL database."""
    if url.startswith("sqlite:"):
        return Path(url.removeprefix("sqlite:///")).stat().st_size
    with pg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--runs", type=int, default=10_000, help="runs per test")
    ap.add_argument("--seconds", type=int, default=15, help="per measurement")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "netsonde-bench-api")
    ap.add_argument("--build-only", action="store_true", help="build the archive and stop")
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="[api] workers settings to compare"
    )
    ap.add_argument(
        "--archive-url",
        action="append",
        metavar="URL",
        help="sqlite (default: the file cached under --data), postgresql (a private server for"
        " the run), or an archive's URL; repeat to compare backends side by side",
    )
    ap.add_argument("--write", type=Path, default=None, help="BENCHMARKS.md to update")
    args = ap.parse_args()
    loads = os.getloadavg()  # other work on the machine shows in every figure

    data = args.data / f"{args.tests}x{args.runs}"
    db = data / "archive.sqlite"
    if not (data / "complete").exists():
        data.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
        started = time.monotonic()
        print(f"building {args.tests * args.runs:,} results in {db}…", file=sys.stderr)
        build_archive(f"sqlite:///{db}", args.tests, args.runs)
        (data / "complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    if args.build_only:
        return 0
    keys = [s.key for s in specs(args.tests)]

    rows: list[tuple[str, dict[str, float]]] = []
    sizes: list[str] = []
    with contextlib.ExitStack() as stack:
        for given in args.archive_url or ["sqlite"]:
            backend, url = archive_of(given, db, stack)
            archive = open_archive(url)
            empty = not archive.find_tests(limit=1)
            archive.close()  # not open while the daemon starts (and migrates) on it
            if empty:
                print(f"building {args.tests * args.runs:,} results in {url}…", file=sys.stderr)
                build_archive(url, args.tests, args.runs)
            sizes.append(f"{backend} {archive_bytes(url) / 1e6:,.0f} MB")
            for workers in args.workers:
                rows += serve_and_load(data, url, keys, args, workers, backend)
            print(f"running the {backend} archive peer…", file=sys.stderr)
            archive = open_archive(url)
            try:
                for label, seconds in (("1 h", 3600), ("5 min", 300)):
                    peer = archive_peer(archive, windows(keys, args.runs, seconds), args.seconds)
                    name = f"{backend}: Archive.summaries in process (no HTTP, no XML), {label}"
                    rows.append((name, peer))
            finally:
                archive.close()
    print("running sqlite3 peer…", file=sys.stderr)
    for label, seconds in (("1 h", 3600), ("5 min", 300)):
        peer = sqlite_peer(db, windows(keys, args.runs, seconds), args.seconds)
        rows.append((f"sqlite3, same query in process (no HTTP, no XML), {label}", peer))

    cmd = " ".join(["python", "bench/api.py", *map(shlex.quote, sys.argv[1:])])
    load = f"{loads[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    lines = [
        f"{HEADING}\n",
        f"- command: `{cmd}`",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()},"
        f" CPython {platform.python_version()}; 1-minute load average {load}",
        f"- archive: {args.tests * args.runs:,} results ({args.tests} tests × {args.runs:,} runs,"
        f" 10 packets each, one run a minute), {', '.join(sizes)}",
        "- queries: random windows of 1 h (60 rows) and 5 min (5 rows)",
        f"- load: wrk -t1 -c{args.connections} -d{args.seconds}s on the same 2 cores\n",
        "| workload | requests/s | p50 ms | p99 ms | non-2xx |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {int(r['non2xx'])} |"
            for name, r in rows
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(args.write, HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
