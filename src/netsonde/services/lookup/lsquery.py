"""What ``netsonde ls query`` does: find what a lookup service holds, by key=value over its JSON
API (``/api/v1/lookup/records``) or by an XQuery in an LSQueryRequest, and say in one line
(``ClientError``) why not.

``--type``, ``--host`` and ``--event-type`` are not one key each: a host is named by a service's
``service-locator`` (a URL) or a host record's ``host-name``, an eventType by a service's
``psservice-eventtypes`` or a metadata record's ``psmetadata-event-types``. The registry ANDs
keys (or ORs them all), so the answer is the union of one query per combination of those keys,
each paged, merged by uri in registration order.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from lxml import etree

from netsonde.config import Config
from netsonde.nmwg import build, codes, ns
from netsonde.nmwg.client import ClientError, exchange, read_bounded
from netsonde.nmwg.ls import read_reply
from netsonde.services.lookup import ENDPOINTS, section_of
from netsonde.services.lookup.records import LOCATOR_KEYS
from netsonde.services.lookup.registry import MAX_LIMIT
from netsonde.services.lookup.rest import PREFIX
from netsonde.units import parse_time

RECORDS_PATH = f"/api/v1{PREFIX}/records"  # the REST routers are mounted at /api/v1
NMWG_PATH = ENDPOINTS[0]  # /perfSONAR_PS/services/LS (and /hLS)
XQUERY_EVENT_TYPE = ns.XQUERY.rstrip("/")  # the namespace's URI is the eventType's
MAX_ANSWER_BYTES = 256 * 1024 * 1024  # 1,000 records of at most 64 KiB each, with room


@dataclass(frozen=True, slots=True)
class Target:
    """Where to ask: key=value queries and XQueries."""

    records_url: str
    nmwg_url: str


def target(url: str) -> Target:
    """A netsonde base URL (``http://host:8075/``) or an NMWG LS URL (``…/services/LS`` or
    ``/hLS``: the XQuery goes there, key=value queries to the JSON API of the same server)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"{url}: not an http(s) URL")
    path = parts.path.rstrip("/")
    nmwg = next((p for p in ENDPOINTS if path.endswith(p)), None)
    base = path[: -len(nmwg)] if nmwg else path
    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return Target(root + base + RECORDS_PATH, root + base + (nmwg or NMWG_PATH))


