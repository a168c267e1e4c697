"""The registrar: each of this instance's services registered with a lookup service and kept
alive there (the seed's ``registerLS``, its client ``Client/LS/Remote.pm``, PROTOCOL.md §4.15).

One supervised thread, never the event loop: every exchange is bounded by ``timeout`` (connect,
send and answer together), so an unreachable or slow lookup service costs this thread that much
and never delays measuring. Per service, in a cycle:

* not registered: Echo first, then a deregistration of the key it would have (what a killed
  predecessor left), then LSRegisterRequest with the first 50 items
  and the rest appended by the key the reply gave; the URLs are tried in order, as root hints;
* what it serves changed: registered again over its key (a "clobber": key and service);
* keepalive due (``interval``, jittered ±10 %): LSKeepaliveRequest; a refused one (the LS expired
  the key or restarted without it) or an unreachable LS: registered again, from the first URL;
* ``close``: a deregistration of every key held, within the time given.

A service with nothing to register is not registered (and is deregistered when it stops having
anything); a failure waits a backoff (10 s doubling to ``interval``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import httpx
from lxml import etree

from netsonde.mp.status import RegistrationStatus
from netsonde.nmwg import build, codes, ls
from netsonde.nmwg.client import SOAP_ACTION, ClientError, read_bounded
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.parse import parse_message
from netsonde.registration.settings import RegistrationSection
from netsonde.restartable import OneThread

log = logging.getLogger(__name__)

CHECK_EVERY = 60.0  # seconds: how often what a service serves is compared with what it registered
FIRST_BACKOFF = 10.0
MAX_REPLY_BYTES = 4 * 1024 * 1024  # a registration reply is a few hundred bytes
JITTER = 0.1  # keepalives spread ±10 % around the interval, so a fleet does not beat in step
TICK = 0.5  # seconds: the longest the thread waits without beating
ECHO_EVENT_TYPE = "http://schemas.perfsonar.net/tools/admin/echo/ls/2.0"


@dataclass(frozen=True)
class Registrant:
    """A service to register: its name (in status and metrics), what it registers as, and what
    it serves now (called in the registrar's thread; nmwg:metadata elements)."""

    name: str
    service: ls.ServiceInfo
    items: Callable[[], list[etree._Element]]


class Failed(Exception):
    """One exchange failed: unreachable, too slow, not an NMWG answer, or refused."""


class _Stopping(Exception):
    """``close`` has begun: the cycle ends where it is, its state left for close to read."""


class Refused(Failed):
    """The lookup service answered with an error code (``code``)."""

    def __init__(self, code: str | None, text: str) -> None:
        super().__init__(text)
        self.code = code


def echo_request() -> etree._Element:
    ids = build.IdGen()
    message = build.element("nmwg:message", {"type": "EchoRequest", "id": ids.message()})
    md = build.metadata(ids, event_type=ECHO_EVENT_TYPE)
    message.append(md)
    message.append(build.data(ids, md.get("id", "")))
    return message


class _Entry:
    """One registrant's state; the thread changes it, ``states`` reads a copy under the lock."""

    def __init__(self, registrant: Registrant) -> None:
        self.registrant = registrant
        self.status = RegistrationStatus(access_point=registrant.service.access_point)
        self.digest: str | None = None  # of the items registered
        self.next_check = 0.0  # epoch seconds: compare what it serves, register if need be
        self.next_keepalive = 0.0  # while registered
        self.backoff = 0.0
        self.logged: str | None = None  # the last error logged

    def due(self) -> float:
        registered = self.status.key is not None
        return min(self.next_check, self.next_keepalive) if registered else self.next_check


class Registrar(OneThread):
    thread_name = "registrar"

    def __init__(
        self,
        registrants: Sequence[Registrant],
        section: RegistrationSection,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.section = section
        self._entries = [_Entry(r) for r in registrants]
        self._client = client or httpx.Client()
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._busy_until = 0.0  # monotonic: inside an exchange bounded by this deadline
        self._ttl = round(section.ttl)

    # ---- the public surface ----------------------------------------------------------------

    @property
    def beat(self) -> float:
        """The last heartbeat, or now while inside an exchange bounded by its deadline."""
        return max(self._beat, min(time.monotonic(), self._busy_until))

    def states(self) -> dict[str, RegistrationStatus]:
        with self._lock:
            return {e.registrant.name: e.status for e in self._entries}

    def check_now(self) -> None:
        """Compare what each service serves with what it registered at once (a reload)."""
        for e in self._entries:
            e.next_check = 0.0
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread, then deregister every key held, all within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._join(timeout / 2)
        for e in self._entries:
            left = deadline - time.monotonic()
            url, key = e.status.url, e.status.key
            if url is None or key is None or left <= 0:
                continue
            try:
                timeout = min(left, self.section.timeout)
                self._send(url, ls.deregister_request(key), timeout, closing=True)
                log.info("%s deregistered from %s", e.registrant.name, url)
            except Failed as err:
                log.warning("%s: not deregistered from %s: %s", e.registrant.name, url, err)
            self._update(e, url=None, key=None)
        self._client.close()

    def tick(self) -> None:
        """One pass: every service whose check or keepalive is due gets its cycle."""
        for e in self._entries:
            if self._stop.is_set():
                return
            now = self._clock()
            if now >= e.due():
                try:
                    self._cycle(e, now)
                except _Stopping:
                    return

    # ---- the thread --------------------------------------------------------------------------

    def _loop(self, generation: int) -> None:
        while generation == self._generation and not self._stop.is_set():
            self._beat = time.monotonic()
            try:
                self.tick()
            except Exception:  # a bug in one cycle: logged, and the next tick goes on
                log.exception("registrar: a cycle failed")
            self._wake.wait(self._sleep())
            self._wake.clear()

    def _sleep(self) -> float:
        now = self._clock()
        due = min((e.due() for e in self._entries), default=now + TICK)
        return min(TICK, max(0.0, due - now))

    # ---- a cycle -------------------------------------------------------------------------------

    def _cycle(self, e: _Entry, now: float) -> None:
        e.next_check = now + min(CHECK_EVERY, self.section.interval)
        try:
            items = e.registrant.items()
        except Exception as err:  # its store unreadable now: try again at the next check
            log.warning("%s: what it serves could not be read: %s", e.registrant.name, err)
            self._failed(e, f"reading what it serves: {err}")
            return
        digest = _digest(items)
        registered = e.status.key is not None
        if len(items) != e.status.items and not registered:
            self._update(e, items=len(items))  # shown in status while not registered
        if not items:
            if registered:
                self._withdraw(e)
            return
        if not registered or digest != e.digest:
            self._register(e, items, digest)
        elif now >= e.next_keepalive:
            self._keepalive(e, items, digest)

    def _keepalive(self, e: _Entry, items: list[etree._Element], digest: str) -> None:
        url, key = e.status.url, e.status.key
        assert url is not None and key is not None
        try:
            self._send(url, ls.keepalive_request(key, ttl=self._ttl))
        except Failed as err:
            # The LS forgot the key (expired, restarted without it) or is gone: register anew,
            # from the first URL.
            log.info(
                "%s: keepalive at %s failed (%s): registering again", e.registrant.name, url, err
            )
            self._failed(e, f"keepalive: {err}")
            self._update(e, url=None, key=None)
            self._register(e, items, digest)
            return
        self._succeeded(e)

    def _register(self, e: _Entry, items: list[etree._Element], digest: str) -> None:
        errors = []
        held = (e.status.url, e.status.key)
        for url in self.section.urls:
            try:
                key = self._register_at(e, url, items)
            except Failed as err:
                errors.append(f"{url}: {err}")
                self._failed(e, errors[-1])  # counted; the next URL is tried at once
                continue
            e.digest = digest
            self._update(e, url=url, key=key, items=len(items))
            self._succeeded(e)
            log.info("%s registered %d item(s) with %s", e.registrant.name, len(items), url)
            if held[0] is not None and held[1] is not None and held[0] != url:
                # Registered elsewhere now (an earlier URL is back): the old one let go.
                with contextlib.suppress(Failed):
                    self._send(held[0], ls.deregister_request(held[1]))
            return
        self._update(e, url=None, key=None, last_error="; ".join(errors)[:1000])
        self._back_off(e)

    def _register_at(self, e: _Entry, url: str, items: list[etree._Element]) -> str:
        """Register at ``url``; the key. Raises Failed."""
        service = e.registrant.service
        old = e.status.key if e.status.url == url else None
        self._send(url, echo_request())
        if old is None:
            # A fresh registration starts clean, as Remote.pm's first cycle did: what a killed
            # predecessor left under the key, or this process before a failover, would be
            # appended to otherwise.
            with contextlib.suppress(Refused):  # nothing there: the usual answer
                self._send(url, ls.deregister_request(ls.ls_key(service.access_point)))
        first = items[: ls.ITEMS_PER_MESSAGE]
        try:
            reply = self._send(url, ls.register_request(service, first, key=old, ttl=self._ttl))
        except Refused as err:
            if old is None or err.code != codes.LS_REGISTER_KEY_NOT_FOUND:
                raise
            reply = self._send(url, ls.register_request(service, first, ttl=self._ttl))
        key = reply.key or ls.ls_key(service.access_point)
        for message in ls.append_requests(key, items[ls.ITEMS_PER_MESSAGE :], ttl=self._ttl):
            self._send(url, message)
        return key

    def _withdraw(self, e: _Entry) -> None:
        url, key = e.status.url, e.status.key
        if url is not None and key is not None:
            try:
                self._send(url, ls.deregister_request(key))
            except Failed as err:  # the lease ends by itself
                log.info("%s: deregistration at %s failed: %s", e.registrant.name, url, err)
        e.digest = None
        self._update(e, url=None, key=None, items=0)

    # ---- bookkeeping -------------------------------------------------------------------------

    def _update(self, e: _Entry, **changes: object) -> None:
        with self._lock:
            e.status = replace(e.status, **changes)  # type: ignore[arg-type]

    def _succeeded(self, e: _Entry) -> None:
        now = self._clock()
        e.backoff = 0.0
        e.logged = None
        interval = self.section.interval
        e.next_keepalive = now + interval * self._rng.uniform(1 - JITTER, 1 + JITTER)
        self._update(e, last_success=now, next_due=e.next_keepalive)

    def _failed(self, e: _Entry, why: str) -> None:
        """Count a failed exchange (or a failure to read what is served) and say why."""
        now = self._clock()
        self._update(e, last_error=why[:1000], last_error_at=now, failures=e.status.failures + 1)

    def _back_off(self, e: _Entry) -> None:
        """Nothing worked: the next attempt after a backoff (10 s doubling, up to interval)."""
        e.backoff = min(max(e.backoff * 2, FIRST_BACKOFF), self.section.interval)
        e.next_check = self._clock() + e.backoff
        self._update(e, next_due=e.next_check)
        if e.status.last_error != e.logged:  # once per new error, not every backoff
            log.warning("%s: not registered: %s", e.registrant.name, e.status.last_error)
            e.logged = e.status.last_error

    # ---- one exchange ------------------------------------------------------------------------

    def _send(
        self,
        url: str,
        message: etree._Element,
        timeout: float | None = None,
        *,
        closing: bool = False,
    ) -> ls.Reply:
        """POST ``message`` to ``url`` and read the reply, all within ``timeout`` (by default
        the section's). Raises Failed, or Refused for an error code. Once ``close`` has begun,
        only its own exchanges (``closing``) are sent: the thread starts none that would
        register after the deregistration (one in flight then lives until its lease ends)."""
        if self._stop.is_set() and not closing:
            raise _Stopping
        timeout = self.section.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._busy_until = deadline + 1.0
        headers = {"SOAPAction": SOAP_ACTION, "Content-Type": "text/xml"}
        if self.section.token:
            headers["Authorization"] = f"Bearer {self.section.token}"
        try:
            content = self._post(url, build.envelope(message), headers, timeout, deadline)
        finally:
            self._busy_until = 0.0
            self._beat = time.monotonic()
        try:
            reply = ls.read_reply(parse_message(content, MAX_REPLY_BYTES))
        except NMWGError as err:
            raise Failed(f"not an NMWG answer: {err}") from None
        if not reply.ok:
            raise Refused(reply.error, reply.describe())
        return reply

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float, deadline: float
    ) -> bytes:
        try:
            with self._client.stream(
                "POST", url, content=body, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    raise Failed(f"HTTP {response.status_code} {response.reason_phrase}")
                return read_bounded(response, MAX_REPLY_BYTES, deadline)
        except ClientError as err:
            raise Failed(f"{err} (within {timeout:g} s)") from None
        except httpx.HTTPError as err:
            raise Failed(str(err) or type(err).__name__) from None


def _digest(items: list[etree._Element]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(etree.tostring(item, method="c14n"))
    return h.hexdigest()
