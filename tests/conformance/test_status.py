"""The Status MA against the legacy request vectors (../shared/conformance/requests/status).

The store is filled with the ranges the 2007 captured responses show (link1 full knowledge,
link2 partial) and with states for the 2008-2009 documents' links; a link definitions file
puts IN2P3_IGTMD-001 on a circuit between DFN-MUE and DFN-LRZ, the nodes
``PathStatusSetupDataRequest.xml`` names. Every request document must then get HTTP 200, a
well-formed answer of the right type, and no error result.

Response type: always ``<Type>Response`` (``SetupDataResponse``). The 2007 captures say
``SetupDataRequestResponse`` — a bug of the 2007 daemon (§3.1) that 2008+ clients do not
expect — so the captured type is checked to be that spelling and ours to be the 2008 one.

Shape: the captured 2007 datums are matched attribute for attribute (names, and values where
the store holds the same ranges), with the same prefixes and element names (nmwg:metadata →
nmwg:subject → nmtopo:link; ifevt:datum → ifevt:stateOper, ifevt:stateAdmin); the 2007 nmtopo
namespace URI (…/20070707/) is not compared, ours is the 2008 one (…/20070828/). The 2008
MetadataKey example of PROTOCOL.md §4.10 (reconstructed there, not a shipped file) is matched
the same way, and so is its store request.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from lxml import etree
from starlette.applications import Starlette

from hosting import status_store
from netsonde.archive import PerThread
from netsonde.http.soap import soap_routes
from netsonde.limits import RequestLimits
from netsonde.nmwg import build
from netsonde.services.status.nmwg import StatusState, status_ma
from netsonde.services.status.store import LinkStatusStore

from . import LEGACY, conformance_path, vectors

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = LEGACY  # reads ../shared/conformance: skipped when it is absent

ENDPOINT = "/perfSONAR_PS/services/status"
TOKEN = "conformance-token"
IGTMD1 = "urn:ogf:network:domain=internet2.edu:path=IN2P3_IGTMD-001"
IGTMD2 = "urn:ogf:network:domain=internet2.edu:path=IN2P3_IGTMD-002"
I2_PATH = "urn:ogf:network:domain=internet2.edu:path=DRAGON_dcn.internet2.edu_384943"
NS = {
    "nmwg": "http://ggf.org/ns/nmwg/base/2.0/",
    "ifevt": "http://ggf.org/ns/nmwg/event/status/base/2.0/",
    "topoid": "http://ogf.org/schema/network/topology/id/20070828/",
}
# link1/link2 history as request.status.link.history-resp.xml / database.dump-resp.xml show it
RANGES_2007 = [
    (1186427963, 1186428023),
    (1186428315, 1186428345),
    (1186428374, 1186428434),
    (1186428502, 1186428562),
    (1186428753, 1186428753),
    (1186428911, 1186432422),
]

LINKS_CONF = f"""<config>
  <domain>DFN</domain>
  <node name="DFN-MUE"><city>Munich</city><country>DE</country></node>
  <node name="DFN-LRZ"><city>Garching</city><country>DE</country></node>
  <circuit knowledge="full">
    <globalName>IN2P3-IGTMD-001</globalName>
    <localName>MUE-LRZ</localName>
    <segmentID>{IGTMD1}</segmentID>
    <endpoint type="endpoint" name="DFN-MUE"/>
    <endpoint type="endpoint" name="DFN-LRZ"/>
  </circuit>
