"""A pSConfig template (JSON) → the ``[[test]]``s one host runs.

The host (``--host``: an address name, an address or a host name of the template) measures
every address tuple of every task that its agent would schedule: the tuple's ``scheduled-by``
address, or, when that one has ``no-agent``, the other (pSConfig's ``flip``). The other end
is the target. Groups: mesh, disjoint (both ways unless ``unidirectional``), list;
``excludes-self`` (host, address, disabled) and ``excludes`` pairs; ``labels`` and
``remote-addresses``; disabled addresses, hosts and tasks. Schedules: ``repeat`` → interval,
``slip`` → slip, or with ``sliprand`` a random offset of the same spread (at most what netsonde
allows: under half the interval); ``start``, ``until``, ``max-runs``. Test types: rtt → ping,
trace → traceroute, throughput → iperf3, latency/latencybg → twamp (one-way, forward), dns, http;
each spec key maps to a tool parameter, is harmless and noted, or is an error.

What cannot be mapped raises :class:`Unmappable` naming the JSON path; with
``skip_unmappable`` a task that cannot be mapped is left out with a comment instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from netsonde.config.errors import Loc, format_key
from netsonde.config.importers.output import Imported, TestEntry, Unmappable
from netsonde.config.schema import TEST_ID
from netsonde.config.specs import ToolContract
from netsonde.units import YEAR_S

# pSConfig test type → netsonde tool.
TOOL_OF = {
    "rtt": "ping",
    "trace": "traceroute",
    "throughput": "iperf3",
    "latency": "twamp",
    "latencybg": "twamp",
    "dns": "dns",
    "http": "http",
}
# Defaults of the pScheduler tools behind latency (owamp) and latencybg (powstream), which
# differ from the twamp tool's: a latencybg "session" is 600 packets at 10 per second.
_ONE_WAY_DEFAULTS = {
    "latency": {"count": 100, "interval": 0.1},
    "latencybg": {"count": 600, "interval": 0.1},
}
# Spec keys that change nothing netsonde measures (output format, node names, histograms).
_HARMLESS = frozenset(
    {"schema", "source-node", "dest-node", "hostnames", "as", "bucket-width", "output-raw"}
    | {"keep-content", "_meta"}
)
_ISO = re.compile(
    r"^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)
_ISO_SECONDS = (7 * 86400, 86400, 3600, 60, 1)
_TEMPLATE = re.compile(r"\{%\s*(.*?)\s*%\}")
_INDEXED = re.compile(r"^(address|pscheduler_address|lead_bind_address)\[(\d+)\]$")
_TEST_ID = re.compile(TEST_ID)


def iso_duration(text: object) -> float:
    """pSConfig's ISO 8601 duration (``PT30S``, ``P1DT2H``, ``PT0.5S``) → seconds."""
    m = _ISO.match(text) if isinstance(text, str) else None
    if m is None or text in ("P", "PT") or str(text).endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration (e.g. PT30S, PT4H, P1D)")
    seconds = sum(float(v) * s for v, s in zip(m.groups(), _ISO_SECONDS, strict=True) if v)
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r}: too long")
    return seconds


# ---- spec keys → tool parameters -------------------------------------------------------------


def _count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected a whole number, got {v!r}")
    return v


