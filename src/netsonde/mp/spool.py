"""The durable outbox from a measurement point to a remote archive.

``submit`` only enqueues in memory (it is called from the event loop). An *ingest* thread
encodes each run to its wire form once and commits it to a local SQLite outbox (WAL) every
~100 ms; a *deliver* thread posts the oldest rows (by run time) to the remote and deletes them
in one transaction after the remote said yes. A crash between the two re-delivers a batch,
which is harmless: the remote ignores a run id it already has.

Failures are sorted in two kinds. Transient (no connection, timeout, 5xx, 429, and 401/403,
a wrong token being a configuration problem the operator fixes): the rows stay and delivery
backs off (0.5 s doubling to ``max_backoff``). Permanent (400, 413, 422, or an NMWG result code
saying the data is invalid): the batch is bisected until the bad runs are alone, the good ones
are delivered, and each bad one moves to the ``dead_letter`` table with the reason.

Protocols: ``rest`` posts JSON to ``/api/v1/store``; ``nmwg`` posts a PingER
``MeasurementArchiveStoreRequest`` (one metadata/data pair per run) to the PingER MA, which can
carry finished ping runs only: any other run is dead-lettered at ingest with that reason.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import httpx
from lxml import etree

from netsonde.model import Run, RunState, TestSpec, to_us
from netsonde.nmwg import build, codes, ns
from netsonde.services.pinger.views import BOOLEAN_DATUMS, DATUM_NAMES

log = logging.getLogger(__name__)

Protocol = Literal["rest", "nmwg"]
REST_PATH = "/api/v1/store"
NMWG_PATH = "/perfSONAR_PS/services/pinger/ma"
PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"

INGEST_WINDOW = 0.1  # seconds: how long a commit waits to gather more runs
INGEST_MAX = 2000  # runs per ingest transaction
TICK = 0.5  # seconds: the longest a loop waits without beating
FIRST_BACKOFF = 0.5
MAX_ERROR_CHARS = 4000  # the remote refuses a run error longer than 4096 characters
DB_BUSY_MS = 2000

PERMANENT_HTTP = frozenset({400, 413, 422})
# NMWG result codes that say the data itself is invalid (as 422 does): retrying cannot help.
PERMANENT_NMWG = frozenset(
    {
        codes.MA_SUBJECT,
        codes.MA_PARAMETERS,
        codes.MA_QUERY_INCOMPLETE_DATA,
        codes.MA_QUERY_INVALID_TIMESTAMP_TYPE,
        codes.STRUCTURE,
        codes.NO_METADATA_DATA_PAIR,
        codes.PARSE_ERROR,
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    planned_us INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    test_key TEXT NOT NULL,
    queued_us INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_by_time ON outbox (planned_us, run_id);
CREATE INDEX IF NOT EXISTS outbox_by_queued ON outbox (queued_us);
CREATE TABLE IF NOT EXISTS tests (key TEXT PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    run_id TEXT NOT NULL,
    test_key TEXT NOT NULL,
    planned_us INTEGER NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    failed_us INTEGER NOT NULL
);
"""


def now_us() -> int:
    return to_us(time.time())


# ---- encoding ----------------------------------------------------------------------------------


class Entry(NamedTuple):
    """One run, encoded: a row of the outbox, or of dead_letter when ``reason`` is set."""

    planned_us: int
    run_id: str
    test_key: str
    queued_us: int
    payload: bytes
    reason: str | None = None


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def rest_test(spec: TestSpec) -> bytes:
    """The test as an entry of the store request's ``tests`` (NewTest)."""
    return _compact(
        {
            "test_id": spec.id,
            "source": spec.source,
            "tool": spec.tool,
            "target": spec.target,
            "params": spec.params_dict(),
        }
    )


def rest_run(run: Run) -> bytes:
    """The run as an entry of the store request's ``runs`` (NewRun, by test key)."""
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "test_key": run.test_key,
        "slot": run.slot,
        "state": None if run.state is None else str(run.state),
        "planned_us": run.planned_us,
    }
    for name in ("actual_us", "end_us"):
        if (value := getattr(run, name)) is not None:
            out[name] = value
    if run.error is not None:
        out["error"] = run.error[:MAX_ERROR_CHARS]
    if (r := run.result) is not None:
        samples = [
            {"seq": p.seq, "rtt_ms": p.rtt_ms, "ttl": p.ttl, "size": p.size, "recv_us": p.recv_us}
            for p in r.replies
        ]
        out["result"] = {"sent": r.sent, "values": r.values, "samples": samples, "extra": r.extra}
    return _compact(out)


