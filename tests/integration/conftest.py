from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


class DaemonProcess:
    """A real `netsonde run` in its own session, plus the CLI pointed at the same config."""

    def __init__(self, netsonde: Path, config: Path) -> None:
        self.netsonde = netsonde
        self.config = config
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(
            [str(self.netsonde), "run", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return self.proc

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.netsonde), *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def cli_json(self, *args: str, missing: Any = None) -> Any:
        """The command's JSON output; ``missing`` if the archive does not exist yet."""
        done = self.cli(*args, "--json")
        if missing is not None and "no archive at" in done.stderr:
            return missing
        assert done.returncode in (0, 3), done.stderr
        return json.loads(done.stdout)

    def wait_for(self, what: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if value := what():
                return value
            assert self.proc is None or self.proc.poll() is None, self.output()
            time.sleep(step)
        raise AssertionError(
            f"condition not met within {timeout}s; daemon output:\n{self.output()}"
        )

    def output(self) -> str:
        if self.proc is None or self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> float:
        """SIGTERM the daemon; returns how long it took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def daemon_factory(netsonde_bin: Path, tmp_path: Path) -> Iterator[Callable[[str], DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(body: str, name: str = "netsonde.toml") -> DaemonProcess:
        config = tmp_path / name
        config.write_text(body)
        d = DaemonProcess(netsonde_bin, config)
        made.append(d)
        return d

    yield make
    for d in made:
        d.kill()