def _number(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def _flag(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _whole_seconds(v: object) -> int:
    seconds = iso_duration(v)
    if not seconds.is_integer():
        raise ValueError(f"{v!r}: iperf3 takes whole seconds")
    return int(seconds)


def _family(v: object) -> str:
    if v not in (4, 6):
        raise ValueError(f"ip-version is 4 or 6, got {v!r}")
    return f"ipv{v}"


def _probe(v: object) -> str:
    if v not in ("udp", "icmp", "tcp"):
        raise ValueError(f"probe-type {v!r}: netsonde's traceroute does udp, icmp or tcp")
    return str(v)


def _bits(v: object) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, str):
        return v
    raise ValueError(f"expected bits per second, got {v!r}")


def _dscp(v: object) -> int:
    tos = _count(v)
    if not 0 <= tos <= 255 or tos & 3:
        raise ValueError(f"ip-tos {tos}: netsonde sets a DSCP (a multiple of 4, 0-252)")
    return tos >> 2


def _protocol(v: object) -> str:
    if v != "icmp":
        raise ValueError(f"protocol {v!r}: netsonde's ping sends ICMP echo only")
    return "icmp"


def _rr_type(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a record type, got {v!r}")
    return v.upper()


def _text(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _body_contains(v: object) -> list[str]:
    return [re.escape(_text(v))]


Conv = Callable[[Any], Any]
# Per test type: spec key → (tool parameter, converter); a parameter of None is consumed
# without a parameter (it was checked).
_PARAMS: dict[str, dict[str, tuple[str | None, Conv]]] = {
    "rtt": {
        "count": ("count", _count),
        "interval": ("interval", iso_duration),
        "length": ("packet_size", _count),
        "ttl": ("ttl", _count),
        "timeout": ("wait", iso_duration),
        "ip-version": ("family", _family),
        "protocol": (None, _protocol),
    },
    "trace": {
        "first-ttl": ("first_ttl", _count),
        "hops": ("max_hops", _count),
        "length": ("packet_size", _count),
        "probe-type": ("method", _probe),
        "dest-port": ("port", _count),
        "queries": ("queries", _count),
        "wait": ("wait", iso_duration),
        "ip-version": ("family", _family),
    },
    "throughput": {
        "duration": ("duration", _whole_seconds),
        "udp": ("protocol", lambda v: "udp" if _flag(v) else "tcp"),
        "bandwidth": ("bandwidth", _bits),
        "parallel": ("parallel", _count),
        "reverse": ("reverse", _flag),
        "omit": ("omit", _whole_seconds),
        "buffer-length": ("bytes_per_read", _count),
        "ip-version": ("family", _family),
        "interval": (None, iso_duration),  # iperf3's report interval: netsonde keeps totals
    },
    "latency": {
        "packet-count": ("count", _count),
        "packet-interval": ("interval", _number),
        "packet-padding": ("padding", _count),
        "packet-timeout": ("timeout", _number),
        "packet-ttl": ("ttl", _count),
        "ip-tos": ("dscp", _dscp),
        "ip-version": (None, _family),  # the target is an address: its family decides
        "flip": (None, _flag),  # consumed by the direction
    },
    "dns": {
        "query": ("query_name", _text),
        "record": ("query_type", _rr_type),
        "timeout": ("timeout", iso_duration),
        "recursion": ("recursion_desired", _flag),
    },
    "http": {
        "parse": ("fail_if_body_not_matches_regexp", _body_contains),
        "timeout": ("timeout", iso_duration),
    },
}
_PARAMS["latencybg"] = {**_PARAMS["latency"], "duration": (None, iso_duration)}
_TWO_ENDED = frozenset({"rtt", "trace", "throughput", "latency", "latencybg"})
# Where the target is, for the test types that have no source and dest.
_TARGET_KEY = {"dns": "nameserver", "http": "url"}
# The measuring host itself, which the target types may name.
_SELF_KEYS = {"dns": "host", "http": "host"}


# ---- the template's addresses ------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """One end of a task's tuple, with its label or remote entry applied."""

    name: str  # its key in "addresses"
    label: str | None
    address: str
    where: Loc  # the JSON path of ``address``
    host: str | None
    disabled: bool
    no_agent: bool
    pscheduler_address: str | None = None
    lead_bind_address: str | None = None


@dataclass(frozen=True)
class Selector:
    name: str
    label: str | None
    disabled: bool


@dataclass
class _Planned:
    """What one task's tuples measure from this host, grouped by identical parameters."""

    tool: str
    params: dict[str, Any]
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Skip(Exception):
    """A task that cannot be mapped, left out when ``skip_unmappable`` says so."""


def import_psconfig(
    text: str,
    source: str,
    host: str,
    tools: Mapping[str, ToolContract],
    *,
    skip_unmappable: bool = False,
) -> Imported:
    """``text`` (a pSConfig template read from ``source``) → the tests ``host`` runs.
    ``tools``: the tool contracts (``netsonde.probes.TOOLS``) that check each test's
    parameters and target as the config loader will."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise Unmappable(f"{source}:{e.lineno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise Unmappable(f"{source}: invalid JSON: nested too deeply") from None
    return _Template(doc, source, host, tools, skip_unmappable).run()


class _Template:
    def __init__(
        self,
        doc: object,
        source: str,
        host: str,
        tools: Mapping[str, ToolContract],
        skip: bool,
    ) -> None:
        self.source = source
        self.tools = tools
        self.skip = skip
        self.doc = self._object(doc, ())
        self.out = Imported(source=f"{source} (pSConfig, host {host})")
        self.addresses = self._object(self.doc.get("addresses"), ("addresses",))
        self.groups = self._object(self.doc.get("groups"), ("groups",))
        self.tests = self._object(self.doc.get("tests"), ("tests",))
        self.tasks = self._object(self.doc.get("tasks"), ("tasks",))
        self.schedules = self._object(self.doc.get("schedules", {}), ("schedules",))
        self.hosts = self._object(self.doc.get("hosts", {}), ("hosts",))
        if self.doc.get("includes"):
            raise self._error(("includes",), "includes are not fetched: merge them in first")
        self.mine = self._mine(host)
        # (tool, target, params) → the task that measures it first: a second is a duplicate.
        self.seen: dict[str, str] = {}

    # -- errors and shapes --

    def _error(self, where: Loc, message: str) -> Unmappable:
        return Unmappable(f"{self.source}: {format_key(where)}: {message}")

    def _object(self, value: object, where: Loc) -> dict[str, Any]:
        if value is None:
            raise self._error(where, "required, missing")
        if not isinstance(value, dict):
            raise self._error(where, "expected an object")
        return value

    def _optional(self, parent: dict[str, Any], key: str, where: Loc) -> dict[str, Any]:
        """``parent[key]``, an object that may be absent ({} then)."""
        value = parent.get(key)
        return {} if value is None else self._object(value, (*where, key))

    def _named(self, table: dict[str, Any], kind: str, name: object, where: Loc) -> Any:
        if not isinstance(name, str) or name not in table:
            raise self._error(where, f"no {kind} {name!r} in {kind}s")
        return table[name]

    # -- this host --

    def _mine(self, host: str) -> frozenset[str]:
        """The names of the addresses that are this host: by name, address or host."""
        want = host.lower()
        mine = set()
        for name, spec in self.addresses.items():
            spec = self._object(spec, ("addresses", name))
            labels = self._optional(spec, "labels", ("addresses", name))
            values = [spec.get("address"), spec.get("host")]
            values += [v.get("address") for v in labels.values() if isinstance(v, dict)]
            if name.lower() == want or any(
                isinstance(v, str) and v.lower() == want for v in values
            ):
                mine.add(name)
        if not mine:
            raise Unmappable(
                f"{self.source}: --host {host!r}: no address of the template has this name,"
                " address or host"
            )
        return frozenset(mine)

    # -- the whole template --

    def run(self) -> Imported:
        if self.doc.get("archives"):
            self.out.note(
                "archives are ignored: results go to this instance's archive"
                " ([spool] delivers them to a central one)"
            )
        for name, task in self.tasks.items():
            try:
                self._task(name, self._object(task, ("tasks", name)))
            except Unmappable as e:
                if not self.skip:
                    raise
                why = str(e).removeprefix(f"{self.source}: ")
                self.out.note(f"skipped {format_key(('tasks', name))}: {why}")
        if not self.out.tests:
            self.out.note("this host measures nothing in this template")
        return self.out

    def _task(self, name: str, task: dict[str, Any]) -> None:
        here: Loc = ("tasks", name)
        if task.get("disabled") is True:
            self.out.note(f"{format_key(here)}: disabled, skipped")
            return
        if task.get("subtasks"):
            raise self._error((*here, "subtasks"), "subtasks have no netsonde equivalent")
        group_name = task.get("group")
        group = self._named(self.groups, "group", group_name, (*here, "group"))
        group_name = str(group_name)  # _named found it: a name
        scheduled_by = task.get("scheduled-by", 0)
        if isinstance(scheduled_by, bool) or not isinstance(scheduled_by, int) or scheduled_by < 0:
            raise self._error((*here, "scheduled-by"), "expected an index (0, 1, …)")
        ours: list[tuple[tuple[Address, ...], int, bool]] = []
        passive: list[str] = []
        for tup in self._tuples(group_name, self._object(group, ("groups", group_name))):
            if any(a.disabled for a in tup):
                continue
            agent, flip = self._agent(tup, scheduled_by, here)
            if agent is None:
                continue
            if tup[agent].name in self.mine:
                ours.append((tup, agent, flip))
            elif any(a.name in self.mine for a in tup):
                passive.append(tup[agent].address)
        if not ours and not passive:
            return  # a task this host takes no part in: nothing of it needs to map
        test_name = task.get("test")
        test = self._object(self._named(self.tests, "test", test_name, (*here, "test")), ())
        kind = test.get("type")
        tool = TOOL_OF.get(kind) if isinstance(kind, str) else None
        if tool is None or not isinstance(kind, str):
            raise self._error(
                (*here, "test"),
                f"test type {json.dumps(kind)} has no netsonde tool"
                f" (mapped: {', '.join(sorted(TOOL_OF))})",
            )
        if passive and kind in ("throughput", "latency", "latencybg"):
            server = (
                "an iperf3 server ([[server]])" if kind == "throughput" else "a TWAMP reflector"
            )
            self.out.note(
                f"{format_key(here)}: this host is the far end of {len(passive)} measurement(s)"
                f" (from {', '.join(sorted(set(passive)))}): it needs {server}"
            )
        if not ours:
            return
        planned: dict[str, _Planned] = {}
        for tup, agent, flip in ours:
            self._plan(planned, str(test_name), test, kind, tool, tup, agent, flip)
        schedule = self._schedule(task, kind, here)
        self._emit(name, task, kind, tool, planned, schedule)

    # -- groups → tuples --

    def _selectors(self, items: object, where: Loc) -> list[Selector]:
        if not isinstance(items, list):
            raise self._error(where, "expected a list of address selectors")
        out = []
        for i, item in enumerate(items):
            at = (*where, i)
            if not isinstance(item, dict):
                raise self._error(at, "expected an address selector")
            if "class" in item:
                raise self._error(at, "address classes are not supported: list the addresses")
            name, label = item.get("name"), item.get("label")
            if not isinstance(name, str) or name not in self.addresses:
                raise self._error((*at, "name"), f"no address {name!r} in addresses")
            if label is not None and not isinstance(label, str):
                raise self._error((*at, "label"), "expected a label name")
            out.append(Selector(name, label, item.get("disabled") is True))
        return out

    def _tuples(self, name: str, group: dict[str, Any]) -> list[tuple[Address, ...]]:
        here: Loc = ("groups", name)
        kind = group.get("type")
        if kind == "list":
            sels = self._selectors(group.get("addresses"), (*here, "addresses"))
            return [(self._address(s, None),) for s in sels]
        if kind == "mesh":
            sels = self._selectors(group.get("addresses"), (*here, "addresses"))
            pairs = [(a, b) for a in sels for b in sels]
        elif kind == "disjoint":
            a_side = self._selectors(group.get("a-addresses"), (*here, "a-addresses"))
            b_side = self._selectors(group.get("b-addresses"), (*here, "b-addresses"))
            pairs = [(a, b) for a in a_side for b in b_side]
            if group.get("unidirectional") is not True:
                pairs += [(b, a) for a in a_side for b in b_side]
        else:
            raise self._error((*here, "type"), f"group type {json.dumps(kind)} is not known")
        scope = group.get("excludes-self", "host")
        if scope not in ("host", "address", "disabled"):
            raise self._error((*here, "excludes-self"), "expected host, address or disabled")
        excluded = self._excludes(group.get("excludes") or [], (*here, "excludes"))
        out: list[tuple[Address, ...]] = []
        seen = set()
        for a, b in pairs:
            key = (a.name, a.label, b.name, b.label)
            if key in seen or key in excluded:
                continue
            seen.add(key)
            pair = (self._address(a, b.name), self._address(b, a.name))
            if not _self_excluded(scope, *pair):
                out.append(pair)
        return out

    def _excludes(self, items: object, where: Loc) -> set[tuple[str, str | None, str, str | None]]:
        if not isinstance(items, list):
            raise self._error(where, "expected a list")
        out = set()
        for i, item in enumerate(items):
            item = self._object(item, (*where, i))
            (local,) = self._selectors([item.get("local-address")], (*where, i, "local-address"))
            targets = self._selectors(item.get("target-addresses"), (*where, i, "target-addresses"))
            out |= {(local.name, local.label, t.name, t.label) for t in targets}
        return out

    def _address(self, sel: Selector, remote: str | None) -> Address:
        """The address a selector picks, seen from ``remote`` (the other end's name):
        its remote-addresses entry, else its label, else the address itself."""
        base: Loc = ("addresses", sel.name)
        spec = self._object(self.addresses[sel.name], base)
        entry, where = spec, base
        remotes = self._optional(spec, "remote-addresses", base)
        if remote is not None and remote in remotes:
            where = (*base, "remote-addresses", remote)
            entry = self._object(remotes[remote], where)
        labels = self._optional(entry, "labels", where)
        if sel.label is not None and sel.label in labels:
            where = (*where, "labels", sel.label)
            entry = self._object(labels[sel.label], where)
        if "address" not in entry:
            entry, where = spec, base  # a remote entry without its own address
        address = entry.get("address")
        if not isinstance(address, str) or not address:
            raise self._error((*where, "address"), "expected a host name or IP address")
        host = spec.get("host")
        host_spec: dict[str, Any] = {}
        if host is not None:
            host_spec = self._object(self._named(self.hosts, "host", host, (*base, "host")), ())
        return Address(
            name=sel.name,
            label=sel.label,
            address=address,
            where=(*where, "address"),
            host=host if isinstance(host, str) else None,
            disabled=any(d.get("disabled") is True for d in (spec, entry, host_spec))
            or sel.disabled,
            no_agent=any(d.get("no-agent") is True for d in (spec, entry, host_spec)),
            pscheduler_address=_text_of(entry, spec, "pscheduler-address"),
            lead_bind_address=_text_of(entry, spec, "lead-bind-address"),
        )

    def _agent(
        self, tup: tuple[Address, ...], scheduled_by: int, here: Loc
    ) -> tuple[int | None, bool]:
        """The index of the address whose agent schedules this tuple, and whether that is the
        other end than ``scheduled-by`` asks (pSConfig's flip); None: no agent does."""
        if scheduled_by >= len(tup):
            raise self._error((*here, "scheduled-by"), f"the group's tuples have {len(tup)}")
        if not tup[scheduled_by].no_agent:
            return scheduled_by, False
        others = [i for i, a in enumerate(tup) if i != scheduled_by and not a.no_agent]
        return (others[0], True) if others else (None, False)

    # -- one tuple → a target and parameters --

    def _plan(
        self,
        planned: dict[str, _Planned],
        test_name: str,
        test: dict[str, Any],
        kind: str,
        tool: str,
        tup: tuple[Address, ...],
        agent: int,
        flip: bool,
    ) -> None:
        where: Loc = ("tests", test_name, "spec")
        spec = self._expand(self._object(test.get("spec"), where), where, tup, agent, flip)
        me = tup[agent]
        params: dict[str, Any] = dict(_ONE_WAY_DEFAULTS.get(kind, {}))
        notes: list[str] = []
        consumed = set(_HARMLESS)
        if kind in _TWO_ENDED:
            target, target_at, reverse = self._ends(spec, where, tup, me)
            consumed |= {"source", "dest"}
            if kind == "throughput" and reverse:
                params["reverse"] = not spec.get("reverse", False)
                notes.append("measured from the receiving end (reverse): the sender has no agent")
            elif kind in ("latency", "latencybg"):
                # One-way: the delay from source to dest, whichever end sends.
                params["variation_of"] = "backward" if reverse else "forward"
                notes.append(
                    "one-way delays need both clocks synchronised; the far end runs a"
                    " TWAMP reflector"
                )
            elif reverse:
                notes.append("measured from the dest end: the source has no agent")
        else:
            key = _TARGET_KEY[kind]
            target, target_at = spec.get(key), (*where, key)
            if not isinstance(target, str):
                raise self._error(target_at, f"required: netsonde's {tool} tool needs it")
            consumed |= {key, _SELF_KEYS[kind]}
        for key, value in spec.items():
            if key in consumed:
                continue
            mapped = _PARAMS[kind].get(key)
            if mapped is None:
                raise self._error((*where, key), f"has no netsonde equivalent ({tool} tool)")
            param, conv = mapped
            try:
                converted = conv(value)
            except ValueError as e:
                raise self._error((*where, key), str(e)) from None
            if param is not None and not (param == "reverse" and "reverse" in params):
                params[param] = converted
        self._check(tool, target, params, target_at, where)
        group = json.dumps(params, sort_keys=True)
        plan = planned.setdefault(group, _Planned(tool, params, notes=notes))
        if target not in plan.targets:
            plan.targets.append(target)

    def _ends(
        self, spec: dict[str, Any], where: Loc, tup: tuple[Address, ...], me: Address
    ) -> tuple[str, Loc, bool]:
        """(target, where the target was written, whether this host is the dest end)."""
        dest, source = spec.get("dest"), spec.get("source")
        if not isinstance(dest, str):
            raise self._error((*where, "dest"), "required: the other end")
        if source is None or source == me.address:
            target, reverse = dest, False
        elif dest == me.address:
            target, reverse = str(source), True
        else:
            raise self._error(
                (*where, "source"),
                f"neither source ({source}) nor dest ({dest}) is this host ({me.address})",
            )
        at = next((a.where for a in tup if a.address == target), (*where, "dest"))
        return target, at, reverse

    def _expand(
        self, value: Any, where: Loc, tup: tuple[Address, ...], agent: int, flip: bool
    ) -> Any:
        """The spec with its template variables replaced for this tuple."""
        if isinstance(value, dict):
            return {k: self._expand(v, (*where, k), tup, agent, flip) for k, v in value.items()}
        if isinstance(value, list):
            return [self._expand(v, (*where, i), tup, agent, flip) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        whole = _TEMPLATE.fullmatch(value.strip())
        if whole and whole[1] == "flip":
            return flip

        def variable(m: re.Match[str]) -> str:
            expr = m[1]
            if expr == "scheduled_by_address":
                return tup[agent].address
            if expr == "flip":
                return "true" if flip else "false"
            if (ix := _INDEXED.match(expr)) is None:
                raise self._error(where, f"template variable {{% {expr} %}} is not supported")
            i = int(ix[2])
            if i >= len(tup):
                raise self._error(where, f"{{% {expr} %}}: the group's tuples have {len(tup)}")
            a = tup[i]
            chosen = {
                "pscheduler_address": a.pscheduler_address,
                "lead_bind_address": a.lead_bind_address,
            }
            return str(chosen.get(ix[1]) or a.address)

        return _TEMPLATE.sub(variable, value)

    def _check(
        self, tool: str, target: str, params: dict[str, Any], target_at: Loc, where: Loc
    ) -> None:
        """The tool's own checks, so the error names the JSON path, not a line of output."""
        contract = self.tools[tool]
        try:
            contract.check_target(target)
        except ValueError as e:
            raise self._error(target_at, f"{tool}: {e}") from None
        try:
            contract.Params.model_validate(params)
        except ValidationError as e:
            first = e.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or "(parameters)"
            raise self._error(where, f"{tool} parameter {name}: {first['msg']}") from None

    # -- schedule --

    def _schedule(self, task: dict[str, Any], kind: str, here: Loc) -> dict[str, Any] | None:
        """The test keys of the task's schedule; None: a latencybg stream (back to back)."""
        name = task.get("schedule")
        if name is None:
            if kind == "latencybg":
                return None
            raise self._error(
                (*here, "schedule"),
                "none: pScheduler runs such a task once; netsonde repeats tests (give it one)",
            )
        where: Loc = ("schedules", name)
        sched = self._object(
            self._named(self.schedules, "schedule", name, (*here, "schedule")), where
        )
        out: dict[str, Any] = {}
        for key in sched:
            if key not in ("repeat", "slip", "sliprand", "start", "until", "max-runs", "_meta"):
                raise self._error((*where, key), "has no netsonde equivalent")
        if "repeat" not in sched:
            raise self._error(
                (*where, "repeat"),
                "none: pScheduler runs such a task once; netsonde repeats tests",
            )
        interval = self._duration(sched["repeat"], (*where, "repeat"))
        if not 0 < interval <= YEAR_S:
            raise self._error((*where, "repeat"), "must be more than 0 and at most a year")
        out["interval"] = interval
        if "slip" in sched:
            slip = self._duration(sched["slip"], (*where, "slip"))
            if slip > YEAR_S:
                raise self._error((*where, "slip"), "at most a year")
            if sched.get("sliprand") is True:
                # pScheduler starts at a random point of [slot, slot + slip]; netsonde moves a
                # slot by U(-offset, +offset): the same spread, capped under half the interval.
                out["offset"] = min(slip / 2, max_offset(interval))
            else:
                out["slip"] = slip
        for key in ("start", "until"):
            if key in sched:
                out[key] = self._timestamp(sched[key], (*where, key))
        if "max-runs" in sched:
            runs = sched["max-runs"]
            if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
                raise self._error((*where, "max-runs"), "expected a whole number ≥ 1")
            out["max_runs"] = runs
        return out

    def _duration(self, value: object, where: Loc) -> float:
        try:
            return iso_duration(value)
        except ValueError as e:
            raise self._error(where, str(e)) from None

    def _timestamp(self, value: object, where: Loc) -> str:
        try:
            if not isinstance(value, str):
                raise ValueError
            return datetime.fromisoformat(value).isoformat()
        except ValueError:
            raise self._error(
                where, f"{value!r}: only absolute ISO 8601 times are imported (not relative ones)"
            ) from None

    # -- output --

    def _emit(
        self,
        name: str,
        task: dict[str, Any],
        kind: str,
        tool: str,
        planned: dict[str, _Planned],
        schedule: dict[str, Any] | None,
    ) -> None:
        here = format_key(("tasks", name))
        base_id = name if name[:1].isalnum() else f"t{name}"
        asked = task.get("tools")
        for n, plan in enumerate(planned.values(), start=1):
            targets = []
            for target in plan.targets:
                key = json.dumps(
                    [
                        tool,
                        target,
                        self.tools[tool].Params.model_validate(plan.params).model_dump(mode="json"),
                    ],
                    sort_keys=True,
                )
                if (first := self.seen.get(key)) is not None:
                    self.out.note(f"{here}: {target} is measured by {first} already: skipped")
                    continue
                self.seen[key] = here
                targets.append(target)
            if not targets:
                continue
            test_id = base_id if n == 1 else f"{base_id}.{n}"
            timing = schedule if schedule is not None else self._stream(plan)
            notes = [f"from {here} (test type {kind})", *plan.notes]
            if isinstance(asked, list) and asked and tool not in asked:
                notes.append(
                    f"the task asks for {', '.join(map(str, asked))}: netsonde runs {tool}"
                )
            if task.get("archives"):
                notes.append("its archives are ignored")
            fields: dict[str, Any] = {"tool": tool, **timing, "params": plan.params}
            if all(_TEST_ID.match(f"{test_id}/{t}") for t in targets):
                self.out.tests.append(
                    TestEntry({"id": test_id, "targets": targets, **fields}, notes)
                )
                continue
            for i, target in enumerate(targets, start=1):  # targets that cannot be in an id
                self.out.tests.append(
                    TestEntry({"id": f"{test_id}/{i}", "target": target, **fields}, notes)
                )

    def _stream(self, plan: _Planned) -> dict[str, Any]:
        """latencybg without a schedule streams: one session after the other, each planned
        when the last may have ended (a test never overlaps itself)."""
        contract = self.tools[plan.tool]
        longest = contract.default_timeout(contract.Params.model_validate(plan.params))
        return {"interval": round(longest, 3)}  # to the millisecond, as written


def max_offset(interval: float) -> float:
    """The largest offset netsonde allows for ``interval`` (under half of it), to the second,
    or to the millisecond for intervals under 4 s."""
    if interval >= 4:
        return float(math.ceil(interval / 2) - 1)
    return (math.ceil(interval * 500) - 1) / 1000


def _text_of(entry: dict[str, Any], spec: dict[str, Any], key: str) -> str | None:
    """``key`` of a label or remote entry, else of its address; None unless a string."""
    value = entry.get(key) or spec.get(key)
    return value if isinstance(value, str) else None


def _self_excluded(scope: str, a: Address, b: Address) -> bool:
    """pSConfig's excludes-self: ``host``, the same host (or address); ``address``, the same
    address; ``disabled``, never."""
    if scope == "disabled":
        return False
    if scope == "host" and a.host and b.host and a.host.lower() == b.host.lower():
        return True
    return a.address == b.address
