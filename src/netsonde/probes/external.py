"""Running an external program (traceroute, iperf3, a site's own probe) the same way for every
tool: an argv list (never a shell), output captured, and the deadline policy's budget as its
time limit, so the tool reports "did not finish" itself instead of being killed by the runner.

A program past its time is killed with everything below it, read from /proc before the first
signal: a child it started in a session of its own would otherwise outlive it, out of reach of
the run's process group. What it double-forked away (no longer below it) has been adopted by
the run's child, a subreaper, which ends it when the run ends (``mp/forkserver.py``).
"""

from __future__ import annotations

import signal
import subprocess

from netsonde import proctree
from netsonde.probes import deadline as deadlines


class DidNotFinish(Exception):
    """The program ran past the time it was given (or there was none left to start it)."""


def run_program(argv: list[str], deadline: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion within the budget of ``deadline`` (epoch seconds).

    Raises DidNotFinish, or OSError when the program cannot be started."""
    budget = deadlines.budget(deadline)
    if budget <= 0:
        raise DidNotFinish(deadlines.NO_TIME_LEFT)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            name = argv[0].rsplit("/", 1)[-1]
            raise DidNotFinish(f"{name} did not finish in {budget:.1f}s") from None
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    table = proctree.snapshot(cmdline=False)
    below = proctree.descendants(proc.pid, table)  # while proc lives, its tree hangs off it
    proc.kill()
    proctree.signal_all(below, signal.SIGKILL)
    proc.wait()


def last_line(text: str) -> str:
    """The last non-empty line of a program's output: usually its error message."""
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""
