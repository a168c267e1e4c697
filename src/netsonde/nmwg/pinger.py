"""The PingER wire format (PROTOCOL.md §4.12–4.14), written once for both of its speakers.

The spool's NMWG sender (``mp/spool``) writes what the PingER MA's store handler
(``services/pinger``) reads, and the MA answers SetupData in the same form; so the datum names,
the mapping between PingER parameters and a ping test's parameters, and one run as an
``nmwg:commonTime`` of ``pinger:datum`` elements live here, not on either side.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from lxml import etree

from netsonde.metrics import pinger_summary
from netsonde.model import PacketSample, Result, Run, RunState, TestSpec, to_us
from netsonde.nmwg import build, codes, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.parse import parse_xml
from netsonde.units import check_epoch

MA_PATH = "/perfSONAR_PS/services/pinger/ma"
EVENT_TYPE = ns.PINGER  # a pinger metadata's eventType is the namespace itself

# The order of the original MA's output (with its lostPercent typo mended: loss is returned);
# the same set as metrics.PINGER_KEYS, in wire order.
DATUM_NAMES = (
    "minRtt",
    "maxRtt",
    "medianRtt",
    "meanRtt",
    "clp",
    "iqrIpd",
    "lossPercent",
    "maxIpd",
    "minIpd",
    "meanIpd",
    "duplicates",
    "outOfOrder",
)
BOOLEAN_DATUMS = frozenset({"duplicates", "outOfOrder"})  # counts stored, booleans on the wire


class Parameter(NamedTuple):
    name: str  # the nmwg:parameter's name
    key: str  # the ping test's parameter (TestSpec.params) it is
    kind: type[int] | type[float] | type[str]
    aliases: tuple[str, ...] = ()  # other names accepted on input


# In the original MA's output order. ``transport`` is not a ping parameter: always ICMP.
PARAMETERS = (
    Parameter("count", "count", int),
    Parameter("packetSize", "packet_size", int),
    Parameter("ttl", "ttl", int),
    Parameter("transport", "transport", str),
    Parameter("packetInterval", "interval", float, aliases=("interval",)),
)
TRANSPORT = "ICMP"

_COMMON_TIME = ns.clark("nmwg:commonTime")
_DATUM = ns.clark("pinger:datum")
_NSMAP = {"pinger": ns.PINGER}


# ---- values as text ----------------------------------------------------------------------------


def number(value: float | int) -> str:
    """Shortest exact text: an int as is, a float by repr (``0.0``, ``1.5``)."""
    return str(value) if isinstance(value, int) else repr(float(value))


def parameter_text(value: object) -> str:
    """A parameter's value: a float without a fraction as an int (``packetInterval="1"``, as the
    original MA wrote it), any other number exactly."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return number(value) if isinstance(value, int | float) else str(value)


def seconds(us: int) -> str:
    """Epoch µs as exact decimal seconds (float text would lose the last digit or two)."""
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def address_type(value: str) -> str:
    try:
        return f"ipv{ipaddress.ip_address(value).version}"
    except ValueError:
        return "hostname"


# ---- a test: subject and parameters ------------------------------------------------------------


def add_test(
    md: etree._Element,
    ids: tuple[str, str],
    src: str,
    dst: str,
    params: Mapping[str, Any],
) -> None:
    """``pinger:subject`` (the endpoint pair) and ``pinger:parameters`` into metadata ``md``;
    ``ids`` are the subject's and the parameters block's; ``params`` by ping key (absent or
    None ones left out)."""
    subject = build.element("pinger:subject", {"id": ids[0]}, parent=md)
    pair = build.element("nmwgt:endPointPair", parent=subject)
    for tag, value in (("nmwgt:src", src), ("nmwgt:dst", dst)):
        build.element(tag, {"value": value, "type": address_type(value)}, parent=pair)
    block = build.element("pinger:parameters", {"id": ids[1]}, parent=md)
    for p in PARAMETERS:
        if (given := params.get(p.key)) is not None:
            attrs = {"name": p.name, "value": parameter_text(given)}
            build.element("nmwg:parameter", attrs, parent=block)


