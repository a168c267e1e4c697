"""The PingER wire format: what the spool writes, the MA reads back to the same run; the
parameter names map both ways; numbers are written exactly."""

from __future__ import annotations

import pytest
from lxml import etree

from netsonde.metrics import PINGER_KEYS
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.nmwg import build, codes, ns, pinger
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import parameter_map
from netsonde.probes import ping

T0 = 1_700_000_000_123_457  # µs: not a whole second, not a float-exact value
SPEC = TestSpec(
    "p", "ping", "127.0.0.9", Schedule(interval=10), ping.Params(count=3, interval=0.123456789)
)


def run() -> Run:
    replies = [
        PacketSample(1, 0.512345678, 60, 72, T0 + 1_001),
        PacketSample(2, None, None, None, None),  # lost
        PacketSample(3, 1.5, 61, 72, T0 + 3_003),
        PacketSample(3, 1.7, 61, 72, T0 + 3_500),  # a duplicate
    ]
    values = {"minRtt": 0.512345678, "maxRtt": 1.7, "lossPercent": 100 / 3, "duplicates": 1}
    result = Result("ping", SPEC.target, sent=3, replies=replies, values=values)
    return Run.of(
        SPEC, T0, state=RunState.FINISHED, actual_us=T0 + 7, end_us=T0 + 2_500_001, result=result
    )


def test_a_run_reads_back_as_written() -> None:
    sent = run()
    data = build.element("nmwg:data", {"id": "d"})
    pinger.add_run(data, sent)
    (common,) = pinger.commons(etree.fromstring(etree.tostring(data)))  # through the bytes
    got = pinger.read_run(SPEC, common)
    # The MA knows the run by when it started: that is its planned time, and its id.
    assert (got.planned_us, got.actual_us, got.end_us) == (T0 + 7, T0 + 7, T0 + 2_500_001)
    assert got.run_id == pinger.read_run(SPEC, common).run_id  # stored twice, kept once
    assert got.result is not None and sent.result is not None
    assert got.result.replies == sent.result.replies  # to the microsecond, lost and duplicate
    # What the sender summarised is kept exactly; what it left out is derived (outOfOrder).
    for name, value in sent.result.values.items():
        assert got.result.values[name] == value, name
    assert got.result.values["outOfOrder"] == 0
    assert got.result.sent == 3


def test_summary_datums_are_in_wire_order_and_booleans() -> None:
    common = pinger.common_time(build.element("nmwg:data"), "1")
    pinger.add_summary(common, [("clp", 0.0), ("duplicates", 2), ("meanRtt", 1 / 3)], digits=6)
    assert [(d.get("name"), d.get("value")) for d in common] == [
        ("clp", "0.0"),
        ("duplicates", "true"),
        ("meanRtt", "0.333333"),
    ]


def test_the_datum_names_are_the_pinger_metric_set() -> None:
    assert sorted(pinger.DATUM_NAMES) == sorted(PINGER_KEYS)
    assert set(pinger.DATUM_NAMES) >= pinger.BOOLEAN_DATUMS


def test_parameters_map_both_ways() -> None:
    md = build.element("nmwg:metadata")
    params = {**SPEC.params_dict(), "transport": "ICMP"}
    pinger.add_test(md, ("s", "p"), "mp.example", "127.0.0.9", params)
    assert parameter_map(md) == {
        "count": "3",
        "packetSize": "56",
        "ttl": "64",
        "transport": "ICMP",
        "packetInterval": "0.123456789",  # exact: the MA keys the stored test by it
    }
    assert pinger.read_parameters(parameter_map(md)) == {
        "count": 3,
        "packet_size": 56,
        "ttl": 64,
        "transport": "ICMP",
        "interval": 0.123456789,
    }
    pair = md.find(".//{*}endPointPair")
    assert pair is not None
    assert [(e.get("value"), e.get("type")) for e in pair] == [
        ("mp.example", "hostname"),
        ("127.0.0.9", "ipv4"),
    ]


def test_parameter_text() -> None:
    assert [pinger.parameter_text(v) for v in (1.0, 0.5, 10, "ICMP", 2e-05)] == [
        "1",  # as the original MA wrote packetInterval
        "0.5",
        "10",
        "ICMP",
        "2e-05",
    ]


def test_read_parameters_takes_the_agents_name_and_skips_empty_ones() -> None:
    assert pinger.read_parameters({"interval": "0.5", "count": "", "other": "x"}) == {
        "interval": 0.5
    }


@pytest.mark.parametrize("raw", ["ten", "nan", "inf", "1.5"])
def test_read_parameters_refuses_what_is_not_a_number(raw: str) -> None:
    with pytest.raises(ValueError, match="Parameter count is not a number"):
        pinger.read_parameters({"count": raw})


