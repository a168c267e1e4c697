"""Hung-process cleanup: IEPM-BW's bw-cleanup, restricted to our own descendants.

A run's child is a subreaper that ends what its tool left behind, and the runner kills a run's
group and tree at its deadline, but a process can still slip away: what a run's child had
adopted when it died abruptly (killed from outside, crashed), or what a worker of the daemon
itself leaves. With the daemon a child subreaper (``proctree.become_subreaper``) such orphans
are reparented to the daemon instead of init, so they stay below it, and a
``cleanup`` list catches the known troublemakers (ping, traceroute, iperf clients, gnuplot…):
a descendant whose command line matches a rule's regular expression and that is older than the
rule's ``max_minutes`` gets SIGTERM, and SIGKILL on a later scan if it is still alive after
``grace`` seconds. Each scan also reaps orphans that have exited (zombies of the daemon), and
``final_sweep`` leaves neither orphan nor zombie when the daemon stops.

One scan reads /proc once (~3 ms for 500 processes); command lines are read only for the
descendants old enough for some rule.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from netsonde import proctree
from netsonde.mp.status import ReaperStats
from netsonde.proctree import ProcInfo

log = logging.getLogger(__name__)

_CMDLINE_SHOWN = 200  # characters of a command line in logs and Kill records
# A zombie child not in keep() is reaped only once it has been seen in an earlier scan this long
# ago: its owner (Popen, a uvloop subprocess) may not have put its pid in keep() yet when it
# exits at once, and stealing its exit status would leave libuv waiting for ever.
_SETTLE = 0.5

_Id = tuple[int, int]  # (pid, start ticks): a process, whatever happens to the pid later


def check_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a cleanup pattern; ValueError with a one-line reason if it is not valid."""
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None


class RuleLike(Protocol):
    """What the config gives (config.CleanupRule has these two fields)."""

    @property
    def pattern(self) -> str: ...
    @property
    def max_minutes(self) -> float: ...


@dataclass(frozen=True)
class CleanupRule:
    """A command-line regular expression (searched, not matched) and the age in minutes after
    which a matching descendant is killed."""

    pattern: str
    max_minutes: float
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.max_minutes >= 0:  # also rejects NaN
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes!r}")
        object.__setattr__(self, "regex", check_pattern(self.pattern))

    @classmethod
    def of(cls, rule: RuleLike) -> CleanupRule:
        return rule if isinstance(rule, CleanupRule) else cls(rule.pattern, rule.max_minutes)

    @property
    def max_age(self) -> float:
        return self.max_minutes * 60.0


@dataclass(frozen=True)
class Kill:
    pid: int
    signal: signal.Signals
    age: float  # seconds
    rule: str  # the rule's pattern; "final sweep" for final_sweep
    cmdline: str  # truncated


@dataclass
class _Pending:
    since: float  # when SIGTERM was sent (the clock scan() is given)
    rule: CleanupRule
    info: ProcInfo
    killed: bool = False  # SIGKILL sent; kept until the process is gone so it is not hit again


def _never() -> Collection[int]:
    return ()


