from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from procs import descendants


class DaemonProcess:
    """A real `netsonde run` in its own session, plus the CLI pointed at the same config."""

    def __init__(self, netsonde: Path, config: Path) -> None:
        self.netsonde = netsonde
        self.config = config
        self.proc: subprocess.Popen[str] | None = None

    @property
    def log(self) -> Path:
        """The daemon's stdout and stderr (a file, not a pipe: a pipe nobody reads fills up
        and blocks a chatty daemon)."""
        return self.config.with_suffix(".out")

    def start(self, preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [str(self.netsonde), "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                preexec_fn=preexec_fn,
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
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> float:
        """SIGTERM the daemon; returns how long it took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the daemon and everything below it (kept servers and the fork server live
        in sessions of their own: the daemon's group does not reach them)."""
        if self.proc is not None and self.proc.poll() is None:
            tree = descendants(self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
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