</config>"""


def _fill(connections: PerThread[LinkStatusStore]) -> None:
    store = connections.get()
    for link, knowledge in (("link1", "full"), ("link2", "partial")):
        for start, end in RANGES_2007:
            # update=no opens a new range even in the same state; update=yes extends it
            store.update(link, start, "up", "normaloperation", knowledge, do_update=False)
            store.update(link, end, "up", "normaloperation", knowledge, do_update=True)
    for link in (IGTMD1, IGTMD2, I2_PATH):
        for t, oper in ((1144318520, "up"), (1144318530, "up"), (1233931000, "up"),
                        (1234010000, "degraded"), (1234040000, "up")):  # fmt: skip
            store.update(link, t, oper, "normaloperation")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, module_store_location: str) -> TestClient:
    """The Status MA with the captured history, its store on each backend in turn."""
    tmp = tmp_path_factory.mktemp("status")
    connections = status_store(module_store_location)
    _fill(connections)
    links = tmp / "links.conf"
    links.write_text(LINKS_CONF)
    state = StatusState(store=connections, token=TOKEN, definitions=links)
    return TestClient(
        Starlette(routes=soap_routes(RequestLimits(), {ENDPOINT: [status_ma(state)]}))
    )


def test_store_holds_the_captured_history(client: TestClient) -> None:
    history = answer(
        client, conformance_path("requests/status/2007/request.status.link.history.xml")
    )
    spans = [
        (int(d.get("startTime")), int(d.get("endTime")))
        for d in history.iter(f"{{{NS['ifevt']}}}datum")
    ]
    assert spans == RANGES_2007


def answer(client: TestClient, path: Path | bytes, **headers: str) -> etree._Element:
    body = path if isinstance(path, bytes) else path.read_bytes()
    r = client.post(ENDPOINT, content=body, headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/xml")
    assert r.content.startswith(build.ENVELOPE_HEAD)
    envelope = etree.fromstring(r.content)  # well-formed
    (message,) = envelope.iter(f"{{{NS['nmwg']}}}message")
    return message


def errors(message: etree._Element) -> list[str]:
    return [
        f"{e.text}: {message.findtext('.//nmwgr:datum', namespaces={'nmwgr': 'http://ggf.org/ns/nmwg/result/2.0/'})}"
        for e in message.iter(f"{{{NS['nmwg']}}}eventType")
        if (e.text or "").startswith("error.")
    ]


@pytest.mark.parametrize("path", vectors("requests/status/**/*.xml"))
def test_every_status_request_gets_a_well_formed_answer(
    client: TestClient, path: Path | None
) -> None:
    path = conformance_path(path)
    if path.name.endswith("-resp.xml"):
        captured = etree.parse(str(path)).getroot()
        assert captured.get("type") == "SetupDataRequestResponse"  # the 2007 spelling
        return
    request = etree.parse(str(path)).getroot()
    message = answer(client, path)
    assert message.get("type") == build.response_type(request.get("type"))
    assert errors(message) == []
    assert list(message.iter(f"{{{NS['ifevt']}}}datum")) or list(
        message.iter(f"{{{NS['nmwg']}}}key")
    )


def _shape(el: etree._Element) -> tuple:
    """prefix:name, attribute names and children's shapes (text and values left out)."""
    return (
        f"{el.prefix}:{etree.QName(el).localname}",
        tuple(sorted(a for a in el.attrib if a not in ("id", "metadataIdRef"))),
        tuple(_shape(c) for c in el if isinstance(c.tag, str)),
    )


def _datums_by_link(message: etree._Element) -> dict[str, list[dict[str, str]]]:
    """link id → its datums (attributes + states), through the metadata the data names."""
    links = {}
    for md in message.iter(f"{{{NS['nmwg']}}}metadata"):
        link = md.find("nmwg:subject/*[@id]", NS)
        if link is not None and md.get("metadataIdRef"):
            links[md.get("id")] = link.get("id")
    if not links:  # the 2007 capture: data name the request metadata directly
        for md in message.iter(f"{{{NS['nmwg']}}}metadata"):
            link = md.find("nmwg:subject/*[@id]", NS)
            if link is not None:
                links.setdefault(md.get("id"), link.get("id"))
    out: dict[str, list[dict[str, str]]] = {}
    for data in message.iter(f"{{{NS['nmwg']}}}data"):
        if data.get("metadataIdRef") not in links:
            continue
        for d in data.iter(f"{{{NS['ifevt']}}}datum"):
            row = dict(d.attrib)
            row["children"] = ",".join(f"{c.prefix}:{etree.QName(c).localname}" for c in d)
            row["states"] = ",".join(c.text or "" for c in d)
            out.setdefault(links[data.get("metadataIdRef")], []).append(row)
    return out


@pytest.mark.parametrize(
    "name",
    ["request.status.link.history", "request.status.database.dump", "request.status.link.status"],
)
def test_2007_captured_responses_matched(client: TestClient, name: str) -> None:
    captured = etree.parse(str(conformance_path(f"requests/status/2007/{name}-resp.xml"))).getroot()
    ours = answer(client, conformance_path(f"requests/status/2007/{name}.xml"))
    want, got = _datums_by_link(captured), _datums_by_link(ours)
    assert set(want) <= set(got)  # a dump also lists the other links of this store
    for link, rows in want.items():
        if name == "request.status.link.status" and link == "link1":
            # latest state: the capture was taken later than the history captures; only the
            # form is compared
            assert [sorted(r) for r in got[link]] == [sorted(r) for r in rows]
            continue
        assert got[link] == rows, link
    # same element shape for the metadata naming each link
    # (our echo of the request metadata is left out: the endpoint re-prefixes the request's
    # nmwg topology 3.0 namespace to its canonical nmwgtopo3, while the 2007 daemon echoed it
    # under nmtopo)
    ours_subjects = {
        _shape(s) for s in ours.iterfind("nmwg:metadata[@metadataIdRef]/nmwg:subject", NS)
    }
    assert ours_subjects == {_shape(s) for s in captured.iter(f"{{{NS['nmwg']}}}subject")}


