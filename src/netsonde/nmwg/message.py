"""The NMWG message model (PROTOCOL.md §3): pairing, merge and filter chains, select filters.

Every ``nmwg:data`` of a request is one unit of work. Its ``metadataIdRef`` names a metadata;
that metadata may inherit from another through its own ``metadataIdRef`` (a *merge chain*,
folded root-first into one element) and may be a filter applied to another metadata named by
its subject's ``metadataIdRef`` (a *filter chain*, followed until a metadata whose subject
points nowhere: the *subject metadata*). :meth:`Message.resolve` turns the request into
:class:`Unit` objects, or :class:`UnitFailure` where a chain is broken, in data order.

Resolved metadata are copies; the request tree is never modified. Resolving is held to the
request's :class:`~netsonde.limits.RequestLimits` (chain length, eventTypes, and the elements
merging may create; parsing bounded the number of units) and linear in the metadata: a chain
is merged once however many data name it, a failed one fails once, and merging matches
children through dicts.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice

from lxml import etree

from netsonde.limits import RequestLimits
from netsonde.nmwg import codes, ns
from netsonde.nmwg.codes import LimitExceeded, NMWGError
from netsonde.nmwg.parse import Check, event_type, never_cancelled, parameter_value
from netsonde.units import TIME_MAX, TIME_MIN, check_epoch

_METADATA = ns.clark("nmwg:metadata")
_DATA = ns.clark("nmwg:data")
_KEY = ns.clark("nmwg:key")
_EVENT_TYPE = ns.clark("nmwg:eventType")
_PARAMETERS = ns.clark("nmwg:parameters")
_PARAMETER = ns.clark("nmwg:parameter")

Merge = Callable[[etree._Element, etree._Element], etree._Element]
"""(parent, child) → a new metadata: the child with what it inherits from the parent."""


def local(element: etree._Element) -> str:
    return ns.split(element.tag)[1]


def _children(element: etree._Element, name: str) -> list[etree._Element]:
    """Child elements with local name ``name``, in any namespace (subject, parameters ...)."""
    return [c for c in element.iterchildren(etree.Element) if local(c) == name]


def parameters_of(container: etree._Element) -> list[etree._Element]:
    """The ``*:parameter`` elements of every ``*:parameters`` block directly in ``container``."""
    return [
        p for block in _children(container, "parameters") for p in _children(block, "parameter")
    ]


def named_values(parameters: Iterable[etree._Element]) -> dict[str, str]:
    """name → value of parameter elements (nameless ones skipped, a later duplicate wins)."""
    return {p.get("name", ""): parameter_value(p) for p in parameters if p.get("name")}


def parameter_map(container: etree._Element) -> dict[str, str]:
    return named_values(parameters_of(container))


# --- select filters (§3.4) ----------------------------------------------------------------

_CONSOLIDATION = frozenset({"AVERAGE", "MIN", "MAX", "LAST"})
_ISO_TYPES = frozenset({"iso", "iso8601", "rfc3339"})


@dataclass(frozen=True)
class Select:
    """What a unit's select parameters ask for. Times are epoch seconds (UTC).

    ``start``/``end`` are inclusive unless the matching ``*_exclusive`` flag is set (operators
    ``gt``/``lt``). ``point`` is a ``time`` parameter without operator (Status: one instant;
    ``-1`` there means the whole history) and ``now`` its literal value ``now``.
    """

    start: float | None = None
    end: float | None = None
    start_exclusive: bool = False
    end_exclusive: bool = False
    point: float | None = None
    now: bool = False
    duration: float | None = None
    resolution: int | None = None
    consolidation: str | None = None
    limit: int | None = None


def read_select(parameters: Iterable[etree._Element]) -> Select:
    """Read select parameters given lowest-precedence first.

    Time windows intersect (a filter or a key can only narrow what came before); the other
    values are overridden by later ones; unknown names are ignored. An empty window is an
    ``error.ma.select``, as is a value that is not a valid number, time or function name.
    """
    starts: list[tuple[float, bool]] = []
    ends: list[tuple[float, bool]] = []
    values: dict[str, object] = {}
    for p in parameters:
        name = p.get("name")
        operator = (p.get("operator") or "").strip().lower()
        if name == "startTime":
            starts.append((_time(p, name, "start"), False))
        elif name == "endTime":
            ends.append((_time(p, name, "end"), False))
        elif name == "time":
            _read_time(p, operator, starts, ends, values)
        elif name == "duration":
            values["duration"] = _number(p, name, minimum=0.0, maximum=TIME_MAX - TIME_MIN)
        elif name == "resolution":
            values["resolution"] = _positive_int(p, name)
        elif name == "setLimit":
            values["limit"] = _positive_int(p, name)
        elif name == "consolidationFunction":
            cf = parameter_value(p).upper()
            if cf not in _CONSOLIDATION:
                raise NMWGError(codes.MA_SELECT, f"Unknown consolidationFunction {cf!r}")
            values["consolidation"] = cf
    # Ties go to the exclusive bound: it is the narrower one.
    start = max(starts, key=lambda b: (b[0], b[1]), default=None)
    end = min(ends, key=lambda b: (b[0], not b[1]), default=None)
    if start and end and (start[0] > end[0] or (start[0] == end[0] and (start[1] or end[1]))):
        window = f"{_seconds(start[0])} to {_seconds(end[0])}"
        raise NMWGError(codes.MA_SELECT, f"Empty time range: {window}")
    return Select(
        start=start[0] if start else None,
        end=end[0] if end else None,
        start_exclusive=bool(start and start[1]),
        end_exclusive=bool(end and end[1]),
        **values,  # type: ignore[arg-type]
    )


def _seconds(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _read_time(
    p: etree._Element,
    operator: str,
    starts: list[tuple[float, bool]],
    ends: list[tuple[float, bool]],
    values: dict[str, object],
) -> None:
    if operator in ("gte", "gt"):
        starts.append((_time(p, "time", "start"), operator == "gt"))
    elif operator in ("lte", "lt"):
        ends.append((_time(p, "time", "end"), operator == "lt"))
    elif operator == "eq":
        instant = _time(p, "time", None)
        starts.append((instant, False))
        ends.append((instant, False))
    elif operator:
        raise NMWGError(codes.MA_SELECT, f"Unknown operator {operator!r} for time")
    elif parameter_value(p).lower() == "now":
        values.update(now=True, point=None)
    else:
        values.update(now=False, point=_time(p, "time", None))


def _time_child(element: etree._Element, name: str) -> etree._Element | None:
    for child in element.iterchildren(etree.Element):
        uri, child_name = ns.split(child.tag)
        if child_name == name and uri in ns.TIME_NAMESPACES:
            return child
    return None


def _time(p: etree._Element, name: str, bound: str | None) -> float:
    """A time value: the parameter's own, or nested nmtm:time[/nmtm:start|end][/nmtm:value]."""
    node, kind = p, p.get("type")
    time_el = _time_child(p, "time")
    if time_el is not None:
        node, kind = time_el, time_el.get("type") or kind
        inner = _time_child(time_el, "value")
        if inner is None and bound is not None:
            inner = _time_child(time_el, bound)
            if inner is not None:
                kind = inner.get("type") or kind
                value = _time_child(inner, "value")
                inner = value if value is not None else inner
        if inner is not None:
            node, kind = inner, inner.get("type") or kind
    return _epoch(parameter_value(node), kind, name)


