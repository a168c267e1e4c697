"""The Link Status MA over NMWG (PROTOCOL.md §4.2–4.11): ``STATUS_MA``.

Messages: ``SetupDataRequest``, ``MetadataKeyRequest``, ``MeasurementArchiveStoreRequest`` for
eventType ``http://ggf.org/ns/nmwg/characteristic/link/status/20070809``; E2EMon ``Path.Status``
(also the 2009 ``…/topology/l2/3.0/link/status``) for SetupData and MetadataKey; the 2007
eventTypes ``Link.Status``, ``Link.History`` and ``Database.Dump`` for SetupData.

Subjects (§4.4), exactly one per request (else ``error.ma.subject`` "Ambiguous subject"):

* ``nmwg:key`` with ``maKey`` (repeatable), ``eventType``, ``responseFormat``
  (``topoid``|``linkid``|``compat``; a ``Path.Status`` key without one means ``compat``) and
  the window it was made for (``time`` or ``startTime``+``endTime``). A one-id key answers with a
  data referencing the request metadata, as 2008 did; a multi-id key (2009) answers in its
  response format, one metadata per id, so the datums stay attributable.
* ``topoid:subject`` — a URN, ``*`` a wildcard over any characters, matched against the stored
  link ids. The shipped example's namespace ``…/topoid/20070828/`` is accepted too (§7.12).
* ``nmwg:subject`` holding ``*:link/@id`` (linkid, deprecated).
* ``Path.Status``: no subject (every link of the definitions file) or an ``nmtl2:link`` naming
  its ``nmwgtopo3:node``s (links between those nodes).

Time (§4.5): the key's window, then the subject metadata's deprecated ``time`` parameter, then
each select filter, intersected; ``now``/none = latest, ``time`` = a point, ``-1`` = the whole
history, ``startTime`` with ``endTime`` or ``duration`` = a range. Range results are clipped to
the window (the 2008 code did so; its datums then report the clipped edges).

Datums (§4.6), the 2008 form (``knowledge`` kept; the 2009 form dropped it and broke 2008
clients): ``ifevt:datum knowledge timeType="unix" timeValue`` with ``ifevt:stateOper`` then
``ifevt:stateAdmin``. Range, history *and latest* answers add ``startTime``/``startTimeType``/
``endTime``/``endTimeType`` (the 2007 captures do this for the latest state too: it says since
when the state holds); ``timeValue`` is the (clipped) end. A point answer's ``timeValue`` is the
time asked about — the 2008 code put the range's end there, which is a time the client did not
ask for (the 2007 code, and this one, answer the question asked). Links with nothing known at
the time asked get an empty data: "unknown" is a state, silence is not.

Decisions where 2008/2009 were wrong (§4.7, §4.9, §7): stores use the subject's link id (2008
stored a Perl object string) and accept the 2008 client's nested ``nmwg:subject/topoid:subject``;
keys and filters are read from ``parameters`` (not the 2009 ``args``); ``select:parameter`` and
``nmwg:parameter`` are both read; eventTypes are compared, not assigned; ids are unique within a
response. The response type is always ``<X>Response`` (``SetupDataResponse``): the 2007 captures
say ``SetupDataRequestResponse``, a bug of the 2007 daemon that no 2008+ client expects, so it
is not reproduced (the endpoint framework names responses for every service alike).

Request metadata are echoed after the output (2008), except for E2EMon output (§4.8).

Configuration is the service's :class:`StatusState`: the link states, the store token, the E2EMon
definitions (a :class:`~netsonde.services.status.definitions.LinkDefinitions` or the path of a
definitions file; without it ``Path.Status`` answers ``error.configuration``) and
``max_recent_age`` (seconds, §4.8).
"""

from __future__ import annotations

import itertools
import math
import re
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from netsonde.archive import PerThread
from netsonde.archive.stores import StoreError
from netsonde.nmwg import build, codes, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import Message, Unit, local, parameters_of, read_select
from netsonde.nmwg.parse import parameter_value
from netsonde.nmwg.service import NMWGService, RequestContext, require_store_token
from netsonde.services.status.definitions import (
    LinkDef,
    LinkDefinitions,
    LinkDefinitionsError,
    load_link_definitions,
)
from netsonde.services.status.store import LinkState, LinkStatusStore, StatusError, Update
from netsonde.units import check_epoch

