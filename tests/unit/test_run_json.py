"""run_json: a page of runs straight from archive rows, the same bytes the models write; and
iso_utc, the ISO twin of every time, the same text datetime writes."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from hosting import sqlite_url
from netsonde.archive import open_archive
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping
from netsonde.services.archive.run_json import run_page_json
from netsonde.services.archive.schemas import MAX_TIME_US, StoredRun, StoredRunPage, iso_utc
from netsonde.units import EPOCH, ONE_US

S = 1_000_000
T0 = 1_700_000_000 * S
SPEC = TestSpec("json-é", "ping", "::1", Schedule(interval=10), ping.Params(count=3))


def models(rows: list[dict[str, Any]], samples: bool, cursor: str | None = "abc") -> bytes:
    """What the REST API wrote before run_json, and still writes for what it declines."""
    page = StoredRunPage(
        items=[StoredRun.from_row(r, samples=samples) for r in rows],
        limit=len(rows) + 1,
        offset=3,
        next_cursor=cursor,
    )
    return page.model_dump_json().encode()


def fast(rows: list[dict[str, Any]], samples: bool, cursor: str | None = "abc") -> bytes | None:
    return run_page_json(rows, limit=len(rows) + 1, offset=3, next_cursor=cursor, samples=samples)


def make_run(k: int, state: RunState, values: dict[str, Any] | None) -> Run:
    planned = T0 + k * 10 * S + k  # µs that are not whole seconds
    result = None
    if values is not None:
        replies = [
            PacketSample(1, 0.25, 64, 64, planned + 1000),
            PacketSample(2, None),
            PacketSample(3, 2, 63, None, planned + 3000),  # an integer RTT: 2.0 in JSON
        ]
        result = Result("ping", SPEC.target, 3, replies, values, extra={"path": ["a", None]})
    return Run(
        run_id=run_id_for(SPEC.key, planned),
        test_id=SPEC.id,
        test_key=SPEC.key,
        slot=k,
        planned_us=planned,
        state=state,
        actual_us=None if state is RunState.MISSED else planned + 250 * k,
        end_us=None if state is RunState.MISSED else planned + 2 * S,
        error='busy\n\x01 "quoted"' if state is RunState.MISSED else None,
        result=result,
    )


RUNS = [
    make_run(0, RunState.FINISHED, {"minRtt": 0.25, "maxRtt": 2, "lossPercent": 100 / 3}),
    make_run(1, RunState.FINISHED, {"medianRtt": None, "lossPercent": 100.0}),
    make_run(2, RunState.MISSED, None),
    make_run(3, RunState.FAILED, {}),
    make_run(4, RunState.TIMEOUT, {"huge": 1e300, "tiny": 5e-324, "neg": -0.0, "n": 2**62}),
    make_run(5, RunState.FINISHED, {"nan": math.nan, "inf": math.inf}),
]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, list[dict[str, Any]]]:
    """The runs as the archive gives them back, without and with samples."""
    archive = open_archive(sqlite_url(Path(tmp_path_factory.mktemp("json")) / "a.sqlite"))
    try:
        archive.register_tests([SPEC], T0)
        archive.store_runs(RUNS)
        return {s: archive.find_runs(test_key=SPEC.key, samples=s) for s in (False, True)}
    finally:
        archive.close()


@pytest.mark.parametrize("samples", [False, True])
def test_archive_rows_write_the_bytes_the_models_write(
    rows: dict[bool, list[dict[str, Any]]], samples: bool
) -> None:
    got = rows[samples]
    assert len(got) == len(RUNS)
    assert fast(got, samples) == models(got, samples)
    assert fast(got, samples, None) == models(got, samples, None)
    assert fast([], samples) == models([], samples)
    # The fixture reached what run_json writes differently from a plain copy.
    assert b'"rtt_ms":2.0' in models(rows[True], True)
    assert b'"nan":null' in models(got, samples)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("values", {"flag": True}),  # a bool: the model makes it 1
        ("values", {"big": 2**70}),  # past 64 bits
        ("values", {"text": "1.5"}),  # a string the model reads as a number
        ("values", {"list": [1]}),  # the model refuses it
        ("state", "paused"),  # no such state: the model refuses it
        ("run_id", "lone \ud800 surrogate"),
        ("slot", 1.0),
        ("actual_us", True),
    ],
)
def test_what_only_the_models_can_write_is_left_to_them(
    rows: dict[bool, list[dict[str, Any]]], field: str, value: Any
) -> None:
    odd = dict(rows[False][0])
    if field == "values":
        odd["values"] = value
    else:
        odd[field] = value
    assert fast([rows[False][1], odd], False) is None


def test_samples_only_the_models_can_write_are_left_to_them(
    rows: dict[bool, list[dict[str, Any]]],
) -> None:
    for sample in ({"seq": 1, "rtt_ms": "1", "ttl": 1, "size": 1, "recv_us": 1}, {"seq": 1}):
        odd = dict(rows[True][0])
        odd["samples"] = [sample]
        assert fast([odd], True) is None


def old_iso(us: int) -> str:
    return (EPOCH + us * ONE_US).isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_iso_utc_is_what_datetime_writes() -> None:
    low = -62_135_596_800 * S  # 0001-01-01T00:00:00Z
    rng = random.Random(5)
    edges = [0, 1, -1, T0 + 123_456, 86_400 * S - 1, 86_400 * S, low, MAX_TIME_US]
    for us in edges + [rng.randrange(low, MAX_TIME_US + 1) for _ in range(20_000)]:
        assert iso_utc(us) == old_iso(us), us
    assert iso_utc(MAX_TIME_US) == "9999-12-31T23:59:59.999999Z"
    for us in (MAX_TIME_US + 1, low - 1):
        with pytest.raises(OverflowError):
            iso_utc(us)