def _epoch(raw: str, kind: str | None, name: str) -> float:
    kind = (kind or "unix").strip().lower()
    if kind == "unix":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise NMWGError(codes.MA_SELECT, f"Invalid {name}: {raw!r} is not a unix time")
        return _in_range(value, name)
    if kind in _ISO_TYPES:
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError:
            raise NMWGError(
                codes.MA_SELECT, f"Invalid {name}: {raw!r} is not an ISO 8601 time"
            ) from None
        return _in_range((stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp(), name)
    raise NMWGError(codes.MA_SELECT, f"Unsupported time type {kind!r} for {name}")


def _in_range(seconds: float, name: str) -> float:
    """A time past year 9999 (1e30, 2^63-1) is the client's error, not a crash when printed."""
    try:
        return check_epoch(seconds, name)
    except ValueError as e:
        raise NMWGError(codes.MA_SELECT, str(e)) from None


def _number(p: etree._Element, name: str, minimum: float, maximum: float = math.inf) -> float:
    raw = parameter_value(p)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise NMWGError(codes.MA_SELECT, f"Invalid {name}: {raw!r}")
    return value


def _positive_int(p: etree._Element, name: str) -> int:
    raw = parameter_value(p)
    if not raw.isascii() or not raw.isdigit() or int(raw) == 0:
        raise NMWGError(codes.MA_SELECT, f"Invalid {name}: {raw!r} is not a positive integer")
    return int(raw)


# --- units --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One data trigger with its resolved chains.

    ``subject`` is the (merged) metadata at the end of the filter chain; ``filters`` are the
    (merged) filter metadata innermost-first, so the one the data names is last. Output for the
    unit references :attr:`ref`. ``event_type`` is set by the dispatcher to the eventType that
    routed the unit here (None when it had none).
    """

    data: etree._Element
    subject: etree._Element
    filters: tuple[etree._Element, ...] = ()
    message_parameters: tuple[etree._Element, ...] = ()
    event_type: str | None = None

    @property
    def ref(self) -> str:
        """The id of the request metadata the data trigger names."""
        return self.data.get("metadataIdRef", "")

    @property
    def metadata(self) -> etree._Element:
        """The (merged) metadata the data trigger names."""
        return self.filters[-1] if self.filters else self.subject

    @property
    def subject_element(self) -> etree._Element | None:
        """The ``*:subject`` of the subject metadata (pinger:subject, nmwg:subject ...)."""
        found = _children(self.subject, "subject")
        return found[0] if found else None

    @property
    def key(self) -> etree._Element | None:
        return self.subject.find(_KEY)

    @property
    def key_parameters(self) -> dict[str, str]:
        key = self.key
        return parameter_map(key) if key is not None else {}

    @property
    def key_event_type(self) -> str | None:
        """The key's ``eventType`` parameter: it routes key-based requests (§3.2)."""
        key = self.key
        if key is None:
            return None
        for p in parameters_of(key):
            if p.tag == _PARAMETER and p.get("name") == "eventType":
                return "".join(parameter_value(p).split()) or None
        return None

    @property
    def event_types(self) -> tuple[str, ...]:
        """The subject metadata's eventTypes, whitespace removed, in document order."""
        found = (event_type(e) for e in self.subject.iterchildren(_EVENT_TYPE))
        return tuple(e for e in found if e)

    @property
    def parameters(self) -> dict[str, str]:
        """name → value of the subject metadata's own parameter blocks (not the key's)."""
        return parameter_map(self.subject)

    @property
    def request_metadata(self) -> tuple[etree._Element, ...]:
        """What the endpoint echoes after the unit's output: subject metadata, then filters."""
        return (self.subject, *self.filters)

    def select(self) -> Select:
        """Select parameters from message < key < subject metadata < filters (inner→outer)."""
        sources = [*self.message_parameters]
        if (key := self.key) is not None:
            sources += parameters_of(key)
        for md in self.request_metadata:
            sources += parameters_of(md)
        return read_select(sources)


@dataclass(frozen=True)
class UnitFailure:
    """A data trigger whose chain could not be resolved: it becomes a result-code pair."""

    data: etree._Element
    ref: str | None
    code: str
    text: str


@dataclass(frozen=True)
class Message:
    """A request: ``element`` is its (normalised) nmwg:message, ``metadata`` the usable
    metadata by id, ``parameters`` the message-level nmwg:parameters by name."""

    element: etree._Element
    id: str | None
    type: str | None
    parameters: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, etree._Element] = field(default_factory=dict)
    data: tuple[etree._Element, ...] = ()
    parameter_elements: tuple[etree._Element, ...] = ()

    @classmethod
    def from_element(cls, element: etree._Element) -> Message:
        metadata: dict[str, etree._Element] = {}
        for md in element.iterchildren(_METADATA):
            md_id = md.get("id")
            # Id-less and duplicate metadata are skipped, as the seed did: a data trigger
            # naming them then fails with error.common.structure.
            if md_id and md_id not in metadata:
                metadata[md_id] = md
        blocks = element.findall(_PARAMETERS)
        params = tuple(p for b in blocks for p in b.iterchildren(_PARAMETER))
        return cls(
            element=element,
            id=element.get("id") or None,
            type=(element.get("type") or "").strip() or None,
            parameters=named_values(params),
            metadata=metadata,
            data=tuple(element.iterchildren(_DATA)),
            parameter_elements=params,
        )

    def ids(self) -> set[str]:
        """Every id in the request: response ids must not collide with echoed ones."""
        return {el.get("id", "") for el in self.element.iter(etree.Element) if el.get("id")}

    def resolve(
        self,
        merge: Merge | None = None,
        *,
        limits: RequestLimits | None = None,
        check: Check = never_cancelled,
    ) -> list[Unit | UnitFailure]:
        """Units in data order; raises error.common.no_metadata_data_pair if none pair up.
        ``check`` (the request's cancellation) is called per unit and per merge."""
        chains = _Chains(self.metadata, merge or default_merge, limits or RequestLimits(), check)
        out: list[Unit | UnitFailure] = []
        paired = False
        for data in self.data:
            check()
            ref = data.get("metadataIdRef") or None
            name = data.get("id", "")
            if ref is None:
                text = f'Data trigger with id "{name}" has no metadataIdRef'
                out.append(UnitFailure(data, None, codes.STRUCTURE, text))
                continue
            if ref not in self.metadata:
                text = f'Data trigger with id "{name}" has no matching metadata'
                out.append(UnitFailure(data, ref, codes.STRUCTURE, text))
                continue
            paired = True
            try:
                subject, filters = chains.resolve(ref)
            except NMWGError as err:
                out.append(UnitFailure(data, ref, err.code, err.text))
                continue
            out.append(Unit(data, subject, filters, self.parameter_elements))
        if not paired:
            raise NMWGError(
                codes.NO_METADATA_DATA_PAIR,
                "There were no metadata/data pairs found in the message",
            )
        return out


