"""A page of runs as JSON straight from the archive's rows: byte for byte what
``StoredRunPage.model_dump_json()`` writes, without a model per row (building and validating
60 ``StoredRun`` models was half of the time of a 1-hour results query).

Only rows whose every value already has the type the model would give it take this path; for
anything else (a bool among the values, an integer past 64 bits, a string JSON cannot carry,
an unknown state) :func:`run_page_json` answers None and the caller builds the models, which
decide as they always did. ``tests/unit/test_run_json.py`` holds the two to the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from netsonde.model import RunState
from netsonde.services.archive.schemas import iso_utc

_STATES = frozenset(RunState)  # str members: a row's "finished" is found in it
# Exact types (a bool is no int here): a summary value's, and an optional integer's.
_NUMBER = frozenset((int, float, type(None)))
_INT_OR_NONE = frozenset((int, type(None)))
_STR_OR_NONE = frozenset((str, type(None)))


class _Slow(Exception):
    """A row the models must build."""


def run_page_json(
    rows: Sequence[dict[str, Any]],
    *,
    limit: int,
    offset: int,
    next_cursor: str | None,
    samples: bool,
) -> bytes | None:
    """The page as JSON bytes, or None when one of ``rows`` needs the models."""
    try:
        items = [_run(row, samples) for row in rows]
        page = {"limit": limit, "offset": offset, "next_cursor": next_cursor, "items": items}
        return orjson.dumps(page)
    except (_Slow, KeyError, orjson.JSONEncodeError):  # orjson: a key or value JSON lacks
        return None


def _run(row: dict[str, Any], samples: bool) -> dict[str, Any]:
    """One row as ``StoredRun`` dumps it, its fields in the model's order."""
    planned = row["planned_us"]
    actual = row["actual_us"]
    end = row["end_us"]
    strings = (row["run_id"], row["test_id"], row["test_key"], row["tool"], row["target"])
    if (
        type(planned) is not int
        or type(row["slot"]) is not int
        or type(actual) not in _INT_OR_NONE
        or type(end) not in _INT_OR_NONE
        or row["state"] not in _STATES
        or type(row["error"]) not in _STR_OR_NONE
        or set(map(type, strings)) != {str}
    ):
        raise _Slow
    return {
        "run_id": strings[0],
        "test_id": strings[1],
        "test_key": strings[2],
        "tool": strings[3],
        "target": strings[4],
        "slot": row["slot"],
        "state": row["state"],
        "planned_us": planned,
        "planned_iso": iso_utc(planned),
        "actual_us": actual,
        "actual_iso": None if actual is None else iso_utc(actual),
        "end_us": end,
        "end_iso": None if end is None else iso_utc(end),
        "lateness_us": None if actual is None else actual - planned,
        "error": row["error"],
        "result": _result(row, samples),
    }


def _result(row: dict[str, Any], samples: bool) -> dict[str, Any] | None:
    sent = row["sent"]
    if sent is None:
        return None
    values = row["values"]
    if type(sent) is not int or type(values) is not dict:
        raise _Slow
    if not _NUMBER.issuperset(map(type, values.values())):
        raise _Slow
    if not samples:
        return {"sent": sent, "values": values, "samples": None, "extra": None}
    extra = row["extra"]
    if type(extra) is not dict:
        raise _Slow
    return {"sent": sent, "values": values, "samples": _samples(row["samples"]), "extra": extra}


def _samples(given: Any) -> list[dict[str, Any]]:
    if type(given) is not list:
        raise _Slow
    out = []
    for s in given:
        if type(s) is not dict:
            raise _Slow
        seq, rtt, ttl, size, recv = s["seq"], s["rtt_ms"], s["ttl"], s["size"], s["recv_us"]
        if (
            type(seq) is not int
            or type(rtt) not in _NUMBER
            or type(ttl) not in _INT_OR_NONE
            or type(size) not in _INT_OR_NONE
            or type(recv) not in _INT_OR_NONE
        ):
            raise _Slow
        # Sample.rtt_ms is a float: the model writes a stored 2 as 2.0.
        rtt = float(rtt) if type(rtt) is int else rtt
        out.append({"seq": seq, "rtt_ms": rtt, "ttl": ttl, "size": size, "recv_us": recv})
    return out
