"""Stored JSON text (summaries, samples, tool detail), written and read back with orjson,
~10× and ~4× faster than json; read back exactly as json.loads would.

Written: NaN and Infinity become null (no value: what a reader makes of them anyway, and
valid JSON); an integer past 64 bits, which orjson refuses, is written by json.

json.dumps writes NaN and Infinity, which orjson refuses, and orjson reads an integer past
64 bits as a float (a float that large may be one): such text goes to json.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_LOW, _HIGH = -(2**63), 2**64  # orjson's exact integers: int64 and uint64


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer past 64 bits (or a type neither writes: json says which)
        return json.dumps(value)


def loads(text: str | bytes) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    return value if _exact(value) else json.loads(text)


def _exact(value: Any) -> bool:
    """No float in ``value`` that an integer past 64 bits could have become."""
    kind = type(value)
    if kind is float:
        return bool(_LOW <= value < _HIGH)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return True
    try:  # all numbers (a summary): min and max in C
        return bool(min(value) >= _LOW and max(value) < _HIGH)
    except (TypeError, ValueError):  # None, text, nesting, or empty: one by one
        pass
    for v in value:
        kind = type(v)
        if kind is float:
            if not _LOW <= v < _HIGH:
                return False
        elif (kind is dict or kind is list) and not _exact(v):
            return False
    return True
