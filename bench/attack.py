"""Attack benchmark: does measuring keep its slots while hostile and heavy clients hit the API?

What is measured
    A real daemon (``netsonde run``) measures ``--tests`` ping tests to loopback addresses
    (127.0.x.y) every ``--interval`` seconds (3 packets 50 ms apart, so a run fits its
    interval), with an archive pre-filled with ``--tests`` × ``--history`` finished runs of
    other tests (bench/api.py's ``build_archive``, cached under ``--data``, copied afresh for
    every mode) so that heavy queries get big answers. Each mode runs the daemon anew with the
    default config (only listen, data_dir and archive set, and ``[api] request_timeout`` if
    ``--request-timeout`` is given) for a window of ``--seconds`` after ``--warmup`` seconds:

      quiet               no API load
      attacked            ``--clients`` hostile and ``--clients`` heavy clients (threads of this
                          process, on the same cores) hit the API for the whole window
      attacked-workers0   the same attack with ``[api] workers = 0`` (the API on the measuring
                          event loop: the default before issue 11)

    Hostile clients each go round: a ~400 KB request whose two merged metadata (metadataIdRef)
    hold 20,000 children each; a request with 25,000 namespace declarations; a 4 MB request with
    100,000 data triggers on one metadata (by key, over the whole history); and ~100 slow
    connections that send part of a request's headers and never finish (held until the server
    closes them, or ``read_timeout`` + 5 s). Heavy clients alternate a PingER SetupDataRequest
    by key over a 3-day window (the whole history of one test) and a REST
    ``/api/v1/results?…&limit=1000&samples=true`` page.

    Per mode, read from the archive's ``runs`` table after the daemon has stopped, for the
    measured tests' runs planned inside the window: runs by state (missed = could not start
    within its slip) and start lateness (actual − planned) of finished runs. Memory: every 0.5 s
    the VmRSS of the daemon and all its descendants (fork server, API workers, runs), summed
    (pages shared after fork are counted once per process, so the sum is an upper bound), and
    their Pss summed (shared pages split between the processes: the tree's real share). The
    daemon's log lines above INFO are counted (``--keep`` keeps the logs). Per attack
    request: how it was answered (HTTP status; NMWG result code and the limit it names) and the
    time to the whole answer, against ``request_timeout`` + 1 s (slow connections: time until
    the server closed them, against ``read_timeout`` + 1 s).

Usage: python bench/attack.py [--tests 100] [--history 2000] [--seconds 30] [--clients 10]
       [--request-timeout S] [--modes quiet,attacked,attacked-workers0] [--write BENCHMARKS.md]
Short check: python bench/attack.py --seconds 10 --history 200
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import multiprocessing
import os
import random
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the hostile requests
from api import ENVELOPE, SD_REQUEST, STEP, T0, build_archive, free_port, specs, wait_for_port
from netsonde import proctree
from netsonde.config.schema import ApiSection
from netsonde.limits import RequestLimits
from netsonde.nmwg import ns
from reliability import hostile
from report import write_section
from scheduler import machine

SECTION = "## Attack benchmark"
MODES = ("quiet", "attacked", "attacked-workers0")
NMWG_PATH = "/perfSONAR_PS/services/pinger/ma"
SLOW_PER_CLIENT = 100  # connections one hostile client holds in its slow-client turn
DAYS = 3 * 86_400  # heavy queries' window
LIMITS = RequestLimits()  # the defaults this benchmark leaves in place
DEFAULT_WORKERS: int = ApiSection.model_fields["workers"].default


# ---- the measured daemon ----------------------------------------------------------------


def tests_toml(n: int, interval: float) -> str:
    """n ping tests to 127.0.x.y: other ids and parameters than the history's, so other keys."""
    return "".join(
        f'[[test]]\nid = "live-{i:04d}"\ntool = "ping"\ntarget = "127.0.{i // 250}.{i % 250 + 1}"\n'
        f'interval = "{interval:g}s"\nparams = {{ count = 3, interval = 0.05 }}\n'
        for i in range(n)
    )