LINK_STATUS = "http://ggf.org/ns/nmwg/characteristic/link/status/20070809"
PATH_STATUS = "Path.Status"
L2_LINK_STATUS = "http://ggf.org/ns/nmwg/topology/l2/3.0/link/status"
LINK_STATUS_2007 = "Link.Status"
LINK_HISTORY_2007 = "Link.History"
DATABASE_DUMP_2007 = "Database.Dump"
COMPAT_EVENT_TYPES = frozenset({PATH_STATUS, L2_LINK_STATUS})
TOPOID_NAMESPACES = (ns.TOPOID, "http://ogf.org/schema/network/topoid/20070828/")
CONFIGURATION = "error.configuration"
FORMATS = ("topoid", "linkid", "compat")

_DATUM = ns.clark("ifevt:datum")
_OPER_PRECEDENCE = ("down", "degraded", "up", "unknown")  # 2008: first one present wins
_ADMIN_PRECEDENCE = ("maintenance", "troubleshooting", "underrepair", "normaloperation", "unknown")


# ---- time windows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """``latest`` (no time / ``now``), ``point`` (start == end == t), ``range``, ``history``."""

    kind: str = "latest"
    start: int | None = None
    end: int | None = None


LATEST = Window()
HISTORY = Window("history")


def _select_error(text: str) -> NMWGError:
    return NMWGError(codes.MA_SELECT, text)


def _window_of(parameters: list[etree._Element]) -> Window | None:
    """The window one block of parameters asks for (None: it says nothing about time)."""
    if not parameters:
        return None
    sel = read_select(parameters)
    has_range = sel.start is not None or sel.end is not None or sel.duration is not None
    if sel.now:
        if has_range:
            raise _select_error("Ambiguous select parameters: 'now' used with a time range")
        return LATEST
    if sel.point is not None:
        if has_range:
            raise _select_error("Ambiguous select parameters: time used with a time range")
        if sel.point == -1:
            return HISTORY
        if sel.point < 0:
            raise _select_error(f"Invalid time: {sel.point:g}")
        t = math.floor(sel.point)
        return Window("point", t, t)
    if sel.start is None:
        if sel.end is not None or sel.duration is not None:
            raise _select_error(
                "Ambiguous select parameters: endTime or duration without startTime"
            )
        return None
    if sel.end is not None and sel.duration is not None:
        raise _select_error("Ambiguous select parameters: both endTime and duration specified")
    if sel.end is None and sel.duration is None:
        raise _select_error("startTime but not endTime or duration specified")
    start = math.floor(sel.start) + (1 if sel.start_exclusive else 0)
    if sel.end is not None:
        end = math.ceil(sel.end) - (1 if sel.end_exclusive else 0)
    else:
        end = math.floor(sel.start + (sel.duration or 0))
    if start > end:
        raise _select_error(f"Ambiguous select parameters: startTime > endTime ({start} > {end})")
    return Window("range", start, end)


def combine(old: Window | None, new: Window | None) -> Window | None:
    """Two windows intersected (§4.5): a later one may only narrow an earlier one."""
    if old is None or old.kind == "history":
        return new if new is not None else old
    if new is None or new.kind == "history":
        return old
    if old.kind == "latest" or new.kind == "latest":
        if old.kind == new.kind:
            return old
        raise _select_error("Ambiguous select parameters: 'now' used with a time range")
    assert old.start is not None and old.end is not None
    assert new.start is not None and new.end is not None
    start, end = max(old.start, new.start), min(old.end, new.end)
    if start > end:
        raise _select_error(
            "Ambiguous select parameters: time specified is out of range previously specified"
        )
    kind = "point" if "point" in (old.kind, new.kind) else "range"
    return Window(kind, start, end)


def unit_window(unit: Unit) -> Window:
    """Key < subject metadata (deprecated ``time``) < filters, innermost first."""
    window: Window | None = None
    if (key := unit.key) is not None:
        window = _window_of([p for p in parameters_of(key) if p.get("name") != "eventType"])
    for md in (unit.subject, *unit.filters):
        window = combine(window, _window_of(parameters_of(md)))
    return window or LATEST


# ---- subjects ----------------------------------------------------------------------------


