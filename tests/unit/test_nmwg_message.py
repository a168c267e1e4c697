"""Message model: pairing, merge and filter chains, keys, select parameters (PROTOCOL.md §3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from netsonde.limits import RequestLimits
from netsonde.nmwg import codes, ns
from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import Message, Select, Unit, UnitFailure, read_select
from netsonde.nmwg.parse import parse_message

NS = (
    f'xmlns:nmwg="{ns.NMWG}" xmlns:select="{ns.SELECT}" xmlns:pinger="{ns.PINGER}" '
    f'xmlns:nmwgt="{ns.NMWGT}" xmlns:nmtm="{ns.NMTM}"'
)
PINGER_ET = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
SELECT_ET = "http://ggf.org/ns/nmwg/ops/select/2.0/"


def message(body: str, type_: str = "SetupDataRequest", params: str = "") -> Message:
    xml = f'<nmwg:message {NS} type="{type_}" id="msg">{params}{body}</nmwg:message>'
    return Message.from_element(parse_message(xml.encode(), 1 << 20))


def units(body: str, **kw: str) -> list[Unit | UnitFailure]:
    return message(body, **kw).resolve()


def one_unit(body: str, **kw: str) -> Unit:
    (unit,) = units(body, **kw)
    assert isinstance(unit, Unit), unit
    return unit


def failure(body: str) -> UnitFailure:
    (item,) = units(body)
    assert isinstance(item, UnitFailure), item
    return item


SUBJECT = f"""
<nmwg:metadata id="base">
  <pinger:subject id="s1"><nmwgt:endPointPair>
    <nmwgt:src type="hostname" value="a.example"/><nmwgt:dst type="hostname" value="b.example"/>
  </nmwgt:endPointPair></pinger:subject>
  <pinger:parameters id="p1"><nmwg:parameter name="count">10</nmwg:parameter></pinger:parameters>
  <nmwg:eventType>{PINGER_ET}</nmwg:eventType>
</nmwg:metadata>"""


def select_md(md_id: str, target: str, params: str, ref: str = "") -> str:
    ref_attr = f' metadataIdRef="{ref}"' if ref else ""
    return f"""
<nmwg:metadata id="{md_id}"{ref_attr}>
  <select:subject id="sub-{md_id}" metadataIdRef="{target}"/>
  <select:parameters id="sp-{md_id}">{params}</select:parameters>
  <nmwg:eventType>{SELECT_ET}</nmwg:eventType>
