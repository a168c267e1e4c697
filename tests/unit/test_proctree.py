"""proctree against real processes: /proc parsing, trees with setsid()'d members, signalling
that never hits a recycled pid, and the subreaper (in a subprocess: the flag is per process)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netsonde import proctree

PY = sys.executable
SLEEP = "import time; time.sleep(60)"
IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
# A child that starts a grandchild in a session of its own, writes the grandchild's pid, waits.
ESCAPING_PARENT = f"""
import subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c", {IGNORE_TERM + SLEEP!r}], start_new_session=True)
open(sys.argv[1] + ".tmp", "w").write(str(g.pid))
__import__("os").rename(sys.argv[1] + ".tmp", sys.argv[1])
{IGNORE_TERM}time.sleep(60)
"""


def wait_until(what: Callable[[], object], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def read_pid(path: Path) -> int:
    wait_until(path.exists)
    return int(path.read_text())


def test_read_proc_parses_ids_start_time_comm_and_cmdline(tmp_path: Path, cleanup: object) -> None:
    odd = tmp_path / "we) ir d (x"  # comm ends at the *last* parenthesis
    odd.symlink_to(PY)
    before = time.time()
    child = subprocess.Popen([str(odd), "-c", SLEEP, "an arg"], process_group=0)
    after = time.time()
    # Popen returns when the exec is past its point of no return; the new command line is in
    # place a moment later.
    wait_until(lambda: proctree.read_cmdline(child.pid))
    info = proctree.read_proc(child.pid)
    assert info is not None
    assert (info.ppid, info.pgid, info.sid) == (os.getpid(), child.pid, os.getsid(0))
    assert info.comm == "we) ir d (x"
    assert info.cmdline == f"{odd} -c {SLEEP} an arg"
    assert info.state in "RSD"
    # Start ticks are 1/100 s and truncated: the start lies within a tick of the spawn.
    assert before - 0.02 <= info.start <= after + 0.02
    assert 0 <= info.age() < time.time() - before + 0.02
    assert proctree.snapshot()[child.pid] == info


def test_snapshot_of_self_and_a_gone_process() -> None:
    me = proctree.snapshot()[os.getpid()]
    assert (me.ppid, me.pgid, me.sid, me.state) == (os.getppid(), os.getpgrp(), os.getsid(0), "R")
    assert me.cmdline
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert proctree.read_proc(gone.pid) is None


def test_snapshot_survives_processes_ending_during_the_scan() -> None:
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            subprocess.run(["true"], check=False)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(30):
            table = proctree.snapshot()
            assert os.getpid() in table
    finally:
        stop.set()
        worker.join()


def test_descendants_include_a_setsid_grandchild(tmp_path: Path, cleanup: object) -> None:
    pidfile = tmp_path / "g"
    child = subprocess.Popen([PY, "-c", ESCAPING_PARENT, str(pidfile)], process_group=0)
    grandchild = read_pid(pidfile)
    table = proctree.snapshot()
    found = proctree.descendants(os.getpid(), table)
    assert [p.pid for p in found] == [child.pid, grandchild]  # parents first
    g = table[grandchild]
    assert g.ppid == child.pid and g.sid == g.pgid == grandchild != os.getsid(0)
    assert [p.pid for p in proctree.descendants(child.pid, table)] == [grandchild]
    assert proctree.descendants(grandchild, table) == []
    # The group reaches the child only; group_tree adds what escaped the group below it.
    assert {p.pid for p in proctree.group_tree(child.pid, table)} == {child.pid, grandchild}


def test_kill_tree_reaches_a_setsid_grandchild_that_ignores_sigterm(
    tmp_path: Path, cleanup: object
) -> None:
    pidfile = tmp_path / "g"
    child = subprocess.Popen([PY, "-c", ESCAPING_PARENT, str(pidfile)], process_group=0)
    g = proctree.read_proc(read_pid(pidfile))
    assert g is not None
    hit = proctree.kill_tree(os.getpid(), grace=0.2)
    assert {p.pid for p in hit} == {child.pid, g.pid}
    assert child.wait(timeout=5) == -signal.SIGKILL  # it ignored SIGTERM
    wait_until(lambda: not proctree.is_alive(g))


def test_a_different_start_time_is_a_different_process(cleanup: object) -> None:
    child = subprocess.Popen([PY, "-c", SLEEP])
    info = proctree.read_proc(child.pid)
    assert info is not None
    impostor = dataclasses.replace(info, start_ticks=info.start_ticks - 1)
    assert proctree.same_process(info) and proctree.is_alive(info)
    assert not proctree.same_process(impostor) and not proctree.is_alive(impostor)
    assert proctree.send_signal(impostor, signal.SIGKILL) is False
    assert proctree.signal_all([impostor], signal.SIGKILL) == []
    assert child.poll() is None, "a signal meant for another process hit this one"
    assert proctree.send_signal(info, signal.SIGKILL) is True
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not proctree.is_alive(info) and not proctree.send_signal(info, signal.SIGKILL)


def test_a_recycled_pid_is_never_signalled(cleanup: object) -> None:
    """Real pid reuse: the next pid is set through /proc/sys/kernel/ns_last_pid (root only)."""
    last_pid = Path("/proc/sys/kernel/ns_last_pid")
    if not os.access(last_pid, os.W_OK):
        pytest.skip("needs a writable /proc/sys/kernel/ns_last_pid (root)")
    first = subprocess.Popen([PY, "-c", SLEEP])
    old = proctree.read_proc(first.pid)
    assert old is not None
    first.kill()
    first.wait()
    time.sleep(0.05)  # identities are (pid, start tick): the new process must start a tick later
    for _ in range(100):  # other processes on the host may take the pid first
        last_pid.write_text(str(old.pid - 1))
        second = subprocess.Popen([PY, "-c", SLEEP])
        if second.pid == old.pid:
            break
        second.kill()
        second.wait()
    else:
        pytest.skip("could not get the pid reused (a busy host)")
    assert not proctree.same_process(old)
    assert proctree.send_signal(old, signal.SIGKILL) is False
    time.sleep(0.1)
    assert second.poll() is None, "the recycled pid's new owner was killed"


SUBREAPER = """
import json, os, subprocess, sys, time
from netsonde import proctree

