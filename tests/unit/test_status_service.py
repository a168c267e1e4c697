"""The Status MA's NMWG handlers (api/status.py) and link definitions parser (status_links.py).

The store is filled by hand and every expected datum is written out: link A was up from 100 to
200, down at 300 (one second), unknown/maintenance (partial) from 400 to 500; link B up from
150 to 450.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from lxml import etree
from starlette.applications import Starlette

from hosting import status_state
from netsonde.http.soap import soap_routes
from netsonde.limits import RequestLimits
from netsonde.nmwg import ns
from netsonde.services.status.definitions import LinkDefinitionsError, parse_link_definitions
from netsonde.services.status.nmwg import combine_states, status_ma

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ENDPOINT = "/perfSONAR_PS/services/status"
LINK_STATUS = "http://ggf.org/ns/nmwg/characteristic/link/status/20070809"
A = "urn:ogf:network:domain=example.net:node=r1:port=eth0:link=A"
B = "urn:ogf:network:domain=example.net:node=r2:port=eth0:link=B"
OTHER = "urn:ogf:network:domain=other.org:node=x:port=eth0:link=C"
TOKEN = "s3cret"
NMWG = 'xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/"'
SELECT = 'xmlns:select="http://ggf.org/ns/nmwg/ops/select/2.0/"'
TOPOID = 'xmlns:topoid="http://ogf.org/schema/network/topology/id/20070828/"'
IFEVT = 'xmlns:ifevt="http://ggf.org/ns/nmwg/event/status/base/2.0/"'

LINKS_CONF = f"""<config>
  <domain>EXNET</domain>
  <node name="EXNET-R1"><city>Oslo</city><country>NO</country><latitude>59.9</latitude></node>
  <node name="r2"><institution>Example</institution></node>
  <circuit knowledge="full">
    <globalName>GLOBAL-1</globalName><localName>R1-R2</localName>
    <segmentID>{A}</segmentID><segmentID>{B}</segmentID>
    <endpoint type="endpoint" name="EXNET-R1"/><endpoint type="demarcpoint" name="r2"/>
  </circuit>