def history(args: argparse.Namespace) -> Path:
    """The pre-filled archive, built once per size under ``--data``."""
    data = args.data / f"{args.tests}x{args.history}"
    db = data / "archive.sqlite"
    if not (data / "complete").exists():
        data.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
        print(f"building {args.tests * args.history:,} results in {db}…", file=sys.stderr)
        build_archive(db, args.tests, args.history)
        (data / "complete").write_text("built\n")
    return db


@dataclass(frozen=True, slots=True)
class Sample:
    rss: int  # bytes, VmRSS summed over the tree (shared pages once per process)
    pss: int  # bytes, Pss summed (shared pages split between their processes)
    processes: int


class TreeMemory(threading.Thread):
    """The memory of the daemon and all its descendants, every 0.5 s."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            table = proctree.snapshot(cmdline=False)
            pids = [self.root, *(p.pid for p in proctree.descendants(self.root, table))]
            rss = sum(_kb(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
            pss = sum(_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids)
            if rss:
                self.samples.append(Sample(rss, pss, len(pids)))


def _kb(path: str, name: str) -> int:
    """The ``name`` line of a /proc file in kB, as bytes; 0 if the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    return 0


# ---- the attack ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str
    how: str  # "HTTP 200, error.common.structure (max_elements)", "closed by server", …
    seconds: float  # sent → whole answer (slow clients: opened → closed)
    error: bool  # answered with an error (what a hostile request should get)
    size: int = 0  # answer bytes


def triggers_request(key: str, n: int = 100_000) -> bytes:
    """n data triggers on one metadata that selects a whole test's history by key."""
    return hostile.triggers_request(
        f'<pinger:parameters xmlns:pinger="{ns.PINGER}" id="p">'
        f'<nmwg:parameter name="startTime">{T0}</nmwg:parameter>'
        f'<nmwg:parameter name="endTime">{T0 + DAYS}</nmwg:parameter></pinger:parameters>'
        f'<nmwg:key id="{key}"/>',
        n,
    )


# A result code, or a PingER status URI (PingER answers failures with those).
_CODE = re.compile(
    rb"<(?:\w+:)?eventType>\s*"
    rb"((?:error|success)\.[\w.]+|http://schemas\.perfsonar\.net/status/[\w/.]+)"
)
_LIMIT = re.compile(rb"\((max_\w+)\)")
_RUN = re.compile(rb"<(?:\w+:)?commonTime\b")  # one per run in a PingER answer


def classify(kind: str, r: httpx.Response, seconds: float) -> Answer:
    """How a request was answered: HTTP status, NMWG result code, and a limit if one is named."""
    body = r.content
    how = f"HTTP {r.status_code}"
    error = r.status_code >= 400
    if (code := _CODE.search(body)) is not None:
        how += f", {code[1].decode()}"
        error = error or code[1].startswith(b"error.") or b"/failure/" in code[1]
    elif r.status_code == 200 and b"<" in body[:200]:
        how += f", data ({len(_RUN.findall(body)):,} runs)"
    if (limit := _LIMIT.search(body)) is not None:
        how += f" ({limit[1].decode()})"
    return Answer(kind, how, seconds, error, len(body))