class _Chains:
    """Merge and filter chains of one message, each resolved once (failures too)."""

    def __init__(
        self,
        metadata: Mapping[str, etree._Element],
        merge: Merge,
        limits: RequestLimits,
        check: Check,
    ) -> None:
        self._metadata = metadata
        self._merge = merge
        self._limits = limits
        self._cancel_check = check
        self._merged: dict[str, etree._Element] = {}
        self._failed: dict[str, NMWGError] = {}
        self._resolved: dict[str, tuple[etree._Element, tuple[etree._Element, ...]]] = {}
        self._unresolved: dict[str, NMWGError] = {}
        self._sized: set[str] = set()
        # Merging copies a parent into each child: many children of one big parent would
        # multiply it, so what merges create is held to the document's own element limit.
        self._merge_budget = limits.max_elements

    def _check(self, md_id: str, seen: set[str], start: str) -> None:
        if md_id not in self._metadata:
            raise NMWGError(codes.MERGE, f"Metadata {md_id} does not exist")
        if md_id in seen:
            raise NMWGError(codes.MERGE, f"Metadata {md_id} appears multiple times in the chain")
        limit = self._limits.max_chain
        if len(seen) >= limit:
            what = f"Metadata chain from {start} is longer than {limit} elements"
            raise LimitExceeded(codes.MERGE, what, "max_chain")
        seen.add(md_id)
        self._check_event_types(md_id)

    def _check_event_types(self, md_id: str) -> None:
        """Merged eventTypes are a subset of one side's, so bounding each metadata suffices."""
        if md_id in self._sized:
            return
        limit = self._limits.max_event_types
        found = self._metadata[md_id].iterchildren(_EVENT_TYPE)
        if sum(1 for _ in islice(found, limit + 1)) > limit:
            what = f"Metadata {md_id} has more than {limit} eventTypes"
            raise LimitExceeded(codes.STRUCTURE, what, "max_event_types")
        self._sized.add(md_id)

    def _charge(self, merged: etree._Element) -> None:
        self._merge_budget -= sum(1 for _ in merged.iter())
        if self._merge_budget < 0:
            limit = self._limits.max_elements
            what = f"merged metadata would have more than {limit} elements"
            raise LimitExceeded(codes.MERGE, what, "max_elements")

    def merged(self, md_id: str) -> etree._Element:
        """The metadata with its merge chain folded in, root first (memoised, failures too)."""
        if md_id in self._failed:
            raise self._failed[md_id].with_traceback(None)
        path: list[str] = []
        seen: set[str] = set()
        cur: str | None = md_id
        try:
            while cur is not None and cur not in self._merged:
                self._check(cur, seen, md_id)
                path.append(cur)
                cur = self._metadata[cur].get("metadataIdRef") or None
        except NMWGError as err:
            self._failed[md_id] = err
            raise
        merged = self._merged[cur] if cur is not None else None
        for n in range(len(path) - 1, -1, -1):
            self._cancel_check()
            child = self._metadata[path[n]]
            try:
                if merged is None:
                    merged = _detached(child)
                else:
                    merged = self._merge(merged, child)
                    self._charge(merged)
            except NMWGError as err:
                # It and every metadata inheriting from it (closer to md_id) fail alike.
                self._failed.update(dict.fromkeys(path[: n + 1], err))
                raise
            self._merged[path[n]] = merged
        return self._merged[md_id]

    def resolve(self, ref: str) -> tuple[etree._Element, tuple[etree._Element, ...]]:
        """Follow subject references from ``ref`` → (subject metadata, filters innermost-first)."""
        if ref in self._unresolved:
            raise self._unresolved[ref].with_traceback(None)
        if ref not in self._resolved:
            try:
                self._resolved[ref] = self._follow(ref)
            except NMWGError as err:
                self._unresolved[ref] = err
                raise
        return self._resolved[ref]

    def _follow(self, ref: str) -> tuple[etree._Element, tuple[etree._Element, ...]]:
        outer_first: list[etree._Element] = []
        seen: set[str] = set()
        cur = ref
        while True:
            self._check(cur, seen, ref)
            md = self.merged(cur)
            target = _subject_ref(md)
            if target is None:
                return md, tuple(reversed(outer_first))
            outer_first.append(md)
            cur = target