def _seconds(us: int) -> str:
    """Epoch µs as exact decimal seconds (float text would lose the last digit or two)."""
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def nmwg_unit(spec: TestSpec, run: Run, source: str) -> bytes:
    """The run as one metadata/data pair of a PingER MeasurementArchiveStoreRequest
    (PROTOCOL.md §4.12: the agent's Store message); ids are derived from the run id so that a
    result code in the answer names its run."""
    result = run.result
    assert result is not None
    params = spec.params_dict()
    md = build.element("nmwg:metadata", {"id": f"m-{run.run_id}"})
    subject = build.element("pinger:subject", {"id": f"s-{run.run_id}"}, parent=md)
    pair = build.element("nmwgt:endPointPair", parent=subject)
    build.element("nmwgt:src", {"value": source}, parent=pair)
    build.element("nmwgt:dst", {"value": spec.target}, parent=pair)
    block = build.element("pinger:parameters", {"id": f"p-{run.run_id}"}, parent=md)
    for name, key in (
        ("count", "count"),
        ("packetSize", "packet_size"),
        ("ttl", "ttl"),
        ("packetInterval", "interval"),
    ):
        if params.get(key) is not None:
            value = _number(params[key])
            build.element("nmwg:parameter", {"name": name, "value": value}, parent=block)
    build.element("nmwg:eventType", text=PINGER, parent=md)
    data = build.element("nmwg:data", {"id": f"d-{run.run_id}", "metadataIdRef": f"m-{run.run_id}"})
    start = run.actual_us if run.actual_us is not None else run.planned_us
    attrs = {"type": "unix", "value": _seconds(start)}
    if run.end_us is not None and run.end_us >= start:
        attrs["duration"] = _seconds(run.end_us - start)
    common = build.element("nmwg:commonTime", attrs, parent=data)
    for p in result.replies:
        datum = {"seqNum": str(p.seq), "timeType": "unix"}
        optional = (("value", p.rtt_ms), ("ttl", p.ttl), ("numBytes", p.size))
        datum.update({k: _number(v) for k, v in optional if v is not None})
        if p.rtt_ms is not None:
            datum["valueUnits"] = "ms"
        if p.recv_us is not None:
            datum["timeValue"] = _seconds(p.recv_us)
        build.element("pinger:datum", datum, parent=common)
    for name in DATUM_NAMES:
        value = result.values.get(name)
        if value is None:
            continue
        text = ("true" if value else "false") if name in BOOLEAN_DATUMS else _number(value)
        build.element("pinger:datum", {"name": name, "value": text}, parent=common)
    return etree.tostring(md) + etree.tostring(data)


def nmwg_refusal(spec: TestSpec, run: Run) -> str | None:
    """Why the run cannot be said in a PingER store request; None when it can."""
    if spec.tool != "ping":
        return f"protocol nmwg carries ping results only; tool {spec.tool!r} has no NMWG form"
    if run.state is not RunState.FINISHED or run.result is None:
        return f"protocol nmwg carries finished ping runs only; this run is {run.state}"
    return None


def nmwg_message(units: Sequence[bytes]) -> bytes:
    head = (
        f'<nmwg:message xmlns:nmwg="{ns.NMWG}" type="MeasurementArchiveStoreRequest"'
        f' id="spool-{time.time_ns()}">'
    ).encode()
    return build.ENVELOPE_HEAD + head + b"".join(units) + b"</nmwg:message>" + build.ENVELOPE_TAIL


# ---- outcomes of one delivery attempt ----------------------------------------------------------


@dataclass
class Outcome:
    """What the remote did with a batch: rows it took, rows it refused for good (with the
    reason), and, if nothing could be attributed, why the batch as a whole failed."""

    delivered: list[int] = field(default_factory=list)  # outbox ids
    dead: dict[int, str] = field(default_factory=dict)  # outbox id → reason
    split: str | None = None  # permanent failure of the batch: bisect to find the bad runs
    retry: str | None = None  # transient failure of what is neither delivered nor dead


class Row(NamedTuple):
    id: int
    planned_us: int
    run_id: str
    test_key: str
    payload: bytes


