"""A SetupDataResponse's rows as text (nmwg.pinger.common_time_xml, datums_xml) spliced into
the serialized answer (build.Splices): the same bytes lxml writes for the same elements, with
the old rule for a datum's value (true/false, else the number rounded to 6 digits, exactly)."""

from __future__ import annotations

import math

from lxml import etree

from netsonde.nmwg import build, ns, pinger

VALUES: list[float | int] = [
    0.0,
    -0.0,
    1 / 3,
    0.1234565,  # a tie at the sixth digit, as binary has it
    1e16,
    1e-7,
    5e-324,
    1.7976931348623157e308,
    math.nan,
    math.inf,
    -math.inf,
    3,
    -12,
    2**70,
    123456.000001,
]


Rows = list[tuple[str, list[tuple[str, float | int | bool]]]]  # (unix time, datums) per row


def old_value_text(name: str, value: float | int | bool, digits: int | None) -> str:
    """The rule the lxml builder had (pinger.datum_text, before the rows became text)."""
    if name in pinger.BOOLEAN_DATUMS:
        return "true" if value else "false"
    return pinger.number(value if digits is None else round(value, digits))


def lxml_rows(rows: Rows, digits: int | None) -> bytes:
    """The rows built as elements in a response message, serialized by lxml."""
    message = build.message("SetupDataResponse", build.IdGen(), "m")
    data = build.data(build.IdGen(), "md", declare=("pinger",))
    message.append(data)
    for time, values in rows:
        common = etree.SubElement(
            data, ns.clark("nmwg:commonTime"), {"type": "unix", "value": time}
        )
        for name, value in values:
            attrs = {"name": name, "value": old_value_text(name, value, digits)}
            etree.SubElement(common, ns.clark("pinger:datum"), attrs)
    return build.envelope(message)


def text_rows(rows: Rows, digits: int | None) -> bytes:
    message = build.message("SetupDataResponse", build.IdGen(), "m")
    data = build.data(build.IdGen(), "md", declare=("pinger",))
    message.append(data)
    splices = build.Splices()
    text = "".join(pinger.common_time_xml(t, pinger.datums_xml(v, digits)) for t, v in rows)
    splices.add(data, text.encode(), pinger.ROW_PREFIXES)
    return splices.envelope(message)


def test_rows_as_text_are_the_bytes_lxml_writes() -> None:
    names = [*pinger.DATUM_NAMES, 'odd&<>"\n\tname']
    rows = [
        (str(1_700_000_000 + i), [(names[(i + k) % len(names)], v) for k, v in enumerate(VALUES)])
        for i in range(len(names))
    ]
    rows.append(("1700000999", []))  # no datums: lxml writes <nmwg:commonTime .../>
    rows.append(("1700001000", [("duplicates", True), ("outOfOrder", 0.0), ("clp", True)]))
    for digits in (6, None, 2):
        assert text_rows(rows, digits) == lxml_rows(rows, digits)
    # And parsed back, every value reads as the old rule wrote it.
    body = text_rows(rows, 6)
    got = [
        (d.get("name"), d.get("value"))
        for d in etree.fromstring(body).iter(ns.clark("pinger:datum"))
    ]
    want = [(n, old_value_text(n, v, 6)) for _, values in rows for n, v in values]
    assert got == want


def test_a_number_text_has_nothing_to_escape() -> None:
    for value in VALUES:
        for digits in (None, 6):
            (text,) = [
                t.split('value="')[1].split('"')[0]
                for t in [pinger.datums_xml([("minRtt", value)], digits)]
            ]
            assert text == old_value_text("minRtt", value, digits)
            assert set(text) <= set("0123456789.-+einfa"), text
            assert build.xml_attr(text) == text


def test_xml_attr_escapes_as_lxml_does() -> None:
    for raw in ["a&b<c>d\"e'f", "\n\r\t", "bad \x01 \ud800 char", "é😀]]>", ""]:
        element = etree.Element("x", v=build.xml_text(raw))
        assert (
            etree.tostring(element, encoding="UTF-8") == f'<x v="{build.xml_attr(raw)}"/>'.encode()
        )


def test_splices_replace_their_own_marks_only() -> None:
    message = build.message("SetupDataResponse", build.IdGen(), "m")
    splices = build.Splices()
    first = build.element("nmwg:data", {"id": "a"}, parent=message)
    second = build.element("nmwg:data", {"id": "b"}, parent=message)
    splices.add(first, b"<one/>", ())
    splices.add(second, b"<two/>", ())
    second.append(etree.Comment("0123abcd:0"))  # a mark of another token: left as it is
    out = splices.envelope(message)
    assert b'id="a"><one/></nmwg:data>' in out
    assert b'id="b"><two/><!--0123abcd:0--></nmwg:data>' in out
    assert out.count(b"<!--") == 1
    # No splices: the bytes envelope() writes.
    assert build.Splices().envelope(message) == build.envelope(message)


def test_remembered_float_texts_are_the_rule_and_bounded() -> None:
    values = [i / 7 for i in range(pinger._FLOAT_TEXTS_MAX + 100)]
    for _ in range(2):  # made, then looked up
        text = pinger.datums_xml([("meanRtt", v) for v in values], 6)
        want = "".join(
            f'<pinger:datum name="meanRtt" value="{old_value_text("meanRtt", v, 6)}"/>'
            for v in values
        )
        assert text == want
    assert len(pinger._FLOAT_TEXTS[6]) <= pinger._FLOAT_TEXTS_MAX
    # 0.0 and -0.0 are equal keys and different texts: neither is remembered.
    pairs = [("minRtt", 0.0), ("minRtt", -0.0), ("minRtt", 0.0)]
    assert pinger.datums_xml(pairs, 6).count('value="-0.0"') == 1