@dataclass
class Query:
    """What one unit asks for: link ids in a response format, or E2EMon links."""

    format: str  # topoid | linkid | compat | key
    ids: list[str] = field(default_factory=list)
    links: list[LinkDef] = field(default_factory=list)  # compat
    key_format: str | None = None  # the responseFormat of a key subject
    event_type: str = LINK_STATUS


def _wildcard(expression: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expression.split("*")), re.DOTALL)


def _topoid_subject(subject_md: etree._Element) -> etree._Element | None:
    for child in subject_md.iterchildren(etree.Element):
        uri, name = ns.split(child.tag)
        if name == "subject" and uri in TOPOID_NAMESPACES:
            return child
    return None


def _nmwg_subject(subject_md: etree._Element) -> etree._Element | None:
    found = subject_md.find(ns.clark("nmwg:subject"))
    return found


def _link_ids(subject: etree._Element) -> list[str]:
    return [
        el.get("id", "").strip()
        for el in subject.iter(etree.Element)
        if local(el) == "link" and el.get("id", "").strip()
    ]


def _match_ids(store: LinkStatusStore, expression: str) -> list[str]:
    if "*" not in expression:
        return [expression] if store.at([expression])[expression] is not None else []
    pattern = _wildcard(expression)
    return [s.link_id for s in store.links() if pattern.fullmatch(s.link_id)]


def _key_ids(unit: Unit) -> tuple[list[str], str | None]:
    key = unit.key
    assert key is not None
    ids, fmt = [], None
    for p in parameters_of(key):
        if p.get("name") == "maKey":
            value = parameter_value(p)
            if not value or "*" in value:
                raise NMWGError(codes.MA_SUBJECT, "Invalid key: maKey missing or ambiguous")
            ids.append(value)
        elif p.get("name") == "responseFormat":
            fmt = parameter_value(p)
    if not ids:
        raise NMWGError(codes.MA_SUBJECT, "Invalid key: no maKey")
    if fmt is None and unit.event_type in COMPAT_EVENT_TYPES:
        fmt = "compat"
    if fmt not in FORMATS:
        raise NMWGError(codes.MA_SUBJECT, f"Invalid key: responseFormat {fmt!r}")
    return list(dict.fromkeys(ids)), fmt


def _no_match(what: str) -> NMWGError:
    return NMWGError(codes.MA_STORAGE, f"No circuits or paths match expression: {what}")


def parse_subject(unit: Unit, rctx: RequestContext[StatusState]) -> Query:
    """The unit's subject (§4.4) → a :class:`Query`."""
    event_type = unit.event_type or LINK_STATUS
    subject_md = unit.subject
    topoid = _topoid_subject(subject_md)
    nmwg_subject = _nmwg_subject(subject_md)
    forms = [x for x in (unit.key, topoid, nmwg_subject) if x is not None]
    if len(forms) > 1:
        raise NMWGError(codes.MA_SUBJECT, "Ambiguous subject")
    if unit.key is not None:
        ids, fmt = _key_ids(unit)
        if fmt == "compat":
            links = _definitions(rctx).links_with_ids(set(ids))
            if not links:
                raise _no_match(" ".join(ids))
            return Query("compat", ids, links, fmt, event_type)
        return Query("key" if len(ids) == 1 else fmt or "topoid", ids, [], fmt, event_type)
    if event_type in COMPAT_EVENT_TYPES:
        defs = _definitions(rctx)
        if topoid is not None:
            expression = (topoid.text or "").strip()
            pattern = _wildcard(expression)
            links = [x for x in defs.links if any(pattern.fullmatch(i) for i in x.link_ids)]
            if not links:
                raise _no_match(expression)
            return Query("compat", [], links, None, event_type)
        if nmwg_subject is None:
            return Query("compat", [], list(defs.links), None, event_type)
        names = [
            (el.text or "").strip()
            for el in nmwg_subject.iter(ns.clark("nmwgtopo3:name"))
            if (el.text or "").strip()
        ]
        ids = _link_ids(nmwg_subject)
        links = defs.links_with_ids(set(ids)) if ids else defs.links_between(names)
        if not links:
            raise _no_match(" ".join(ids or names) or "(empty subject)")
        return Query("compat", [], links, None, event_type)
    if event_type == DATABASE_DUMP_2007:
        return Query("linkid", [s.link_id for s in _store(rctx).links()], [], None, event_type)
    if topoid is not None:
        expression = (topoid.text or "").strip()
        if not expression:
            raise NMWGError(codes.MA_SUBJECT, "Invalid subject: empty topoid:subject")
        ids = _match_ids(_store(rctx), expression)
        if not ids:
            raise _no_match(expression)
        return Query("topoid", ids, [], None, event_type)
    if nmwg_subject is not None:
        ids = list(dict.fromkeys(_link_ids(nmwg_subject)))
        if not ids:
            raise NMWGError(codes.MA_SUBJECT, "Invalid subject type: no link id in nmwg:subject")
        return Query("linkid", ids, [], None, event_type)
    raise NMWGError(codes.MA_SUBJECT, "Invalid subject type: no key, topoid or link subject")


