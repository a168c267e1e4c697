"""What the remote did with a batch, read from its answer: rows it took, rows it refused for
good (a 400/413/422, or an NMWG result code saying the data is invalid) and why the rest must
wait (no connection, 5xx, 429, 401/403: transient, the rows stay)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx
from lxml import etree

from netsonde.mp.spool.db import Row
from netsonde.mp.spool.nmwg import metadata_id
from netsonde.nmwg import codes, ns
from netsonde.nmwg.parse import XMLRefused, parse_xml

PERMANENT_HTTP = frozenset({400, 413, 422})
# NMWG result codes that say the data itself is invalid (as 422 does): retrying cannot help.
PERMANENT_NMWG = frozenset(
    {
        codes.MA_SUBJECT,
        codes.MA_PARAMETERS,
        codes.MA_QUERY_INCOMPLETE_DATA,
        codes.MA_QUERY_INVALID_TIMESTAMP_TYPE,
        codes.STRUCTURE,
        codes.NO_METADATA_DATA_PAIR,
        codes.PARSE_ERROR,
    }
)


@dataclass
class Outcome:
    """What the remote did with a batch: rows it took, rows it refused for good (with the
    reason), and, if nothing could be attributed, why the batch as a whole failed."""

    delivered: list[int] = field(default_factory=list)  # outbox ids
    dead: dict[int, str] = field(default_factory=dict)  # outbox id → reason
    split: str | None = None  # permanent failure of the batch: bisect to find the bad runs
    retry: str | None = None  # transient failure of what is neither delivered nor dead


def _remote_error(response: httpx.Response) -> str:
    """``HTTP 422: runs[0].state: ...``: the status and the remote's one-line message."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("error") or body.get("detail") or "")
    except ValueError:
        message = response.text[:200]
    reason = f"HTTP {response.status_code}"
    return f"{reason}: {message}" if message else f"{reason} {response.reason_phrase}".strip()


def rest_outcome(rows: Sequence[Row], response: httpx.Response) -> Outcome:
    if response.is_success:
        # Only a StoreReply that counts every run means stored: a 200 from something that is
        # not a netsonde archive (a wrong URL) must not make the spool drop the rows.
        try:
            reply = response.json()
            stored = reply["runs"] == len(rows) == reply["new"] + reply["duplicates"]
        except (ValueError, KeyError, TypeError):
            stored = False
        if stored:
            return Outcome(delivered=[r.id for r in rows])
        return Outcome(
            retry=f"HTTP {response.status_code} but not a store reply: {response.text[:200]!r}"
        )
    error = _remote_error(response)
    if response.status_code in PERMANENT_HTTP:
        return Outcome(split=error)
    return Outcome(retry=error)


_NMWG_MESSAGE = ns.clark("nmwg:message")
_NMWG_METADATA = ns.clark("nmwg:metadata")
_NMWG_DATA = ns.clark("nmwg:data")
_NMWG_EVENT = ns.clark("nmwg:eventType")
_NMWGR_DATUM = ns.clark("nmwgr:datum")


def _results(message: etree._Element) -> Iterator[tuple[str | None, str, str]]:
    """(metadataIdRef, code, text) of each result pair in an NMWG response message."""
    texts = {
        d.get("metadataIdRef"): (d.findtext(_NMWGR_DATUM) or "").strip()
        for d in message.iterchildren(_NMWG_DATA)
    }
    for md in message.iterchildren(_NMWG_METADATA):
        code = (md.findtext(_NMWG_EVENT) or "").strip()
        yield md.get("metadataIdRef"), code, texts.get(md.get("id"), "")


def nmwg_outcome(rows: Sequence[Row], response: httpx.Response) -> Outcome:
    if not response.is_success:
        return Outcome(retry=_remote_error(response))
    try:
        root = parse_xml(response.content)  # the remote's answer is as untrusted as a request
    except XMLRefused as e:
        return Outcome(retry=f"NMWG answer is not XML: {e}")
    message = root if root.tag == _NMWG_MESSAGE else next(root.iter(_NMWG_MESSAGE), None)
    if message is None:
        return Outcome(retry="NMWG answer has no nmwg:message")
    results = list(_results(message))
    if message.get("type") == "ErrorResponse":
        _, code, text = results[0] if results else (None, "", "")
        error = f"NMWG {code}: {text}"
        # The whole message was refused: for a reason of its own (bisect) or for the server's.
        too_large = code == codes.TRANSPORT and "exceeds the limit" in text
        return Outcome(split=error) if code in PERMANENT_NMWG or too_large else Outcome(retry=error)
    by_ref = {metadata_id(r.run_id): r.id for r in rows}
    out = Outcome()
    transient: list[str] = []
    for ref, code, text in results:
        row_id = by_ref.pop(ref or "", None)
        if row_id is None:
            continue
        if code.startswith("success."):
            out.delivered.append(row_id)
        elif code in PERMANENT_NMWG:
            out.dead[row_id] = f"NMWG {code}: {text}"
        else:
            transient.append(f"NMWG {code}: {text}")
    if by_ref and not transient:
        transient.append(f"NMWG answer said nothing about {len(by_ref)} run(s)")
    out.retry = transient[0] if transient else None
    return out
