"""The PingER MA over NMWG (PROTOCOL.md §4.13): MetadataKeyRequest and SetupDataRequest.

Faithful to what PingER clients read — element names, canonical prefixes, the order of the
datums — and mended where the 2008 MA was wrong: loss is returned (it looked up
``lostPercent``), zero values are kept (``next unless $value``), ids are unique in a response,
the pinger metadata references the select metadata that exists (not a bare ``"1"``), a
request with a start but no end means "until now" (not "exactly at start"), and mean/max RTT
are whatever was measured (the 2008 MP stored them swapped).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree
from pydantic import ValidationError

from netsonde.archive import Archive, ArchiveError, PerThread
from netsonde.model import Schedule, TestSpec, to_us
from netsonde.nmwg import build, codes, ns, pinger
from netsonde.nmwg.codes import PINGER_FAILURE_METADATAKEY, PINGER_FAILURE_SETUPDATA, NMWGError
from netsonde.nmwg.message import Message, Unit
from netsonde.nmwg.service import NMWGService, RequestContext, require_store_token
from netsonde.probes import ping
from netsonde.probes.targets import check_host
from netsonde.services.pinger import views as views

DEFAULT_WINDOW = 86_400  # seconds: the original's "last 24 hours" when no time is given
QUERY_SIZE_LIMIT = 1_000_000  # rows, the original's query_size_limit default

_SRC = ns.clark("nmwgt:src")
_DST = ns.clark("nmwgt:dst")


@dataclass(frozen=True)
class PingerState:
    """What the PingER MA's handlers read (``rctx.state``)."""

    archive: PerThread[Archive]
    name: str = ""  # this measurement point's name: the PingER "src" of local tests
    token: str | None = None  # store requests need it


def _archive(rctx: RequestContext[PingerState]) -> Archive:
    archive = rctx.state.archive.get()
    rctx.on_cancel(archive.interrupt)
    return archive


def _wanted(unit: Unit, failure: str) -> views.MetaFilter | str:
    """The key the unit names, or what its subject and parameters ask for."""
    key = unit.key
    if key is not None:
        value = key.get("id") or (key.text or "").strip()
        if value:
            return value
    subject = unit.subject_element
    params = unit.parameters
    # A subject or a parameters block asks for every metadata it does not narrow down, even
    # when empty: the original's `elsif ($md->subject || $md->parameters)`, which the test
    # harness's getAll request (an empty pinger:parameters) relies on.
    if subject is None and not params and not _has_parameters_block(unit.subject):
        raise NMWGError(failure, "Malformed request or missing key or parameters")

    def endpoint(tag: str) -> str | None:
        found = subject.find(f".//{tag}") if subject is not None else None
        return found.get("value") if found is not None else None

    try:
        wanted = pinger.read_parameters(params)
    except ValueError as e:
        raise NMWGError(failure, str(e)) from None
    return views.MetaFilter(
        source=endpoint(_SRC),
        destination=endpoint(_DST),
        **wanted,  # type: ignore[arg-type]
    )


def _has_parameters_block(metadata: etree._Element) -> bool:
    return any(
        etree.QName(child).localname == "parameters"
        for child in metadata.iterchildren(etree.Element)
    )


def _lookup(unit: Unit, rctx: RequestContext[PingerState], failure: str) -> list[views.PingerMeta]:
    wanted = _wanted(unit, failure)
    if isinstance(wanted, str):
        found = views.metadata(_archive(rctx), rctx.state.name, key=wanted)
    else:
        found = views.find(views.metadata(_archive(rctx), rctx.state.name), wanted)
    if not found:
        raise NMWGError(failure, "no metadata found")
    return found


def _sub_id(ids: build.IdGen, kind: str, meta: views.PingerMeta) -> str:
    """``subjKEY.N``/``paramsKEY.N``: the original's ``subjMETAID`` named the select and the
    pinger subject alike, and again in every unit for the same key; these are unique."""
    return ids.new(f"{kind}{meta.key}")


