"""TOML → validated, typed configuration. Every error names the file, the line and the key.

The tool parameter models (``param_models``) and the services' own sections (``sections``) are
passed in by the caller, so this package stays below ``probes`` and ``services``.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import shutil
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from netsonde.model import SchedClass, Schedule, TestSpec
from netsonde.units import parse_duration, parse_time

DEFAULT_LISTEN = "127.0.0.1:8075"
DEFAULT_DATA_DIR = "./netsonde-data"


class ConfigError(Exception):
    """A configuration problem, already formatted as ``FILE:LINE: key: message``."""


# ---- value types -------------------------------------------------------------------------

Duration = Annotated[float, BeforeValidator(parse_duration)]
Time = Annotated[float, BeforeValidator(parse_time)]
TEST_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$"


# ---- the file's shape --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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
    restart_every: Duration | None = Field(None, ge=1.0)


class ArchiveSection(_Strict):
    url: str | None = None


class ApiSection(_Strict):
    enabled: bool = True
    token: str | None = Field(None, min_length=16, description="needed by store requests")
    token_file: str | None = None
    request_timeout: Duration = Field(30.0, gt=0, le=3600)  # the seed's max_worker_lifetime
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=1024**3)
    workers: int = Field(0, ge=0, le=64)  # 0: serve inside the daemon; N: N processes


class SpoolSection(_Strict):
    """Deliver every result to a remote netsonde archive through a durable local outbox."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    protocol: Literal["rest", "nmwg"] = "rest"
    token: str | None = Field(None, min_length=16)
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


class CleanupSection(_Strict):
    """Kill our own descendants whose command line matches ``pattern`` (a regular expression)
    once older than ``max_minutes`` (IEPM-BW's cleanup-list)."""

    pattern: str = Field(min_length=1)
    max_minutes: float = Field(gt=0, allow_inf_nan=False)


@dataclass(frozen=True)
class Paths:
    """Where a section's relative paths point: the config file's directory, and data_dir."""

    base: Path
    data_dir: Path

    def resolve(self, p: str | Path) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.base / q)


