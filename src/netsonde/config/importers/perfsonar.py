"""The seed's perfSONAR-PS ``daemon.conf`` (PROTOCOL.md §4.16) → a netsonde config.

``<port N>`` → ``[daemon] listen`` (one port: netsonde serves every service on one address);
the PingER MP's landmarks (``configuration_file``, or a landmarks file given directly) → ping
``[[test]]``s; the PingER MA's ``query_size_limit`` → ``[api] max_response_datums``; the Status
MA → ``[status]`` (E2EMon definitions, ``max_recent_age``); an LS/hLS → ``[ls]``;
``enable_registration`` with ``ls_instance`` and ``ls_registration_interval`` (minutes; values
cascade top → port → endpoint → section, as the daemon merged them) → ``[registration]``;
``max_worker_lifetime`` → ``[api] request_timeout``; ``pid_dir``/``pid_file`` → ``[daemon]
pidfile``. Keys that only concerned the seed's own storage or description (``db_*``,
``service_*``, ``metadata_*``, ``ping*_exec`` …) are left out with a comment; any other key,
block or module raises :class:`Unmappable` naming file, line and key.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from netsonde.config.importers import cgeneral, landmarks
from netsonde.config.importers.cgeneral import Block, Item
from netsonde.config.importers.output import Imported, Unmappable
from netsonde.config.specs import ToolContract
from netsonde.units import YEAR_S

MINUTE = 60.0
_URL = re.compile(r"https?://[^\s/]+(/\S*)?")  # what [registration] urls take
MAX_CHILDREN = 4096  # [daemon] max_children's limit
DAY = 86400.0
# The seed's module → the name of its section block (None: a module with no section).
MODULES: dict[str, str | None] = {
    "perfSONAR_PS::Services::MP::PingER": "pingermp",
    "perfSONAR_PS::Services::MA::PingER": "pingerma",
    "perfSONAR_PS::Services::MA::Status": "status",
    "perfSONAR_PS::Services::LS::LS": "ls",
    "perfSONAR_PS::Services::LS::gLS": "gls",
    "perfSONAR_PS::Services::Echo": None,
}
# Where netsonde serves what the module served (a different endpoint is noted).
PATHS = {
    "pingermp": "/perfSONAR_PS/services/pinger/mp",
    "pingerma": "/perfSONAR_PS/services/pinger/ma",
    "status": "/perfSONAR_PS/services/status",
    "ls": "/perfSONAR_PS/services/LS",
    "gls": "/perfSONAR_PS/services/hLS",
}
_DISABLED = ("disabled", "disable")  # the daemon read the first; the 2009 hLS file says the other
REGISTRATION_KEYS = ("enable_registration", "ls_instance", "ls_registration_interval")
# Keys left out, by prefix, and why.
_LEFT_OUT_PREFIXES = {
    "service_": "netsonde describes its services itself",
    "db_": "netsonde keeps its own store (the seed's data are not imported)",
    "metadata_": "netsonde keeps its own store (the seed's data are not imported)",
}


@dataclass
class _Registration:
    urls: list[str] = field(default_factory=list)
    intervals: list[float] = field(default_factory=list)
    without_url: list[str] = field(default_factory=list)  # sections that register, nowhere


def import_perfsonar(
    path: Path, tools: Mapping[str, ToolContract], *, landmarks_file: Path | None = None
) -> Imported:
    """``path``: a daemon.conf, or a PingER landmarks file (→ its tests alone).
    ``landmarks_file`` replaces the PingER MP's ``configuration_file``."""
    out = Imported(source=f"{path} (perfSONAR-PS)")
    if landmarks.is_xml(path):
        landmarks.read_landmarks(path, tools, out)
        return out
    _Daemon(path, tools, landmarks_file, out).run(cgeneral.read(path))
    return out


