"""TOML text → :class:`Config`: parse, validate against the schema, settle every section.

The tool parameter models (``param_models``) and the services' own sections (``sections``) are
passed in by the caller, so this package stays below ``probes`` and ``services``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import ValidationError

from netsonde.archive import ArchiveError, default_url, resolve_url
from netsonde.config.errors import ConfigError, Loc, Problems, SectionError, toml_error
from netsonde.config.locate import KeyLines
from netsonde.config.schema import (
    NO_SECTIONS,
    Paths,
    Section,
    Sections,
    ServerSection,
    file_shape,
    resolved,
)
from netsonde.config.settings import Config, ServerSpec, split_listen
from netsonde.config.specs import ToolContract, build_tests

# Arrays and inline tables nest this deep at most: a config needs a few levels, never dozens.
MAX_NESTING = 32

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
    lines = KeyLines(text)
    depth, line = lines.deepest
    # tomllib recurses once per level: a bomb of nested arrays would end in RecursionError.
    if depth > MAX_NESTING:
        raise ConfigError(
            f"{name}:{line}: arrays or inline tables nested {depth} deep (at most {MAX_NESTING})"
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise toml_error(name, text, e) from None
    except RecursionError:  # nested in a way the scan did not see: still one clean line
        raise ConfigError(f"{name}:{line}: nested too deeply to read") from None
    problems = Problems(name, lines)

    shape_model = file_shape(tuple(sections.items()))
    try:
        shape = shape_model.model_validate(raw)
    except ValidationError as e:
        problems.add_validation(e, shape_model)
        problems.raise_first()
        raise AssertionError("unreachable") from None

    mp_name = shape.daemon.name or socket.gethostname()
    tests = build_tests(shape.test, param_models, problems, source=mp_name)
    problems.raise_first()

    data_dir = resolved(shape.daemon.data_dir, base)
    url = ""
    try:
        url = resolve_url(shape.archive.url, base) if shape.archive.url else default_url(data_dir)
    except ArchiveError as e:
        problems.add(("archive", "url"), str(e))
    paths = Paths(base, data_dir, url)
    try:
        split_listen(shape.daemon.listen)
    except ValueError as e:
        problems.add(("daemon", "listen"), str(e))

    def read_token(section: str, token: str | None, token_file: str | None) -> str | None:
        try:
            return paths.read_token(token, token_file)
        except ValueError as e:
            problems.add((section, "token_file"), str(e))
            return None

    api = shape.api.model_copy(
        update={"token": read_token("api", shape.api.token, shape.api.token_file)}
    )
    spool = None
    if (sp := shape.spool) is not None:
        token = read_token("spool", sp.token, sp.token_file)
        spool = sp.model_copy(update={"url": sp.url.rstrip("/"), "token": token})
    servers = _build_servers(shape.server, problems, paths.resolve)
    settled: dict[str, Section] = {}
    for section_name in sections:
        try:
            settled[section_name] = getattr(shape, section_name).settle(paths)
        except SectionError as e:
            problems.add((section_name, e.key), str(e))
    problems.raise_first()
    daemon = shape.daemon
    return Config(
        source=source,
        name=mp_name,
        data_dir=data_dir,
        listen=daemon.listen,
        pidfile=paths.resolve(daemon.pidfile) if daemon.pidfile else data_dir / "netsonde.pid",
        log_file=paths.resolve(daemon.log_file) if daemon.log_file else data_dir / "netsonde.log",
        archive_url=url,
        archive_retention=shape.archive.retention,
        max_children=daemon.max_children,
        stop_timeout=daemon.stop_timeout,
        tests=tuple(tests),
        api=api,
        sections=settled,
        spool=spool,
        servers=tuple(servers),
        cleanup=tuple(shape.cleanup),
        log_max_bytes=daemon.log_max_bytes,
        log_backups=daemon.log_backups,
        heartbeat_timeout=daemon.heartbeat_timeout,
        restart_every=daemon.restart_every,
    )


def _build_servers(
    sections: list[ServerSection], problems: Problems, resolve: Callable[[str], Path]
) -> list[ServerSpec]:
    servers: list[ServerSpec] = []
    seen: set[str] = set()
    for i, sv in enumerate(sections):
        here: Loc = ("server", i)
        if sv.id in seen:
            problems.add((*here, "id"), f"duplicate server id {sv.id!r}")
            continue
        seen.add(sv.id)
        # No shell ever: the command is one program, found now so a typo fails the load.
        if "/" in sv.command:
            program = resolve(sv.command)
            found = str(program) if os.access(program, os.X_OK) and program.is_file() else None
        else:
            found = shutil.which(sv.command)
        if found is None:
            problems.add((*here, "command"), f"no executable program {sv.command!r}")
            continue
        if any("\x00" in a for a in sv.args):
            problems.add((*here, "args"), "arguments cannot contain NUL")
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