# ---- context -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusState:
    """What the Status MA's handlers read (``rctx.state``)."""

    store: PerThread[LinkStatusStore]
    token: str | None = None  # store requests need it
    definitions: LinkDefinitions | Path | None = None  # E2EMon compat: parsed, or a file
    max_recent_age: float | None = None  # seconds (§4.8)


def _store(rctx: RequestContext[StatusState]) -> LinkStatusStore:
    try:
        return rctx.state.store.get()
    except StatusError as e:
        raise NMWGError(codes.STORAGE_OPEN, str(e)) from None


_DEFINITIONS_CACHE: dict[tuple[str, int], LinkDefinitions] = {}


def _definitions(rctx: RequestContext[StatusState]) -> LinkDefinitions:
    configured = rctx.state.definitions
    if isinstance(configured, LinkDefinitions):
        return configured
    if configured is None:
        raise NMWGError(CONFIGURATION, "E2EMon compatibility is not configured (no link file)")
    path = Path(configured)
    try:
        cache_key = (str(path), path.stat().st_mtime_ns)
        if cache_key not in _DEFINITIONS_CACHE:
            _DEFINITIONS_CACHE[cache_key] = load_link_definitions(path)
        return _DEFINITIONS_CACHE[cache_key]
    except (OSError, LinkDefinitionsError) as e:
        raise NMWGError(CONFIGURATION, str(e)) from None


class _ResponseState:
    def __init__(self) -> None:
        self.echoed: set[str] = set()
        self.nodes: set[str] = set()
        self.domain_sent = False


_STATE: weakref.WeakKeyDictionary[RequestContext, _ResponseState] = weakref.WeakKeyDictionary()


def _state(rctx: RequestContext[StatusState]) -> _ResponseState:
    state = _STATE.get(rctx)
    if state is None:
        state = _STATE[rctx] = _ResponseState()
    return state


def _echo(unit: Unit, rctx: RequestContext[StatusState]) -> list[etree._Element]:
    """The unit's request metadata, each id once per response (what the framework does for
    services that echo; done here because E2EMon output must not echo)."""
    echoed = _state(rctx).echoed
    out = []
    for md in unit.request_metadata:
        if md.get("id") not in echoed:
            echoed.add(md.get("id", ""))
            out.append(deepcopy(md))
    return out


# ---- reading states ----------------------------------------------------------------------


def _clip(s: LinkState, start: int, end: int) -> LinkState:
    return LinkState(s.link_id, max(s.start, start), min(s.end, end), s.oper, s.admin, s.knowledge)


def states_for(store: LinkStatusStore, ids: Sequence[str], window: Window) -> dict[str, list]:
    """link id → its ranges for the window (clipped to a range window), oldest first."""
    if window.kind == "latest":
        return {k: [v] if v else [] for k, v in store.at(ids, None).items()}
    if window.kind == "point":
        return {k: [v] if v else [] for k, v in store.at(ids, window.start).items()}
    if window.kind == "history":
        return {link: store.history(link) for link in ids}
    assert window.start is not None and window.end is not None
    found = store.between(ids, window.start, window.end)
    return {k: [_clip(s, window.start, window.end) for s in v] for k, v in found.items()}


