"""netsonde start | stop | restart through the pidfile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from integration.conftest import DaemonProcess
from integration.test_archive_service import config, free_port
from procs import alive


def test_start_restart_stop(daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path) -> None:
    d = daemon_factory(config(free_port()))
    started = d.cli("start")
    assert started.returncode == 0, started.stderr
    first = d.cli_json("status")["pid"]
    try:
        again = d.cli("start")
        assert again.returncode == 1 and "already running" in again.stderr

        restarted = d.cli("restart")
        assert restarted.returncode == 0, restarted.stderr
        assert f"stopped (pid {first})" in restarted.stdout
        second = d.cli_json("status")["pid"]
        assert second != first and alive(second) and not alive(first)

        stopped = d.cli("stop")
        assert stopped.returncode == 0 and f"netsonde stopped (pid {second})" in stopped.stdout
        assert not alive(second)
        assert not (tmp_path / "data" / "netsonde.pid").exists()  # gone before stop returns
        assert d.cli("status").returncode == 3
    finally:
        d.cli("stop")
    idle = d.cli("stop")
    assert idle.returncode == 0 and "was not running" in idle.stdout