class Reaper:
    """Call ``scan()`` about once a second from the daemon, ``final_sweep()`` when it stops.

    ``keep()``: pids of the children that someone else waits for (the fork server's Popen,
    supervised subprocesses); they are never reaped here. ``exempt()``: pids never killed here
    (the daemon's own long-lived workers: the fork server, API workers, kept servers).
    """

    def __init__(
        self,
        rules: Iterable[RuleLike],
        *,
        root_pid: int | None = None,
        keep: Callable[[], Collection[int]] = _never,
        exempt: Callable[[], Collection[int]] = _never,
        grace: float = 5.0,
        subreaper: bool = True,
    ) -> None:
        self.rules = [CleanupRule.of(r) for r in rules]
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self.keep = keep
        self.exempt = exempt
        self.grace = grace
        self._min_age = min((r.max_age for r in self.rules), default=float("inf"))
        self._pending: dict[_Id, _Pending] = {}
        self._zombies: dict[_Id, float] = {}  # zombie children: first seen (monotonic)
        self.subreaper = False
        if subreaper and self.root_pid == os.getpid():
            self.subreaper = proctree.become_subreaper()
            if not self.subreaper:
                log.warning("cannot become a child subreaper: orphans will escape to init")
        self.stats = ReaperStats()  # replaced whole on each change: a reader sees one state

    # ---- periodic scan ------------------------------------------------------------------------

    def scan(self, now: float | None = None) -> list[Kill]:
        """One pass: SIGTERM matching descendants over their age, SIGKILL those whose grace is
        up, reap exited orphans. ``now`` (epoch seconds) is for tests."""
        started = time.perf_counter()
        now = time.time() if now is None else now
        table = proctree.snapshot(cmdline=False)
        kills = self._escalate(table, now)
        if self.rules:
            kills += self._enforce(table, now)
        self._reap(table)
        self.stats = dataclasses.replace(
            self.stats,
            scans=self.stats.scans + 1,
            last_scan_seconds=time.perf_counter() - started,
        )
        return kills

    def _escalate(self, table: dict[int, ProcInfo], now: float) -> list[Kill]:
        kills = []
        for key, p in list(self._pending.items()):
            info = table.get(key[0])
            if info is None or info.start_ticks != key[1] or info.dead:
                del self._pending[key]  # gone (its pid may be someone else's now)
            elif not p.killed and now - p.since >= self.grace:
                if proctree.send_signal(info, signal.SIGKILL):
                    p.killed = True
                    kills.append(self._record(p.info, signal.SIGKILL, now, p.rule.pattern))
                else:
                    del self._pending[key]
        return kills

    def _enforce(self, table: dict[int, ProcInfo], now: float) -> list[Kill]:
        exempt = set(self.exempt())
        kills = []
        for info in proctree.descendants(self.root_pid, table):
            key = (info.pid, info.start_ticks)
            if info.dead or info.pid in exempt or key in self._pending:
                continue
            age = info.age(now)
            if age < self._min_age:
                continue  # too young for any rule: spare reading its command line
            cmdline = proctree.read_cmdline(info.pid)
            rule = next(
                (r for r in self.rules if age >= r.max_age and r.regex.search(cmdline)), None
            )
            if rule is None:
                continue
            info = dataclasses.replace(info, cmdline=cmdline)
            if proctree.send_signal(info, signal.SIGTERM):
                self._pending[key] = _Pending(now, rule, info)
                kills.append(self._record(info, signal.SIGTERM, now, rule.pattern))
        return kills

    def _reap(self, table: dict[int, ProcInfo]) -> None:
        now = time.monotonic()
        me = os.getpid()
        zombies = {
            (p.pid, p.start_ticks): p for p in table.values() if p.ppid == me and p.state == "Z"
        }
        self._zombies = {k: self._zombies.get(k, now) for k in zombies}
        unsettled = {k[0] for k, seen in self._zombies.items() if now - seen < _SETTLE}
        reaped = proctree.reap_orphans({*self.keep(), *unsettled}, table)
        if reaped:
            self._count_reaped(len(reaped))
            log.info("reaped %d orphan(s): %s", len(reaped), ", ".join(map(str, reaped)))

    def _record(self, info: ProcInfo, sig: signal.Signals, now: float, rule: str) -> Kill:
        kill = Kill(info.pid, sig, info.age(now), rule, info.cmdline[:_CMDLINE_SHOWN])
        st = self.stats
        if sig == signal.SIGTERM:
            self.stats = dataclasses.replace(st, kills_term=st.kills_term + 1, last_kill=now)
        else:
            self.stats = dataclasses.replace(st, kills_kill=st.kills_kill + 1, last_kill=now)
        log.warning(
            "cleanup: %s pid %d (age %.1fs, rule %r): %s",
            sig.name,
            kill.pid,
            kill.age,
            rule,
            kill.cmdline,
        )
        return kill

    # ---- at stop --------------------------------------------------------------------------------

    def final_sweep(self, timeout: float = 5.0) -> list[Kill]:
        """SIGTERM every descendant but the exempt, SIGKILL what remains after half of
        ``timeout``, and reap the orphans, so that stopping leaves none running and no zombie.
        Blocks for up to ``timeout`` s (run it in a thread, or after the event loop)."""
        end = time.monotonic() + timeout
        now = time.time()
        exempt = set(self.exempt())
        victims = [
            p
            for p in proctree.descendants(self.root_pid, proctree.snapshot())
            if p.pid not in exempt and not p.dead
        ]
        kills = [
            self._record(p, signal.SIGTERM, now, "final sweep")
            for p in proctree.signal_all(victims, signal.SIGTERM)
        ]
        proctree.wait_gone(victims, timeout / 2)
        while True:  # SIGKILL until nothing is left: a survivor may fork in between
            self._reap_all()
            table = proctree.snapshot()
            left = [
                p
                for p in proctree.descendants(self.root_pid, table)
                if p.pid not in exempt and not p.dead
            ]
            if not left or time.monotonic() >= end:
                break
            kills += [
                self._record(p, signal.SIGKILL, time.time(), "final sweep")
                for p in proctree.signal_all(left, signal.SIGKILL)
            ]
            proctree.wait_gone(left, min(0.5, max(0.0, end - time.monotonic())))
        for p in left:
            log.error("final sweep: pid %d survived: %s", p.pid, p.cmdline[:_CMDLINE_SHOWN])
        self._reap_until_clean(end)
        return kills

    def _reap_all(self) -> None:
        reaped = proctree.reap_orphans(self.keep())
        if reaped:
            self._count_reaped(len(reaped))

    def _count_reaped(self, n: int) -> None:
        self.stats = dataclasses.replace(self.stats, reaped=self.stats.reaped + n)

    def _reap_until_clean(self, end: float) -> None:
        """Reap until no zombie child is left but the kept ones (a SIGKILLed process turns into
        a zombie a moment after the signal)."""
        me = os.getpid()
        while True:
            self._reap_all()
            keep = set(self.keep())
            if time.monotonic() >= end or not any(
                p.ppid == me and p.state == "Z" and p.pid not in keep
                for p in proctree.snapshot(cmdline=False).values()
            ):
                return
            time.sleep(0.02)