def _datum(parent: etree._Element, s: LinkState, window: Window) -> None:
    attrib = {"knowledge": s.knowledge, "timeType": "unix"}
    if window.kind == "point":
        attrib["timeValue"] = str(window.start)
    else:
        attrib |= {
            "timeValue": str(s.end),
            "startTime": str(s.start),
            "startTimeType": "unix",
            "endTime": str(s.end),
            "endTimeType": "unix",
        }
    datum = build.element("ifevt:datum", attrib, parent=parent)
    build.element("ifevt:stateOper", text=s.oper, parent=datum)
    build.element("ifevt:stateAdmin", text=s.admin, parent=datum)


def _id_metadata(
    rctx: RequestContext[StatusState], fmt: str, link_id: str, ref: str
) -> etree._Element:
    md = build.metadata(rctx.ids, ref=ref)
    if fmt == "linkid":
        subject = build.element("nmwg:subject", {"id": rctx.ids.new("subject")}, parent=md)
        build.element("nmtopo:link", {"id": link_id}, parent=subject)
    else:
        build.element("topoid:subject", text=link_id, parent=md)
    return md


# ---- SetupDataRequest --------------------------------------------------------------------


def setup_data(
    unit: Unit, message: Message, rctx: RequestContext[StatusState]
) -> Sequence[etree._Element]:
    query = parse_subject(unit, rctx)
    window = unit_window(unit)
    if query.event_type in (LINK_HISTORY_2007, DATABASE_DUMP_2007) and window.kind == "latest":
        window = HISTORY
    if query.format == "compat":
        return _compat(query, window, unit, rctx)
    store = _store(rctx)
    found = states_for(store, query.ids, window)
    out: list[etree._Element] = []
    if query.format == "key":
        d = build.data(rctx.ids, unit.ref, declare=("ifevt",))
        rctx.charge(len(found[query.ids[0]]))
        for s in found[query.ids[0]]:
            _datum(d, s, window)
        out.append(d)
    else:
        for link_id in query.ids:
            rctx.charge(len(found[link_id]))
            md = _id_metadata(rctx, query.format, link_id, unit.ref)
            d = build.data(rctx.ids, md.get("id", ""), declare=("ifevt",))
            for s in found[link_id]:
                _datum(d, s, window)
            out += [md, d]
    return out + _echo(unit, rctx)


# ---- E2EMon compat (§4.8) ----------------------------------------------------------------


