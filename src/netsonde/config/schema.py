"""The config file's shape: one pydantic model per section, and the contract by which a service
contributes its own section (:class:`Section`)."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator

from netsonde.archive import pg as archive_pg
from netsonde.archive.base import ArchiveError
from netsonde.limits import RequestLimits
from netsonde.model import SchedClass
from netsonde.units import YEAR_S, parse_duration, parse_size, parse_time

DEFAULT_LISTEN = "127.0.0.1:8075"
DEFAULT_DATA_DIR = "./netsonde-data"

# ---- value types -------------------------------------------------------------------------

Duration = Annotated[float, BeforeValidator(parse_duration)]
Time = Annotated[float, BeforeValidator(parse_time)]
MIN_TOKEN = 16  # characters of a store/registration token
TEST_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$"


class _Strict(BaseModel):
    # frozen: a section, once settled, is part of the (frozen) Config the daemon runs with.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# ---- the sections ----------------------------------------------------------------------------


class DaemonSection(_Strict):
    name: str | None = Field(None, min_length=1, max_length=253)  # default: the host name
    data_dir: str = DEFAULT_DATA_DIR
    listen: str = DEFAULT_LISTEN
    pidfile: str | None = None
    log_file: str | None = None
    max_children: int = Field(32, ge=1, le=4096)
    stop_timeout: Duration = Field(10.0, le=3600)
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=0)  # rotate beyond this size; 0: never
    log_backups: int = Field(5, ge=0, le=1000)
    # A worker whose heartbeat is older than this is restarted.
    heartbeat_timeout: Duration = Field(10.0, ge=1.0, le=3600)
    # The nightly restart IEPM-BW did, for sites that want it: a graceful re-exec.
    restart_every: Duration | None = Field(None, ge=1.0, le=YEAR_S)


class ArchiveSection(_Strict):
    url: str | None = None  # default: netsonde.archive.default_url(data_dir)
    # Runs older than this are removed (PostgreSQL: whole monthly partitions; SQLite: in
    # bounded batches); None keeps everything. Rollups are kept.
    retention: Duration | None = Field(None, ge=86400, le=100 * YEAR_S)


_LIMITS = RequestLimits()  # the defaults of the keys that set it


class ApiSection(_Strict):
    """Settled (in Config): ``token`` holds the token_file's content when one is given."""

    enabled: bool = True
    token: str | None = Field(
        None, min_length=MIN_TOKEN, repr=False, description="needed by store requests"
    )
    token_file: str | None = None
    # Each limit's meaning and default: netsonde/limits.py.
    request_timeout: Duration = Field(_LIMITS.request_timeout, gt=0, le=3600)
    max_body_bytes: int = Field(_LIMITS.max_body_bytes, ge=1024, le=1024**3)
    # N processes serve HTTP, apart from measuring; 0 serves inside the daemon's own loop
    # (which then shares its CPU with the scheduler: for tests and tiny hosts only).
    workers: int = Field(2, ge=0, le=64)
    # API workers yield the CPU to measuring (the scheduler, the fork server and its runs):
    # idle = true runs them under SCHED_IDLE (only on CPU that measuring leaves unused: on a
    # host that measuring saturates, the API then waits); false, at a lower priority (nice).
    idle: bool = True
    nice: int = Field(10, ge=0, le=19)
    # A worker whose memory (RSS) passes this is replaced once its requests are answered.
    max_worker_rss: Annotated[int, BeforeValidator(parse_size)] = Field(
        384 * 1024 * 1024, ge=32 * 1024 * 1024
    )
    read_timeout: Duration = Field(_LIMITS.read_timeout, gt=0, le=600)
    max_connections: int = Field(_LIMITS.max_connections, ge=8, le=1_000_000)
    max_elements: int = Field(_LIMITS.max_elements, ge=100)
    max_namespaces: int = Field(_LIMITS.max_namespaces, ge=8)
    max_units: int = Field(_LIMITS.max_units, ge=1)
    max_chain: int = Field(_LIMITS.max_chain, ge=1)
    max_event_types: int = Field(_LIMITS.max_event_types, ge=1)
    max_response_datums: int = Field(_LIMITS.max_response_datums, ge=1)
    max_response_bytes: Annotated[int, BeforeValidator(parse_size)] = Field(
        _LIMITS.max_response_bytes, ge=64 * 1024
    )

    def limits(self) -> RequestLimits:
        """The per-request limits these keys set (one field each, same names)."""
        return RequestLimits(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(RequestLimits)}
        )