def local_target(cfg: Config, registers_with: Sequence[str] = ()) -> Target:
    """This instance's own lookup service (``[ls]``), where ``listen`` serves it; without one,
    the first it registers with (``registers_with``: ``[registration] urls``)."""
    if not section_of(cfg.sections).enabled:
        if registers_with:
            return target(registers_with[0])
        raise ClientError(
            "this instance runs no lookup service ([ls] enabled = false) and registers with"
            " none ([registration] urls): give --url"
        )
    if not cfg.api.enabled:
        raise ClientError("this instance serves no HTTP ([api] enabled = false): give --url")
    host, port = cfg.listen_address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return target(f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/")


# ---- key=value -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the user asks for; None: anything. Values may hold ``*``/``?`` wildcards."""

    service_type: str | None = None
    host: str | None = None
    event_type: str | None = None


def host_patterns(host: str) -> list[str]:
    """A host as a service locator names it: ``scheme://host[:port][/path]``, ``[v6]`` in
    brackets, or a bare ``host:port`` (OWAMP's, BWCTL's)."""
    h = host.strip("[]")
    shown = f"[{h}]" if ":" in h else h
    return [f"*://{shown}", f"*://{shown}/*", f"*://{shown}:*", f"{shown}:*", shown]


def filter_sets(wanted: Wanted) -> list[dict[str, list[str]]]:
    """One key=value filter per way of matching (each ANDs its keys; the answer is the union)."""
    choices: list[list[dict[str, list[str]]]] = []
    if wanted.service_type is not None:
        choices.append([{"service-type": [wanted.service_type]}])
    if wanted.host is not None:
        choices.append(
            [{"service-locator": host_patterns(wanted.host)}, {"host-name": [wanted.host]}]
        )
    if wanted.event_type is not None:
        e = [wanted.event_type]
        choices.append([{"psservice-eventtypes": e}, {"psmetadata-event-types": e}])
    return [
        {k: v for part in combo for k, v in part.items()} for combo in itertools.product(*choices)
    ]


def _answer(url: str, status: int, reason: str, content: bytes) -> Any:
    """The JSON of a 2xx answer, or ClientError with the server's own reason."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if status >= 400:
        said = body.get("error") if isinstance(body, dict) else None
        if status == 404 and said in (None, "Not Found"):
            said = "no netsonde lookup API here (a perfSONAR-PS LS answers --xquery only)"
        raise ClientError(f"{url}: HTTP {status}: {said or reason}")
    if body is None:
        raise ClientError(f"{url}: the answer is not JSON")
    return body


def _get(
    client: httpx.Client, url: str, params: Mapping[str, str | Sequence[str]]
) -> list[dict[str, Any]]:
    """One page of records, read no further than MAX_ANSWER_BYTES."""
    try:
        with client.stream("GET", url, params=params) as response:
            content = read_bounded(response, MAX_ANSWER_BYTES)
    except ClientError as e:
        raise ClientError(f"{url}: {e}") from None
    except httpx.HTTPError as e:
        raise ClientError(f"{url}: cannot reach the lookup service: {e}") from None
    found = _answer(url, response.status_code, response.reason_phrase, content)
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        raise ClientError(f"{url}: the answer is not a list of records")
    return found


def _pages(
    client: httpx.Client, url: str, filters: Mapping[str, Sequence[str]], limit: int
) -> Iterator[dict[str, Any]]:
    """At most ``limit`` records matching ``filters``, page by page (the server's pages are at
    most MAX_LIMIT records; the last one is short)."""
    offset = 0
    while offset < limit:
        size = min(MAX_LIMIT, limit - offset)
        page = _get(client, url, {**filters, "limit": str(size), "offset": str(offset)})
        yield from page
        if len(page) < size:
            return
        offset += size


def find(client: httpx.Client, url: str, wanted: Wanted, limit: int = 100) -> list[dict[str, Any]]:
    """The live records ``wanted`` (at most ``limit``), oldest registration first."""
    if limit < 1:
        raise ClientError("--limit must be at least 1")
    merged: dict[str, dict[str, Any]] = {}
    for filters in filter_sets(wanted):
        for record in _pages(client, url, filters, limit):
            merged.setdefault(str(record.get("uri")), record)
    ordered = sorted(merged.values(), key=lambda r: str(r.get("created", "")))  # stable
    return ordered[:limit]


def _first(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def row(record: Mapping[str, Any], now: float | None = None) -> tuple[str, str, str, str, int]:
    """(record type, service type, name, locator, seconds until it expires) for the table."""
    kind = _first(record, "type")
    locator_key = LOCATOR_KEYS.get(kind, ("service-locator",))[0]
    try:
        expires = parse_time(_first(record, "expires"))
    except ValueError:  # not a time: shown as expired
        expires = 0.0
    left = round(expires - (time.time() if now is None else now))
    return (
        kind,
        _first(record, "service-type"),
        _first(record, f"{kind}-name"),
        _first(record, locator_key),
        max(0, left),
    )


# ---- XQuery ----------------------------------------------------------------------------------


def xquery_request(query: str) -> etree._Element:
    """An LSQueryRequest carrying ``query``, results asked for as XML (``lsOutput`` native)."""
    ids = build.IdGen()
    message = build.element(
        "nmwg:message", {"type": "LSQueryRequest", "id": ids.message()}, declare=["xquery"]
    )
    md = build.metadata(ids)
    message.append(md)
    build.element("xquery:subject", {"id": ids.new("subject")}, text=query, parent=md)
    build.element("nmwg:eventType", text=XQUERY_EVENT_TYPE, parent=md)
    params = build.element("xquery:parameters", {"id": ids.new("parameters")}, parent=md)
    build.element("nmwg:parameter", {"name": "lsOutput"}, text="native", parent=params)
    message.append(build.data(ids, md.get("id", "")))
    return message


def xquery(
    url: str, query: str, *, client: httpx.Client | None = None, timeout: float = 60.0
) -> list[etree._Element | str]:
    """The results of ``query`` at the NMWG LS ``url``: elements, or text for atomic values.
    An empty result is ``[]``; an NMWG error is ClientError naming its code."""
    body = etree.tostring(xquery_request(query))
    answer = exchange(url, body, timeout=timeout, client=client)
    reply = read_reply(answer)
    failed = [
        c for c in reply.codes if c.startswith("error.") and c != codes.LS_QUERY_EMPTY_RESULTS
    ]
    if failed:
        raise ClientError(f"{url}: {failed[0]}: {reply.text or 'no reason given'}")
    found: list[etree._Element | str] = []
    for datum in answer.iterfind(f"{{{ns.NMWG}}}data/{{{ns.PSSERVICE}}}datum"):
        if datum.text and datum.text.strip():
            found.append(datum.text.strip())
        for child in datum:
            found.append(child)
            if child.tail and child.tail.strip():
                found.append(child.tail.strip())
    return found


def xml_text(item: etree._Element | str, *, pretty: bool = False) -> str:
    """One result as a string (an element serialized; ``pretty``: indented, for a person)."""
    if isinstance(item, str):
        return item
    if pretty:
        item = deepcopy(item)
        etree.indent(item)  # re-indents, whatever whitespace the answer had
    return etree.tostring(item, encoding="unicode", with_tail=False, pretty_print=pretty)
