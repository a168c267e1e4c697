"""Clean messages where a new user or a broken disk used to get an internal error or a wrong
one, against the real command and daemon: a data_dir that cannot be used, `results` on a
read-only archive, SIGHUP after `start --config` with a relative path, `status` frozen by a full
disk, and `status` of a central archive that only receives stores."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import DaemonProcess
from reliability.test_disk_faults import fill, small_disk

__all__ = ["small_disk"]  # the fixture, shared

NOOP = """
[daemon]
data_dir = "{data}"
stop_timeout = "2s"

[api]
enabled = false

[status]
enabled = false

[[test]]
id = "n"
tool = "noop"
target = "a"
interval = "200ms"
"""


def _root_with(*programs: str) -> bool:
    return os.geteuid() == 0 and all(shutil.which(p) for p in programs)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Makes a directory read-only for everyone, root included: a read-only bind mount on it."""
    if not _root_with("mount", "umount"):
        pytest.skip("needs root and mount(8)")
    mounted: list[Path] = []

    def make(directory: Path) -> None:
        subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
        mounted.append(directory)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)

    yield make
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _one_clean_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr)
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "internal error" not in line, line
    assert all(w in line for w in words), (words, line)
    return line


# ---- an unusable data_dir ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [["run"], ["start"]])
def test_a_file_where_data_dir_should_be_is_named(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "data").write_text("not a directory")
    d = daemon_factory(NOOP.replace("{data}", "data"))
    done = d.cli(*command)
    line = _one_clean_line(done, "data_dir", str(tmp_path / "data"), "not a directory")
    assert line.startswith("netsonde: [daemon] data_dir ")