def _remote_error(response: httpx.Response) -> str:
    """``HTTP 422: runs[0].state: ...``: the status and the remote's one-line message."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("error") or body.get("detail") or "")
    except ValueError:
        message = response.text[:200]
    reason = f"HTTP {response.status_code}"
    return f"{reason}: {message}" if message else f"{reason} {response.reason_phrase}".strip()


def rest_outcome(rows: Sequence[Row], response: httpx.Response) -> Outcome:
    if response.is_success:
        # Only a StoreReply that counts every run means stored: a 200 from something that is
        # not a netsonde archive (a wrong URL) must not make the spool drop the rows.
        try:
            reply = response.json()
            stored = reply["runs"] == len(rows) == reply["new"] + reply["duplicates"]
        except (ValueError, KeyError, TypeError):
            stored = False
        if stored:
            return Outcome(delivered=[r.id for r in rows])
        return Outcome(
            retry=f"HTTP {response.status_code} but not a store reply: {response.text[:200]!r}"
        )
    error = _remote_error(response)
    if response.status_code in PERMANENT_HTTP:
        return Outcome(split=error)
    return Outcome(retry=error)


_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
_NMWG_MESSAGE = f"{{{ns.NMWG}}}message"
_NMWG_METADATA = f"{{{ns.NMWG}}}metadata"
_NMWG_DATA = f"{{{ns.NMWG}}}data"
_NMWG_EVENT = f"{{{ns.NMWG}}}eventType"
_NMWGR_DATUM = f"{{{ns.NMWGR}}}datum"


def _results(message: etree._Element) -> Iterator[tuple[str | None, str, str]]:
    """(metadataIdRef, code, text) of each result pair in an NMWG response message."""
    texts = {
        d.get("metadataIdRef"): (d.findtext(_NMWGR_DATUM) or "").strip()
        for d in message.iterchildren(_NMWG_DATA)
    }
    for md in message.iterchildren(_NMWG_METADATA):
        code = (md.findtext(_NMWG_EVENT) or "").strip()
        yield md.get("metadataIdRef"), code, texts.get(md.get("id"), "")


def nmwg_outcome(rows: Sequence[Row], response: httpx.Response) -> Outcome:
    if not response.is_success:
        return Outcome(retry=_remote_error(response))
    try:
        root = etree.fromstring(response.content, _XML)
    except etree.XMLSyntaxError as e:
        return Outcome(retry=f"NMWG answer is not XML: {e}")
    message = root if root.tag == _NMWG_MESSAGE else next(root.iter(_NMWG_MESSAGE), None)
    if message is None:
        return Outcome(retry="NMWG answer has no nmwg:message")
    results = list(_results(message))
    if message.get("type") == "ErrorResponse":
        _, code, text = results[0] if results else (None, "", "")
        error = f"NMWG {code}: {text}"
        # The whole message was refused: for a reason of its own (bisect) or for the server's.
        too_large = code == codes.TRANSPORT and "exceeds the limit" in text
        return Outcome(split=error) if code in PERMANENT_NMWG or too_large else Outcome(retry=error)
    by_ref = {f"m-{r.run_id}": r.id for r in rows}
    out = Outcome()
    transient: list[str] = []
    for ref, code, text in results:
        row_id = by_ref.pop(ref or "", None)
        if row_id is None:
            continue
        if code.startswith("success."):
            out.delivered.append(row_id)
        elif code in PERMANENT_NMWG:
            out.dead[row_id] = f"NMWG {code}: {text}"
        else:
            transient.append(f"NMWG {code}: {text}")
    if by_ref and not transient:
        transient.append(f"NMWG answer said nothing about {len(by_ref)} run(s)")
    out.retry = transient[0] if transient else None
    return out


# ---- the spool ---------------------------------------------------------------------------------


class _Retry(Exception):
    """Delivery must wait and try again; the message goes to last_error."""


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """The runs refused for good, oldest first, from an outbox file (read-only)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=DB_BUSY_MS / 1000)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM dead_letter ORDER BY rowid").fetchall()
        return [dict(r) for r in rows]
    except sqlite3.OperationalError:  # no table yet
        return []
    finally:
        db.close()


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=DB_BUSY_MS / 1000, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut, too
    db.executescript(_SCHEMA)
    return db