class SectionError(ValueError):
    """A section's ``settle`` refuses a value: ``key`` is the key within the section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Section(_Strict):
    """A service's own config section (``[status]`` …), contributed by the service package and
    passed to :func:`load` under its name. ``settle`` turns what the file said into the settings
    the service runs with (paths resolved, defaults from data_dir); it raises SectionError."""

    def settle(self, paths: Paths) -> Self:
        return self


@dataclass(frozen=True)
class SpoolSettings:
    url: str
    protocol: str = "rest"
    token: str | None = None
    batch_size: int = 500
    timeout: float = 10.0
    max_backoff: float = 60.0

    def __repr__(self) -> str:  # never show the token
        return f"SpoolSettings(url={self.url!r}, protocol={self.protocol!r})"


@dataclass(frozen=True)
class ServerSpec:
    id: str
    argv: tuple[str, ...]  # argv[0] resolved to an absolute path at load
    restart: str = "always"
    env: tuple[tuple[str, str], ...] = ()
    stop_timeout: float = 5.0


@dataclass(frozen=True)
class CleanupRule:
    pattern: str  # a valid regular expression, checked at load
    max_minutes: float


@dataclass(frozen=True)
class ApiSettings:
    enabled: bool = True
    token: str | None = None
    request_timeout: float = 30.0
    max_body_bytes: int = 10 * 1024 * 1024
    workers: int = 0


class TestSection(_Strict):
    __test__ = False

    id: str = Field(pattern=TEST_ID)
    tool: str
    target: str | None = None
    targets: list[str] | None = Field(None, min_length=1)
    interval: Duration = Field(gt=0)
    offset: Duration = 0.0
    schedule: Literal["periodic", "poisson"] = "periodic"
    start: Time | None = None
    until: Time | None = None
    max_runs: int | None = Field(None, ge=1)
    slip: Duration | None = None
    sched_class: SchedClass = Field(SchedClass.BACKGROUND, alias="class")
    timeout: Duration | None = Field(None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class FileShape(_Strict):
    daemon: DaemonSection = Field(default_factory=DaemonSection)
    archive: ArchiveSection = Field(default_factory=ArchiveSection)
    api: ApiSection = Field(default_factory=ApiSection)
    spool: SpoolSection | None = None
    server: list[ServerSection] = Field(default_factory=list)
    cleanup: list[CleanupSection] = Field(default_factory=list)
    test: list[TestSection] = Field(default_factory=list)


# ---- the result ----------------------------------------------------------------------------


class ToolContract(Protocol):
    Params: type[BaseModel]

    def check_target(self, target: str) -> str: ...

    def default_timeout(self, params: Any) -> float: ...


@dataclass(frozen=True)
class Config:
    source: Path | None  # None: the embedded default
    name: str  # this measurement point's name (PingER's "src")
    data_dir: Path
    listen: str
    pidfile: Path
    log_file: Path
    archive_url: str
    max_children: int
    stop_timeout: float
    tests: tuple[TestSpec, ...]
    api: ApiSettings = ApiSettings()
    sections: Mapping[str, Section] = field(default_factory=dict)  # the services' own, settled
    spool: SpoolSettings | None = None  # deliver to a remote archive too
    servers: tuple[ServerSpec, ...] = ()
    cleanup: tuple[CleanupRule, ...] = ()
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    heartbeat_timeout: float = 10.0
    restart_every: float | None = None

    @property
    def listen_address(self) -> tuple[str, int]:
        """(host, port) of ``listen``; validated at load."""
        return split_listen(self.listen)

    @property
    def sqlite_path(self) -> Path | None:
        """The archive's file when the archive is SQLite."""
        prefix = "sqlite:///"
        return (
            Path(self.archive_url[len(prefix) :]) if self.archive_url.startswith(prefix) else None
        )


EMBEDDED_DEFAULT = """\
# The embedded default: ping both loopback addresses every 10 s.
[daemon]
data_dir = "./netsonde-data"
listen = "127.0.0.1:8075"

[[test]]
id = "loopback-v4"
tool = "ping"
target = "127.0.0.1"
interval = "10s"
offset = "1s"
params = { count = 5, interval = 0.2 }

[[test]]
id = "loopback-v6"
tool = "ping"
target = "::1"
interval = "10s"
offset = "1s"
params = { count = 5, interval = 0.2 }
"""


Sections = Mapping[str, type[Section]]
NO_SECTIONS: Sections = MappingProxyType({})


@functools.cache
def _file_shape(sections: tuple[tuple[str, type[Section]], ...]) -> type[FileShape]:
    """FileShape with the services' sections added (each optional, defaults as its model says)."""
    if not sections:
        return FileShape
    fields: dict[str, Any] = {n: (m, Field(default_factory=m)) for n, m in sections}
    return create_model("FileShape", __base__=FileShape, **fields)


def load(
    path: str | Path | None,
    param_models: Mapping[str, ToolContract],
    sections: Sections = NO_SECTIONS,
) -> Config:
    """Load and validate a config file, or the embedded default when ``path`` is None.

    Relative paths in a file are resolved against the file's directory; in the embedded
    default, against the current directory.
    """
    if path is None:
        return parse(EMBEDDED_DEFAULT, None, param_models, base=Path.cwd(), sections=sections)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    return parse(text, p, param_models, base=p.resolve().parent, sections=sections)