def read_parameters(given: Mapping[str, str]) -> dict[str, int | float | str]:
    """PingER parameters (name → text) → values by ping key; absent or empty ones left out.
    ValueError names the parameter that is not a (finite) number."""
    out: dict[str, int | float | str] = {}
    for p in PARAMETERS:
        raw = next((given[n] for n in (p.name, *p.aliases) if given.get(n)), None)
        if raw is None:
            continue
        try:
            value = p.kind(raw)
        except ValueError:
            raise ValueError(f"Parameter {p.name} is not a number: {raw!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"Parameter {p.name} is not a number: {raw!r}")
        out[p.key] = value
    return out


# ---- a run: nmwg:commonTime --------------------------------------------------------------------


def common_time(parent: etree._Element, value: str, duration: str | None = None) -> etree._Element:
    attrs = {"type": "unix", "value": value}
    if duration is not None:
        attrs["duration"] = duration
    return etree.SubElement(parent, _COMMON_TIME, attrs, _NSMAP)


# The summary datums as XML text: a SetupDataResponse's rows are spliced into it as text
# (build.Splices), the hot loop of an answer (rows × 12). Names are escaped once here; a value
# is "true", "false" or number() text: digits, sign, point, exponent or nan/inf, nothing to
# escape (tests/unit/test_nmwg_pinger.py checks it).
_DATUM_OPEN = {n: f'<pinger:datum name="{build.xml_attr(n)}" value="' for n in DATUM_NAMES}
ROW_PREFIXES = ("nmwg", "pinger")  # what common_time_xml's text uses
_NSDECL = " ".join(f'xmlns:{p}="{ns.PREFIXES[p]}"' for p in ROW_PREFIXES)


def datums_xml(values: Iterable[tuple[str, float | int | bool]], digits: int | None = None) -> str:
    """Named datums in the order given, as ``pinger:datum`` elements' text: a boolean datum
    ``true``/``false``, a number exactly (:func:`number`) after rounding to ``digits``."""
    out = []
    known = _FLOAT_TEXTS.setdefault(digits, {})
    for name, value in values:
        if name in BOOLEAN_DATUMS:
            text = "true" if value else "false"
        elif type(value) is float and value and value == value:  # not ±0.0 (equal), not NaN
            # Measured values repeat (RTTs in µs steps, 0 % loss): their text is looked up.
            text = known.get(value)  # type: ignore[assignment]
            if text is None:
                text = repr(value if digits is None else round(value, digits))
                if len(known) < _FLOAT_TEXTS_MAX:
                    known[value] = text
        else:
            if digits is not None:
                value = round(value, digits)
            text = repr(value) if type(value) is float else number(value)
        out.append(f'{_DATUM_OPEN.get(name) or _datum_open(name)}{text}"/>')
    return "".join(out)


_FLOAT_TEXTS: dict[int | None, dict[float, str]] = {}  # by digits: a float's datum text
_FLOAT_TEXTS_MAX = 16_384  # per digits (~2 MB); beyond it, texts are made each time


def _datum_open(name: str) -> str:
    return f'<pinger:datum name="{build.xml_attr(name)}" value="'


def common_time_xml(value: str, datums: str) -> str:
    """One ``nmwg:commonTime`` (unix ``value``) holding ``datums`` (:func:`datums_xml`), as text:
    byte for byte what :func:`common_time` and :func:`add_summary` serialize to."""
    head = f'<nmwg:commonTime type="unix" value="{build.xml_attr(value)}"'
    return f"{head}>{datums}</nmwg:commonTime>" if datums else f"{head}/>"


def add_summary(
    common: etree._Element,
    values: Iterable[tuple[str, float | int | bool]],
    digits: int | None = None,
) -> None:
    """Named datums in the order given, as elements (the datums' text parsed: one writer)."""
    text = datums_xml(values, digits)
    if text:
        common.extend(parse_xml(f"<x {_NSDECL}>{text}</x>".encode()))


def add_run(parent: etree._Element, run: Run) -> etree._Element:
    """A finished ping run as one commonTime: its start (and duration), a datum per reply
    packet, then the summary datums the run has, in DATUM_NAMES order."""
    result = run.result
    assert result is not None
    start = run.actual_us if run.actual_us is not None else run.planned_us
    end = run.end_us
    common = common_time(
        parent, seconds(start), seconds(end - start) if end is not None and end >= start else None
    )
    for p in result.replies:
        datum = {"seqNum": str(p.seq), "timeType": "unix"}
        optional = (("value", p.rtt_ms), ("ttl", p.ttl), ("numBytes", p.size))
        datum.update({k: number(v) for k, v in optional if v is not None})
        if p.rtt_ms is not None:
            datum["valueUnits"] = "ms"
        if p.recv_us is not None:
            datum["timeValue"] = seconds(p.recv_us)
        etree.SubElement(common, _DATUM, datum)
    present = ((n, v) for n in DATUM_NAMES if (v := result.values.get(n)) is not None)
    add_summary(common, present)
    return common


def commons(data: etree._Element) -> Iterable[etree._Element]:
    """The nmwg:commonTime elements anywhere in ``data``."""
    return data.iter(_COMMON_TIME)


def read_run(spec: TestSpec, common: etree._Element) -> Run:
    """One commonTime → a finished run of ``spec``. What the sender summarised wins; what it
    left out is derived from the per-packet datums. NMWGError says what is wrong."""
    kind = common.get("type", "unix")
    if kind != "unix":  # before the value: an ISO time is a wrong type, not a bad number
        raise NMWGError(
            codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, f"commonTime type={kind!r}: only unix is stored"
        )
    start = _attr(common, "value", float)
    if start is None:
        raise NMWGError(codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, "commonTime needs a unix value")
    _time(start, "commonTime value")
    replies: list[PacketSample] = []
    summary: dict[str, float | int | None] = {}
    for datum in common.iter(_DATUM):
        name = datum.get("name")
        if name is None:
            replies.append(_packet(datum))
        elif name not in _NAMES:
            raise NMWGError(codes.MA_PARAMETERS, f"unknown pinger:datum name {name!r}")
        elif name in BOOLEAN_DATUMS:
            summary[name] = int(datum.get("value", "").lower() in ("true", "1"))
        else:
            summary[name] = _attr(datum, "value", float)
    sent = int(spec.params_dict()["count"])
    values = pinger_summary(sent, replies) if replies else {}
    values.update(summary)
    start_us = to_us(start)
    duration = _attr(common, "duration", float, low=0)
    if duration is not None:
        _time(start + duration, "commonTime value + duration")
    return Run.of(
        spec,
        start_us,
        state=RunState.FINISHED,
        actual_us=start_us,
        end_us=start_us + to_us(duration) if duration is not None else None,
        result=Result(tool="ping", target=spec.target, sent=sent, replies=replies, values=values),
    )


_NAMES = frozenset(DATUM_NAMES)


def _packet(datum: etree._Element) -> PacketSample:
    seq = _attr(datum, "seqNum", int, low=0, high=2**31 - 1)
    if seq is None:
        raise NMWGError(codes.MA_PARAMETERS, "a per-packet pinger:datum needs seqNum")
    recv = _attr(datum, "timeValue", float)
    if recv is not None:
        _time(recv, "pinger:datum timeValue")
    return PacketSample(
        seq=seq,
        rtt_ms=_attr(datum, "value", float),
        ttl=_attr(datum, "ttl", int, low=0, high=255),
        size=_attr(datum, "numBytes", int, low=0, high=65535),
        recv_us=to_us(recv) if recv is not None else None,
    )


def _time(seconds: float, what: str) -> None:
    """A time stored must be one every answer can print (not 1e30, not past 9999)."""
    try:
        check_epoch(seconds, what)
    except ValueError as e:
        raise NMWGError(codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, str(e)) from None


def _attr(
    el: etree._Element,
    name: str,
    kind: type[int] | type[float],
    *,
    low: float = -math.inf,
    high: float = math.inf,
) -> Any:
    """The attribute as a finite number within [low, high] (the archive's integer columns hold
    64 bits; a packet's own fields fewer)."""
    raw = el.get(name)
    if raw is None:
        return None
    shown = raw if len(raw) <= 40 else f"{raw[:40]}…"
    where = f"{etree.QName(el).localname} {name}={shown!r}"
    try:
        value = kind(raw)
    except ValueError:
        raise NMWGError(codes.MA_PARAMETERS, f"{where} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise NMWGError(codes.MA_PARAMETERS, f"{where} is not finite")
    if not low <= value <= high:
        raise NMWGError(codes.MA_PARAMETERS, f"{where} is out of range ({low:g} to {high:g})")
    return value
