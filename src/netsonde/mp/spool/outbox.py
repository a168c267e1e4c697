"""The outbox and its two threads: *ingest* encodes each submitted run to its wire form once
and commits it to the SQLite outbox; *deliver* posts the oldest rows to the remote and settles
them by the remote's answer (the package docstring tells the whole story)."""

from __future__ import annotations

import json
import logging
import queue
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal

import httpx

from netsonde.model import Run, TestSpec, to_us
from netsonde.mp.spool.db import Entry, Row, open_outbox, read_dead_letters
from netsonde.mp.spool.nmwg import NMWG_PATH, nmwg_message, nmwg_refusal, nmwg_unit
from netsonde.mp.spool.outcome import Outcome, nmwg_outcome, rest_outcome
from netsonde.mp.spool.rest import REST_PATH, rest_body, rest_run, rest_test

log = logging.getLogger(__name__)

Protocol = Literal["rest", "nmwg"]

INGEST_WINDOW = 0.1  # seconds: how long a commit waits to gather more runs
INGEST_MAX = 2000  # runs per ingest transaction
TICK = 0.5  # seconds: the longest a loop waits without beating
FIRST_BACKOFF = 0.5


def now_us() -> int:
    return to_us(time.time())


class _Retry(Exception):
    """Delivery must wait and try again; the message goes to last_error."""


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
            db = open_outbox(self.path)
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
        return rest_body(tests, (r.payload for r in rows))

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