def parse(
    text: str,
    source: Path | None,
    param_models: Mapping[str, ToolContract],
    *,
    base: Path,
    sections: Sections = NO_SECTIONS,
) -> Config:
    name = str(source) if source else "<embedded default>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        # "(at end of document)": the error is on the last line.
        line = m[1] if m else str(max(1, len(text.splitlines())))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        raise ConfigError(f"{name}:{line}: invalid TOML: {msg}") from None
    lines = KeyLines(text)
    errors: list[tuple[int, str]] = []

    def error(loc: tuple[str | int, ...], msg: str) -> None:
        errors.append((lines.line_of(loc), f"{format_key(loc)}: {msg}"))

    shape_model = _file_shape(tuple(sections.items()))
    try:
        shape = shape_model.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            error(tuple(err["loc"]), _describe(err, shape_model))
        _raise_first(name, errors)
        raise AssertionError("unreachable") from None

    mp_name = shape.daemon.name or socket.gethostname()
    tests = _build_tests(shape.test, param_models, error, source=mp_name)
    _raise_first(name, errors)

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (base / q)

    data_dir = resolve(shape.daemon.data_dir)
    url = shape.archive.url or f"sqlite:///{data_dir / 'archive.sqlite'}"
    if url.startswith("sqlite:///"):
        url = f"sqlite:///{resolve(url[len('sqlite:///') :])}"
    else:
        errors.append(
            (
                lines.line_of(("archive", "url")),
                "archive.url: this version stores in sqlite:///PATH only",
            )
        )
        _raise_first(name, errors)
    try:
        split_listen(shape.daemon.listen)
    except ValueError as e:
        errors.append((lines.line_of(("daemon", "listen")), f"daemon.listen: {e}"))

    def read_token(section: str, token: str | None, token_file: str | None) -> str | None:
        if not token_file:
            return token
        where = lines.line_of((section, "token_file"))
        try:
            token = resolve(token_file).read_text().strip()
        except OSError as e:
            errors.append((where, f"{section}.token_file: {e.strerror}"))
            return None
        if len(token) < 16:
            errors.append((where, f"{section}.token_file: token too short"))
        return token

    token = read_token("api", shape.api.token, shape.api.token_file)
    spool = None
    if shape.spool is not None:
        sp = shape.spool
        spool = SpoolSettings(
            url=sp.url.rstrip("/"),
            protocol=sp.protocol,
            token=read_token("spool", sp.token, sp.token_file),
            batch_size=sp.batch_size,
            timeout=sp.timeout,
            max_backoff=sp.max_backoff,
        )
    servers = _build_servers(shape.server, error, resolve)
    cleanup = _build_cleanup(shape.cleanup, error)
    settled: dict[str, Section] = {}
    for section_name in sections:
        try:
            settled[section_name] = getattr(shape, section_name).settle(Paths(base, data_dir))
        except SectionError as e:
            error((section_name, e.key), str(e))
    _raise_first(name, errors)
    return Config(
        source=source,
        name=mp_name,
        data_dir=data_dir,
        listen=shape.daemon.listen,
        pidfile=resolve(shape.daemon.pidfile)
        if shape.daemon.pidfile
        else data_dir / "netsonde.pid",
        log_file=resolve(shape.daemon.log_file)
        if shape.daemon.log_file
        else data_dir / "netsonde.log",
        archive_url=url,
        max_children=shape.daemon.max_children,
        stop_timeout=shape.daemon.stop_timeout,
        tests=tuple(tests),
        api=ApiSettings(
            enabled=shape.api.enabled,
            token=token,
            request_timeout=shape.api.request_timeout,
            max_body_bytes=shape.api.max_body_bytes,
            workers=shape.api.workers,
        ),
        sections=settled,
        spool=spool,
        servers=tuple(servers),
        cleanup=tuple(cleanup),
        log_max_bytes=shape.daemon.log_max_bytes,
        log_backups=shape.daemon.log_backups,
        heartbeat_timeout=shape.daemon.heartbeat_timeout,
        restart_every=shape.daemon.restart_every,
    )


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8075"`` or ``"[::1]:8075"`` → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def _build_tests(
    sections: list[TestSection],
    param_models: Mapping[str, ToolContract],
    error: Callable[[tuple[str | int, ...], str], None],
    *,
    source: str,
) -> list[TestSpec]:
    specs: list[TestSpec] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(sections):
        here: tuple[str | int, ...] = ("test", i)
        tool = param_models.get(t.tool)
        if tool is None:
            error(
                (*here, "tool"),
                f"unknown tool {t.tool!r} (known: {', '.join(sorted(param_models))})",
            )
            continue
        if (t.target is None) == (t.targets is None):
            error(here, "give exactly one of 'target' or 'targets'")
            continue
        if t.offset * 2 >= t.interval:
            error((*here, "offset"), "offset must be less than half the interval")
        if t.until is not None and t.start is not None and t.until <= t.start:
            error((*here, "until"), "until must be after start")
        try:
            params = tool.Params.model_validate(t.params)
        except ValidationError as e:
            for err in e.errors():
                error((*here, "params", *err["loc"]), _describe(err, tool.Params))
            continue
        targets = [t.target] if t.target is not None else list(t.targets or [])
        for j, target in enumerate(targets):
            where = (*here, "target") if t.target is not None else (*here, "targets", j)
            try:
                tool.check_target(target)
            except ValueError as e:
                error(where, str(e))
                continue
            test_id = t.id if t.target is not None else f"{t.id}/{target}"
            if test_id in seen:
                error(
                    (*here, "id"), f"duplicate test id {test_id!r} (first at test[{seen[test_id]}])"
                )
                continue
            seen[test_id] = i
            specs.append(
                TestSpec(
                    id=test_id,
                    tool=t.tool,
                    target=target,
                    schedule=Schedule(
                        interval=t.interval,
                        offset=t.offset,
                        poisson=t.schedule == "poisson",
                        start=t.start,
                        until=t.until,
                        max_runs=t.max_runs,
                        slip=t.slip,
                    ),
                    params=params,
                    # A tool may say which class it belongs in (iperf3: exclusive); the
                    # config's own `class` wins.
                    sched_class=t.sched_class
                    if "sched_class" in t.model_fields_set
                    else SchedClass(getattr(tool, "DEFAULT_CLASS", SchedClass.BACKGROUND)),
                    timeout=t.timeout or tool.default_timeout(params),
                    source=source,
                )
            )
    return specs