def wait_until(what):
    end = time.monotonic() + 10
    while not what():
        assert time.monotonic() < end
        time.sleep(0.01)

def state(pid):
    info = proctree.read_proc(pid)
    return info and (info.ppid, info.state)

out = {"before": proctree.is_subreaper(), "became": proctree.become_subreaper()}
out["after"] = proctree.is_subreaper()
inherit = subprocess.run([sys.executable, "-c",
    "from netsonde import proctree; print(proctree.is_subreaper())"],
    capture_output=True, text=True)
out["inherited"] = inherit.stdout.strip()
kept = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
# A parent that starts a child and exits at once: the child is orphaned, then exits.
# (It must not inherit the pipes: run() would wait for it to close them.)
mid = subprocess.run([sys.executable, "-c",
    "import subprocess as s, sys; print(s.Popen([sys.executable, '-c',"
    " 'import time; time.sleep(0.5)'], stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"],
    capture_output=True, text=True, check=True)
orphan = int(mid.stdout)
out["orphan_parent"] = state(orphan)[0] == os.getpid()
wait_until(lambda: state(orphan)[1] == "Z" and state(kept.pid)[1] == "Z")
out["reaped"] = proctree.reap_orphans(keep={kept.pid}) == [orphan]
out["kept_left"] = state(kept.pid)[1] == "Z" and proctree.reap_orphans(keep={kept.pid}) == []
out["kept_status"] = kept.wait()
out["orphan_gone"] = proctree.read_proc(orphan) is None
print(json.dumps(out))
"""


def test_subreaper_adopts_orphans_and_reaps_only_those_not_kept() -> None:
    done = subprocess.run([PY, "-c", SUBREAPER], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "before": False,
        "became": True,
        "after": True,
        "inherited": "False",  # not across fork
        "orphan_parent": True,  # reparented to the subreaper, not init
        "reaped": True,
        "kept_left": True,
        "kept_status": 7,  # Popen still gets its child's exit status
        "orphan_gone": True,
    }
    assert not proctree.is_subreaper()


# A subreaper with nothing below it, then with a double-forked grandchild that ignores SIGTERM
# (adopted: its parent exited) and a plain child: end_descendants ends both and reaps them.
END_DESCENDANTS = """
import json, os, signal, subprocess, sys, time
from netsonde import proctree

out = {"none": proctree.own_children(), "nothing_to_end": proctree.end_descendants(1.0)}
proctree.become_subreaper()
mid = subprocess.run([sys.executable, "-c",
    "import subprocess as s, sys; print(s.Popen([sys.executable, '-c',"
    " 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'],"
    " start_new_session=True, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"],
    capture_output=True, text=True, check=True)
orphan = int(mid.stdout)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

def ignores_term():
    status = open(f"/proc/{orphan}/status").read()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn"))
    return int(mask, 16) & (1 << (signal.SIGTERM - 1))

end = time.monotonic() + 10
while not ignores_term():
    assert time.monotonic() < end
    time.sleep(0.01)
out["listed"] = sorted(proctree.own_children()) == sorted([orphan, child.pid])
started = time.monotonic()
hit = proctree.end_descendants(0.3)
out["took"] = time.monotonic() - started
out["hit"] = sorted(p.pid for p in hit) == sorted([orphan, child.pid])
out["left"] = proctree.own_children()
out["gone"] = [proctree.read_proc(p) for p in (orphan, child.pid)]
print(json.dumps(out))
"""


def test_end_descendants_ends_and_reaps_an_adopted_grandchild_and_is_free_when_none() -> None:
    done = subprocess.run([PY, "-c", END_DESCENDANTS], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    took = out.pop("took")
    assert 0.3 <= took < 2.0, "SIGKILL for the one that ignores SIGTERM after the grace"
    assert out == {
        "none": [],
        "nothing_to_end": [],
        "listed": True,
        "hit": True,
        "left": [],  # not even a zombie child
        "gone": [None, None],
    }
