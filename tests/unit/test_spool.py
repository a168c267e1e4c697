"""The durable spool against a real remote archive (the netsonde app under uvicorn, on
127.0.0.1): delivery, idempotent re-delivery, order after an outage, durability across close
and kill -9, backoff, a wrong token, dead letters, and the NMWG (PingER MA) protocol."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from netsonde.api.app import create_app
from netsonde.archive import pg as archive_pg
from netsonde.archive.sqlite import path_of
from netsonde.http.server import bind
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.mp.spool import Spool
from netsonde.probes import ping

TOKEN = "spool-token-0123456789abcdef"
T0 = 1_700_000_000_000_000
STEP = 10_000_000
PING = TestSpec(
    "spool-ping", "ping", "127.0.0.9", Schedule(interval=10), ping.Params(count=3), source="mp-a"
)
OTHER = TestSpec(
    "spool-ping-2", "ping", "127.0.0.10", Schedule(interval=10), ping.Params(count=3),
    source="mp-a",
)  # fmt: skip
NOOP = TestSpec("spool-noop", "noop", "127.0.0.1", Schedule(interval=10), {}, source="mp-a")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def finished(spec: TestSpec, k: int, rtts: tuple[float | None, ...] = (0.5, None, 1.5)) -> Run:
    planned = T0 + k * STEP
    replies = [
        PacketSample(seq, rtt, 60, 72, None if rtt is None else planned + seq * 1000)
        for seq, rtt in enumerate(rtts, 1)
    ]
    got = [r for r in rtts if r is not None]
    values = {"minRtt": min(got), "maxRtt": max(got), "lossPercent": 100 - 100 * len(got) / 3}
    result = Result(spec.tool, spec.target, sent=len(rtts), replies=replies, values=values)
    return Run.of(
        spec,
        planned,
        state=RunState.FINISHED,
        actual_us=planned + 250,
        end_us=planned + 2_000_000,
        result=result,
    )


def missed(spec: TestSpec, k: int) -> Run:
    return Run.of(spec, T0 + k * STEP, state=RunState.MISSED, error="busy")


class Remote:
    """The real archive app served by uvicorn in a thread, on either backend (``archive``: an
    archive URL); stop() and start() again on the same port make an outage."""

    def __init__(self, archive: str, token: str | None = TOKEN) -> None:
        self.archive = archive
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:

        from hosting import host  # here: the kill -9 child imports this module without it

        ctx = host(self.archive, name="remote", token=self.token)
        config = uvicorn.Config(create_app(ctx), lifespan="off", log_config=None)
        self._server = server = uvicorn.Server(config)
        self._sock = bind("127.0.0.1", self.port)
        self._thread = threading.Thread(target=server.run, args=([self._sock],), daemon=True)
        self._thread.start()
        wait_until(lambda: server.started, 10)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None and self._sock is not None
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    @property
    def inserted(self) -> str:
        """ORDER BY of the ``runs r`` rows in the order the remote inserted them: SQLite's
        rowid; on PostgreSQL the inserting transaction, then (planned_us, run_id), the order
        in which one batch is inserted."""
        if self.archive.startswith("sqlite"):
            return "r.rowid"
        return "r.xmin::text::bigint, r.planned_us, r.run_id"

    def runs(self) -> list[tuple[str, int]]:
        """(run_id, planned_us) in the order the remote inserted them."""
        return self.query(f"SELECT r.run_id, r.planned_us FROM runs r ORDER BY {self.inserted}")

    def query(self, sql: str) -> list[Any]:
        if self.archive.startswith("sqlite"):
            path = path_of(self.archive)
            if not path.exists():
                return []
            with sqlite3.connect(path) as db:
                return db.execute(sql).fetchall()
        with archive_pg.connect(self.archive) as conn:
            if conn.execute("SELECT to_regclass('runs')").fetchone() == (None,):
                return []
            return [tuple(row) for row in conn.execute(sql.encode()).fetchall()]


def wait_until(what: Callable[[], Any], timeout: float = 15.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := what():
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def remote(store_url: str) -> Iterator[Remote]:
    """A remote archive on each backend in turn."""
    r = Remote(store_url)
    r.start()
    yield r
    r.stop()


@pytest.fixture
def spools() -> Iterator[Callable[..., Spool]]:
    made: list[Spool] = []

    def make(path: Path, url: str, **kw: Any) -> Spool:
        kw.setdefault("token", TOKEN)
        spool = Spool(path, url, **kw)
        spool.start()
        made.append(spool)
        return spool

    yield make
    for spool in made:
        spool.close()


def drained(spool: Spool, delivered: int) -> Callable[[], bool]:
    def check() -> bool:
        s = spool.stats
        return s["backlog"] == 0 and s["queued"] == 0 and s["delivered"] >= delivered

    return check


# ---- delivery ----------------------------------------------------------------------------------


def test_delivers_runs_and_redelivery_is_idempotent(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    runs = [finished(PING, k) for k in range(20)] + [missed(OTHER, k) for k in range(5)]
    spool = spools(tmp_path / "outbox.sqlite", remote.url, batch_size=8)
    for run in runs:
        spool.submit(PING if run.test_key == PING.key else OTHER, run)
    wait_until(drained(spool, 25))
    stats = spool.stats
    assert stats["last_error"] is None and stats["oldest_age_s"] is None
    assert stats["dead_letters"] == 0 and stats["last_delivery_us"] is not None
    assert sorted(r for r, _ in remote.runs()) == sorted(r.run_id for r in runs)

    # Exactly what was measured, samples included.
    row = remote.query(
        "SELECT r.state, r.actual_us, r.end_us, res.sent, res.samples, t.source, t.tool"
        f" FROM runs r JOIN results res USING (run_id) JOIN tests t ON t.key = r.test_key"
        f" WHERE r.run_id = '{runs[3].run_id}'"
    )
    assert row == [
        (
            "finished",
            T0 + 3 * STEP + 250,
            T0 + 3 * STEP + 2_000_000,
            3,
            f"[[1,0.5,60,72,{T0 + 3 * STEP + 1000}],[2,null,60,72,null],"
            f"[3,1.5,60,72,{T0 + 3 * STEP + 3000}]]",
            "mp-a",
            "ping",
        )
    ]
    assert remote.query(f"SELECT state, error FROM runs WHERE run_id = '{runs[-1].run_id}'") == [
        ("missed", "busy")
    ]

    # The same runs again (a re-delivery after a crash looks like this): each is stored once.
    for run in runs:
        spool.submit(PING if run.test_key == PING.key else OTHER, run)
    wait_until(drained(spool, 50))
    assert len(remote.runs()) == 25


def test_backlog_arrives_in_run_time_order_after_an_outage(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    remote.stop()
    spool = spools(tmp_path / "outbox.sqlite", remote.url, batch_size=7, max_backoff=1.0)
    order = [(k * 37) % 60 for k in range(60)]  # every k once, shuffled
    for k in order:
        spec = PING if k % 2 else OTHER
        spool.submit(spec, finished(spec, k))
    wait_until(lambda: spool.stats["backlog"] == 60 and spool.stats["retrying"])
    stats = spool.stats
    assert stats["delivered"] == 0 and stats["oldest_age_s"] is not None
    assert "ConnectError" in stats["last_error"] and stats["next_attempt_in_s"] is not None

    remote.start()
    wait_until(drained(spool, 60))
    planned = [p for _, p in remote.runs()]
    assert planned == sorted(planned) and len(planned) == 60
    assert spool.stats["last_error"] is None and spool.stats["retrying"] is False


# ---- durability --------------------------------------------------------------------------------


def test_outbox_survives_close_and_reopen(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    path = tmp_path / "outbox.sqlite"
    remote.stop()
    first = Spool(path, remote.url, token=TOKEN)  # never started: close() commits by itself
    runs = [finished(PING, k) for k in range(30)]
    for run in runs:
        first.submit(PING, run)
    first.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (30,)

    second = spools(path, remote.url, max_backoff=1.0)
    wait_until(lambda: second.stats["backlog"] == 30)
    second.close()  # mid-outage, again
    remote.start()
    third = spools(path, remote.url)
    wait_until(drained(third, 30))
    assert sorted(r for r, _ in remote.runs()) == sorted(r.run_id for r in runs)


CHILD = """
import sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}]
from netsonde.mp.spool import Spool
from test_spool import PING, finished
spool = Spool(Path({path!r}), {url!r}, token="x")
spool.start()
for k in range(40):
    spool.submit(PING, finished(PING, k))