def _build_servers(
    sections: list[ServerSection],
    error: Callable[[tuple[str | int, ...], str], None],
    resolve: Callable[[str], Path],
) -> list[ServerSpec]:
    servers: list[ServerSpec] = []
    seen: set[str] = set()
    for i, sv in enumerate(sections):
        here: tuple[str | int, ...] = ("server", i)
        if sv.id in seen:
            error((*here, "id"), f"duplicate server id {sv.id!r}")
            continue
        seen.add(sv.id)
        # No shell ever: the command is one program, found now so a typo fails the load.
        if "/" in sv.command:
            program = resolve(sv.command)
            found = str(program) if os.access(program, os.X_OK) and program.is_file() else None
        else:
            found = shutil.which(sv.command)
        if found is None:
            error((*here, "command"), f"no executable program {sv.command!r}")
            continue
        if any("\x00" in a for a in sv.args):
            error((*here, "args"), "arguments cannot contain NUL")
            continue
        servers.append(
            ServerSpec(
                id=sv.id,
                argv=(found, *sv.args),
                restart=sv.restart,
                env=tuple(sorted(sv.env.items())),
                stop_timeout=sv.stop_timeout,
            )
        )
    return servers


def _build_cleanup(
    sections: list[CleanupSection], error: Callable[[tuple[str | int, ...], str], None]
) -> list[CleanupRule]:
    rules = []
    for i, c in enumerate(sections):
        try:
            re.compile(c.pattern)
        except re.error as e:
            error(("cleanup", i, "pattern"), f"invalid regular expression: {e}")
            continue
        rules.append(CleanupRule(pattern=c.pattern, max_minutes=c.max_minutes))
    return rules