MDK_2008 = b"""<nmwg:message type="MetadataKeyRequest" id="msg1" xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/">
  <nmwg:metadata id="meta0">
    <topoid:subject xmlns:topoid="http://ogf.org/schema/network/topology/id/20070828/">urn:ogf:network:domain=internet2.edu:*</topoid:subject>
    <nmwg:eventType>http://ggf.org/ns/nmwg/characteristic/link/status/20070809</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="data0" metadataIdRef="meta0"/>
</nmwg:message>"""


def test_2008_metadata_key_example_shape(client: TestClient) -> None:
    message = answer(client, MDK_2008)
    assert (message.get("type"), message.get("messageIdRef")) == ("MetadataKeyResponse", "msg1")
    mds = message.findall("nmwg:metadata", NS)
    assert mds[-1].get("id") == "meta0"  # request metadata echoed last
    ids = [md.findtext("topoid:subject", namespaces=NS) for md in mds[:-1]]
    assert ids == sorted([IGTMD1, IGTMD2, I2_PATH])
    for md in mds[:-1]:
        assert md.get("metadataIdRef") == "meta0"
        assert _shape(md) == ("nmwg:metadata", (), (("topoid:subject", (), ()),))
        (data,) = message.findall(f"nmwg:data[@metadataIdRef='{md.get('id')}']", NS)
        assert _shape(data) == (
            "nmwg:data",
            (),
            (
                (
                    "nmwg:key",
                    (),
                    (("nmwg:parameters", (), (("nmwg:parameter", ("name",), ()),) * 3),),
                ),
            ),
        )
        params = {p.get("name"): p.text for p in data.iter(f"{{{NS['nmwg']}}}parameter")}
        assert params == {
            "maKey": md.findtext("topoid:subject", namespaces=NS),
            "eventType": "http://ggf.org/ns/nmwg/characteristic/link/status/20070809",
            "responseFormat": "topoid",
        }
        # the key replays: latest state of that link, data referencing the key's metadata
        key = etree.tostring(data.find("nmwg:key", NS)).decode()
        replay = answer(
            client,
            f'<nmwg:message type="SetupDataRequest" xmlns:nmwg="{NS["nmwg"]}">'
            f'<nmwg:metadata id="k">{key}</nmwg:metadata><nmwg:data id="d" metadataIdRef="k"/>'
            "</nmwg:message>".encode(),
        )
        (d,) = replay.findall("nmwg:data", NS)
        assert d.get("metadataIdRef") == "k"
        (datum,) = d
        assert (datum.prefix, datum.get("knowledge"), datum.get("timeValue")) == (
            "ifevt",
            "full",
            "1234040000",
        )
        assert [f"{c.prefix}:{etree.QName(c).localname}" for c in datum] == [
            "ifevt:stateOper",
            "ifevt:stateAdmin",
        ]


STORE_2008 = b"""<nmwg:message type="MeasurementArchiveStoreRequest"
        xmlns:nmwg="http://ggf.org/ns/nmwg/base/2.0/">
<nmwg:metadata id="meta0">
  <nmwg:subject id="sub0">
    <topoid:subject xmlns:topoid="http://ogf.org/schema/network/topology/id/20070828/">urn:ogf:network:domain=internet2.edu:node=rtr.hous:port=eth0:link=Link_From_Hous_To_Losa</topoid:subject>
  </nmwg:subject>
  <nmwg:eventType>http://ggf.org/ns/nmwg/characteristic/link/status/20070809</nmwg:eventType>
  <nmwg:parameters>
    <nmwg:parameter name="knowledge">full</nmwg:parameter>
    <nmwg:parameter name="update">yes</nmwg:parameter>
  </nmwg:parameters>
</nmwg:metadata>
<nmwg:data id="data0" metadataIdRef="meta0">
<ifevt:datum xmlns:ifevt="http://ggf.org/ns/nmwg/event/status/base/2.0/"
  timeType="unix" timeValue="1217977800">
  <ifevt:stateAdmin>normaloperation</ifevt:stateAdmin>
  <ifevt:stateOper>up</ifevt:stateOper>
</ifevt:datum>
</nmwg:data>
</nmwg:message>"""


def test_2008_store_example(client: TestClient) -> None:
    refused = answer(client, STORE_2008)
    assert [e.text for e in refused.iter(f"{{{NS['nmwg']}}}eventType")] == [
        "error.common.authentication"
    ]
    message = answer(client, STORE_2008, Authorization=f"Bearer {TOKEN}")
    assert message.get("type") == "MeasurementArchiveStoreResponse"
    md = message.find("nmwg:metadata", NS)
    assert (md.get("metadataIdRef"), md.findtext("nmwg:eventType", namespaces=NS)) == (
        "meta0",
        "success.ma.added",
    )