class SpoolSection(_Strict):
    """Deliver every result to a remote netsonde archive through a durable local outbox.

    Settled (in Config): ``token`` holds the token_file's content, ``url`` has no trailing /."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    protocol: Literal["rest", "nmwg"] = "rest"
    token: str | None = Field(None, min_length=MIN_TOKEN, repr=False)
    token_file: str | None = None
    batch_size: int = Field(500, ge=1, le=10_000)
    timeout: Duration = Field(10.0, gt=0, le=600)
    max_backoff: Duration = Field(60.0, ge=1, le=86400)


class ServerSection(_Strict):
    """A helper server kept alive by the daemon (IEPM-BW's servers.alive): iperf3 -s, …"""

    id: str = Field(pattern=TEST_ID)
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    restart: Literal["always", "on-failure", "never"] = "always"
    env: dict[str, str] = Field(default_factory=dict)
    stop_timeout: Duration = Field(5.0, le=600)


class CleanupRule(_Strict):
    """A ``[[cleanup]]`` entry: kill our own descendants whose command line matches ``pattern``
    (a regular expression) once older than ``max_minutes`` (IEPM-BW's cleanup-list)."""

    pattern: str = Field(min_length=1)
    max_minutes: float = Field(gt=0, allow_inf_nan=False)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"invalid regular expression: {e}") from None
        return pattern


class TestSection(_Strict):
    __test__ = False

    id: str = Field(pattern=TEST_ID)
    tool: str
    target: str | None = None
    targets: list[str] | None = Field(None, min_length=1)
    interval: Duration = Field(gt=0, le=YEAR_S)
    offset: Duration = 0.0
    schedule: Literal["periodic", "poisson"] = "periodic"
    start: Time | None = None
    until: Time | None = None
    max_runs: int | None = Field(None, ge=1)
    slip: Duration | None = Field(None, le=YEAR_S)
    sched_class: SchedClass = Field(SchedClass.BACKGROUND, alias="class")
    timeout: Duration | None = Field(None, gt=0, le=YEAR_S)
    params: dict[str, Any] = Field(default_factory=dict)


class FileShape(_Strict):
    daemon: DaemonSection = Field(default_factory=DaemonSection)
    archive: ArchiveSection = Field(default_factory=ArchiveSection)
    api: ApiSection = Field(default_factory=ApiSection)
    spool: SpoolSection | None = None
    server: list[ServerSection] = Field(default_factory=list)
    cleanup: list[CleanupRule] = Field(default_factory=list)
    test: list[TestSection] = Field(default_factory=list)


# ---- the services' own sections ----------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Where a section's relative paths point: the config file's directory, and data_dir."""

    base: Path
    data_dir: Path
    archive_url: str = ""  # settled: where the archive is

    def resolve(self, p: str | Path) -> Path:
        return resolved(p, self.base)

    def store(self, db: str | None, default_name: str) -> str:
        """Where a service keeps its own tables: ``db`` when given (a path, or a PostgreSQL
        URL, checked like the archive's); else the archive's database when that is
        PostgreSQL (one server for a fleet's everything); else ``default_name`` in data_dir.
        ValueError says what is wrong with ``db``."""
        if db:
            if archive_pg.is_url(db):
                try:
                    return archive_pg.check(db, self.base)
                except ArchiveError as e:
                    raise ValueError(str(e)) from None
            return str(self.resolve(db))
        if archive_pg.is_url(self.archive_url):
            return self.archive_url
        return str(self.data_dir / default_name)

    def read_token(self, token: str | None, token_file: str | None) -> str | None:
        """A section's secret: ``token``, or the content of ``token_file`` when one is given.
        ValueError (for the ``token_file`` key) names the file and what is wrong, never the
        token."""
        if not token_file:
            return token
        path = self.resolve(token_file)
        try:
            text = path.read_text().strip()
        except OSError as e:
            raise ValueError(f"{path}: {e.strerror}") from None
        if len(text) < MIN_TOKEN:
            raise ValueError(f"{path}: token too short (at least {MIN_TOKEN} characters)")
        return text


def resolved(p: str | Path, base: Path) -> Path:
    """A path from the file: ``~`` expanded, and relative to ``base`` unless absolute."""
    q = Path(p).expanduser()
    return q if q.is_absolute() else (base / q)


class Section(_Strict):
    """A service's own config section (``[status]`` …), contributed by the service package and
    passed to :func:`netsonde.config.load` under its name. ``settle`` turns what the file said
    into the settings the service runs with (paths resolved, defaults from data_dir); it raises
    :class:`netsonde.config.SectionError`."""

    def settle(self, paths: Paths) -> Self:
        return self


Sections = Mapping[str, type[Section]]
NO_SECTIONS: Sections = MappingProxyType({})


@functools.cache
def file_shape(sections: tuple[tuple[str, type[Section]], ...]) -> type[FileShape]:
    """FileShape with the services' sections added (each optional, defaults as its model says)."""
    if not sections:
        return FileShape
    fields: dict[str, Any] = {n: (m, Field(default_factory=m)) for n, m in sections}
    return create_model("FileShape", __base__=FileShape, **fields)