def combine_states(states: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(oper, admin) of a circuit from its segments' (2008 precedence; no data = unknown)."""
    states = list(states)
    opers = {o for o, _ in states}
    admins = {a for _, a in states}
    oper = next((o for o in _OPER_PRECEDENCE if o in opers), "unknown")
    admin = next((a for a in _ADMIN_PRECEDENCE if a in admins), "unknown")
    return oper, admin


PERIODS_CHECK_EVERY = 10_000  # periods combined between two cancellation checks


def _periods(
    found: dict[str, list[LinkState]], ids: Sequence[str], check: Callable[[], None]
) -> list[tuple[int, int, str, str]]:
    """Combined (start, end, oper, admin) periods over the times some segment has data,
    consecutive equal periods joined. One sweep over the edges, keeping count of the states
    of the ranges that cover each: O(n log n) in the ranges, not edges × ranges."""
    edges = sorted({t for v in found.values() for s in v for t in (s.start, s.end + 1)})
    changes: dict[int, list[tuple[LinkState, int]]] = {}
    for s in (s for link in dict.fromkeys(ids) for s in found.get(link, [])):
        if s.start <= s.end:  # an empty range covers nothing
            changes.setdefault(s.start, []).append((s, 1))
            changes.setdefault(s.end + 1, []).append((s, -1))
    covering: Counter[tuple[str, str]] = Counter()  # (oper, admin) → ranges covering now
    out: list[tuple[int, int, str, str]] = []
    for n, (a, b) in enumerate(itertools.pairwise(edges)):
        if n % PERIODS_CHECK_EVERY == 0:
            check()
        for s, step in changes.get(a, ()):
            covering[(s.oper, s.admin)] += step
            if not covering[(s.oper, s.admin)]:
                del covering[(s.oper, s.admin)]
        if not covering:
            continue
        oper, admin = combine_states(covering)
        if out and out[-1][1] == a - 1 and out[-1][2:] == (oper, admin):
            out[-1] = (out[-1][0], b - 1, oper, admin)
        else:
            out.append((a, b - 1, oper, admin))
    return out


def _compat_datum(parent: etree._Element, t: int, oper: str, admin: str, **extra: str) -> None:
    datum = build.element(
        "ifevt:datum", {"timeType": "unix", "timeValue": str(t), **extra}, parent=parent
    )
    build.element("ifevt:stateAdmin", text=admin, parent=datum)
    build.element("ifevt:stateOper", text=oper, parent=datum)


def _nmtl2(
    qname: str,
    attrib: dict[str, str] | None = None,
    text: str | None = None,
    parent: etree._Element | None = None,
) -> etree._Element:
    """An element of E2EMon's l2 namespace (``…/topology/l2/3.0/``) under prefix nmtl2."""
    tag = f"{{{ns.NMTL2_E2EMON}}}{qname}"
    nsmap = {"nmtl2": ns.NMTL2_E2EMON}
    el = (
        etree.SubElement(parent, tag, attrib or {}, nsmap=nsmap)
        if parent is not None
        else etree.Element(tag, attrib or {}, nsmap=nsmap)
    )
    if text is not None:
        el.text = build.xml_text(text)
    return el


def _node_metadata(
    defs: LinkDefinitions, name: str, rctx: RequestContext[StatusState]
) -> etree._Element:
    node = defs.nodes[name]
    e2e_name = defs.node_name(name)
    md = build.metadata(rctx.ids)
    subject = build.element("nmwg:subject", {"id": f"sub-{e2e_name}"}, parent=md)
    el = build.element("nmwgtopo3:node", {"id": e2e_name}, parent=subject)
    build.element("nmwgtopo3:type", {"type": "logical"}, "TopologyPoint", parent=el)
    build.element("nmwgtopo3:name", {"type": "logical"}, e2e_name, parent=el)
    for tag in ("city", "country", "latitude", "longitude", "institution"):
        value = getattr(node, tag)
        if value is not None:
            build.element(
                f"nmwgtopo3:{tag}",
                text=f"{value:g}" if isinstance(value, float) else value,
                parent=el,
            )
    return md


def _link_metadata(
    defs: LinkDefinitions, link: LinkDef, rctx: RequestContext[StatusState]
) -> etree._Element:
    md = build.metadata(rctx.ids)
    subject = build.element("nmwg:subject", {"id": rctx.ids.new("sub")}, parent=md)
    el = _nmtl2("link", parent=subject)
    _nmtl2("name", {"type": "logical"}, link.local_name, parent=el)
    _nmtl2("globalName", {"type": "logical"}, link.global_name, parent=el)
    _nmtl2("type", text=defs.link_type(link), parent=el)
    for endpoint in link.endpoints:
        node = build.element(
            "nmwgtopo3:node", {"nodeIdRef": defs.node_name(endpoint.name)}, parent=el
        )
        build.element("nmwgtopo3:role", text=endpoint.type, parent=node)
    return md


def _compat(
    query: Query, window: Window, unit: Unit, rctx: RequestContext[StatusState]
) -> list[etree._Element]:
    defs = _definitions(rctx)
    store = _store(rctx)
    state = _state(rctx)
    out: list[etree._Element] = []
    if not state.domain_sent:
        state.domain_sent = True
        params = build.element("nmwg:parameters", {"id": rctx.ids.new("params")})
        build.element("nmwg:parameter", {"name": "DomainName"}, defs.domain, parent=params)
        out.append(params)
    now = int(time.time())
    max_age = rctx.state.max_recent_age
    for link in query.links:
        rctx.check()
        for endpoint in link.endpoints:
            if endpoint.name in defs.nodes and endpoint.name not in state.nodes:
                state.nodes.add(endpoint.name)
                out.append(_node_metadata(defs, endpoint.name, rctx))
        md = _link_metadata(defs, link, rctx)
        d = build.data(rctx.ids, md.get("id", ""), declare=("ifevt",))
        found = states_for(store, link.link_ids, window)
        if window.kind == "latest":
            latest = [v[0] for v in found.values() if v]
            newest = max((s.end for s in latest), default=None)
            if newest is None or (max_age is not None and now - newest > int(max_age)):
                _compat_datum(d, now, "unknown", "unknown")
            else:
                known = {s.link_id: (s.oper, s.admin) for s in latest}
                states = [known.get(i, ("unknown", "unknown")) for i in link.link_ids]
                oper, admin = combine_states(states)
                _compat_datum(d, now if max_age is None else newest, oper, admin)
        elif window.kind == "point":
            assert window.start is not None
            known = {k: (v[0].oper, v[0].admin) for k, v in found.items() if v}
            oper, admin = combine_states(
                known.get(i, ("unknown", "unknown")) for i in link.link_ids
            )
            _compat_datum(d, window.start, oper, admin)
        else:
            periods = _periods(found, link.link_ids, rctx.check)
            rctx.charge(len(periods))
            for start, end, oper, admin in periods:
                _compat_datum(
                    d,
                    end,
                    oper,
                    admin,
                    startTime=str(start),
                    startTimeType="unix",
                    endTime=str(end),
                    endTimeType="unix",
                )
        out += [md, d]
    return out


# ---- MetadataKeyRequest ------------------------------------------------------------------


def _key(
    parent: etree._Element,
    rctx: RequestContext[StatusState],
    ids: Sequence[str],
    event_type: str,
    fmt: str,
    window: Window,
) -> None:
    key = build.element("nmwg:key", parent=parent)
    params = build.element("nmwg:parameters", {"id": rctx.ids.new("params")}, parent=key)
    values = [*(("maKey", i) for i in ids), ("eventType", event_type), ("responseFormat", fmt)]
    if window.kind == "point":
        values.append(("time", str(window.start)))
    elif window.kind == "history":
        values.append(("time", "-1"))
    elif window.kind == "range":
        values += [("startTime", str(window.start)), ("endTime", str(window.end))]
    for name, value in values:
        build.element("nmwg:parameter", {"name": name}, value, parent=params)


def metadata_key(
    unit: Unit, message: Message, rctx: RequestContext[StatusState]
) -> Sequence[etree._Element]:
    query = parse_subject(unit, rctx)
    window = unit_window(unit)
    out: list[etree._Element] = []
    if query.format == "compat":
        defs = _definitions(rctx)
        rctx.charge(len(query.links))  # an answer's rows here are its metadata/data pairs
        for link in query.links:
            rctx.check()
            md = _link_metadata(defs, link, rctx)
            md.set("metadataIdRef", unit.ref)
            d = build.data(rctx.ids, md.get("id", ""))
            _key(d, rctx, link.link_ids, query.event_type, "compat", window)
            out += [md, d]
        return out
    fmt = query.key_format or ("linkid" if query.format == "linkid" else "topoid")
    rctx.charge(len(query.ids))
    for link_id in query.ids:
        rctx.check()
        md = _id_metadata(rctx, fmt, link_id, unit.ref)
        d = build.data(rctx.ids, md.get("id", ""))
        event_type = LINK_STATUS if query.event_type not in COMPAT_EVENT_TYPES else PATH_STATUS
        _key(d, rctx, [link_id], event_type, fmt, window)
        out += [md, d]
    return out + _echo(unit, rctx)


# ---- MeasurementArchiveStoreRequest (§4.7) -----------------------------------------------


def _store_link_id(unit: Unit) -> str:
    subject_md = unit.subject
    found: list[str] = []
    topoid = _topoid_subject(subject_md)
    nmwg_subject = _nmwg_subject(subject_md)
    if unit.key is not None:
        raise NMWGError(codes.MA_SUBJECT, "Invalid subject type: a store cannot use a key")
    if topoid is not None:
        found.append((topoid.text or "").strip())
    if nmwg_subject is not None:
        nested = [  # the 2008 client's nmwg:subject/topoid:subject (§4.7)
            (el.text or "").strip()
            for el in nmwg_subject.iter(etree.Element)
            if local(el) == "subject" and ns.split(el.tag)[0] in TOPOID_NAMESPACES
        ]
        found += nested + _link_ids(nmwg_subject)
    if len(found) > 1:
        raise NMWGError(codes.MA_SUBJECT, "Can't have a store with multiple subject elements")
    if not found or not found[0]:
        raise NMWGError(codes.MA_SUBJECT, "Invalid subject type: a store needs one link id")
    if "*" in found[0]:
        raise NMWGError(codes.MA_SUBJECT, f"Ambiguous subject: {found[0]!r} has a wildcard")
    return found[0]


def _datum_update(el: etree._Element, link_id: str, knowledge: str, do_update: bool) -> Update:
    raw, kind = el.get("timeValue"), el.get("timeType")
    oper = el.find(ns.clark("ifevt:stateOper"))
    admin = el.find(ns.clark("ifevt:stateAdmin"))
    missing = [
        name
        for name, value in (
            ("timeValue", raw),
            ("timeType", kind),
            ("stateOper", oper),
            ("stateAdmin", admin),
        )
        if value is None
    ]
    if missing:
        raise NMWGError(
            codes.MA_QUERY_INCOMPLETE_DATA, f"ifevt:datum is missing {', '.join(missing)}"
        )
    assert raw is not None and kind is not None and oper is not None and admin is not None
    if kind.strip() != "unix":
        raise NMWGError(
            codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, f"timeType must be 'unix', not {kind!r}"
        )
    # At most 15 digits: int() of thousands would fail, and such a time is out of range anyway.
    if not re.fullmatch(r"\s*\d{1,15}\s*", raw):
        raise NMWGError(codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, f"invalid timeValue {raw!r}")
    try:
        t = int(check_epoch(int(raw), "timeValue"))
    except ValueError as e:
        raise NMWGError(codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, str(e)) from None
    return Update(
        link_id,
        t,
        (oper.text or "").strip(),
        (admin.text or "").strip(),
        knowledge,
        do_update,
    )


def store(
    unit: Unit, message: Message, rctx: RequestContext[StatusState]
) -> Sequence[etree._Element]:
    require_store_token(rctx.state.token, message, rctx)
    if unit.event_type != LINK_STATUS:
        raise NMWGError(codes.EVENT_TYPE_NOT_SUPPORTED, f"stores take eventType {LINK_STATUS} only")
    if unit.filters:
        raise _select_error("Can't have a store with select parameters")
    link_id = _store_link_id(unit)
    params = unit.parameters
    knowledge = params.get("knowledge", "full").strip().lower() or "full"
    if knowledge not in ("full", "partial"):
        raise NMWGError(codes.MA_PARAMETERS, "Knowledge must be either 'full' or 'partial'")
    update = params.get("update", "no").strip().lower() or "no"
    if update not in ("yes", "no"):
        raise NMWGError(codes.MA_PARAMETERS, "Update parameter must be either 'yes' or 'no'")
    updates = [
        _datum_update(el, link_id, knowledge, update == "yes") for el in unit.data.iter(_DATUM)
    ]
    if not updates:
        raise NMWGError(codes.MA_QUERY_INCOMPLETE_DATA, "no ifevt:datum to store")
    try:
        n = _store(rctx).update_many(updates)
    except (StatusError, StoreError) as e:  # StoreError: the database failed mid-store
        raise NMWGError(codes.STORAGE_UPDATE, str(e)) from None
    text = (
        "new data element successfully added"
        if n == 1
        else f"{n} new data elements successfully added"
    )
    return build.result_pair(rctx.ids, codes.SUCCESS_MA_ADDED, text, unit.ref)


def lookup_data(state: StatusState) -> list[etree._Element]:
    """What the Status MA registers with a lookup service: one metadata per stored link, a
    topoid subject naming it and the link-status eventType, as the 2008 service did."""
    ids = build.IdGen()
    out = []
    for link in state.store.get().links():
        md = build.metadata(ids)
        build.element("topoid:subject", {"id": ids.new("subject")}, text=link.link_id, parent=md)
        build.element("nmwg:eventType", text=LINK_STATUS, parent=md)
        out.append(md)
    return out


HANDLERS = {
    "SetupDataRequest": setup_data,
    "MetadataKeyRequest": metadata_key,
    "MeasurementArchiveStoreRequest": store,
}
MESSAGE_TYPES = tuple(HANDLERS)


def status_ma(state: StatusState) -> NMWGService[StatusState]:
    return NMWGService(
        name="status-ma",
        state=state,
        handlers=HANDLERS,
        event_types=frozenset(
            {
                LINK_STATUS,
                PATH_STATUS,
                L2_LINK_STATUS,
                LINK_STATUS_2007,
                LINK_HISTORY_2007,
                DATABASE_DUMP_2007,
            }
        ),
        output_metadata=False,  # echoed by the handlers themselves, E2EMon output excepted
    )
