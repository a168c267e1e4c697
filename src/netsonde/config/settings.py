"""What the daemon runs with: the config file checked, settled and made absolute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from netsonde.config.schema import ApiSection, CleanupRule, Section, SpoolSection
from netsonde.model import TestSpec


@dataclass(frozen=True)
class ServerSpec:
    """A ``[[server]]`` to keep alive, its program found."""

    id: str
    argv: tuple[str, ...]  # argv[0] resolved to an absolute path at load
    restart: str = "always"
    env: tuple[tuple[str, str], ...] = ()
    stop_timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    source: Path | None  # None: the embedded default
    name: str  # this measurement point's name (PingER's "src")
    data_dir: Path
    listen: str
    pidfile: Path
    log_file: Path
    archive_url: str  # made independent of the working directory by netsonde.archive
    max_children: int
    stop_timeout: float
    tests: tuple[TestSpec, ...]
    api: ApiSection = field(default_factory=ApiSection)  # token read from token_file
    sections: Mapping[str, Section] = field(default_factory=dict)  # the services' own, settled
    spool: SpoolSection | None = None  # deliver to a remote archive too
    servers: tuple[ServerSpec, ...] = ()
    cleanup: tuple[CleanupRule, ...] = ()
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    heartbeat_timeout: float = 10.0
    restart_every: float | None = None
    archive_retention: float | None = None  # seconds; None: keep every run

    @property
    def listen_address(self) -> tuple[str, int]:
        """(host, port) of ``listen``; validated at load."""
        return split_listen(self.listen)


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8075"`` or ``"[::1]:8075"`` → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)