class Spool:
    def __init__(
        self,
        path: Path,
        url: str,
        *,
        protocol: Protocol = "rest",
        token: str | None = None,
        batch_size: int = 500,
        timeout: float = 10.0,
        max_backoff: float = 60.0,
    ) -> None:
        if protocol not in ("rest", "nmwg"):
            raise ValueError(f"protocol must be 'rest' or 'nmwg', not {protocol!r}")
        self.path = Path(path)
        self.protocol = protocol
        self.endpoint = url.rstrip("/") + (REST_PATH if protocol == "rest" else NMWG_PATH)
        self._token = token
        self.batch_size = max(1, batch_size)
        self.timeout = timeout
        self.max_backoff = max(FIRST_BACKOFF, max_backoff)
        self._queue: queue.SimpleQueue[tuple[TestSpec, Run] | None] = queue.SimpleQueue()
        self._pending: list[Entry] = []  # taken from the queue, not yet committed
        self._pending_tests: dict[str, bytes] = {}
        self._written_tests: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()  # ingest committed something
        self._closing = threading.Event()  # ingest: commit what is queued, then stop
        self._stop = threading.Event()  # deliver: stop
        self._threads: dict[str, threading.Thread] = {}
        self._generation = 0  # abandon() bumps it: threads of an older one end
        self._ingest_lock = threading.Lock()  # _pending is one thread's at a time
        self._open_lock = threading.Lock()
        # Held over a commit and the counters' update, so that they change in commit order
        # (stats itself only takes _lock, never waits for a disk).
        self._write_lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self._busy_until: dict[str, float] = {}  # inside a call bounded by this deadline
        self._counts_loaded = False
        self._backlog = 0
        self._oldest_us: int | None = None
        self._delivered = 0
        self._dead_letters = 0
        self._queued = 0
        self._last_error: str | None = None
        self._ingest_error: str | None = None
        self._last_delivery_us: int | None = None
        self._retrying = False
        self._next_attempt = 0.0  # time.monotonic()
        self._close_deadline = float("inf")
        self._backoff = FIRST_BACKOFF
        self._source_fallback = socket.gethostname()  # the PingER src when a test has none

    # ---- the public surface ----------------------------------------------------------------

    def start(self) -> None:
        """Start the threads that are not running (again, after one died)."""
        self._closing.clear()
        self._stop.clear()
        self._close_deadline = float("inf")
        for name, target in (("ingest", self._ingest_loop), ("deliver", self._deliver_loop)):
            thread = self._threads.get(name)
            if thread is not None and thread.is_alive():
                continue
            self._beats[name] = time.monotonic()
            self._busy_until.pop(name, None)
            thread = threading.Thread(
                target=target, args=(self._generation,), name=f"spool-{name}", daemon=True
            )
            self._threads[name] = thread
            thread.start()

    def abandon(self) -> None:
        """Give up on the current threads (their heartbeat went stale: hung somewhere); the
        next start() makes fresh ones. An abandoned thread that wakes up ends at its next
        step; what it delivered meanwhile is at worst delivered again (idempotent)."""
        self._generation += 1
        self._threads.clear()

    def is_alive(self) -> bool:
        return len(self._threads) == 2 and all(t.is_alive() for t in self._threads.values())

    @property
    def beat(self) -> float:
        """The least recent heartbeat of the threads. A thread inside a call bounded by a
        deadline (an HTTP request within ``timeout``) counts as beating until that deadline."""
        if not self._beats:
            return 0.0
        now = time.monotonic()
        return min(
            max(beat, min(now, self._busy_until.get(name, 0.0)))
            for name, beat in self._beats.items()
        )

    def submit(self, spec: TestSpec, run: Run) -> None:
        self._queue.put((spec, run))
        with self._lock:
            self._queued += 1

    def close(self, timeout: float = 10.0) -> None:
        """Commit everything submitted so far to the outbox, stop delivering, join."""
        deadline = time.monotonic() + timeout
        self._close_deadline = deadline
        self._stop.set()
        self._closing.set()
        self._queue.put(None)  # wakes the ingest thread
        self._wake.set()
        ingest = self._threads.get("ingest")
        if ingest is None or not ingest.is_alive():
            self._ingest_loop()  # never started, or died: commit here, in the caller's thread
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        left = self._queued
        if left:
            log.error("spool closed with %d run(s) not committed: %s", left, self._ingest_error)

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            retry_in = max(0.0, self._next_attempt - time.monotonic()) if self._retrying else None
            oldest = self._oldest_us if self._backlog else None
            return {
                "backlog": self._backlog,
                "oldest_age_s": None if oldest is None else max(0.0, (now_us() - oldest) / 1e6),
                "delivered": self._delivered,
                "dead_letters": self._dead_letters,
                "last_error": self._last_error or self._ingest_error,
                "last_delivery_us": self._last_delivery_us,
                "retrying": self._retrying,
                "next_attempt_in_s": retry_in,
                "queued": self._queued,  # submitted, not yet in the outbox
                "protocol": self.protocol,
            }

    def dead_letters(self) -> list[dict[str, Any]]:
        """The dead-letter table, oldest first (for the CLI and tests; reads the file)."""
        return read_dead_letters(self.path)

    # ---- shared helpers --------------------------------------------------------------------

    def _beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    def _sleep(self, name: str, seconds: float, event: threading.Event) -> None:
        """Wait up to ``seconds`` (or until ``event``), beating at least every TICK."""
        end = time.monotonic() + seconds
        while not event.is_set() and (left := end - time.monotonic()) > 0:
            event.wait(min(left, TICK))
            self._beat(name)

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection. One thread at a time: two connections switching a new
        file to WAL at once make one fail with "database is locked" at once, no waiting."""
        with self._open_lock:
            db = _open(self.path)
            try:
                self._check_protocol(db)
                self._load_counts(db)
            except BaseException:
                db.close()
                raise
            return db

    def _load_counts(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if self._counts_loaded:
                return
            self._backlog, self._oldest_us = db.execute(
                "SELECT count(*), min(queued_us) FROM outbox"
            ).fetchone()
            self._dead_letters = db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
            self._counts_loaded = True

    def _check_protocol(self, db: sqlite3.Connection) -> None:
        """Rows are stored in their wire form: rows encoded for the other protocol cannot be
        sent here, so they move to dead_letter (payload kept) instead of blocking the queue."""
        row = db.execute("SELECT value FROM meta WHERE name = 'protocol'").fetchone()
        if row is not None and row[0] == self.protocol:
            return
        with db:
            if row is not None:
                reason = f"encoded for protocol {row[0]}; the spool now delivers {self.protocol}"
                moved = db.execute(
                    "INSERT INTO dead_letter SELECT run_id, test_key, planned_us, payload, ?, ?"
                    " FROM outbox",
                    (reason, now_us()),
                ).rowcount
                db.execute("DELETE FROM outbox")
                if moved:
                    log.error("spool: %d run(s) moved to dead_letter: %s", moved, reason)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('protocol', ?)", (self.protocol,))

    # ---- ingest: memory → outbox -----------------------------------------------------------

    def _ingest_loop(self, generation: int | None = None) -> None:
        db: sqlite3.Connection | None = None
        delay = 0.1
        while not self._ingest_lock.acquire(timeout=TICK):  # an abandoned one is still in it
            if generation is not None and generation != self._generation:
                return
            if time.monotonic() > self._close_deadline:
                log.error(
                    "spool: the outbox writer is stuck; %d run(s) not committed", self._queued
                )
                return
        try:
            self._written_tests.clear()  # a new connection: write each test once again
            while generation is None or generation == self._generation:
                self._beat("ingest")
                db, delay, done = self._ingest_step(db, delay)
                if done:
                    return
        finally:
            self._ingest_lock.release()
            if db is not None:
                db.close()

    def _ingest_step(
        self, db: sqlite3.Connection | None, delay: float
    ) -> tuple[sqlite3.Connection | None, float, bool]:
        """One gather-and-commit; (connection, next retry delay, whether to stop)."""
        try:
            if db is None:
                db = self._connect()
            closing = self._gather()
            if self._pending or self._pending_tests:
                self._commit(db)
            self._ingest_error = None
            return db, 0.1, closing and self._queue.empty()
        except Exception as e:  # disk full, read-only, locked: keep the runs and retry
            self._ingest_error = f"outbox: {type(e).__name__}: {e}"
            log.error("spool ingest failed, will retry: %s", self._ingest_error)
            if isinstance(e, sqlite3.Error) and db is not None:
                db.close()
                db = None
            if self._closing.is_set() and time.monotonic() > self._close_deadline:
                return db, delay, True  # close() has given up waiting: the runs stay in memory
            self._sleep("ingest", delay, threading.Event())
            return db, min(delay * 2, 5.0), False

    def _gather(self) -> bool:
        """Move runs from the queue to ``_pending`` (encoded) for up to INGEST_WINDOW after
        the first; True once close() asked to stop."""
        if self._pending:  # a failed commit: retry it first, then take more
            return self._closing.is_set()
        try:
            item = self._queue.get(timeout=TICK)
        except queue.Empty:
            return self._closing.is_set()
        end = time.monotonic() + INGEST_WINDOW
        while True:
            if item is None:  # close() wakes us; a sentinel left from an earlier close is ignored
                return self._closing.is_set()
            self._encode(*item)
            if len(self._pending) >= INGEST_MAX:
                return self._closing.is_set()
            try:
                item = self._queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return self._closing.is_set()

    def _encode(self, spec: TestSpec, run: Run) -> None:
        queued = now_us()
        try:
            if self.protocol == "rest":
                reason, payload = None, rest_run(run)
                test = rest_test(spec)
                if self._written_tests.get(spec.key) != test:
                    self._pending_tests[spec.key] = test
            elif (reason := nmwg_refusal(spec, run)) is None:
                payload = nmwg_unit(spec, run, spec.source or self._source_fallback)
            else:
                payload = rest_run(run)  # kept in readable form with the reason
        except Exception as e:  # a value that has no wire form: keep the run, with why
            reason = f"cannot encode the run: {type(e).__name__}: {e}"
            payload = repr(run).encode()
        self._pending.append(
            Entry(run.planned_us, run.run_id, run.test_key, queued, payload, reason)
        )

    def _commit(self, db: sqlite3.Connection) -> None:
        rows = [e[:5] for e in self._pending if e.reason is None]
        dead = [
            (e.run_id, e.test_key, e.planned_us, e.payload, e.reason, e.queued_us)
            for e in self._pending
            if e.reason is not None
        ]
        with self._write_lock, db:
            db.executemany(
                "INSERT OR REPLACE INTO tests VALUES (?, ?)", self._pending_tests.items()
            )
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO outbox (planned_us, run_id, test_key, queued_us, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            inserted = db.total_changes - before
            db.executemany("INSERT INTO dead_letter VALUES (?, ?, ?, ?, ?, ?)", dead)
            db.commit()
            with self._lock:
                self._backlog += inserted
                self._dead_letters += len(dead)
                self._queued -= len(self._pending)
                if inserted and self._oldest_us is None:
                    self._oldest_us = min(r[3] for r in rows)
        for reason in {d[4] for d in dead}:
            log.warning("spool: run(s) dead-lettered at ingest: %s", reason)
        self._written_tests.update(self._pending_tests)
        self._pending.clear()
        self._pending_tests.clear()
        self._wake.set()

    # ---- deliver: outbox → remote ----------------------------------------------------------

    def _deliver_loop(self, generation: int) -> None:
        db: sqlite3.Connection | None = None
        client: httpx.Client | None = None
        try:
            while not self._stop.is_set() and generation == self._generation:
                self._beat("deliver")
                wait = self._next_attempt - time.monotonic()
                if wait > 0:
                    self._sleep("deliver", wait, self._stop)
                    continue
                try:
                    if db is None:
                        db = self._connect()
                    if client is None:
                        client = self._client()
                    if not self._deliver_some(db, client):
                        self._sleep("deliver", TICK, self._wake)
                except Exception as e:
                    if isinstance(e, sqlite3.Error) and db is not None:
                        db.close()
                        db = None
                    if not isinstance(e, _Retry | httpx.HTTPError | sqlite3.Error):
                        log.exception("spool delivery failed unexpectedly")
                    self._failed(
                        f"{type(e).__name__}: {e}" if not isinstance(e, _Retry) else str(e)
                    )
        finally:
            if client is not None:
                client.close()
            if db is not None:
                db.close()

    def _client(self) -> httpx.Client:
        headers = {"content-type": "application/json" if self.protocol == "rest" else "text/xml"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        return httpx.Client(
            headers=headers,
            timeout=self.timeout,
            trust_env=False,  # no proxy from the environment: the remote is where we were told
        )

    def _deliver_some(self, db: sqlite3.Connection, client: httpx.Client) -> bool:
        """Deliver the oldest batch; False when the outbox is empty."""
        self._wake.clear()  # before looking: a commit from now on wakes the idle wait
        rows = [
            Row(*r)
            for r in db.execute(
                "SELECT id, planned_us, run_id, test_key, payload FROM outbox"
                " ORDER BY planned_us, run_id LIMIT ?",
                (self.batch_size,),
            )
        ]
        if not rows:
            return False
        self._deliver(db, client, rows)
        with self._lock:
            self._retrying = False
            self._last_error = None
            self._backoff = FIRST_BACKOFF
            self._next_attempt = 0.0
        return True

    def _deliver(self, db: sqlite3.Connection, client: httpx.Client, rows: list[Row]) -> None:
        """Post ``rows``; settle what the remote took or refused; bisect a batch refused as a
        whole; raise _Retry when some of it must wait."""
        outcome = self._attempt(db, client, rows)
        if outcome.split is not None:
            if len(rows) == 1:
                outcome.dead[rows[0].id] = outcome.split
            else:
                log.info("spool: batch of %d refused (%s); bisecting", len(rows), outcome.split)
        self._settle(db, rows, outcome)
        if outcome.split is not None and len(rows) > 1 and not self._stop.is_set():
            half = len(rows) // 2
            self._deliver(db, client, rows[:half])
            self._deliver(db, client, rows[half:])
        if outcome.retry is not None:
            raise _Retry(outcome.retry)

    def _attempt(self, db: sqlite3.Connection, client: httpx.Client, rows: list[Row]) -> Outcome:
        body = self._body(db, rows)
        self._busy_until["deliver"] = time.monotonic() + 2 * self.timeout + 1
        try:
            response = client.post(self.endpoint, content=body)
        except httpx.HTTPError as e:  # no connection, timeout, broken response
            return Outcome(retry=f"{type(e).__name__}: {e or 'no detail'} ({self.endpoint})")
        finally:
            self._busy_until.pop("deliver", None)
            self._beat("deliver")
        if self.protocol == "rest":
            return rest_outcome(rows, response)
        return nmwg_outcome(rows, response)

    def _body(self, db: sqlite3.Connection, rows: list[Row]) -> bytes:
        if self.protocol == "nmwg":
            return nmwg_message([r.payload for r in rows])
        keys = json.dumps(sorted({r.test_key for r in rows}))
        tests = [
            t[0]
            for t in db.execute(
                "SELECT payload FROM tests WHERE key IN (SELECT value FROM json_each(?))", (keys,)
            )
        ]
        return b'{"tests":[%s],"runs":[%s]}' % (
            b",".join(tests),
            b",".join(r.payload for r in rows),
        )

    def _settle(self, db: sqlite3.Connection, rows: list[Row], outcome: Outcome) -> None:
        """Delete what was delivered and move what was refused, in one transaction. If the
        outbox cannot be written the rows stay and are delivered again (idempotent)."""
        if not outcome.delivered and not outcome.dead:
            return
        by_id = {r.id: r for r in rows}
        failed = now_us()
        with self._write_lock, db:
            # From the outbox row itself: a row another thread settled already moves nowhere.
            before = db.total_changes
            db.executemany(
                "INSERT INTO dead_letter SELECT run_id, test_key, planned_us, payload, ?, ?"
                " FROM outbox WHERE id = ?",
                [(why, failed, i) for i, why in outcome.dead.items()],
            )
            dead = db.total_changes - before
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in outcome.dead])
            before = db.total_changes
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in outcome.delivered])
            delivered = db.total_changes - before
            oldest = db.execute("SELECT min(queued_us) FROM outbox").fetchone()[0]
            db.commit()
            with self._lock:
                self._backlog -= dead + delivered
                self._oldest_us = oldest
                self._delivered += delivered
                self._dead_letters += dead
                if outcome.delivered:
                    self._last_delivery_us = now_us()
        for row_id, reason in outcome.dead.items():
            log.error("spool: run %s dead-lettered: %s", by_id[row_id].run_id, reason)

    def _failed(self, error: str) -> None:
        with self._lock:
            self._last_error = error
            self._retrying = True
            self._next_attempt = time.monotonic() + self._backoff
            wait = self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff)
        log.warning("spool delivery failed, retrying in %.1fs: %s", wait, error)