def _subject_ref(md: etree._Element) -> str | None:
    subjects = _children(md, "subject")
    if not subjects:
        return None
    return (subjects[0].get("metadataIdRef") or "").strip() or None


def _copy(element: etree._Element) -> etree._Element:
    out = copy.deepcopy(element)
    out.tail = None
    return out


def _detached(md: etree._Element) -> etree._Element:
    """A metadata copy that no longer points at a parent: its merge chain is folded in."""
    out = _copy(md)
    if "metadataIdRef" in out.attrib:
        del out.attrib["metadataIdRef"]
    return out


# --- default merge (Common::defaultMergeMetadata) -------------------------------------------


def default_merge(parent: etree._Element, child: etree._Element) -> etree._Element:
    """The child metadata completed from its parent.

    Subjects (same namespace required) merge element by element, the child winning; eventTypes
    are the parent's if the child has none, else those the two have in common (none in common
    is an error); parameter blocks merge by namespace and parameter name, the child winning.
    Keys cannot be merged: a key already names one stored metadata.
    """
    if parent.find(_KEY) is not None or child.find(_KEY) is not None:
        raise NMWGError(codes.MERGE, "Merging with a key metadata is invalid")
    merged = _detached(child)
    _merge_subject(parent, merged)
    _merge_event_types(parent, merged)
    first: dict[str, etree._Element] = {}  # tag → the first such child: what find(tag) gives
    for c in merged.iterchildren(etree.Element):
        first.setdefault(c.tag, c)
    for block in _children(parent, "parameters"):
        mine = first.get(block.tag)
        new = _copy(block) if mine is None else _merge_parameters(block, mine)
        if mine is None:
            merged.append(new)
        else:
            merged.replace(mine, new)
        first[block.tag] = new
    return merged


