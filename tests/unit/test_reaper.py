"""The reaper against real processes: cleanup rules kill old matching descendants (and only
those), SIGKILL follows an ignored SIGTERM after the grace, orphans are reaped, and the final
sweep leaves nothing. Scenarios that need a subreaper run in a subprocess: the flag is per
process, and the test runner must not adopt every orphan on the host's behalf."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from netsonde import config, proctree
from netsonde.daemon.reaper import CleanupRule, Reaper, check_pattern
from netsonde.mp.status import ReaperStats
from netsonde.proctree import ProcInfo

PY = sys.executable
IGNORE_TERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "


def wait_until(what: Callable[[], object], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def proc_of(pid: int) -> ProcInfo:
    """What /proc says of a process once its exec is complete (command line in place)."""
    found: list[ProcInfo] = []

    def ready() -> bool:
        info = proctree.read_proc(pid)
        found[:] = [info] if info is not None and info.cmdline else []
        return bool(found)

    wait_until(ready)
    return found[0]


@pytest.fixture
def marker() -> str:
    """A word in the command lines of this test's processes, and nobody else's."""
    return f"reaper-test-{uuid.uuid4().hex[:12]}"


def not_our_descendant(marker: str) -> ProcInfo:
    """A process with ``marker`` in its command line that is *not* below us: started by a
    helper that exits at once (it goes to init, as this process is no subreaper)."""
    helper = subprocess.run(
        [
            PY,
            "-c",
            "import subprocess, sys; print(subprocess.Popen([sys.executable, '-c',"
            f" 'import time; time.sleep(60)', {marker!r}], start_new_session=True,"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    info = proc_of(int(helper.stdout))
    assert info.pid not in {p.pid for p in proctree.descendants(os.getpid())}
    return info


def test_a_bad_pattern_or_limit_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"invalid regular expression '\(ping': missing \)"):
        check_pattern("(ping")
    with pytest.raises(ValueError, match="invalid regular expression"):
        CleanupRule("[", 1)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="max_minutes"):
            CleanupRule("ping", bad)
    assert check_pattern(r"\btraceroute\b").search("/usr/bin/traceroute -n x")
    # The config's own rule type is accepted as is.
    rule = CleanupRule.of(config.CleanupRule(pattern="iperf3 -c", max_minutes=2))
    assert rule == CleanupRule("iperf3 -c", 2) and rule.max_age == 120


def test_old_matching_descendant_is_killed_not_the_others(marker: str, cleanup: list) -> None:
    stranger = not_our_descendant(marker)  # matches, old enough, but not ours
    cleanup.append(stranger)
    # A child tree: a parent that starts a matching and a non-matching child.
    parent = subprocess.Popen(
        [
            PY,
            "-c",
            "import subprocess, sys, time\n"
            "sleep = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
            f"m = subprocess.Popen([*sleep, {marker!r}], stdout=subprocess.DEVNULL)\n"
            "o = subprocess.Popen([*sleep, 'other'], stdout=subprocess.DEVNULL)\n"
            "print(m.pid, o.pid, flush=True)\n"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    match, other = (proc_of(int(p)) for p in parent.stdout.readline().split())
    reaper = Reaper([CleanupRule(rf"\b{marker}$", 0.01)], subreaper=False)  # 0.6 s
    kills = []
    deadline = time.monotonic() + 10
    while not kills and time.monotonic() < deadline:
        kills = reaper.scan()
        time.sleep(0.05)
    assert [(k.pid, k.signal, k.rule) for k in kills] == [
        (match.pid, signal.SIGTERM, rf"\b{marker}$")
    ]
    assert kills[0].age >= 0.6 and marker in kills[0].cmdline
    wait_until(lambda: not proctree.is_alive(match))
    assert proctree.is_alive(other) and proctree.is_alive(stranger)
    assert parent.poll() is None
    assert reaper.stats.kills_term == 1 and reaper.stats.kills_kill == 0
    assert reaper.stats.last_kill is not None
    assert reaper.scan(now=time.time() + 3600) == []  # the others never match


def test_age_is_checked_against_the_rule(marker: str, cleanup: list) -> None:
    child = proc_of(subprocess.Popen([PY, "-c", "import time; time.sleep(60)", marker]).pid)
    reaper = Reaper([CleanupRule(marker, 0.01)], subreaper=False)
    assert reaper.scan(now=child.start + 0.5) == []
    assert [k.pid for k in reaper.scan(now=child.start + 0.7)] == [child.pid]


def test_sigterm_ignored_means_sigkill_after_the_grace(
    marker: str, cleanup: list, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    code = IGNORE_TERM + f"open({str(ready)!r}, 'w').close(); import time; time.sleep(60)"
    stubborn = subprocess.Popen([PY, "-c", code, marker])
    wait_until(ready.exists)
    info = proc_of(stubborn.pid)
    reaper = Reaper([CleanupRule(marker, 0)], grace=0.3, subreaper=False)
    t = time.time()
    assert [k.signal for k in reaper.scan(now=t)] == [signal.SIGTERM]
    time.sleep(0.1)
    assert reaper.scan(now=t + 0.1) == [] and proctree.is_alive(info), "SIGTERM is ignored"
    assert [k.signal for k in reaper.scan(now=t + 0.31)] == [signal.SIGKILL]
    assert stubborn.wait(timeout=5) == -signal.SIGKILL
    assert reaper.scan(now=t + 10) == []  # gone: nothing more to do
    assert dataclasses.replace(reaper.stats, last_scan_seconds=0) == ReaperStats(
        kills_term=1, kills_kill=1, reaped=0, last_kill=t + 0.31, scans=4, last_scan_seconds=0
    )


def test_exempt_processes_are_never_killed(marker: str, cleanup: list) -> None:
    worker = subprocess.Popen([PY, "-c", "import time; time.sleep(60)", marker])
    info = proc_of(worker.pid)
    reaper = Reaper([CleanupRule(marker, 0)], exempt=lambda: {worker.pid}, subreaper=False)
    assert reaper.scan(now=time.time() + 3600) == []
    assert proctree.is_alive(info)


SCRIPT_HEAD = """
import json, os, signal, subprocess, sys, time
from netsonde import proctree
from netsonde.daemon.reaper import Reaper

