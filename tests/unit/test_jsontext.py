"""archive.jsontext.loads: what json.loads gives, whatever json.dumps wrote (orjson when it
reads the text the same)."""

from __future__ import annotations

import json
import math

from netsonde.archive import jsontext

WRITTEN = [
    {"minRtt": 0.035, "lossPercent": 0.0, "duplicates": 0, "none": None},
    {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
    {"big": 2**70, "neg": -(2**64) - 1, "u64": 2**64 - 1, "i64": -(2**63)},
    {"long fraction": 0.12345678901234567, "tiny": 5e-324, "huge": 1.7976931348623157e308},
    [[1, 0.25, 64, 64, 1_700_000_000_000_100], [2, None, None, None, None]],
    {"path": ["10.0.0.1", "*"], "text": 'é😀\u2028\x00"\\', "nested": {"a": [True, False]}},
    {"lone": "\ud800"},
    {"hops": [{"ip": "10.0.0.1", "rtt": 2**65}, None], "n": [3, -(2**70)]},  # nested, mixed
    [[1, 0.5], [2, 1.5e19]],  # a float that large read as json reads it
    [],
    {},
]


def same(a: object, b: object) -> bool:
    """Equal, NaN included, and of the same types all the way down (1 is not 1.0)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


def test_loads_reads_what_json_reads() -> None:
    for value in WRITTEN:
        text = json.dumps(value)
        assert same(jsontext.loads(text), json.loads(text)), text
        assert same(jsontext.loads(text.encode()), json.loads(text)), text
    assert jsontext.loads('{"a": 1, "a": 2}') == {"a": 2}  # the last of a repeated key
    assert type(jsontext.loads(json.dumps(2**70))) is int