def _one_subject(md: etree._Element) -> etree._Element | None:
    subjects = _children(md, "subject")
    if len(subjects) > 1:
        raise NMWGError(codes.MERGE, f"Metadata {md.get('id')} has multiple subjects")
    return subjects[0] if subjects else None


def _merge_subject(parent: etree._Element, merged: etree._Element) -> None:
    theirs, mine = _one_subject(parent), _one_subject(merged)
    if theirs is None:
        return
    if mine is None:
        merged.insert(0, _copy(theirs))
    elif ns.split(theirs.tag)[0] != ns.split(mine.tag)[0]:
        raise NMWGError(
            codes.MERGE,
            f"Metadata {merged.get('id')} and {parent.get('id')} have subjects with different"
            " namespaces.",
        )
    else:
        merged.replace(mine, merge_elements(theirs, mine))


def _merge_event_types(parent: etree._Element, merged: etree._Element) -> None:
    theirs = {event_type(e) for e in parent.iterchildren(_EVENT_TYPE)}
    mine = list(merged.iterchildren(_EVENT_TYPE))
    if not theirs:
        return
    if not mine:
        merged.extend(_copy(e) for e in parent.iterchildren(_EVENT_TYPE))
        return
    dropped = [e for e in mine if event_type(e) not in theirs]
    if len(dropped) == len(mine):
        raise NMWGError(
            codes.MERGE,
            f"Metadata {merged.get('id')} and {parent.get('id')} have no eventTypes in common",
        )
    for e in dropped:
        merged.remove(e)