def _pinger_metadata(meta: views.PingerMeta, ids: build.IdGen, ref: str | None) -> etree._Element:
    md = build.metadata(ids, ref=ref)
    sub_ids = (_sub_id(ids, "subj", meta), _sub_id(ids, "params", meta))
    pinger.add_test(md, sub_ids, meta.source, meta.destination, meta.params())
    build.element("nmwg:key", {"id": meta.key}, parent=md)
    build.element("nmwg:eventType", text=pinger.EVENT_TYPE, parent=md)
    return md


def lookup_data(state: PingerState) -> list[etree._Element]:
    """What the PingER MA registers with a lookup service: the metadata of every ping test it
    holds, as its MetadataKeyResponse gives them (subject, parameters, key, eventType)."""
    ids = build.IdGen()
    metas = views.metadata(state.archive.get(), state.name)
    return [_pinger_metadata(meta, ids, ref=None) for meta in sorted(metas, key=lambda m: m.key)]


def metadata_key(
    unit: Unit, message: Message, rctx: RequestContext[PingerState]
) -> Sequence[etree._Element]:
    out: list[etree._Element] = []
    found = _lookup(unit, rctx, PINGER_FAILURE_METADATAKEY)
    rctx.charge(len(found))  # an answer's rows here are its metadata/data pairs
    for meta in found:
        rctx.check()
        md = _pinger_metadata(meta, rctx.ids, ref=None)
        d = build.data(rctx.ids, md.get("id", ""))
        build.element("nmwg:key", {"id": meta.key}, parent=d)
        out += [md, d]
    return out


def _window(unit: Unit, now: float) -> tuple[int, int]:
    """[first, last] whole unix seconds, both inclusive (rows are stamped in whole seconds)."""
    sel = unit.select()
    end = sel.end if sel.end is not None else now
    start = sel.start if sel.start is not None else end - DEFAULT_WINDOW
    first = math.floor(start) + 1 if sel.start_exclusive else math.ceil(start)
    last = math.ceil(end) - 1 if sel.end_exclusive else math.floor(end)
    return first, last


DIGITS = 6  # decimals of a SetupDataResponse's datum values
CHECK_EVERY = 1_000  # datums built between two cancellation checks


def _add_datums(
    parent: etree._Element, rows: Sequence[views.Datum], rctx: RequestContext[PingerState]
) -> None:
    """The rows as text spliced into the serialized answer (``build.Splices``): building them
    as lxml elements was most of the time of a 60-row answer."""
    parts = []
    for n, row in enumerate(rows):
        if n % CHECK_EVERY == 0:
            rctx.check()
        parts.append(pinger.common_time_xml(str(row.time), pinger.datums_xml(row.values, DIGITS)))
    rctx.splices.add(parent, "".join(parts).encode(), pinger.ROW_PREFIXES)


def setup_data(
    unit: Unit, message: Message, rctx: RequestContext[PingerState]
) -> Sequence[etree._Element]:
    metas = _lookup(unit, rctx, PINGER_FAILURE_SETUPDATA)
    sel = unit.select()
    start, end = _window(unit, time.time())
    archive = _archive(rctx)
    out: list[etree._Element] = []
    for meta in metas:
        rctx.check()
        limit = min(sel.limit or QUERY_SIZE_LIMIT, QUERY_SIZE_LIMIT)
        if views.buckets(sel.consolidation, sel.resolution) is None:
            # A row is a datum: read one more than the answer may take, to tell it is too many.
            limit = min(limit, rctx.datums_left + 1)
        rows = views.data(
            archive,
            meta.key,
            start,
            end,
            consolidation=sel.consolidation,
            resolution=sel.resolution,
            limit=limit,
            check=rctx.check,
        )
        if not rows:
            continue
        rctx.charge(len(rows))
        select_md = build.metadata(rctx.ids)
        build.element("select:subject", {"id": _sub_id(rctx.ids, "subj", meta)}, parent=select_md)
        params = build.element(
            "select:parameters", {"id": _sub_id(rctx.ids, "params", meta)}, parent=select_md
        )
        for name, value in (("startTime", start), ("endTime", end)):
            build.element("nmwg:parameter", {"name": name, "value": str(value)}, parent=params)
        build.element("nmwg:eventType", text=ns.SELECT, parent=select_md)
        pinger_md = _pinger_metadata(meta, rctx.ids, ref=select_md.get("id"))
        d = build.data(rctx.ids, pinger_md.get("id", ""), declare=("pinger",))
        _add_datums(d, rows, rctx)
        out += [select_md, pinger_md, d]
    if not out:
        raise NMWGError(
            PINGER_FAILURE_SETUPDATA, f"no matching data found between {start} and {end}"
        )
    return out