class _Daemon:
    def __init__(
        self,
        path: Path,
        tools: Mapping[str, ToolContract],
        landmarks_file: Path | None,
        out: Imported,
    ) -> None:
        self.path = path
        self.tools = tools
        self.landmarks_file = landmarks_file
        self.out = out
        self.registration = _Registration()
        self.port: tuple[str, Item | Block] | None = None

    def _error(self, where: Item | Block, message: str) -> Unmappable:
        return Unmappable(f"{where.file}:{where.line}: {message}")

    def _left_out(self, item: Item, why: str) -> None:
        self.out.note(f"{item.key} ({item.file.name}:{item.line}) left out: {why}")

    # -- the file --

    def run(self, root: Block) -> None:
        if not root.blocks:
            raise Unmappable(f"{self.path}: no <port> block: not a perfSONAR-PS daemon.conf")
        top: dict[str, Callable[[Item], None]] = {
            "max_worker_lifetime": self._lifetime,
            "pid_dir": lambda item: None,  # with pid_file
            "pid_file": lambda item: self._pidfile(root),
        }
        left_out = {
            "disable_echo": "netsonde answers EchoRequest on every endpoint",
            "max_worker_processes": "netsonde's HTTP workers are [api] workers",
            "reaper_interval": "netsonde's LS expires leases every [ls] expire_every",
            "root_hints_url": "give [registration] urls the lookup services themselves",
            "root_hints_file": "give [registration] urls the lookup services themselves",
        }
        for item in root.items:
            key = item.key.lower()
            if key in top:
                top[key](item)
            elif key in left_out:
                self._left_out(item, left_out[key])
            elif key not in REGISTRATION_KEYS:
                raise self._error(item, f"{item.key}: unknown top-level key, not imported")
        for block in root.blocks:
            if block.name.lower() != "port":
                raise self._error(block, f"<{block.name}>: only <port> blocks are imported")
            for number, port in _named(block):
                self._port(number, port, [root])
        self._write_registration()

    def _lifetime(self, item: Item) -> None:
        seconds = _number(self, item)
        if not 0 < seconds <= 3600:
            raise self._error(item, f"{item.key}: {item.value} s (netsonde allows up to 3600)")
        self.out.section("api")["request_timeout"] = seconds

    def _pidfile(self, root: Block) -> None:
        pid_file = root.get("pid_file")
        if pid_file is None or not pid_file.value:
            return
        pid_dir = root.get("pid_dir")
        base = Path(pid_dir.value) if pid_dir and pid_dir.value else self.path.parent
        # The seed's pid_file: in pid_dir unless absolute; relative to the file otherwise.
        pidfile = base / pid_file.value
        if not pidfile.is_absolute():
            pidfile = self.path.parent.resolve() / pidfile
        self.out.section("daemon")["pidfile"] = str(pidfile)

    # -- ports and endpoints --

    def _port(self, number: str, port: Block, parents: list[Block]) -> None:
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise self._error(port, f"<port {number}>: not a port number")
        if _disabled(self, port):
            self.out.note(f"port {number} ({port.file.name}:{port.line}): disabled, skipped")
            return
        self._cascaded_items(port, f"port {number}")
        for block in port.blocks:
            if block.name.lower() != "endpoint":
                raise self._error(block, f"<{block.name}>: only <endpoint> blocks go in a port")
            for path, endpoint in _named(block):
                self._endpoint(number, path, endpoint, [*parents, port])

    def _endpoint(self, port: str, path: str, endpoint: Block, parents: list[Block]) -> None:
        here = f"port {port} endpoint {path}"
        if _disabled(self, endpoint):
            self.out.note(f"{here} ({endpoint.file.name}:{endpoint.line}): disabled, skipped")
            return
        self._listen(port, endpoint)
        modules = endpoint.all("module")
        if not modules:
            raise self._error(endpoint, f"{here}: no module")
        self._cascaded_items(endpoint, here, allowed=("module",))
        sections = {b.name.lower(): b for b in endpoint.blocks}
        used: set[str] = set()
        for module in modules:
            if module.value not in MODULES:
                raise self._error(
                    module,
                    f"{here}: module {module.value} has no netsonde service (imported: "
                    + ", ".join(
                        m.rsplit("::", 2)[-2] + "::" + m.rsplit("::", 1)[-1] for m in MODULES
                    )
                    + ")",
                )
            section_name = MODULES[module.value]
            if section_name is None:
                continue
            used.add(section_name)
            section = sections.get(section_name) or Block(
                section_name, None, module.line, module.file
            )
            if "/" + path.strip("/") != PATHS[section_name]:
                self.out.note(
                    f"{here}: netsonde serves {module.value.rsplit('::', 2)[-2]}"
                    f" {module.value.rsplit('::', 1)[-1]} at {PATHS[section_name]}"
                )
            self._section(section_name, section, [*parents, endpoint], here)
        for name, block in sections.items():
            if name not in used:
                raise self._error(block, f"{here}: <{block.name}> belongs to no module of it")

    def _listen(self, port: str, where: Block) -> None:
        if self.port is not None and self.port[0] != port:
            raise self._error(
                where,
                f"port {port}: netsonde serves every service on one address, and port"
                f" {self.port[0]} ({self.port[1].file.name}:{self.port[1].line}) came first",
            )
        if self.port is None:
            self.port = (port, where)
            # The seed listened on every address; netsonde's own default is loopback only.
            self.out.section("daemon")["listen"] = f"0.0.0.0:{port}"
            self.out.section_note("daemon", "the seed listened on every address, as this does")

    def _cascaded_items(self, block: Block, here: str, allowed: tuple[str, ...] = ()) -> None:
        for item in block.items:
            key = item.key.lower()
            if key in (*REGISTRATION_KEYS, *_DISABLED, *allowed) or key == "service_type":
                continue
            raise self._error(item, f"{here}: {item.key}: unknown key, not imported")

    # -- the services' sections --

    def _section(self, name: str, section: Block, parents: list[Block], here: str) -> None:
        handlers: dict[str, dict[str, Callable[[Item], None]]] = {
            "pingermp": {
                "configuration_file": lambda i: self._landmarks(i),
                "max_worker_processes": lambda i: self._max_children(i),
            },
            "pingerma": {
                "query_size_limit": lambda i: self._set(
                    "api", "max_response_datums", _count(self, i)
                ),
            },
            "status": {
                "e2emon_definitions_file": lambda i: self._e2emon(section, i),
                "enable_e2emon_compatibility": lambda i: None,  # with the file
                "max_recent_age": lambda i: self._max_recent_age(i),
            },
            "ls": self._ls_keys(),
            "gls": self._ls_keys(),
        }
        left_out = {
            "pingermp": {
                "ping_exec": "netsonde pings with its own ICMP engine",
                "ping4_exec": "netsonde pings with its own ICMP engine",
                "ping6_exec": "netsonde pings with its own ICMP engine",
                "ping4_if": "netsonde pings from the routed interface",
                "ping6_if": "netsonde pings from the routed interface",
                "max_worker_lifetime": "each run's deadline follows from its parameters",
                "query_size_limit": "the MP answers no queries",
                "service_timeout": "the MP answers no queries",
            },
            "pingerma": {"service_timeout": "requests have [api] request_timeout"},
            "status": {
                "read_only": "netsonde stores only with the [api] token: no token, read only",
                "external_address": "give [registration] advertise",
                "site_name": "netsonde registers no site description",
                "site_location": "netsonde registers no site description",
            },
            "ls": {"summarization_interval": "netsonde keeps no LS summaries"},
            "gls": {"summarization_interval": "netsonde keeps no LS summaries"},
        }
        if name in ("ls", "gls"):
            self._ls(section, here)
        if name == "status":
            self.out.section("status")["enabled"] = True
        if name == "pingermp" and section.get("configuration_file") is None:
            if self.landmarks_file is None:
                raise self._error(section, f"{here}: <pingermp> has no configuration_file")
            self._landmarks(None)
        for item in section.items:
            key = item.key.lower()
            if key in handlers[name]:
                handlers[name][key](item)
            elif key in left_out[name]:
                self._left_out(item, left_out[name][key])
            elif prefix := next((p for p in _LEFT_OUT_PREFIXES if key.startswith(p)), None):
                self._left_out(item, _LEFT_OUT_PREFIXES[prefix])
            elif key not in REGISTRATION_KEYS:
                raise self._error(item, f"<{section.name}> {item.key}: unknown key, not imported")
        for block in section.blocks:
            raise self._error(block, f"<{section.name}>: <{block.name}> is not imported")
        self._registration(section, parents, here)

    def _set(self, section: str, key: str, value: object) -> None:
        self.out.section(section)[key] = value

    def _max_children(self, item: Item) -> None:
        count = _count(self, item)
        if count > MAX_CHILDREN:
            raise self._error(
                item, f"max_worker_processes: {count} (netsonde allows {MAX_CHILDREN})"
            )
        self.out.section("daemon")["max_children"] = count

    def _max_recent_age(self, item: Item) -> None:
        seconds = _number(self, item)
        if not 0 < seconds <= YEAR_S:
            raise self._error(item, f"max_recent_age: {item.value} s (more than 0, at most a year)")
        self.out.section("status")["max_recent_age"] = seconds

    def _landmarks(self, item: Item | None) -> None:
        if self.landmarks_file is not None:
            landmarks.read_landmarks(self.landmarks_file, self.tools, self.out, "--landmarks")
            return
        assert item is not None  # without --landmarks, only called for configuration_file
        path = Path(item.value)
        path = path if path.is_absolute() else item.file.parent / path
        if not path.is_file():
            raise self._error(
                item, f"<pingermp> configuration_file: {path}: no such file (give --landmarks)"
            )
        landmarks.read_landmarks(path, self.tools, self.out, f"{item.file.name}:{item.line}")

    def _e2emon(self, section: Block, item: Item) -> None:
        enabled = section.get("enable_e2emon_compatibility")
        if enabled is not None and enabled.value.strip() in ("0", ""):
            self._left_out(item, "enable_e2emon_compatibility is off")
            return
        path = Path(item.value)
        path = (path if path.is_absolute() else item.file.parent / path).resolve()
        if not path.is_file():
            raise self._error(item, f"<status> e2emon_definitions_file: {path}: no such file")
        self.out.section("status")["e2emon_definitions"] = str(path)

    def _ls_keys(self) -> dict[str, Callable[[Item], None]]:
        return {
            "root": lambda i: None,  # checked by _ls
            "ls_ttl": lambda i: self._ls_ttl(i),
            "maintenance_interval": lambda i: self._expire_every(i),
        }

    def _ls(self, section: Block, here: str) -> None:
        root = section.get("root")
        if root is not None and root.value.strip() not in ("0", ""):
            raise self._error(root, f"{here}: a gLS root (root 1): netsonde serves an hLS only")
        ls = self.out.section("ls")
        ls["enabled"] = True
        # A lookup service needs a token to take registrations: one is made up here.
        ls["token"] = secrets.token_urlsafe(24)
        self.out.section_note("ls", "token: made up at import; registrants need it")

    def _ls_ttl(self, item: Item) -> None:
        ttl = _number(self, item) * MINUTE
        if not 1 <= ttl <= 366 * DAY:
            raise self._error(item, f"ls_ttl {item.value} minutes: out of range")
        ls = self.out.section("ls")
        ls["ttl"] = ttl
        if ttl > DAY:  # netsonde's max_ttl (default one day) must allow it
            ls["max_ttl"] = ttl

    def _expire_every(self, item: Item) -> None:
        seconds = _number(self, item) * MINUTE
        if not 1 <= seconds <= DAY:
            raise self._error(item, f"maintenance_interval {item.value} minutes: out of range")
        self.out.section("ls")["expire_every"] = seconds

    # -- registration --

    def _registration(self, section: Block, parents: list[Block], here: str) -> None:
        chain = [section, *reversed(parents)]  # the nearest value wins

        def value(key: str) -> Item | None:
            return next((item for b in chain if (item := b.get(key)) is not None), None)

        enabled = value("enable_registration")
        if enabled is None or enabled.value.strip() in ("0", ""):
            return
        interval = value("ls_registration_interval")
        minutes = _number(self, interval) if interval is not None else 60.0  # the seed's default
        if not 1 <= minutes * MINUTE <= DAY:
            assert interval is not None
            raise self._error(
                interval, f"ls_registration_interval {minutes:g} minutes: out of range"
            )
        self.registration.intervals.append(minutes * MINUTE)
        url = value("ls_instance")
        if url is None or not url.value:
            self.registration.without_url.append(here)
        elif not _URL.fullmatch(url.value):
            raise self._error(url, f"ls_instance: {url.value!r} is not an http(s) URL")
        elif url.value not in self.registration.urls:
            self.registration.urls.append(url.value)

    def _write_registration(self) -> None:
        reg = self.registration
        if reg.without_url:
            self.out.note(
                f"{', '.join(reg.without_url)}: registers through the gLS root hints;"
                " give [registration] urls the lookup services"
            )
        if not reg.urls:
            return
        interval = min(reg.intervals)
        section = self.out.section("registration")
        section["urls"] = reg.urls
        section["interval"] = interval
        section["ttl"] = min(2 * interval, 366 * DAY)  # a lease outlives one missed keepalive
        self.out.section_note("registration", "token: the lookup service's [ls] token")
        if len(set(reg.intervals)) > 1:
            self.out.section_note("registration", "the shortest of the seed's intervals")


def _named(block: Block) -> list[tuple[str, Block]]:
    """``<port 8075> …`` → [("8075", block)]; the 2008 style ``<port> <8075> … </8075>``
    → one per inner block."""
    if block.arg is not None:
        return [(block.arg.strip(), block)]
    if block.items:
        item = block.items[0]
        raise Unmappable(f"{item.file}:{item.line}: <{block.name}> without a name holds {item.key}")
    return [(inner.name, inner) for inner in block.blocks]


def _disabled(daemon: _Daemon, block: Block) -> bool:
    items = [i for key in _DISABLED if (i := block.get(key)) is not None]
    return any(i.value.strip() not in ("0", "") for i in items)


def _number(daemon: _Daemon, item: Item) -> float:
    try:
        value = float(item.value)
    except ValueError:
        raise daemon._error(item, f"{item.key}: {item.value!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise daemon._error(item, f"{item.key}: {item.value!r} is not a positive number")
    return value


def _count(daemon: _Daemon, item: Item) -> int:
    value = _number(daemon, item)
    if not value.is_integer() or not 1 <= value <= 2**31:
        raise daemon._error(item, f"{item.key}: {item.value!r} is not a whole number ≥ 1")
    return int(value)