def _raise_first(name: str, errors: list[tuple[int, str]]) -> None:
    if not errors:
        return
    errors.sort(key=lambda e: e[0])
    line, msg = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise ConfigError(f"{name}:{line}: {msg}{more}")


def _describe(err: Any, model: type[BaseModel] = FileShape) -> str:
    """Pydantic's error, said the way a config author needs it (``model``: what was validated)."""
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        allowed = _allowed_keys(err["loc"][:-1], model)
        hint = difflib.get_close_matches(key, allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        listed = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key{suggestion}{listed}" if suggestion else f"unknown key{listed}"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("value_error",):
        msg += f" (got {err['input']!r})"
    return msg


def _allowed_keys(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    names = [x for x in loc if isinstance(x, str)]
    for name in names:
        field = model.model_fields.get(name)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))[0] if getattr(ann, "__origin__", None) else ann
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return sorted(f.alias or n for n, f in model.model_fields.items())


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_key(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # A quoted TOML key may hold anything, newlines included: quote it to stay on one line.
        name = part if _BARE_KEY.match(part) else json.dumps(part)
        out += f".{name}" if out else name
    return out or "(top level)"


# ---- where each key is ------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def _key_parts(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in text.split(".")]


class KeyLines:
    """Maps a key path such as ``("test", 2, "params", "count")`` to its line in the source.

    tomllib keeps no positions, so this follows the file's table headers and assignments.
    It is used only to point at errors, so approximate is good enough: when a key is not
    found, the line of its nearest enclosing table is given.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str | int, ...], int] = {}
        counts: dict[tuple[str | int, ...], int] = {}
        table: tuple[str | int, ...] = ()
        depth = 0  # open brackets of a multi-line array or inline table
        string = ""  # the delimiter of the multi-line string open at the line's start
        for n, line in enumerate(text.splitlines(), start=1):
            code = depth == 0 and not string
            if code and (m := _HEADER.match(line)):
                path = self._in_arrays(_key_parts(m[2]), counts)
                if m[1] == "[[":
                    i = counts.get(path, 0)
                    counts[path] = i + 1
                    table = (*path, i)
                else:
                    table = path
                self._lines.setdefault(table, n)
            elif code and (m := _ASSIGN.match(line)):
                key = (*table, *_key_parts(m[1]))
                self._lines.setdefault(key, n)
                for k in _INLINE_KEY.finditer(line):
                    self._lines.setdefault((*key, k[1].strip('"')), n)
            balance, string = _scan(line, string)
            depth = max(0, depth + balance)

    @staticmethod
    def _in_arrays(
        parts: list[str], counts: dict[tuple[str | int, ...], int]
    ) -> tuple[str | int, ...]:
        """``[test.params]`` below the 2nd ``[[test]]`` → ``("test", 1, "params")``."""
        path: list[str | int] = []
        for k, part in enumerate(parts):
            path.append(part)
            if k < len(parts) - 1 and (count := counts.get(tuple(path))):
                path.append(count - 1)
        return tuple(path)

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        for end in range(len(loc), 0, -1):
            if (n := self._lines.get(tuple(loc[:end]))) is not None:
                return n
        return 1


def _scan(line: str, string: str) -> tuple[int, str]:
    """Net open brackets on a line, ignoring strings and comments (for multi-line values), and
    the multi-line string delimiter still open at its end. ``string``: the one open at its start.
    """
    depth, quote, i = 0, string, 0
    while i < len(line):
        if quote:
            if line[i] == "\\" and quote[0] == '"':  # an escape in a basic string
                i += 2
            elif line.startswith(quote, i):
                i += len(quote)
                quote = ""
            else:
                i += 1
            continue
        ch = line[i]
        if line.startswith(ch * 3, i) and ch in "\"'":
            quote = ch * 3
            i += 3
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return depth, quote if len(quote) == 3 else ""