while spool.stats["backlog"] < 40:
    time.sleep(0.01)
print("committed", flush=True)
time.sleep(60)
"""


def test_committed_runs_survive_kill_9(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    path = tmp_path / "outbox.sqlite"
    dead_port = free_port()  # nothing listens: the child only commits
    script = CHILD.format(
        tests=str(Path(__file__).parent), path=str(path), url=f"http://127.0.0.1:{dead_port}"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "committed"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    spool = spools(path, remote.url)
    wait_until(drained(spool, 40))
    assert sorted(r for r, _ in remote.runs()) == sorted(
        finished(PING, k).run_id for k in range(40)
    )


def test_abandoned_threads_are_replaced_and_nothing_is_lost(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    spool = spools(tmp_path / "outbox.sqlite", remote.url, batch_size=5)
    old = {t.name: t for t in threading.enumerate() if t.name.startswith("spool-")}
    for k in range(20):
        spool.submit(PING, finished(PING, k))
    spool.abandon()  # what the supervisor does when the heartbeat goes stale
    spool.start()
    for k in range(20, 40):
        spool.submit(PING, finished(PING, k))
    wait_until(drained(spool, 40))
    assert spool.is_alive() and len(remote.runs()) == 40
    wait_until(lambda: not any(t.is_alive() for t in old.values()), 5)  # the old ones ended
    assert spool.stats["backlog"] == 0 and spool.stats["delivered"] == 40


# ---- failures ----------------------------------------------------------------------------------


class ClosingListener:
    """A remote that is up but broken: accepts each connection and closes it at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def test_backs_off_while_the_remote_is_down(tmp_path: Path, spools: Callable[..., Spool]) -> None:
    broken = ClosingListener()
    spool = spools(tmp_path / "outbox.sqlite", broken.url, max_backoff=60.0)
    for k in range(5):
        spool.submit(PING, finished(PING, k))
    started = time.monotonic()
    while time.monotonic() - started < 4.0:  # 0.5 + 1 + 2 s of backoff: 3 or 4 attempts
        assert time.monotonic() - spool.beat < 1.5  # beating while backing off
        time.sleep(0.1)
    assert 2 <= broken.accepted <= 5, broken.accepted
    stats = spool.stats
    assert stats["retrying"] is True and stats["backlog"] == 5
    assert 0 < stats["next_attempt_in_s"] <= 8.0
    assert spool.is_alive()
    broken.sock.close()