</nmwg:metadata>"""


def p(name: str, text: str, **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'<nmwg:parameter name="{name}"{extra}>{text}</nmwg:parameter>'


def data(ref: str | None, data_id: str = "d1") -> str:
    ref_attr = f' metadataIdRef="{ref}"' if ref is not None else ""
    return f'<nmwg:data id="{data_id}"{ref_attr}/>'


# --- the message ----------------------------------------------------------------------------


def test_message_fields() -> None:
    msg = message(
        '<nmwg:metadata id="a"/><nmwg:metadata id="a"><x/></nmwg:metadata><nmwg:metadata/>'
        + data("a"),
        params='<nmwg:parameters id="mp">'
        + p("setLimit", "", value="5")
        + p("timeType", " unix ")
        + "</nmwg:parameters>",
    )
    assert (msg.id, msg.type) == ("msg", "SetupDataRequest")
    assert msg.parameters == {"setLimit": "5", "timeType": "unix"}
    assert list(msg.metadata) == ["a"]
    assert len(msg.metadata["a"]) == 0  # the first of two duplicates wins
    assert len(msg.data) == 1
    assert {"msg", "a", "d1", "mp"} <= msg.ids()


def test_simple_pair() -> None:
    unit = one_unit(SUBJECT + data("base"))
    assert unit.ref == "base"
    assert unit.subject.get("id") == "base" and unit.filters == ()
    assert unit.metadata is unit.subject
    assert unit.event_types == (PINGER_ET,)
    assert unit.parameters == {"count": "10"}
    assert unit.subject_element is not None and unit.subject_element.get("id") == "s1"
    assert unit.key is None and unit.key_event_type is None


def test_resolution_leaves_the_request_untouched() -> None:
    msg = message(SUBJECT + select_md("f", "base", p("startTime", "1"), ref="base") + data("f"))
    before = etree.tostring(msg.element)
    msg.resolve()
    assert etree.tostring(msg.element) == before


# --- filter chains --------------------------------------------------------------------------


def test_filter_chain_is_innermost_first() -> None:
    body = (
        SUBJECT
        + select_md("outer", "inner", p("resolution", "60"))
        + select_md("inner", "base", p("startTime", "100"))
        + data("outer")
    )
    unit = one_unit(body)
    assert unit.subject.get("id") == "base"
    assert [f.get("id") for f in unit.filters] == ["inner", "outer"]
    assert unit.metadata.get("id") == "outer" and unit.ref == "outer"
    assert [md.get("id") for md in unit.request_metadata] == ["base", "inner", "outer"]
    assert unit.event_types == (PINGER_ET,)  # routing looks at the subject metadata


def test_missing_filter_target() -> None:
    item = failure(select_md("f", "nowhere", "") + data("f"))
    assert (item.code, item.text) == (codes.MERGE, "Metadata nowhere does not exist")
    assert item.ref == "f"


def test_filter_cycle() -> None:
    item = failure(select_md("a", "b", "") + select_md("b", "a", "") + data("a"))
    assert item.code == codes.MERGE
    assert item.text == "Metadata a appears multiple times in the chain"


def test_self_referencing_subject() -> None:
    assert failure(select_md("a", "a", "") + data("a")).code == codes.MERGE


def test_chain_length_is_bounded() -> None:
    n = RequestLimits().max_chain + 1
    body = SUBJECT + "".join(select_md(f"f{i}", f"f{i + 1}", "") for i in range(n))
    body = body.replace(f'metadataIdRef="f{n}"', 'metadataIdRef="base"') + data("f0")
    item = failure(body)
    assert item.code == codes.MERGE and "longer than" in item.text
    assert item.text.endswith("(max_chain)")
    shorter = body.replace('<nmwg:data id="d1" metadataIdRef="f0"/>', data("f2"))
    assert len(one_unit(shorter).filters) == n - 2


# --- merge chains ---------------------------------------------------------------------------


def test_merge_chain_folds_parent_into_child() -> None:
    # PingER test harness SDR-host-pair-merge: a filter inheriting its time window.
    body = (
        SUBJECT
        + f"""<nmwg:metadata id="time"><select:subject id="st"/>
            <select:parameters id="sp">{p("startTime", "1205176292")}
            {p("endTime", "1205186292")}</select:parameters>
            <nmwg:eventType>{SELECT_ET}</nmwg:eventType></nmwg:metadata>
            <nmwg:metadata id="m1" metadataIdRef="time">
            <select:subject id="s" metadataIdRef="base"/>
            <nmwg:eventType>{SELECT_ET}</nmwg:eventType></nmwg:metadata>"""
        + data("m1")
    )
    unit = one_unit(body)
    assert unit.subject.get("id") == "base"
    (merged,) = unit.filters
    assert merged.get("id") == "m1" and merged.get("metadataIdRef") is None
    assert merged.find(f"{{{ns.SELECT}}}parameters") is not None
    assert unit.select() == Select(start=1205176292.0, end=1205186292.0)


def merged_metadata(parent: str, child: str) -> etree._Element:
    body = (
        f'<nmwg:metadata id="parent">{parent}</nmwg:metadata>'
        f'<nmwg:metadata id="child" metadataIdRef="parent">{child}</nmwg:metadata>' + data("child")
    )
    return one_unit(body).subject


def event_types_of(md: etree._Element) -> list[str | None]:
    return [e.text for e in md.iterchildren(f"{{{ns.NMWG}}}eventType")]


def test_merge_event_types() -> None:
    et = "<nmwg:eventType>{}</nmwg:eventType>".format
    assert event_types_of(merged_metadata(et("a") + et("b"), "")) == ["a", "b"]
    assert event_types_of(merged_metadata(et("a") + et("b"), et("b") + et("c"))) == ["b"]
    assert event_types_of(merged_metadata("", et("c"))) == ["c"]


def test_merge_without_common_event_type_fails() -> None:
    body = (
        '<nmwg:metadata id="p"><nmwg:eventType>a</nmwg:eventType></nmwg:metadata>'
        '<nmwg:metadata id="c" metadataIdRef="p"><nmwg:eventType>b</nmwg:eventType>'
        "</nmwg:metadata>" + data("c")
    )
    item = failure(body)
    assert item.code == codes.MERGE and "no eventTypes in common" in item.text


def test_merge_parameters_child_wins() -> None:
    parent = f'<pinger:parameters id="pp">{p("count", "10")}{p("ttl", "64")}</pinger:parameters>'
    child = f'<pinger:parameters id="cp">{p("count", "5")}</pinger:parameters>'
    md = merged_metadata(parent, child)
    (block,) = md.findall(f"{{{ns.PINGER}}}parameters")
    assert block.get("id") == "cp"
    assert {e.get("name"): e.text for e in block} == {"count": "5", "ttl": "64"}
    other_ns = merged_metadata(parent, f'<nmwg:parameters id="n">{p("x", "1")}</nmwg:parameters>')
    assert len(other_ns.findall(f"{{{ns.PINGER}}}parameters")) == 1
    assert len(other_ns.findall(f"{{{ns.NMWG}}}parameters")) == 1


def test_merge_subjects() -> None:
    parent = (
        '<pinger:subject id="ps"><nmwgt:endPointPair><nmwgt:src value="a"/>'
        '<nmwgt:dst value="b"/></nmwgt:endPointPair></pinger:subject>'
    )
    child = (
        '<pinger:subject id="cs"><nmwgt:endPointPair><nmwgt:dst value="c"/>'
        "</nmwgt:endPointPair></pinger:subject>"
    )
    subject = merged_metadata(parent, child).find(f"{{{ns.PINGER}}}subject")
    assert subject is not None and subject.get("id") == "cs"
    pair = subject[0]
    values = {ns.split(e.tag)[1]: e.get("value") for e in pair}
    assert values == {"src": "a", "dst": "c"}
    inherited = merged_metadata(parent, "").find(f"{{{ns.PINGER}}}subject")
    assert inherited is not None and inherited.get("id") == "ps"


def test_merge_subjects_of_different_namespaces_fails() -> None:
    body = (
        '<nmwg:metadata id="p"><pinger:subject id="a"/></nmwg:metadata>'
        '<nmwg:metadata id="c" metadataIdRef="p"><nmwg:subject id="b"/></nmwg:metadata>' + data("c")
    )
    item = failure(body)
    assert item.code == codes.MERGE and "different namespaces" in item.text


def test_merge_with_key_fails() -> None:
    body = (
        '<nmwg:metadata id="p"><nmwg:key id="1"/></nmwg:metadata>'
        '<nmwg:metadata id="c" metadataIdRef="p"/>' + data("c")
    )
    assert failure(body).text == "Merging with a key metadata is invalid"


def test_merge_dangling_and_cyclic() -> None:
    dangling = failure('<nmwg:metadata id="c" metadataIdRef="gone"/>' + data("c"))
    assert (dangling.code, dangling.text) == (codes.MERGE, "Metadata gone does not exist")
    cycle = failure(
        '<nmwg:metadata id="a" metadataIdRef="b"/><nmwg:metadata id="b" metadataIdRef="a"/>'
        + data("a")
    )
    assert cycle.code == codes.MERGE and "appears multiple times" in cycle.text


def test_merge_results_are_reused_across_units() -> None:
    body = (
        SUBJECT
        + select_md("f", "base", p("startTime", "5"), ref="base2")
        + f'<nmwg:metadata id="base2"><nmwg:eventType>{SELECT_ET}</nmwg:eventType></nmwg:metadata>'
        + data("f", "d1")
        + data("f", "d2")
    )
    first, second = units(body)
    assert isinstance(first, Unit) and isinstance(second, Unit)
    assert first.filters[0] is second.filters[0]


# --- pairing --------------------------------------------------------------------------------


def test_structure_errors_and_good_units_keep_data_order() -> None:
    items = units(SUBJECT + data(None, "a") + data("base", "b") + data("nothing", "c"))
    assert [type(i) for i in items] == [UnitFailure, Unit, UnitFailure]
    first, _, third = items
    assert isinstance(first, UnitFailure) and isinstance(third, UnitFailure)
    assert first.code == codes.STRUCTURE and first.ref is None
    assert first.text == 'Data trigger with id "a" has no metadataIdRef'
    assert third.text == 'Data trigger with id "c" has no matching metadata'


@pytest.mark.parametrize(
    "body",
    [
        SUBJECT,
        data("nothing"),
        SUBJECT + data(""),
        "<nmwg:metadata><nmwg:eventType>x</nmwg:eventType></nmwg:metadata>" + data("x"),
    ],
    ids=["no-data", "no-metadata", "empty-ref", "metadata-without-id"],
)
def test_no_pair(body: str) -> None:
    with pytest.raises(NMWGError) as info:
        units(body)
    assert info.value.code == codes.NO_METADATA_DATA_PAIR
    assert info.value.text == "There were no metadata/data pairs found in the message"


# --- keys -----------------------------------------------------------------------------------


def test_key_parameters_and_event_type() -> None:
    body = (
        '<nmwg:metadata id="k"><nmwg:key id="key1"><nmwg:parameters id="kp">'
        + p("maKey", "abc")
        + p("eventType", "\n  http://ggf.org/ns/nmwg/characteristic/link/status/20070809\n")
        + p("startTime", "100")
        + "</nmwg:parameters></nmwg:key>"
        + "<nmwg:eventType>other</nmwg:eventType></nmwg:metadata>"
        + select_md("f", "k", p("endTime", "200"))
        + data("f")
    )
    unit = one_unit(body)
    assert unit.key is not None and unit.key.get("id") == "key1"
    assert unit.key_event_type == "http://ggf.org/ns/nmwg/characteristic/link/status/20070809"
    assert unit.key_parameters["maKey"] == "abc"
    as_attribute = body.replace(
        p("eventType", "\n  http://ggf.org/ns/nmwg/characteristic/link/status/20070809\n"),
        p("eventType", "", value="urn:x"),
    )
    assert one_unit(as_attribute).key_event_type == "urn:x"
    assert unit.select() == Select(start=100.0, end=200.0)


# --- select parameters ----------------------------------------------------------------------


def sel(*params: str) -> Select:
    block = etree.fromstring(f"<select:parameters {NS}>{''.join(params)}</select:parameters>")
    return read_select(list(block))


def test_plain_times() -> None:
    assert sel(p("startTime", " 100 "), p("endTime", "", value="200")) == Select(
        start=100.0, end=200.0
    )


def test_nmtm_time_forms() -> None:
    start = p("startTime", '<nmtm:time type="unix" value="100"/>')
    end = p("endTime", '<nmtm:time type="unix"><nmtm:value>200</nmtm:value></nmtm:time>')
    assert sel(start, end) == Select(start=100.0, end=200.0)
    ranged = (
        '<nmtm:time type="unix"><nmtm:start>10</nmtm:start>'
        '<nmtm:end type="unix">20</nmtm:end></nmtm:time>'
    )
    assert sel(p("startTime", ranged), p("endTime", ranged)) == Select(start=10.0, end=20.0)
    nested = (
        '<nmtm:time><nmtm:start type="unix"><nmtm:value>7</nmtm:value></nmtm:start></nmtm:time>'
    )
    assert sel(p("startTime", nested)).start == 7.0


def test_iso_times() -> None:
    iso = p("startTime", '<nmtm:time type="iso" value="2008-03-10T19:11:32Z"/>')
    naive = p("endTime", "2008-03-10T20:00:00", type="ISO")
    got = sel(iso, naive)
    assert got.start == datetime(2008, 3, 10, 19, 11, 32, tzinfo=UTC).timestamp()
    assert got.end == datetime(2008, 3, 10, 20, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ("gte", Select(start=50.0)),
        ("gt", Select(start=50.0, start_exclusive=True)),
        ("lte", Select(end=50.0)),
        ("lt", Select(end=50.0, end_exclusive=True)),
        ("eq", Select(start=50.0, end=50.0)),
        ("", Select(point=50.0)),
    ],
)
def test_time_operators(operator: str, expected: Select) -> None:
    attrs = {"operator": operator} if operator else {}
    assert sel(p("time", "50", **attrs)) == expected


def test_time_now() -> None:
    assert sel(p("time", "now")) == Select(now=True)
    assert sel(p("time", "now"), p("time", "-1")) == Select(point=-1.0)


def test_other_parameters() -> None:
    got = sel(
        p("resolution", "300"),
        p("consolidationFunction", "average"),
        p("setLimit", "1000"),
        p("duration", "60"),
        p("unrelated", "x"),
    )
    assert got == Select(resolution=300, consolidation="AVERAGE", limit=1000, duration=60.0)


def test_windows_intersect_and_later_values_override() -> None:
    got = sel(
        p("startTime", "100"),
        p("endTime", "500"),
        p("resolution", "60"),
        p("startTime", "50"),
        p("endTime", "400"),
        p("time", "400", operator="lt"),
        p("resolution", "5"),
    )
    assert got == Select(start=100.0, end=400.0, end_exclusive=True, resolution=5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ((p("startTime", "200"), p("endTime", "100")), "Empty time range"),
        ((p("time", "5", operator="gt"), p("time", "5", operator="lte")), "Empty time range"),
        ((p("startTime", "yesterday"),), "not a unix time"),
        ((p("startTime", "nan"),), "not a unix time"),
        ((p("startTime", ""),), "not a unix time"),
        ((p("startTime", "2008-13-01", type="iso"),), "not an ISO 8601 time"),
        ((p("startTime", "1", type="gps"),), "Unsupported time type"),
        ((p("resolution", "0"),), "not a positive integer"),
        ((p("setLimit", "-3"),), "not a positive integer"),
        ((p("setLimit", "١٢"),), "not a positive integer"),
        ((p("duration", "-1"),), "Invalid duration"),
        ((p("consolidationFunction", "MEDIAN"),), "consolidationFunction"),
        ((p("time", "5", operator="ne"),), "Unknown operator"),
    ],
)
def test_select_errors(params: tuple[str, ...], message: str) -> None:
    with pytest.raises(NMWGError) as info:
        sel(*params)
    assert info.value.code == codes.MA_SELECT
    assert message in info.value.text


def test_unit_select_precedence() -> None:
    # message < key < subject metadata < filters; windows intersect, resolution overridden.
    body = (
        '<nmwg:metadata id="k"><nmwg:key id="1"><nmwg:parameters id="kp">'
        + p("startTime", "10")
        + p("endTime", "1000")
        + "</nmwg:parameters></nmwg:key>"
        + f'<pinger:parameters id="pp">{p("resolution", "5")}{p("endTime", "900")}'
        + "</pinger:parameters>"
        + "</nmwg:metadata>"
        + select_md("f", "k", p("startTime", "20") + p("resolution", "60"))
        + data("f")
    )
    params = (
        f'<nmwg:parameters id="mp">{p("setLimit", "7")}{p("resolution", "1")}</nmwg:parameters>'
    )
    unit = one_unit(body, params=params)
    assert unit.select() == Select(start=20.0, end=900.0, resolution=60, limit=7)