# ---- MeasurementArchiveStoreRequest ------------------------------------------------------------


def _endpoints(unit: Unit) -> tuple[str, str]:
    """(src, dst) from nmwgt:src/dst @value, or the agent's nmtl4:endPoint[@role] form."""
    subject = unit.subject_element
    found: dict[str, str] = {}
    if subject is not None:
        for el in subject.iter():
            if not isinstance(el.tag, str):
                continue
            name = etree.QName(el).localname
            role = name if name in ("src", "dst") else el.get("role")
            if role not in ("src", "dst") or role in found:
                continue
            value = el.get("value") or next(
                (
                    (c.text or "").strip()
                    for c in el.iter()
                    if isinstance(c.tag, str)
                    and etree.QName(c).localname in ("ipAddress", "ifHostName")
                    and (c.text or "").strip()
                ),
                "",
            )
            if value:
                found[role] = value
    if "src" not in found or "dst" not in found:
        raise NMWGError(codes.MA_SUBJECT, "a store needs a subject with a source and destination")
    return found["src"], found["dst"]


def _store_spec(unit: Unit, src: str, dst: str) -> TestSpec:
    try:
        given = pinger.read_parameters(unit.parameters)
        given.pop("transport", None)  # ICMP: what ping measures
        params = ping.Params(**given)
        check_host(dst)
    except (ValueError, ValidationError) as e:
        raise NMWGError(codes.MA_PARAMETERS, f"invalid store parameters: {e}") from None
    return TestSpec(
        id=f"{src}>{dst}",
        tool="ping",
        target=dst,
        schedule=Schedule(interval=60),  # not stored: the archive keeps what was measured
        params=params,
        source=src,
    )


def store(
    unit: Unit, message: Message, rctx: RequestContext[PingerState]
) -> Sequence[etree._Element]:
    require_store_token(rctx.state.token, message, rctx)
    src, dst = _endpoints(unit)
    spec = _store_spec(unit, src, dst)
    runs = [pinger.read_run(spec, c) for c in pinger.commons(unit.data)]
    if not runs:
        raise NMWGError(codes.MA_QUERY_INCOMPLETE_DATA, "no nmwg:commonTime to store")
    try:
        new = _archive(rctx).store_batch([spec], runs, to_us(time.time()))
    except ArchiveError as e:
        raise NMWGError(codes.STORAGE_UPDATE, str(e)) from None
    text = f"{new} new data element(s) successfully added, {len(runs) - new} already stored"
    return build.result_pair(rctx.ids, codes.SUCCESS_MA_ADDED, text, unit.ref)


def pinger_ma(state: PingerState) -> NMWGService[PingerState]:
    return NMWGService(
        name="pinger-ma",
        state=state,
        handlers={
            "MetadataKeyRequest": metadata_key,
            "SetupDataRequest": setup_data,
            "MeasurementArchiveStoreRequest": store,
        },
        event_types=frozenset({pinger.EVENT_TYPE, ns.SELECT}),
        output_metadata=False,
    )
