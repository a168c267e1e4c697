from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsonde.daemon.pidfile import AlreadyRunning, PidFile, running_pid


def test_acquire_release_and_running_pid(tmp_path: Path) -> None:
    path = tmp_path / "run" / "n.pid"
    pf = PidFile(path)
    pf.acquire()
    assert path.read_text().strip() == str(os.getpid())
    assert running_pid(path) == os.getpid()
    with pytest.raises(AlreadyRunning, match=str(os.getpid())):
        PidFile(path).acquire()
    pf.release()
    assert not path.exists() and running_pid(path) is None


def test_lock_held_by_another_process_refuses(tmp_path: Path) -> None:
    path = tmp_path / "n.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from netsonde.daemon.pidfile import PidFile\n"
         f"from pathlib import Path\nimport sys, time\nPidFile(Path({str(path)!r})).acquire()\n"
         "print('locked', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(AlreadyRunning) as info:
            PidFile(path).acquire()
        assert info.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: the pidfile is stale and is taken over.
    assert path.exists() and running_pid(path) is None
    pf = PidFile(path)
    pf.acquire()
    assert path.read_text().strip() == str(os.getpid())
    pf.release()