def _merge_parameters(parent: etree._Element, child: etree._Element) -> etree._Element:
    out = _copy(child)
    for p in [*_children(parent, "parameter"), *_children(out, "parameter")]:
        if not p.get("name"):
            raise NMWGError(
                codes.MERGE, "Attempting to merge a parameter with a missing 'name' attribute"
            )
    have = {(p.tag, p.get("name")) for p in _children(out, "parameter")}
    out.extend(
        _copy(p) for p in _children(parent, "parameter") if (p.tag, p.get("name")) not in have
    )
    return out


def merge_elements(old: etree._Element, new: etree._Element) -> etree._Element:
    """``old`` overlaid by ``new``: attributes and text replaced, children merged by tag
    (parameters by tag and name), unmatched children of ``new`` appended. Each child of
    ``new`` takes the first not yet taken child of ``old`` that matches it."""
    out = _copy(old)
    _overlay(out, new)
    return out


def _overlay(out: etree._Element, new: etree._Element) -> None:
    """``new`` merged into ``out`` in place (``out`` is already a copy): linear, as children
    are matched through a dict of queues instead of a scan per child."""
    for name, value in new.attrib.items():
        out.set(name, value)
    if new.text and new.text.strip():
        out.text = new.text
    unmatched: dict[tuple[str, str | None], deque[etree._Element]] = {}
    for c in out.iterchildren(etree.Element):
        unmatched.setdefault(_match_key(c), deque()).append(c)
    for child in new.iterchildren(etree.Element):
        waiting = unmatched.get(_match_key(child))
        if waiting:
            match = waiting.popleft()
            match.tail = None  # as a fresh copy (_copy) has it
            _overlay(match, child)
        else:
            out.append(_copy(child))


def _match_key(element: etree._Element) -> tuple[str, str | None]:
    """What two children must share to merge: the tag, and a parameter's name."""
    name = element.get("name") if local(element) == "parameter" else None
    return element.tag, name