class _Always200(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = b"<html>welcome</html>"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_200_that_is_not_a_store_reply_keeps_the_rows(
    tmp_path: Path, spools: Callable[..., Spool]
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Always200)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"  # a wrong URL: not an archive
        spool = spools(tmp_path / "outbox.sqlite", url, max_backoff=1.0)
        for k in range(5):
            spool.submit(PING, finished(PING, k))
        wait_until(lambda: "not a store reply" in (spool.stats["last_error"] or ""))
        assert spool.stats["backlog"] == 5 and spool.stats["delivered"] == 0
    finally:
        server.shutdown()
        server.server_close()


def test_wrong_token_keeps_the_backlog(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    path = tmp_path / "outbox.sqlite"
    wrong = "wrong-token-9876543210fedcba"
    spool = spools(path, remote.url, token=wrong, max_backoff=1.0)
    for k in range(10):
        spool.submit(PING, finished(PING, k))
    wait_until(lambda: "401" in (spool.stats["last_error"] or ""))
    time.sleep(1.5)  # a few more attempts: still nothing dropped or dead-lettered
    stats = spool.stats
    assert stats["backlog"] == 10 and stats["dead_letters"] == 0 and stats["delivered"] == 0
    assert stats["last_error"].startswith("HTTP 401: missing or wrong token")
    assert wrong not in stats["last_error"] and TOKEN not in stats["last_error"]
    assert remote.runs() == []
    spool.close()

    fixed = spools(path, remote.url)  # the operator fixes the token
    wait_until(drained(fixed, 10))
    assert len(remote.runs()) == 10


def test_a_permanently_bad_run_is_dead_lettered_and_the_rest_delivered(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    spool = spools(tmp_path / "outbox.sqlite", remote.url, batch_size=50)
    runs = [finished(PING, k) for k in range(20)]
    bad = finished(PING, 7, rtts=(0.5, -1.0, 1.5))  # a negative RTT: the remote says 422
    runs[7] = bad
    for run in runs:
        spool.submit(PING, run)
    wait_until(lambda: spool.stats["backlog"] == 0 and spool.stats["delivered"] == 19)
    assert sorted(r for r, _ in remote.runs()) == sorted(r.run_id for r in runs if r is not bad)
    assert spool.stats["dead_letters"] == 1
    [dead] = spool.dead_letters()
    assert (dead["run_id"], dead["test_key"], dead["planned_us"]) == (
        bad.run_id,
        PING.key,
        bad.planned_us,
    )
    assert dead["reason"].startswith("HTTP 422: runs[0].result.samples[1].rtt_ms:")
    assert b'"rtt_ms":-1.0' in dead["payload"]
    planned = [p for _, p in remote.runs()]
    assert planned == sorted(planned)  # the halves went in order


# ---- NMWG --------------------------------------------------------------------------------------


def test_nmwg_delivers_ping_runs_to_the_pinger_ma_and_dead_letters_others(
    tmp_path: Path, remote: Remote, spools: Callable[..., Spool]
) -> None:
    spool = spools(tmp_path / "outbox.sqlite", remote.url, protocol="nmwg", batch_size=4)
    pings = [finished(PING, k) for k in range(10)]
    noop = Run.of(
        NOOP, T0, state=RunState.FINISHED, result=Result("noop", "127.0.0.1", values={"x": 1})
    )
    for run in pings[:5]:
        spool.submit(PING, run)
    spool.submit(NOOP, noop)
    spool.submit(PING, missed(PING, 99))
    for run in pings[5:]:
        spool.submit(PING, run)
    wait_until(drained(spool, 10))
    stored = remote.query(
        "SELECT r.actual_us, t.source, t.target, res.sent, res.summary, res.samples FROM runs r"
        " JOIN results res USING (run_id) JOIN tests t ON t.key = r.test_key"
        f" ORDER BY {remote.inserted}"
    )
    assert [s[0] for s in stored] == [r.actual_us for r in pings]  # to the microsecond, in order
    assert {(s[1], s[2], s[3]) for s in stored} == {("mp-a", "127.0.0.9", 3)}
    summary = json.loads(stored[0][4])
    assert summary["minRtt"] == 0.5 and summary["maxRtt"] == 1.5
    assert json.loads(stored[0][5]) == (
        [[1, 0.5, 60, 72, T0 + 1000], [2, None, 60, 72, None], [3, 1.5, 60, 72, T0 + 3000]]
    )
    reasons = {d["run_id"]: d["reason"] for d in spool.dead_letters()}
    assert reasons == {
        noop.run_id: "protocol nmwg carries ping results only; tool 'noop' has no NMWG form",
        missed(
            PING, 99
        ).run_id: "protocol nmwg carries finished ping runs only; this run is missed",
    }
    assert spool.stats["dead_letters"] == 2

    for run in pings:  # again: the MA keys runs by test and start time, so nothing is doubled
        spool.submit(PING, run)
    wait_until(drained(spool, 20))
    assert len(remote.runs()) == 10


def test_rows_encoded_for_the_other_protocol_are_dead_lettered_not_dropped(
    tmp_path: Path, spools: Callable[..., Spool]
) -> None:
    path = tmp_path / "outbox.sqlite"
    rest = Spool(path, f"http://127.0.0.1:{free_port()}", token=TOKEN)
    for k in range(3):
        rest.submit(PING, finished(PING, k))
    rest.close()
    nmwg = spools(path, f"http://127.0.0.1:{free_port()}", protocol="nmwg")
    wait_until(lambda: nmwg.stats["dead_letters"] == 3)
    assert nmwg.stats["backlog"] == 0
    assert {d["reason"] for d in nmwg.dead_letters()} == {
        "encoded for protocol rest; the spool now delivers nmwg"
    }


# ---- a full disk -------------------------------------------------------------------------------

FULL_DISK_CHILD = """
import json, resource, signal, sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}]
from netsonde.mp.spool import Spool
from test_spool import PING, finished
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG) instead
path = Path({path!r})
spool = Spool(path, {url!r}, token="x")
spool.start()
while spool.stats["queued"] or not path.exists():
    time.sleep(0.01)
time.sleep(0.3)  # the outbox exists: from now on it cannot grow by a byte
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size, resource.RLIM_INFINITY))
for k in range(200):
    spool.submit(PING, finished(PING, k))
time.sleep(1.5)
print(json.dumps([spool.stats, spool.is_alive(), time.monotonic() - spool.beat]), flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
end = time.monotonic() + 15
while spool.stats["backlog"] < 200 and time.monotonic() < end:
    time.sleep(0.05)
print(json.dumps([spool.stats, spool.is_alive(), time.monotonic() - spool.beat]), flush=True)
spool.close()
"""


def test_a_full_disk_keeps_runs_in_memory_until_the_outbox_can_grow(tmp_path: Path) -> None:
    script = FULL_DISK_CHILD.format(
        tests=str(Path(__file__).parent),
        path=str(tmp_path / "outbox.sqlite"),
        url=f"http://127.0.0.1:{free_port()}",  # nothing listens: only the outbox matters
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (full, alive, age), (freed, alive_after, _) = (
        json.loads(x) for x in done.stdout.split("\n")[:2]
    )
    assert (full["queued"], full["backlog"], alive) == (200, 0, True)
    assert full["last_error"].startswith("outbox: OperationalError"), full["last_error"]
    assert age < 1.5  # still beating
    assert (freed["queued"], freed["backlog"], alive_after) == (0, 200, True)


def test_the_cli_lists_dead_letters_without_their_payload(tmp_path: Path) -> None:
    from netsonde.mp.spool.db import open_outbox

    (tmp_path / "netsonde.toml").write_text('[daemon]\ndata_dir = "data"\n')
    db = open_outbox(tmp_path / "data" / "spool.sqlite")
    db.execute(
        "INSERT INTO dead_letter VALUES (?, ?, ?, ?, ?, ?)",
        ("run-1", "0123456789abcdef", 1_700_000_000_000_000, b"{}", "HTTP 422: runs.0.slot", 1),
    )
    db.commit()
    db.close()
    netsonde = Path(sys.executable).parent / "netsonde"
    done = subprocess.run(
        [str(netsonde), "dead-letters", "--json", "--config", str(tmp_path / "netsonde.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["run_id"] == "run-1" and row["reason"] == "HTTP 422: runs.0.slot"
    assert "payload" not in row
