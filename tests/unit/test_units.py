"""The one range of times (``units.check_epoch``): what ISO 8601 can say, 0001-01-01T00:00:00Z
to 9999-12-31T23:59:59Z. Every place a time enters (config, NMWG selects and stores, REST
parameters) refuses what lies outside it; here, the check itself and the NMWG select reader."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from lxml import etree

from netsonde import units
from netsonde.nmwg import codes, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import read_select
from netsonde.units import TIME_MAX, TIME_MIN, check_epoch


def test_the_range_is_what_a_datetime_can_say() -> None:
    assert datetime.fromtimestamp(TIME_MIN, UTC) == datetime(1, 1, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(TIME_MAX, UTC) == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises((ValueError, OverflowError)):
        datetime.fromtimestamp(TIME_MAX + 1, UTC)


@pytest.mark.parametrize("seconds", [TIME_MIN, -1, 0, 0.5, 1_700_000_000, TIME_MAX, TIME_MAX - 0.5])
def test_times_in_range_pass_unchanged(seconds: float) -> None:
    assert check_epoch(seconds) == seconds
    assert isinstance(check_epoch(seconds), float)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (TIME_MAX + 1, "253402300800"),
        (TIME_MAX + 0.5, "2.53402e+11"),
        (TIME_MIN - 1, "-62135596801"),
        (999_999_999_999, "999999999999"),
        (1e30, "1e+30"),
        (2**63 - 1, "9.22337e+18"),
        (10**400, "inf"),  # beyond any float, still one line
        (-(10**400), "-inf"),
        (math.inf, "inf"),
        (math.nan, "nan"),
    ],
)
def test_times_out_of_range_name_themselves(seconds: float, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        check_epoch(seconds, "startTime")
    assert str(info.value) == (
        f"startTime {shown} is out of range: times go from 0001-01-01T00:00:00Z (-62135596800)"
        " to 9999-12-31T23:59:59Z (253402300799)"
    )


@pytest.mark.parametrize(
    "value",
    [1e30, 2**63 - 1, 253_402_300_800, "9999-12-31T23:59:59-05:00", -1e30, math.nan],
)
def test_parse_time_refuses_what_is_out_of_range(value: object) -> None:
    with pytest.raises(ValueError, match="out of range"):
        units.parse_time(value)


def test_parse_time_takes_the_last_second() -> None:
    assert units.parse_time("9999-12-31T23:59:59+00:00") == TIME_MAX
    assert units.parse_time(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)) == TIME_MAX


# ---- NMWG select parameters --------------------------------------------------------------------


def param(name: str, value: str, **attrs: str) -> etree._Element:
    el = etree.Element(ns.clark("nmwg:parameter"), name=name, **attrs)
    el.text = value
    return el


@pytest.mark.parametrize(
    ("name", "value", "attrs", "fragment"),
    [
        ("startTime", "1e30", {}, "startTime 1e+30 is out of range"),
        ("endTime", str(2**63 - 1), {}, "endTime 9.22337e+18 is out of range"),
        ("time", "999999999999", {}, "time 999999999999 is out of range"),
        ("time", "253402300800", {"operator": "gte"}, "time 253402300800 is out of range"),
        ("startTime", "-1e30", {}, "startTime -1e+30 is out of range"),
        ("endTime", "9999-12-31T23:59:59-05:00", {"type": "iso"}, "253402318799 is out of range"),
        ("duration", "1e300", {}, "Invalid duration: '1e300'"),
    ],
)
def test_select_times_out_of_range_are_select_errors(
    name: str, value: str, attrs: dict[str, str], fragment: str
) -> None:
    with pytest.raises(NMWGError) as info:
        read_select([param(name, value, **attrs)])
    assert info.value.code == codes.MA_SELECT
    assert fragment in info.value.text, info.value.text


def test_select_times_at_the_edges_and_the_history_marker_still_read() -> None:
    sel = read_select(
        [param("startTime", str(TIME_MIN)), param("endTime", "9999-12-31T23:59:59Z", type="iso")]
    )
    assert (sel.start, sel.end) == (TIME_MIN, TIME_MAX)
    assert read_select([param("time", "-1")]).point == -1  # Status: the whole history
    span = read_select([param("duration", str(TIME_MAX - TIME_MIN))]).duration
    assert span == TIME_MAX - TIME_MIN