def wait_until(what, timeout=10):
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end
        time.sleep(0.01)

def zombie_children():
    return sorted(p.pid for p in proctree.snapshot().values()
                  if p.ppid == os.getpid() and p.state == "Z")

def orphan(code):
    # A parent that starts a child and exits at once: the child is reparented to us. (The
    # child must not inherit the pipes: run() would wait for it to close them.)
    mid = subprocess.run([sys.executable, "-c", "import subprocess as s, sys; print(s.Popen("
        "[sys.executable, '-c', sys.argv[1]], stdout=s.DEVNULL, stderr=s.DEVNULL).pid)", code],
        capture_output=True, text=True, check=True)
    return int(mid.stdout)
"""

REAP_ORPHANS = (
    SCRIPT_HEAD
    + """
kept = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
reaper = Reaper([], keep=lambda: {kept.pid})
gone = orphan("pass")
wait_until(lambda: zombie_children() == sorted([gone, kept.pid]))
reaper.scan()
out = {"subreaper": reaper.subreaper, "first_scan": zombie_children() == sorted([gone, kept.pid])}
time.sleep(0.6)  # a zombie is reaped once it has been seen in an earlier scan
reaper.scan()
out["second_scan"] = zombie_children() == [kept.pid]
out["kept_status"] = kept.wait()
out["reaped"] = reaper.stats.reaped
print(json.dumps(out))
"""
)


def run_script(code: str) -> dict:
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_scan_reaps_orphan_zombies_but_not_kept_children() -> None:
    assert run_script(REAP_ORPHANS) == {
        "subreaper": True,
        "first_scan": True,  # too fresh: its owner might not have listed it in keep() yet
        "second_scan": True,
        "kept_status": 3,
        "reaped": 1,
    }


FINAL_SWEEP = (
    SCRIPT_HEAD
    + f"""
stay = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # exempt
reaper = Reaper([], exempt=lambda: {{stay.pid}}, keep=lambda: {{stay.pid}})
hang = {IGNORE_TERM!r} + "import time; time.sleep(60)"
# A child ignoring SIGTERM with a grandchild that setsid()s and ignores it too, and an orphan
# that ignores it: all three survive SIGTERM.
tree = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; " + {IGNORE_TERM!r}
    + "g = subprocess.Popen([sys.executable, '-c', sys.argv[1]], start_new_session=True); "
    "print(g.pid, flush=True); time.sleep(60)", hang], stdout=subprocess.PIPE, text=True)
grandchild = int(tree.stdout.readline())
adopted = orphan(hang)
wait_until(lambda: all(proctree.read_cmdline(p) for p in (tree.pid, grandchild, adopted)))
time.sleep(0.2)  # let the SIG_IGN take effect
started = time.monotonic()
kills = reaper.final_sweep(timeout=2)
took = time.monotonic() - started
tree.wait()  # Popen's own child: it is in keep() in a real daemon
left = [p.pid for p in proctree.descendants(os.getpid())]
print(json.dumps({{
    "subreaper": reaper.subreaper,
    "term": sorted(k.pid for k in kills if k.signal == signal.SIGTERM),
    "kill": sorted(k.pid for k in kills if k.signal == signal.SIGKILL),
    "expected": sorted([tree.pid, grandchild, adopted]),
    "left": left, "stay": stay.pid, "zombies": zombie_children(), "took": took,
    "stats": [reaper.stats.kills_term, reaper.stats.kills_kill],
}}))
stay.kill()
"""
)


def test_final_sweep_leaves_no_orphan_and_no_zombie() -> None:
    out = run_script(FINAL_SWEEP)
    assert out["subreaper"]
    assert out["term"] == out["kill"] == out["expected"]  # all three ignored SIGTERM
    assert out["left"] == [out["stay"]], "only the exempt worker is left"
    assert out["zombies"] == []
    assert out["stats"] == [3, 3]
    assert out["took"] < 2 + 1


def test_the_reaper_skips_a_pass_when_out_of_descriptors_and_goes_on() -> None:
    import asyncio
    import resource

    from netsonde.daemon.service import reap_forever
    from netsonde.daemon.supervisor import Heartbeat

    async def scenario() -> tuple[int, int, bool]:
        reaper = Reaper([], keep=set, exempt=set)
        task = asyncio.create_task(reap_forever(reaper, Heartbeat(), every=0.05))
        await asyncio.sleep(0.2)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Fill every free number up to the highest in use: the kernel gives the lowest free one.
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        fillers = []
        while (fd := os.open(os.devnull, os.O_RDONLY)) < highest:
            fillers.append(fd)
        os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd, hard))  # every number below: taken
        try:
            scans_before = reaper.stats.scans
            await asyncio.sleep(0.3)
            starved = reaper.stats.scans - scans_before
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for filler in fillers:
                os.close(filler)
        scans_starved_end = reaper.stats.scans
        await asyncio.sleep(0.3)
        alive = not task.done()
        task.cancel()
        return starved, reaper.stats.scans - scans_starved_end, alive

    starved, after, alive = asyncio.run(scenario())
    assert starved == 0  # every pass failed with EMFILE …
    assert alive and after >= 2  # … and the reaper went on scanning once it could
