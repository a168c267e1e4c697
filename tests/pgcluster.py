"""A private PostgreSQL server for the tests and benchmarks: ``initdb`` into a temporary
directory, listening only on a Unix socket in it, torn down after.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` user that Debian's package creates (``scripts/install-system-deps`` installs it).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

SUPERUSER = "netsonde"


def bindir() -> Path | None:
    """Where initdb and postgres are: Debian keeps them out of PATH, one directory per major
    version (the newest wins)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class PgCluster:
    """One running server; :meth:`database` makes a fresh database and returns its URL."""

    def __init__(self, *, fsync: bool = False, extra: tuple[str, ...] = ()) -> None:
        bins = bindir()
        if bins is None:
            raise RuntimeError("PostgreSQL is not installed (run scripts/install-system-deps)")
        self._bins = bins
        self._owner = _owner()
        self.root = Path(tempfile.mkdtemp(prefix="netsonde-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        if self._owner is not None:
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
            os.chown(self.socket_dir, self._owner.pw_uid, self._owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--locale=C",
        )  # fmt: skip
        settings = [
            "listen_addresses=",
            f"unix_socket_directories={self.socket_dir}",
            f"fsync={'on' if fsync else 'off'}",
            # On even without fsync: a commit is acknowledged once its WAL is written to the OS,
            # so a killed server (the tests kill it) keeps every commit it acknowledged.
            "synchronous_commit=on",
            "full_page_writes=off" if not fsync else "full_page_writes=on",
            "max_connections=200",
            "shared_buffers=128MB",
            *extra,
        ]
        # Through pg_ctl, which leaves the server in the background: not a descendant of the
        # test process, so no test's sweep of the processes it left behind (the cleanup
        # fixture, proctree.kill_tree) reaches the suite's server.
        self._options = " ".join(f"-c {x}" for x in settings)
        self._start()
        self._names = itertools.count()

    def _uid(self) -> int | None:
        return self._owner.pw_uid if self._owner is not None else None

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self._bins / tool), *args],
            check=True,
            capture_output=True,
            user=self._uid(),
            cwd=self.root,
        )

    def _start(self) -> None:
        try:
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                "-o", self._options, "-w", "-t", "60", "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"postgres did not start: {self.log()}") from e

    def _pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]  # test SQL, not user input

    def database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        name = urllib.parse.urlsplit(url).path.strip("/")
        with contextlib.suppress(Exception):
            self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def disconnect(self, url: str) -> None:
        """End every connection to ``url``'s database, as a server restart does to its
        clients; returns once they are gone (5 s at most)."""
        name = urllib.parse.urlsplit(url).path.strip("/")
        self.sql(
            f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{name}'"
        )

    def stop(self) -> None:
        # Immediate: nothing to keep, and a fast or smart stop would wait for clients.
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def kill(self) -> None:
        """Stop the server at once (an archive that goes away); :meth:`restart` brings it back."""
        pid = self._pid()
        assert pid is not None, "no server running"
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        # Its backends notice their postmaster is gone and exit: wait, or the new server
        # finds their shared memory still attached.
        while time.monotonic() < end and self._backends_left():
            time.sleep(0.05)

    def _backends_left(self) -> bool:
        """A process of this cluster still runs: postgres processes work in the data
        directory."""
        data = self.data.resolve()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(entry / "cwd")) == data:
                        return True
        return False

    def restart(self) -> None:
        self._start()


def _owner() -> pwd.struct_passwd | None:
    """Who runs the server: nobody special unless we are root, who may not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root with neither a postgres nor a nobody user")


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[PgCluster]:
    cluster = PgCluster(**kwargs)  # type: ignore[arg-type]
    try:
        yield cluster
    finally:
        cluster.stop()