@pytest.mark.parametrize("command", [["run"], ["start"]])
def test_a_read_only_data_dir_is_named(
    daemon_factory: Callable[[str], DaemonProcess],
    tmp_path: Path,
    read_only: Callable[[Path], None],
    command: list[str],
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    read_only(data)
    d = daemon_factory(NOOP.replace("{data}", "data"))
    _one_clean_line(d.cli(*command), f"data_dir {data}:", "Read-only file system")
    assert not (data / "netsonde.pid").exists()


def test_an_unreadable_data_dir_is_named(netsonde_bin: Path) -> None:
    """Root reads every directory: the command runs as nobody, the data_dir is root's 0700."""
    if not _root_with("setpriv"):
        pytest.skip("needs root and setpriv(1) to run the command as another user")
    top = Path(tempfile.mkdtemp(prefix="netsonde-unreadable-"))
    try:
        top.chmod(0o755)
        (top / "data").mkdir(mode=0o700)
        config = top / "netsonde.toml"
        config.write_text(NOOP.replace("{data}", "data"))
        config.chmod(0o644)
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        for command in (["start"], ["status"], ["results"]):
            done = subprocess.run(
                [*nobody, str(netsonde_bin), *command, "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            _one_clean_line(done, str(top / "data"), "Permission denied")
    finally:
        shutil.rmtree(top)


# ---- results on a read-only archive ----------------------------------------------------------


def test_results_on_a_read_only_archive_gives_the_true_reason(
    daemon_factory: Callable[[str], DaemonProcess],
    tmp_path: Path,
    read_only: Callable[[Path], None],
) -> None:
    """A daemon that died (kill -9) leaves its write-ahead log; on a read-only disk a reader
    cannot create the log's index (-shm). Not "still being created": it is there, unreadable."""
    d = daemon_factory(NOOP.replace("{data}", "data"))
    d.start()
    d.wait_for(lambda: len(d.cli_json("results", missing=[])) > 5, 20)
    d.kill()
    data = tmp_path / "data"
    assert (data / "archive.sqlite-wal").exists()
    (data / "archive.sqlite-shm").unlink()  # rebuilt from the log by the next writer
    read_only(data)
    line = _one_clean_line(d.cli("results"), f"cannot read archive {data / 'archive.sqlite'}")
    assert "still being created" not in line
    assert "archive.sqlite-shm" in line and "read-only file system" in line, line


# ---- SIGHUP after start with a relative config path -----------------------------------------

ANOTHER_TEST = """
[[test]]
id = "m"
tool = "noop"
target = "b"
interval = "1s"
"""


def test_sighup_reloads_a_daemon_started_with_a_relative_config(
    netsonde_bin: Path, tmp_path: Path
) -> None:
    config = tmp_path / "relative.toml"
    config.write_text(NOOP.replace("{data}", "data"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(netsonde_bin), *args, "--config", "relative.toml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )

    started = cli("start")
    assert started.returncode == 0, started.stderr
    try:
        d = DaemonProcess(netsonde_bin, config)  # the CLI with the absolute path, for reading
        status = d.wait_for(lambda: (s := d.cli_json("status")).get("tests") and s, 15)
        assert Path(status["config"]).resolve() == config.resolve(), "kept as an absolute path"
        config.write_text(config.read_text() + ANOTHER_TEST)
        os.kill(status["pid"], signal.SIGHUP)
        after = d.wait_for(lambda: (s := d.cli_json("status"))["reloads"] and s, 15)
        assert after["reload_error"] is None and after["tests"] == 2, after
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr


# ---- status frozen by a full disk -------------------------------------------------------------


def test_status_on_a_full_disk_shows_its_age_and_why(
    small_disk: Path, daemon_factory: Callable[[str], DaemonProcess]
) -> None:
    """The pidfile, and status.json beside it, on the data disk (the default): when that disk
    is full the daemon cannot write its status any more, and `status` says so instead of
    showing the last one as if it were current."""
    d = daemon_factory(NOOP.replace("{data}", "data"))
    d.start()
    d.wait_for(lambda: d.cli_json("status").get("stored", 0) > 10, 20)
    assert d.cli_json("status")["status_warning"] is None
    filler = fill(small_disk)
    status = d.wait_for(lambda: (s := d.cli_json("status"))["status_warning"] and s, 30)
    assert status["status_age_s"] >= 5, status
    why = f"cannot write status.json: no space left on the file system of {small_disk}"
    assert re.fullmatch(rf"status written \d+ s ago; {re.escape(why)}", status["status_warning"])
    text = d.cli("status")
    assert text.returncode == 0 and re.search(rf"status written \d+ s ago; {why}", text.stdout)
    assert "cannot write" in d.output() and "No space left on device" in d.output()
    filler.unlink()
    d.wait_for(lambda: d.cli_json("status")["status_warning"] is None, 20)
    assert "status written" not in d.cli("status").stdout
    d.stop()


# ---- a central archive that only receives ------------------------------------------------------

TOKEN = "clean-messages-test-token-0123456789"

CENTRAL = """
[daemon]
data_dir = "central"
listen = "127.0.0.1:{port}"
stop_timeout = "5s"

[api]
token = "{token}"

[status]
enabled = false
"""

MP = """
[daemon]
name = "mp-1"
data_dir = "mp"
stop_timeout = "5s"

[api]
enabled = false

[status]
enabled = false

[spool]
url = "http://127.0.0.1:{port}"
token = "{token}"
max_backoff = "1s"

[[test]]
id = "n"
tool = "noop"
targets = ["a", "b"]
interval = "200ms"
max_runs = 25
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_of_a_central_archive_counts_the_runs_it_receives(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    port = str(_free_port())
    central = daemon_factory(
        CENTRAL.replace("{port}", port).replace("{token}", TOKEN), "central.toml"
    )
    mp = daemon_factory(MP.replace("{port}", port).replace("{token}", TOKEN), "mp.toml")
    central.start()
    central.wait_for(lambda: central.cli_json("status").get("url"), 15)
    mp.start()
    done = mp.wait_for(lambda: _all_sent(mp.cli_json("status")), 40)
    n = done["stored"]
    assert n >= 40, done
    status = central.wait_for(lambda: (s := central.cli_json("status"))["received"] == n and s, 10)
    assert status["stored"] == 0 and status["tests"] == 0, status
    assert f"stored 0, received {n} over the API" in central.cli("status").stdout
    mp.stop()
    central.stop()


def _all_sent(status: dict[str, Any]) -> dict[str, Any] | None:
    """The status once every run is done (the tests ended: max_runs), stored and sent."""
    done = status.get("upcoming") == [] and status.get("in_progress") == 0
    spool = status.get("spool") or {}
    sent = spool.get("backlog") == 0 and spool.get("queued") == 0
    return status if done and sent and spool["delivered"] == status["stored"] else None