class Attack:
    """``clients`` hostile and ``clients`` heavy threads against one daemon until ``end``."""

    def __init__(self, base: str, keys: list[str], args: argparse.Namespace, end: float) -> None:
        self.base, self.keys, self.args, self.end = base, keys, args, end
        self.answers: list[Answer] = []
        self.timeout = args.request_timeout_s + 60  # the client waits past any server limit
        print("  building hostile requests…", file=sys.stderr)
        self.bodies = {
            "merge 2 × 20,000": hostile.merge_request(),
            "25,000 namespaces": hostile.namespaces_request(),
            "100,000 triggers": triggers_request(keys[0]),
        }

    def run(self) -> None:
        n = self.args.clients
        threads = [threading.Thread(target=self.hostile, args=(i,)) for i in range(n)]
        threads += [threading.Thread(target=self.heavy, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _post(self, client: httpx.Client, kind: str, body: bytes) -> None:
        started = time.monotonic()
        try:
            r = client.post(NMWG_PATH, content=body, headers={"Content-Type": "text/xml"})
        except httpx.HTTPError as e:
            self.answers.append(Answer(kind, type(e).__name__, time.monotonic() - started, True))
            return
        self.answers.append(classify(kind, r, time.monotonic() - started))

    def hostile(self, i: int) -> None:
        kinds = [*self.bodies, "slow client"]
        turns = itertools.islice(itertools.cycle(kinds), i % len(kinds), None)
        with httpx.Client(base_url=self.base, timeout=self.timeout) as client:
            for kind in turns:
                if time.time() >= self.end:
                    return
                if kind == "slow client":
                    self.slow()
                else:
                    self._post(client, kind, self.bodies[kind])

    def slow(self) -> None:
        """Open SLOW_PER_CLIENT connections with half-sent headers; wait for each to end."""
        host, port = self.base.removeprefix("http://").split(":")
        sel = selectors.DefaultSelector()
        for _ in range(SLOW_PER_CLIENT):
            started = time.monotonic()
            try:
                conn = socket.create_connection((host, int(port)), timeout=5)
                conn.sendall(b"GET /api/v1/tests HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError as e:
                self.answers.append(Answer("slow client", f"connect: {e.strerror or e}", 0, True))
                continue
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ, started)
        give_up = time.monotonic() + self.args.read_timeout_s + 5
        while sel.get_map() and time.monotonic() < give_up:
            for key, _ in sel.select(0.5):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    got = conn.recv(100)
                except OSError:
                    got = b""
                first = got.split(b"\r")[0].decode(errors="replace")
                how = f"answered {first}" if got else "closed by server"
                self.answers.append(Answer("slow client", how, time.monotonic() - key.data, True))
                sel.unregister(conn)
                conn.close()
        for key in list(sel.get_map().values()):
            held = time.monotonic() - key.data
            self.answers.append(Answer("slow client", "still open", held, False))
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()

    def heavy(self, i: int) -> None:
        rng = random.Random(i)
        span = self.args.history * STEP
        with httpx.Client(base_url=self.base, timeout=self.timeout) as client:
            for turn in itertools.count(i):
                if time.time() >= self.end:
                    return
                key = rng.choice(self.keys)
                start = T0 - rng.randrange(0, DAYS - span) if span < DAYS else T0
                if turn % 2 == 0:
                    sd = SD_REQUEST.format(key=key, start=start, end=start + DAYS)
                    self._post(client, "PingER", ENVELOPE.format(body=sd).encode())
                    continue
                url = (
                    f"/api/v1/results?test_key={key}&from={start}&until={start + DAYS}"
                    "&limit=1000&samples=true"
                )
                started = time.monotonic()
                try:
                    r = client.get(url)
                except httpx.HTTPError as e:
                    self.answers.append(
                        Answer("REST", type(e).__name__, time.monotonic() - started, True)
                    )
                    continue
                self.answers.append(classify("REST", r, time.monotonic() - started))


# ---- one mode -----------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    workers: int
    expected: int  # slots of the measured tests the window holds
    states: Counter[str]
    lateness_ms: list[float]  # finished runs, sorted
    memory: list[Sample]  # over the window
    status: dict[str, object]
    answers: list[Answer] = field(default_factory=list)
    log: Counter[str] = field(default_factory=Counter)  # the daemon's log lines by level


def attack_from_child(
    base: str, keys: list[str], args: argparse.Namespace, end: float
) -> list[Answer]:
    os.nice(args.attacker_nice)
    attack = Attack(base, keys, args, end)
    attack.run()
    return attack.answers


def run_mode(mode: str, db: Path, args: argparse.Namespace) -> ModeResult:
    workers = 0 if mode.endswith("workers0") else DEFAULT_WORKERS
    work = Path(tempfile.mkdtemp(prefix=f"netsonde-bench-attack-{mode}-"))
    live = work / "archive.sqlite"
    shutil.copyfile(db, live)
    port = free_port()
    config = work / "bench.toml"
    api = f"workers = {workers}\n" if workers != DEFAULT_WORKERS else ""
    if args.request_timeout is not None:
        api += f"request_timeout = {args.request_timeout:g}\n"
    config.write_text(
        f'[daemon]\ndata_dir = "{work}"\nlisten = "127.0.0.1:{port}"\n'
        f'[archive]\nurl = "sqlite:///{live}"\n'
        + (f"[api]\n{api}" if api else "")
        + tests_toml(args.tests, args.interval)
    )
    netsonde = Path(sys.executable).parent / "netsonde"
    log = work / "daemon.log"
    print(f"{mode}: daemon in {work}", file=sys.stderr)
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(netsonde), "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    sampler = TreeMemory(daemon.pid)
    answers: list[Answer] = []
    status: dict[str, object] = {}
    try:
        wait_for_port(port)
        time.sleep(args.warmup)
        sampler.start()
        start = time.time()
        end = start + args.seconds
        if mode.startswith("attacked"):
            keys = [s.key for s in specs(args.tests)]
            # In a process of its own at --attacker-nice: it stands in for remote clients.
            fork = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(1, mp_context=fork) as pool:
                job = pool.submit(attack_from_child, f"http://127.0.0.1:{port}", keys, args, end)
                answers = job.result()  # when every client has had its last answer
        time.sleep(max(0.0, end - time.time()) + args.interval + 2)  # the window's last runs
        status = _status(netsonde, config)
    finally:
        sampler.stop.set()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            print(f"{mode}: the daemon did not stop in 60 s: killed", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
    states, lateness = runs_in_window(live, start, end)
    result = ModeResult(
        mode,
        workers,
        expected=int(args.tests * args.seconds / args.interval),
        states=states,
        lateness_ms=lateness,
        memory=sampler.samples,
        status=status,
        answers=answers,
        log=log_levels(log),
    )
    if args.keep:
        print(f"{mode}: kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _status(netsonde: Path, config: Path) -> dict[str, object]:
    done = subprocess.run(
        [str(netsonde), "status", "--json", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    try:
        out = json.loads(done.stdout)
    except ValueError:
        return {"error": (done.stderr or done.stdout).strip()[-200:]}
    return out if isinstance(out, dict) else {}


def log_levels(log: Path) -> Counter[str]:
    """The daemon's log lines by level (WARNING, ERROR, …), and Python tracebacks."""
    found: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            found["traceback"] += 1
        elif (m := re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) ", line)) is not None:
            found[m[1]] += 1
    return found


def runs_in_window(db: Path, start: float, end: float) -> tuple[Counter[str], list[float]]:
    """The measured (live-*) tests' runs planned in [start, end): states, finished lateness."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT r.state, r.actual_us - r.planned_us FROM runs r JOIN tests t"
            " ON t.key = r.test_key WHERE t.test_id LIKE 'live-%'"
            " AND r.planned_us >= ? AND r.planned_us < ?",
            (int(start * 1e6), int(end * 1e6)),
        ).fetchall()
    finally:
        conn.close()
    states = Counter(state for state, _ in rows)
    late = sorted(d / 1000 for state, d in rows if state == "finished" and d is not None)
    return states, late


# ---- report -------------------------------------------------------------------------------


def _first_peak_last(values: list[int]) -> str:
    mb = [v / 1e6 for v in values]
    return f"{mb[0]:,.0f} / {max(mb):,.0f} / {mb[-1]:,.0f}"


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


def report(args: argparse.Namespace, results: list[ModeResult]) -> str:
    cmd = shlex.join(["python", "bench/attack.py", *sys.argv[1:]])
    rt = args.request_timeout_s
    rt_text = f"{rt:g} s (set in all modes)" if args.request_timeout else f"{rt:g} s (default)"
    lines = [
        f"{SECTION}\n",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        machine(),
        f"- measuring: {args.tests} ping tests to 127.0.x.y every {args.interval:g} s "
        f"(3 packets, 50 ms apart); window {args.seconds:g} s after a {args.warmup:g} s warm-up; "
        f"archive pre-filled with {args.tests * args.history:,} runs "
        f"({args.tests} other tests × {args.history:,}, one a minute)",
        f"- attack: {args.clients} hostile + {args.clients} heavy clients (threads of one "
        f"process on the same cores, at nice {args.attacker_nice}: remote clients would cost "
        "this host only its network stack) for the whole window; request_timeout "
        f"{rt_text}, read_timeout {args.read_timeout_s:g} s; other limits default\n",
        "| mode | API | runs in window (expected) | missed | other states "
        "| lateness p50 ms | p99 ms | max ms | tree RSS MB first / peak / last (processes) "
        "| tree PSS MB first / peak / last | API worker restarts |",
        "|---|---|---:|---:|---|---:|---:|---:|---|---|---:|",
    ]
    for m in results:
        late = m.lateness_ms
        other = ", ".join(f"{s}={n}" for s, n in sorted(m.states.items()) if s != "missed")
        rss = pss = "n/a"
        if m.memory:
            rss = _first_peak_last([x.rss for x in m.memory])
            rss += f" ({max(x.processes for x in m.memory)})"
            pss = _first_peak_last([x.pss for x in m.memory])
        api = "in the daemon" if m.workers == 0 else f"{m.workers} workers"
        restarts = m.status.get("api_worker_restarts", "n/a") if m.workers else "–"
        lines.append(
            f"| {m.mode} | {api} | {sum(m.states.values()):,} ({m.expected:,}) "
            f"| {m.states.get('missed', 0):,} | {other or '–'} | {pct(late, 0.5):.2f} "
            f"| {pct(late, 0.99):.2f} | {late[-1] if late else float('nan'):.2f} | {rss} "
            f"| {pss} | {restarts} |"
        )
    lines.append("")
    for m in results:
        logged = ", ".join(f"{n:,} {what}" for what, n in sorted(m.log.items())) or "nothing"
        lines.append(f"- `{m.mode}`: the daemon logged {logged} above INFO")
    for m in results:
        if not m.answers:
            continue
        lines += [
            f"\nAttack in `{m.mode}`: answers by kind (limit: request_timeout + 1 s = "
            f"{rt + 1:g} s; slow clients: read_timeout + 1 s = {args.read_timeout_s + 1:g} s)\n",
            "| kind | sent | answered how | errors | max s | over the limit | mean answer KB |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        by_kind: dict[str, list[Answer]] = {}
        for a in m.answers:
            by_kind.setdefault(a.kind, []).append(a)
        for kind, answers in by_kind.items():
            limit = (args.read_timeout_s if kind == "slow client" else rt) + 1
            hows = Counter(a.how for a in answers)
            how = "; ".join(f"{h}: {n:,}" for h, n in hows.most_common())
            over = sum(a.seconds > limit for a in answers)
            size = sum(a.size for a in answers) / len(answers) / 1e3
            lines.append(
                f"| {kind} | {len(answers):,} | {how} | {sum(a.error for a in answers):,} "
                f"| {max(a.seconds for a in answers):.2f} "
                f"| {over:,} | {size:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tests", type=int, default=100, help="measured tests (and history tests)")
    ap.add_argument("--interval", type=float, default=2.0, help="of the measured tests, s")
    ap.add_argument("--history", type=int, default=2000, help="pre-filled runs per test")
    ap.add_argument("--seconds", type=float, default=30, help="the measurement window")
    ap.add_argument("--warmup", type=float, default=5, help="after the daemon listens")
    ap.add_argument("--clients", type=int, default=10, help="hostile clients, and heavy ones")
    ap.add_argument(
        "--request-timeout", type=float, help="set [api] request_timeout in all modes (s)"
    )
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument(
        "--attacker-nice", type=int, default=19, help="CPU priority of the attacking clients"
    )
    ap.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "netsonde-bench-attack"
    )
    ap.add_argument("--keep", action="store_true", help="keep each mode's data dir and log")
    ap.add_argument("--write", type=Path, help="put the section into this file (BENCHMARKS.md)")
    args = ap.parse_args()
    args.request_timeout_s = args.request_timeout or LIMITS.request_timeout
    args.read_timeout_s = LIMITS.read_timeout
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        ap.error(f"unknown modes {sorted(unknown)}: choose from {', '.join(MODES)}")
    # Slow clients hold hundreds of sockets: this process may open as many as it is allowed.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    db = history(args)
    results = [run_mode(mode, db, args) for mode in modes]
    text = report(args, results)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
