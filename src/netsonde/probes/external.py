"""Running an external measurement program (traceroute, iperf3) the same way for every tool:
an argv list (never a shell), output captured, and a time limit just inside the run's deadline
so the tool reports "did not finish" itself before the runner has to kill it."""

from __future__ import annotations

import subprocess
import time


class DidNotFinish(Exception):
    """The program ran past the time it was given."""


def run_program(argv: list[str], deadline: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion within ``deadline`` (epoch seconds) less a second."""
    budget = max(1.0, deadline - time.time() - 1.0)  # leave the runner its own deadline
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=budget)
    except subprocess.TimeoutExpired:
        name = argv[0].rsplit("/", 1)[-1]
        raise DidNotFinish(f"{name} did not finish in {budget:.0f}s") from None


def last_line(text: str) -> str:
    """The last non-empty line of a program's output: usually its error message."""
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""