@pytest.mark.parametrize(
    ("common", "code"),
    [
        ('<nmwg:commonTime type="unix"/>', codes.MA_QUERY_INVALID_TIMESTAMP_TYPE),
        ('<nmwg:commonTime type="iso" value="1"/>', codes.MA_QUERY_INVALID_TIMESTAMP_TYPE),
        ('<nmwg:commonTime type="iso" value="2024-05-01T12:00:00Z"/>',
         codes.MA_QUERY_INVALID_TIMESTAMP_TYPE),
        ('<nmwg:commonTime value="1"><pinger:datum name="rtt" value="1"/></nmwg:commonTime>',
         codes.MA_PARAMETERS),
        ('<nmwg:commonTime value="1"><pinger:datum value="1"/></nmwg:commonTime>',
         codes.MA_PARAMETERS),
        ('<nmwg:commonTime value="1"><pinger:datum seqNum="1" value="x"/></nmwg:commonTime>',
         codes.MA_PARAMETERS),
        ('<nmwg:commonTime value="1"><pinger:datum name="minRtt" value="inf"/></nmwg:commonTime>',
         codes.MA_PARAMETERS),
    ],
)  # fmt: skip
def test_read_run_names_what_is_wrong(common: str, code: str) -> None:
    xml = (
        '<nmwg:data xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/"'
        f' xmlns:pinger="{pinger.EVENT_TYPE}">{common}</nmwg:data>'
    )
    (element,) = pinger.commons(etree.fromstring(xml))
    with pytest.raises(NMWGError) as info:
        pinger.read_run(SPEC, element)
    assert info.value.code == code


def test_a_bad_number_is_named_by_its_element() -> None:
    xml = f'<nmwg:data xmlns:nmwg="{ns.NMWG}"><nmwg:commonTime value="x"/></nmwg:data>'
    (element,) = pinger.commons(etree.fromstring(xml))
    with pytest.raises(NMWGError) as info:
        pinger.read_run(SPEC, element)
    assert info.value.text == "commonTime value='x' is not a number"


def read_common(common: str) -> Run:
    xml = (
        '<nmwg:data xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/"'
        f' xmlns:pinger="{pinger.EVENT_TYPE}">{common}</nmwg:data>'
    )
    (element,) = pinger.commons(etree.fromstring(xml))
    return pinger.read_run(SPEC, element)


@pytest.mark.parametrize(
    ("common", "code", "fragment"),
    [
        ('<nmwg:commonTime value="1e30"/>', codes.MA_QUERY_INVALID_TIMESTAMP_TYPE,
         "commonTime value 1e+30 is out of range"),
        ('<nmwg:commonTime value="9223372036854775807"/>', codes.MA_QUERY_INVALID_TIMESTAMP_TYPE,
         "out of range"),
        ('<nmwg:commonTime value="253402300800"/>', codes.MA_QUERY_INVALID_TIMESTAMP_TYPE,
         "commonTime value 253402300800 is out of range"),
        ('<nmwg:commonTime value="253402300000" duration="1000"/>',
         codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, "value + duration 253402301000 is out of range"),
        ('<nmwg:commonTime value="1" duration="-1"/>', codes.MA_PARAMETERS, "out of range"),
        ('<nmwg:commonTime value="1"><pinger:datum seqNum="1" timeValue="1e30"/></nmwg:commonTime>',
         codes.MA_QUERY_INVALID_TIMESTAMP_TYPE, "timeValue 1e+30 is out of range"),
        (f'<nmwg:commonTime value="1"><pinger:datum seqNum="{10**30}"/></nmwg:commonTime>',
         codes.MA_PARAMETERS, "seqNum='1000000000000000000000000000000' is out of range"),
        ('<nmwg:commonTime value="1"><pinger:datum seqNum="1" ttl="256"/></nmwg:commonTime>',
         codes.MA_PARAMETERS, "ttl='256' is out of range (0 to 255)"),
        ('<nmwg:commonTime value="1"><pinger:datum seqNum="1" numBytes="-1"/></nmwg:commonTime>',
         codes.MA_PARAMETERS, "numBytes='-1' is out of range (0 to 65535)"),
        (f'<nmwg:commonTime value="1"><pinger:datum seqNum="{"9" * 5000}"/></nmwg:commonTime>',
         codes.MA_PARAMETERS, "seqNum='9999999999999999999999999999999999999999…' is not"),
    ],
)  # fmt: skip
def test_values_out_of_range_are_refused_before_the_archive(
    common: str, code: str, fragment: str
) -> None:
    """A time past 9999 (or a number past 64 bits) would fail in the archive or later in every
    answer that prints it: it is the store request's error, named."""
    with pytest.raises(NMWGError) as info:
        read_common(common)
    assert info.value.code == code
    assert fragment in info.value.text, info.value.text
    assert len(info.value.text) < 200


def test_the_edges_of_the_range_are_stored() -> None:
    last = read_common(
        '<nmwg:commonTime value="253402300000" duration="799">'
        '<pinger:datum seqNum="2147483647" ttl="255" numBytes="65535" timeValue="0"/>'
        "</nmwg:commonTime>"
    )
    assert last.planned_us == 253_402_300_000_000_000
    assert last.end_us == 253_402_300_799_000_000
    assert last.result is not None
    assert last.result.replies == [PacketSample(2147483647, None, 255, 65535, 0)]