</config>"""


@pytest.fixture
def client(tmp_path: Path, store_location: str) -> TestClient:
    """The Status MA with its store on each backend in turn."""
    state = status_state(store_location, token=TOKEN, definitions=tmp_path / "links.conf")
    store = state.store.get()
    store.update(A, 100, "up", "normaloperation")
    store.update(A, 200, "up", "normaloperation")
    store.update(A, 300, "down", "normaloperation")
    store.update(A, 400, "unknown", "maintenance", "partial")
    store.update(A, 500, "unknown", "maintenance", "partial")
    store.update(B, 150, "up", "normaloperation")
    store.update(B, 450, "up", "normaloperation")
    store.update(OTHER, 100, "up", "normaloperation")
    links = tmp_path / "links.conf"
    links.write_text(LINKS_CONF)
    return TestClient(
        Starlette(routes=soap_routes(RequestLimits(), {ENDPOINT: [status_ma(state)]}))
    )


def post(client: TestClient, body: str, **headers: str) -> etree._Element:
    r = client.post(ENDPOINT, content=body.encode(), headers=headers)
    assert r.status_code == 200
    message = etree.fromstring(r.content).find(f".//{ns.clark('nmwg:message')}")
    assert message is not None
    return message


def q(qname: str) -> str:
    return ns.clark(qname)


def datums(el: etree._Element) -> list[dict[str, str]]:
    """Every ifevt:datum under ``el`` as attributes + oper/admin."""
    out = []
    for d in el.iter(q("ifevt:datum")):
        row = dict(d.attrib)
        row["oper"] = d.findtext(q("ifevt:stateOper"))
        row["admin"] = d.findtext(q("ifevt:stateAdmin"))
        out.append(row)
    return out


def result_codes(message: etree._Element) -> list[str]:
    return [
        e.text or ""
        for e in message.iter(q("nmwg:eventType"))
        if (e.text or "").startswith(("error.", "success."))
    ]


def rng(start: int, end: int, oper: str, admin: str = "normaloperation", k: str = "full") -> dict:
    return {
        "knowledge": k,
        "timeType": "unix",
        "timeValue": str(end),
        "startTime": str(start),
        "startTimeType": "unix",
        "endTime": str(end),
        "endTimeType": "unix",
        "oper": oper,
        "admin": admin,
    }


def topoid_request(
    subject: str, params: dict[str, str] | None = None, kind: str = "SetupData"
) -> str:
    select = ""
    ref = "m1"
    if params is not None:
        ps = "".join(f'<nmwg:parameter name="{k}">{v}</nmwg:parameter>' for k, v in params.items())
        select = (
            f'<nmwg:metadata id="m2"><select:subject id="s2" metadataIdRef="m1"/>'
            f"<select:parameters>{ps}</select:parameters></nmwg:metadata>"
        )
        ref = "m2"
    return (
        f'<nmwg:message type="{kind}Request" id="msg1" {NMWG} {SELECT} {TOPOID}>'
        f'<nmwg:metadata id="m1"><topoid:subject>{subject}</topoid:subject>'
        f"<nmwg:eventType>{LINK_STATUS}</nmwg:eventType></nmwg:metadata>{select}"
        f'<nmwg:data id="d1" metadataIdRef="{ref}"/></nmwg:message>'
    )


# ---- SetupDataRequest: points, ranges, history, latest -----------------------------------


def test_point_inside_a_range_answers_the_time_asked(client: TestClient) -> None:
    message = post(client, topoid_request(A, {"time": "150"}))
    assert message.get("type") == "SetupDataResponse"
    assert message.get("messageIdRef") == "msg1"
    assert datums(message) == [
        {"knowledge": "full", "timeType": "unix", "timeValue": "150", "oper": "up",
         "admin": "normaloperation"}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("t", "expected"),
    [("100", "up"), ("200", "up"), ("300", "down"), ("201", None), ("99", None), ("501", None)],
)
def test_point_edges_are_inclusive_and_gaps_are_empty(
    client: TestClient, t: str, expected: str | None
) -> None:
    found = datums(post(client, topoid_request(A, {"time": t})))
    assert [d["oper"] for d in found] == ([expected] if expected else [])


def test_topoid_response_format(client: TestClient) -> None:
    message = post(client, topoid_request(A, {"time": "150"}))
    md = message.find(q("nmwg:metadata"))
    assert md.get("metadataIdRef") == "m2"
    assert md.findtext(q("topoid:subject")) == A
    data = message.find(q("nmwg:data"))
    assert data.get("metadataIdRef") == md.get("id")
    # request metadata echoed after the output (2008)
    assert [m.get("id") for m in message.findall(q("nmwg:metadata"))][-2:] == ["m1", "m2"]


def test_latest_without_time_and_with_now(client: TestClient) -> None:
    latest = rng(400, 500, "unknown", "maintenance", "partial")
    assert datums(post(client, topoid_request(A))) == [latest]
    assert datums(post(client, topoid_request(A, {"time": "now"}))) == [latest]


def test_range_is_clipped_to_the_window(client: TestClient) -> None:
    found = datums(post(client, topoid_request(A, {"startTime": "150", "endTime": "450"})))
    assert found == [
        rng(150, 200, "up"),
        rng(300, 300, "down"),
        rng(400, 450, "unknown", "maintenance", "partial"),
    ]


def test_range_by_duration(client: TestClient) -> None:
    found = datums(post(client, topoid_request(A, {"startTime": "190", "duration": "110"})))
    assert found == [rng(190, 200, "up"), rng(300, 300, "down")]


def test_history_with_time_minus_one(client: TestClient) -> None:
    found = datums(post(client, topoid_request(A, {"time": "-1"})))
    assert found == [
        rng(100, 200, "up"),
        rng(300, 300, "down"),
        rng(400, 500, "unknown", "maintenance", "partial"),
    ]


def test_deprecated_time_parameter_in_subject_metadata(client: TestClient) -> None:
    body = (
        f'<nmwg:message type="SetupDataRequest" {NMWG} '
        f'xmlns:nmtopo="http://ggf.org/ns/nmwg/topology/base/3.0/">'
        f'<nmwg:metadata id="m1"><nmwg:subject id="s"><nmtopo:link id="{A}"/></nmwg:subject>'
        f"<nmwg:eventType>{LINK_STATUS}</nmwg:eventType>"
        f'<nmwg:parameters><nmwg:parameter name="time">300</nmwg:parameter></nmwg:parameters>'
        f'</nmwg:metadata><nmwg:data id="d1" metadataIdRef="m1"/></nmwg:message>'
    )
    message = post(client, body)
    link = message.find(f"{q('nmwg:metadata')}/{q('nmwg:subject')}/{q('nmtopo:link')}")
    assert link is not None and link.get("id") == A  # linkid response format
    assert [d["oper"] for d in datums(message)] == ["down"]


def test_wildcard_topoid_matches_stored_ids(client: TestClient) -> None:
    message = post(client, topoid_request("urn:ogf:network:domain=example.net:*"))
    subjects = [e.text for e in message.iter(q("topoid:subject"))]
    assert subjects[:2] == [A, B]
    assert subjects[2:] == ["urn:ogf:network:domain=example.net:*"]  # the echoed request


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (topoid_request("urn:ogf:network:domain=nowhere:*"), "error.ma.storage"),
        (topoid_request(A, {"startTime": "300"}), "error.ma.select"),
        (topoid_request(A, {"startTime": "300", "endTime": "200"}), "error.ma.select"),
        (topoid_request(A, {"startTime": "1", "endTime": "2", "duration": "1"}), "error.ma.select"),
        (topoid_request(A, {"time": "now", "startTime": "1", "endTime": "2"}), "error.ma.select"),
        (topoid_request(A, {"time": "abc"}), "error.ma.select"),
    ],
)
def test_bad_requests_get_their_codes(client: TestClient, body: str, code: str) -> None:
    message = post(client, body)
    assert message.get("type") == "SetupDataResponse"
    assert result_codes(message) == [code]


def test_two_subjects_are_ambiguous(client: TestClient) -> None:
    body = topoid_request(A).replace(
        "</topoid:subject>", f'</topoid:subject><nmwg:subject><link id="{A}"/></nmwg:subject>'
    )
    assert result_codes(post(client, body)) == ["error.ma.subject"]


# ---- MetadataKeyRequest and key round trip -----------------------------------------------


def key_params(message: etree._Element) -> list[list[tuple[str, str]]]:
    return [
        [(p.get("name"), p.text) for p in key.iter(q("nmwg:parameter"))]
        for key in message.iter(q("nmwg:key"))
    ]


def key_request(key: etree._Element, filter_params: dict[str, str] | None = None) -> str:
    key_xml = etree.tostring(key).decode()
    select, ref = "", "k1"
    if filter_params:
        ps = "".join(
            f'<select:parameter name="{k}">{v}</select:parameter>' for k, v in filter_params.items()
        )
        select = (
            f'<nmwg:metadata id="k2"><select:subject metadataIdRef="k1"/>'
            f"<select:parameters>{ps}</select:parameters></nmwg:metadata>"
        )
        ref = "k2"
    return (
        f'<nmwg:message type="SetupDataRequest" {NMWG} {SELECT}>'
        f'<nmwg:metadata id="k1">{key_xml}</nmwg:metadata>{select}'
        f'<nmwg:data id="d" metadataIdRef="{ref}"/></nmwg:message>'
    )


def test_metadata_key_per_link_with_its_window(client: TestClient) -> None:
    body = topoid_request(
        "urn:ogf:network:domain=example.net:*",
        {"startTime": "150", "endTime": "450"},
        "MetadataKey",
    )
    message = post(client, body)
    assert message.get("type") == "MetadataKeyResponse"
    assert key_params(message) == [
        [("maKey", link), ("eventType", LINK_STATUS), ("responseFormat", "topoid"),
         ("startTime", "150"), ("endTime", "450")]
        for link in (A, B)
    ]  # fmt: skip


def test_key_round_trip_replays_its_window(client: TestClient) -> None:
    mdk = post(client, topoid_request(A, {"startTime": "150", "endTime": "450"}, "MetadataKey"))
    key = next(mdk.iter(q("nmwg:key")))
    message = post(client, key_request(key))
    data = message.find(q("nmwg:data"))
    assert data.get("metadataIdRef") == "k1"  # a key answers with no new metadata
    assert datums(message)[0] == rng(150, 200, "up")
    assert len(datums(message)) == 3
    # a filter narrows the key's window
    narrowed = post(client, key_request(key, {"startTime": "160", "endTime": "250"}))
    assert datums(narrowed) == [rng(160, 200, "up")]
    # outside the key's window: an error
    outside = post(client, key_request(key, {"startTime": "600", "endTime": "700"}))
    assert result_codes(outside) == ["error.ma.select"]


def test_key_with_point_and_history(client: TestClient) -> None:
    for params, expected in (({"time": "300"}, ("time", "300")), ({"time": "-1"}, ("time", "-1"))):
        mdk = post(client, topoid_request(A, params, "MetadataKey"))
        assert key_params(mdk)[0][-1] == expected
        key = next(mdk.iter(q("nmwg:key")))
        found = datums(post(client, key_request(key)))
        assert len(found) == (1 if expected[1] == "300" else 3)


def test_invalid_keys(client: TestClient) -> None:
    def key(params: str) -> etree._Element:
        return etree.fromstring(
            f"<nmwg:key {NMWG}><nmwg:parameters>{params}</nmwg:parameters></nmwg:key>"
        )

    et = f'<nmwg:parameter name="eventType">{LINK_STATUS}</nmwg:parameter>'
    bad_format = key(f'<nmwg:parameter name="maKey">{A}</nmwg:parameter>{et}')
    wildcard = key(
        f'<nmwg:parameter name="maKey">urn:*</nmwg:parameter>{et}'
        '<nmwg:parameter name="responseFormat">topoid</nmwg:parameter>'
    )
    for k in (bad_format, wildcard):
        assert result_codes(post(client, key_request(k))) == ["error.ma.subject"]


# ---- MeasurementArchiveStoreRequest ------------------------------------------------------


def store_request(
    link: str,
    datum_list: list[tuple[str, str, str]],
    knowledge: str = "full",
    update: str = "yes",
    time_type: str = "unix",
    nested: bool = False,
) -> str:
    subject = f"<topoid:subject {TOPOID}>{link}</topoid:subject>"
    if nested:  # the 2008 client's form
        subject = f'<nmwg:subject id="s0">{subject}</nmwg:subject>'
    body = "".join(
        f'<ifevt:datum {IFEVT} timeType="{time_type}" timeValue="{t}">'
        f"<ifevt:stateAdmin>{admin}</ifevt:stateAdmin><ifevt:stateOper>{oper}</ifevt:stateOper>"
        "</ifevt:datum>"
        for t, oper, admin in datum_list
    )
    return (
        f'<nmwg:message type="MeasurementArchiveStoreRequest" {NMWG}>'
        f'<nmwg:metadata id="meta0">{subject}<nmwg:eventType>{LINK_STATUS}</nmwg:eventType>'
        f'<nmwg:parameters><nmwg:parameter name="knowledge">{knowledge}</nmwg:parameter>'
        f'<nmwg:parameter name="update">{update}</nmwg:parameter></nmwg:parameters>'
        f'</nmwg:metadata><nmwg:data id="data0" metadataIdRef="meta0">{body}</nmwg:data>'
        "</nmwg:message>"
    )


AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW = "urn:ogf:network:domain=example.net:node=r3:port=eth1:link=N"


def history(client: TestClient, link: str) -> list[dict]:
    return datums(post(client, topoid_request(link, {"time": "-1"})))


def test_store_update_yes_extends_and_splits(client: TestClient) -> None:
    body = store_request(NEW, [("10", "up", "normaloperation"), ("20", "up", "normaloperation"),
                               ("30", "down", "normaloperation")])  # fmt: skip
    message = post(client, body, **AUTH)
    assert message.get("type") == "MeasurementArchiveStoreResponse"
    assert result_codes(message) == ["success.ma.added"]
    assert history(client, NEW) == [rng(10, 20, "up"), rng(30, 30, "down")]


def test_store_update_no_refuses_a_covered_time(client: TestClient) -> None:
    post(client, store_request(NEW, [("10", "up", "normaloperation")], update="no"), **AUTH)
    again = store_request(NEW, [("10", "up", "normaloperation")], update="no")
    assert result_codes(post(client, again, **AUTH)) == ["error.common.storage.update"]
    later = store_request(NEW, [("20", "up", "normaloperation")], update="no", knowledge="partial")
    assert result_codes(post(client, later, **AUTH)) == ["success.ma.added"]
    assert history(client, NEW) == [rng(10, 10, "up"), rng(20, 20, "up", k="partial")]


def test_store_accepts_the_2008_clients_nested_subject(client: TestClient) -> None:
    body = store_request(NEW, [("10", "up", "normaloperation")], nested=True)
    assert result_codes(post(client, body, **AUTH)) == ["success.ma.added"]
    assert history(client, NEW) == [rng(10, 10, "up")]


def test_store_token_in_message_parameter(client: TestClient) -> None:
    body = store_request(NEW, [("10", "up", "normaloperation")]).replace(
        '<nmwg:metadata id="meta0">',
        f'<nmwg:parameters><nmwg:parameter name="authToken">{TOKEN}</nmwg:parameter>'
        '</nmwg:parameters><nmwg:metadata id="meta0">',
    )
    assert result_codes(post(client, body)) == ["success.ma.added"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "error.common.authentication"),
        ({"Authorization": "Bearer nope"}, "error.common.authentication"),
    ],
)
def test_store_refused_without_the_token(client: TestClient, headers: dict, code: str) -> None:
    body = store_request(NEW, [("10", "up", "normaloperation")])
    assert result_codes(post(client, body, **headers)) == [code]
    assert history(client, NEW) == []


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"knowledge": "some"}, "error.ma.parameters"),
        ({"update": "maybe"}, "error.ma.parameters"),
        ({"time_type": "iso"}, "error.ma.query.invalid_timestamp_type"),
        ({"datum_list": [("10", "sideways", "normaloperation")]}, "error.common.storage.update"),
        ({"datum_list": []}, "error.ma.query.incomplete_data"),
        ({"link": "urn:ogf:network:*"}, "error.ma.subject"),
    ],
)
def test_store_errors(client: TestClient, kwargs: dict, code: str) -> None:
    args: dict = {"link": NEW, "datum_list": [("10", "up", "normaloperation")], **kwargs}
    body = store_request(args.pop("link"), args.pop("datum_list"), **args)
    assert result_codes(post(client, body, **AUTH)) == [code]


def test_store_missing_state_and_with_filter(client: TestClient) -> None:
    body = store_request(NEW, [("10", "up", "normaloperation")])
    missing = body.replace("<ifevt:stateOper>up</ifevt:stateOper>", "")
    assert result_codes(post(client, missing, **AUTH)) == ["error.ma.query.incomplete_data"]
    filtered = body.replace(
        '<nmwg:data id="data0" metadataIdRef="meta0">',
        f'<nmwg:metadata id="f" {SELECT}><select:subject metadataIdRef="meta0"/>'
        '<select:parameters><nmwg:parameter name="time">1</nmwg:parameter></select:parameters>'
        '</nmwg:metadata><nmwg:data id="data0" metadataIdRef="f">',
    )
    assert result_codes(post(client, filtered, **AUTH)) == ["error.ma.select"]


# ---- E2EMon compat -----------------------------------------------------------------------


def path_status(params: dict[str, str] | None = None, subject: str = "") -> str:
    select, ref = "", "m1"
    if params:
        ps = "".join(f'<nmwg:parameter name="{k}">{v}</nmwg:parameter>' for k, v in params.items())
        select = (
            f'<nmwg:metadata id="m2"><select:subject metadataIdRef="m1"/>'
            f"<select:parameters>{ps}</select:parameters></nmwg:metadata>"
        )
        ref = "m2"
    return (
        f'<nmwg:message type="SetupDataRequest" {NMWG} {SELECT} '
        'xmlns:nmtl2="http://ggf.org/ns/nmwg/topology/l2/3.0/" '
        'xmlns:nmwgtopo3="http://ggf.org/ns/nmwg/topology/base/3.0/">'
        f'<nmwg:metadata id="m1">{subject}<nmwg:eventType>Path.Status</nmwg:eventType>'
        f'</nmwg:metadata>{select}<nmwg:data id="d1" metadataIdRef="{ref}"/></nmwg:message>'
    )


def compat_datums(message: etree._Element) -> list[tuple]:
    return [
        (d.get("startTime"), d.get("timeValue"), d.findtext(q("ifevt:stateOper")),
         d.findtext(q("ifevt:stateAdmin")), [etree.QName(c).localname for c in d])
        for d in message.iter(q("ifevt:datum"))
    ]  # fmt: skip


def test_compat_point_combines_segments(client: TestClient) -> None:
    message = post(client, path_status({"time": "150"}))
    # A up, B up → up; stateAdmin before stateOper (E2EMon form)
    assert compat_datums(message) == [
        (None, "150", "up", "normaloperation", ["stateAdmin", "stateOper"])
    ]
    assert message.find(q("nmwg:parameters")).findtext(q("nmwg:parameter")) == "EXNET"
    nodes = [n.get("id") for n in message.iter(q("nmwgtopo3:node")) if n.get("id")]
    assert nodes == ["EXNET-R1", "EXNET-R2"]  # r2 has no "-": domain-prefixed, upper-cased
    link = next(message.iter(f"{{{ns.NMTL2_E2EMON}}}link"))
    assert link.findtext(f"{{{ns.NMTL2_E2EMON}}}type") == "DOMAIN_Link"
    assert link.findtext(f"{{{ns.NMTL2_E2EMON}}}globalName") == "GLOBAL-1"
    # request metadata not echoed
    assert [
        m.get("id") for m in message.findall(q("nmwg:metadata")) if m.get("id") in ("m1", "m2")
    ] == []


def test_compat_range_periods(client: TestClient) -> None:
    message = post(client, path_status({"startTime": "100", "endTime": "500"}))
    assert [x[:4] for x in compat_datums(message)] == [
        ("100", "299", "up", "normaloperation"),  # A up [100, 200], B up [150, 450]
        ("300", "300", "down", "normaloperation"),  # down beats up
        ("301", "399", "up", "normaloperation"),  # B alone
        ("400", "450", "up", "maintenance"),  # B up beats A unknown (2008 precedence)
        ("451", "500", "unknown", "maintenance"),
    ]


def test_compat_subject_by_node_names(client: TestClient) -> None:
    subject = (
        "<nmwg:subject><nmtl2:link><nmwgtopo3:node><nmwgtopo3:name>EXNET-R1</nmwgtopo3:name>"
        "</nmwgtopo3:node></nmtl2:link></nmwg:subject>"
    )
    assert len(compat_datums(post(client, path_status({"time": "300"}, subject)))) == 1
    nowhere = subject.replace("EXNET-R1", "ELSEWHERE")
    assert result_codes(post(client, path_status({"time": "300"}, nowhere))) == ["error.ma.storage"]


def test_compat_topoid_subject(client: TestClient) -> None:
    subject = f"<topoid:subject {TOPOID}>{B}</topoid:subject>"
    assert len(compat_datums(post(client, path_status({"time": "300"}, subject)))) == 1
    nowhere = f"<topoid:subject {TOPOID}>urn:nowhere:*</topoid:subject>"
    assert result_codes(post(client, path_status(None, nowhere))) == ["error.ma.storage"]


def test_combine_states_precedence() -> None:
    assert combine_states([("up", "normaloperation"), ("down", "unknown")]) == (
        "down",
        "normaloperation",
    )
    assert combine_states([("up", "maintenance"), ("degraded", "troubleshooting")]) == (
        "degraded",
        "maintenance",
    )
    assert combine_states([("unknown", "unknown"), ("up", "unknown")]) == ("up", "unknown")
    assert combine_states([]) == ("unknown", "unknown")


def test_unconfigured_server(tmp_path: Path) -> None:
    unopenable = status_state(tmp_path)  # a directory: no store, and no link definitions
    routes = soap_routes(RequestLimits(), {ENDPOINT: [status_ma(unopenable)]})
    bare = TestClient(Starlette(routes=routes))
    assert result_codes(post(bare, path_status())) == ["error.configuration"]
    assert result_codes(post(bare, topoid_request(A))) == ["error.common.storage.open"]


# ---- link definitions file ---------------------------------------------------------------


def test_link_definitions_parsed() -> None:
    defs = parse_link_definitions(LINKS_CONF)
    assert defs.domain == "EXNET"
    assert defs.nodes["EXNET-R1"].latitude == 59.9
    assert defs.nodes["r2"].institution == "Example"
    (link,) = defs.links
    assert (link.global_name, link.local_name, link.link_ids, link.knowledge) == (
        "GLOBAL-1", "R1-R2", (A, B), "full"
    )  # fmt: skip
    assert [(e.name, e.type) for e in link.endpoints] == [
        ("EXNET-R1", "endpoint"), ("r2", "demarcpoint")
    ]  # fmt: skip
    assert link.line == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<config>\n<node/>\n</config>", "line 2: <node> needs a name"),
        ("<config><domain>D</domain>\n<node name='n'><latitude>north</latitude></node></config>",
         "line 2: <latitude>"),
        ("<config><domain>D</domain>\n\n<circuit><globalName>g</globalName><localName>l</localName>"
         "<segmentID>x</segmentID><endpoint type='endpoint' name='a'/></circuit></config>",
         "line 3: <circuit> needs exactly 2 endpoints"),
        ("<config><domain>D</domain>\n<link knowledge='most'/></config>", "line 2:"),
        ("<config>\n<domain>D</domain>\n<nodes/></config>", "line 3: unknown element <nodes>"),
        ("<config>\n<domain>D</domain></confi>", "line 2: not well-formed"),
        ("<config><node name='n'/></config>", "has no <domain>"),
    ],
)  # fmt: skip
def test_link_definitions_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(LinkDefinitionsError, match=message.replace("(", r"\(")):
        parse_link_definitions(text, "links.conf")


# ---- times no answer could print -----------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"time": "999999999999"},
        {"time": "1e30"},
        {"time": str(2**63 - 1)},
        {"time": "253402300800"},
        {"startTime": "0", "endTime": "1e30"},
        {"startTime": "1e30", "endTime": "2e30"},
        {"startTime": "-1e30", "endTime": "100"},
        {"startTime": "100", "duration": "1e300"},
    ],
)
def test_times_out_of_range_are_select_errors(client: TestClient, params: dict[str, str]) -> None:
    message = post(client, topoid_request(A, params))
    assert result_codes(message) == ["error.ma.select"]
    assert "internal" not in etree.tostring(message).decode()


def test_the_last_second_of_9999_is_a_time(client: TestClient) -> None:
    message = post(client, topoid_request(A, {"time": "253402300799"}))
    assert result_codes(message) == []
    assert datums(message) == []  # nothing known then: an empty data, not an error


@pytest.mark.parametrize("t", ["253402300800", "999999999999999", "9" * 5000])
def test_a_store_past_9999_is_refused_and_the_rest_still_answers(
    client: TestClient, t: str
) -> None:
    body = store_request(NEW, [("10", "up", "normaloperation"), (t, "up", "normaloperation")])
    message = post(client, body, **AUTH)
    # The code this handler gives every bad timeValue (PROTOCOL.md §4.9), not internal_error.
    assert result_codes(message) == ["error.ma.query.invalid_timestamp_type"]
    assert history(client, NEW) == []  # all or nothing
    assert [d["oper"] for d in history(client, B)] == ["up"]
    assert result_codes(post(client, topoid_request("urn:ogf:network:domain=example.net:*"))) == []
