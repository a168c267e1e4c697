"""The NMWG lookup service (services/lookup/nmwg.py) through the real app, over the one
registry the JSON records use: each message type and result code, leases and lsTTL, the
records an NMWG registration makes and the XML a JSON record gets, and the registry's
lease-key groups (a file of the first release opens and is upgraded)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hosting import host, lookup_client
from netsonde.api.app import create_app
from netsonde.nmwg import ns
from netsonde.nmwg.ls import ls_key
from netsonde.services.lookup.documents import item_hash
from netsonde.services.lookup.records import record_in
from netsonde.services.lookup.registry import LookupRegistry, Member
from netsonde.services.lookup.settings import LookupSection

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "lookup-nmwg-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LS = "/perfSONAR_PS/services/LS"
RECORDS = "/api/v1/lookup/records"
AP = "http://127.0.0.1:8085/perfSONAR_PS/services/pinger/ma"
AP2 = "http://127.0.0.1:8086/perfSONAR_PS/services/pinger/ma"
KEY, KEY2 = ls_key(AP), ls_key(AP2)
XQUERY_ET = "http://ggf.org/ns/nmwg/tools/org/perfsonar/service/lookup/xquery/1.0"
NSS = (
    f'xmlns:nmwg="{ns.NMWG}" xmlns:perfsonar="{ns.PERFSONAR}" xmlns:psservice="{ns.PSSERVICE}"'
    f' xmlns:nmwgt="{ns.NMWGT}" xmlns:xquery="{ns.XQUERY}"'
)
NSMAP = {"nmwg": ns.NMWG, "nmwgr": ns.NMWGR, "psservice": ns.PSSERVICE}


def client_for(tmp_path: Path, **section: Any) -> TestClient:
    return lookup_client(tmp_path, TOKEN, **section)


@pytest.fixture
def client(tmp_path: Path, store_location: str) -> Iterator[TestClient]:
    """The LS with its registry on each backend in turn."""
    with client_for(tmp_path, db=store_location) as c:
        yield c


def service_xml(access_point: str = AP, name: str = "PingER MA") -> str:
    return (
        "<perfsonar:subject><psservice:service>"
        f"<psservice:serviceName>{name}</psservice:serviceName>"
        f"<psservice:accessPoint>{access_point}</psservice:accessPoint>"
        "<psservice:serviceType>MA</psservice:serviceType>"
        "<psservice:serviceDescription>measures</psservice:serviceDescription>"
        "</psservice:service></perfsonar:subject>"
    )


def key_xml(key: str) -> str:
    return (
        '<nmwg:key><nmwg:parameters><nmwg:parameter name="lsKey">'
        f"{key}</nmwg:parameter></nmwg:parameters></nmwg:key>"
    )


def item(dst: str, src: str = "10.0.0.1", item_id: str = "i") -> str:
    return (
        f'<nmwg:metadata id="{item_id}"><nmwg:subject><nmwgt:endPointPair>'
        f'<nmwgt:src value="{src}"/><nmwgt:dst value="{dst}"/></nmwgt:endPointPair>'
        "</nmwg:subject><nmwg:eventType>http://ggf.org/ns/nmwg/tools/pinger/2.0/</nmwg:eventType>"
        '<nmwg:parameters><nmwg:parameter name="toolName">pinger</nmwg:parameter>'
        "</nmwg:parameters></nmwg:metadata>"
    )


def message(kind: str, metadata: str, data: list[str] | None = None, params: str = "") -> str:
    """One metadata ``m`` and one data per entry of ``data`` (the entry is its content)."""
    triggers = "".join(
        f'<nmwg:data id="d{n}" metadataIdRef="m">{d}</nmwg:data>'
        for n, d in enumerate(data if data is not None else [""])
    )
    block = f"<nmwg:parameters>{params}</nmwg:parameters>" if params else ""
    return (
        f'<nmwg:message type="{kind}" id="msg" {NSS}>{block}'
        f'<nmwg:metadata id="m">{metadata}</nmwg:metadata>{triggers}</nmwg:message>'
    )


def post(
    c: TestClient, body: str, headers: dict[str, str] | None = None, path: str = LS
) -> etree._Element:
    answer = c.post(path, content=body.encode(), headers=AUTH if headers is None else headers)
    assert answer.status_code == 200
    root = etree.fromstring(answer.content)
    return root.find(f".//{{{ns.NMWG}}}message")


def codes(m: etree._Element) -> list[str]:
    return [e.text or "" for e in m.iterfind("nmwg:metadata/nmwg:eventType", NSMAP)]


def texts(m: etree._Element) -> list[str]:
    out = [d.get("value", "") for d in m.iterfind("nmwg:data/nmwg:datum", NSMAP)]
    return out + [d.text or "" for d in m.iterfind("nmwg:data/nmwgr:datum", NSMAP)]


def register(c: TestClient, access_point: str = AP, items: list[str] | None = None) -> str:
    m = post(
        c, message("LSRegisterRequest", service_xml(access_point), items or [item("10.0.0.2")])
    )
    assert set(codes(m)) == {"success.ls.register"}, texts(m)
    return m.findtext(".//nmwg:parameter[@name='lsKey']", namespaces=NSMAP) or ""


def records(c: TestClient, **query: str) -> list[dict[str, Any]]:
    answer = c.get(RECORDS, params=query)
    assert answer.status_code == 200
    return list(answer.json())


def query(c: TestClient, text: str, native: bool = True, kind: str = "LSQueryRequest") -> Any:
    out = (
        '<xquery:parameters><nmwg:parameter name="lsOutput">native</nmwg:parameter>'
        "</xquery:parameters>"
        if native
        else ""
    )
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    md = f"<xquery:subject>{escaped}</xquery:subject><nmwg:eventType>{XQUERY_ET}</nmwg:eventType>"
    return post(c, message(kind, md + out), headers={})


# ---- register -----------------------------------------------------------------------------


def test_a_new_registration_answers_the_md5_key_and_makes_records(client: TestClient) -> None:
    items = [item("10.0.0.2", item_id="a"), item("10.0.0.3", item_id="b")]
    m = post(client, message("LSRegisterRequest", service_xml(), items))
    assert codes(m) == ["success.ls.register"] * 2
    assert hashlib.md5(AP.encode()).hexdigest() == KEY
    assert texts(m) == [f"[1] Data elements have been registered with key [{KEY}]"] * 2
    lskey = m.find("nmwg:metadata/nmwg:key/nmwg:parameters/nmwg:parameter", NSMAP)
    assert lskey is not None and lskey.get("name") == "lsKey" and lskey.text == KEY
    (svc,) = records(client, type="service")
    assert svc["service-locator"] == [AP] and svc["service-name"] == ["PingER MA"]
    assert svc["service-type"] == ["MA"] and svc["ls-key"] == [KEY]
    pairs = records(client, type="psmetadata")
    assert sorted(p["psmetadata-dst-address"][0] for p in pairs) == ["10.0.0.2", "10.0.0.3"]
    for p in pairs:
        assert p["psmetadata-ma-locator"] == [AP] and p["psmetadata-src-address"] == ["10.0.0.1"]
        assert p["psmetadata-event-types"] == ["http://ggf.org/ns/nmwg/tools/pinger/2.0/"]
        assert p["psmetadata-tool-name"] == ["pinger"]
    # all records of one registration share its lease
    assert len({r["expires"] for r in [svc, *pairs]}) == 1


def test_registering_the_same_items_again_is_an_upsert(client: TestClient) -> None:
    register(client, items=[item("10.0.0.2")])
    register(client, items=[item("10.0.0.2", item_id="other-id")])  # ids do not count
    assert len(records(client, type="psmetadata")) == 1
    assert len(records(client, type="service")) == 1


def test_registration_needs_the_token_as_header_or_parameter(client: TestClient) -> None:
    body = message("LSRegisterRequest", service_xml(), [item("10.0.0.2")])
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
        assert codes(post(client, body, headers)) == ["error.common.authentication"]
    assert records(client) == []
    param = f'<nmwg:parameter name="authToken">{TOKEN}</nmwg:parameter>'
    m = post(client, message("LSRegisterRequest", service_xml(), [item("10.0.0.2")], param), {})
    assert codes(m) == ["success.ls.register"]


def test_register_refusals(client: TestClient) -> None:
    no_access_point = (
        "<perfsonar:subject><psservice:service><psservice:serviceName>x</psservice:serviceName>"
        "</psservice:service></perfsonar:subject>"
    )
    m = post(client, message("LSRegisterRequest", no_access_point))
    assert codes(m) == ["error.ls.register.missing_value"]
    assert codes(post(client, message("LSRegisterRequest", ""))) == [
        "error.ls.register.missing_value"
    ]
    m = post(client, message("LSRegisterRequest", key_xml("f" * 32), [item("10.0.0.9")]))
    assert codes(m) == ["error.ls.register.key_not_found"]
    assert texts(m) == [f'Sent key "{"f" * 32}" was not registered.']
    gls = f"{service_xml()}<nmwg:eventType>http://ogf.org/ns/nmwg/tools/org/perfsonar/service/lookup/registration/summary/2.0</nmwg:eventType>"
    assert codes(post(client, message("LSRegisterRequest", gls))) == ["error.hls.register"]
    assert records(client) == []


def test_append_adds_items_under_the_key(client: TestClient) -> None:
    register(client)
    m = post(client, message("LSRegisterRequest", key_xml(KEY), [item("10.0.0.7")]))
    assert texts(m) == [f"[1] Data elements have been updated with key [{KEY}]"]
    pairs = records(client, type="psmetadata")
    assert sorted(p["psmetadata-dst-address"][0] for p in pairs) == ["10.0.0.2", "10.0.0.7"]
    assert all(p["psmetadata-ma-locator"] == [AP] for p in pairs)


def test_clobber_replaces_everything_of_the_key_once_per_message(client: TestClient) -> None:
    register(client, items=[item("10.0.0.2"), item("10.0.0.3", item_id="j")])
    # one clobbering metadata, three triggers: all three items end up under the new key
    items = [item("10.9.0.1", item_id="x"), item("10.9.0.2", item_id="y"), item("10.9.0.3")]
    m = post(client, message("LSRegisterRequest", key_xml(KEY) + service_xml(AP2), items))
    assert codes(m) == ["success.ls.register"] * 3
    assert set(texts(m)) == {f"[1] Data elements have been registered with key [{KEY2}]"}
    assert [r["service-locator"] for r in records(client, type="service")] == [[AP2]]
    pairs = records(client, type="psmetadata")
    assert sorted(p["psmetadata-dst-address"][0] for p in pairs) == [
        "10.9.0.1",
        "10.9.0.2",
        "10.9.0.3",
    ]
    keep = post(client, message("LSKeepaliveRequest", key_xml(KEY)))
    assert codes(keep) == ["error.ls.keepalive.key_not_found"]


# ---- keepalive, lsTTL ---------------------------------------------------------------------


def test_keepalive_renews_every_record_of_the_key_once_per_message(
    client: TestClient, tmp_path: Path
) -> None:
    params = '<nmwg:parameter name="lsTTL" units="seconds">60</nmwg:parameter>'
    body = message("LSRegisterRequest", service_xml(), [item("10.0.0.2")], params)
    assert codes(post(client, body)) == ["success.ls.register"]
    before = {r["uri"]: r["expires"] for r in records(client)}
    m = post(client, message("LSKeepaliveRequest", key_xml(KEY), ["", ""]))
    assert codes(m) == ["success.ls.keepalive"] * 2
    assert texts(m) == [
        f'Key "{KEY}" was updated.',
        f'Key "{KEY}" was already updated in this exchange, skipping.',
    ]
    after = {r["uri"]: r["expires"] for r in records(client)}
    assert after.keys() == before.keys() and all(after[u] > before[u] for u in before)
    assert codes(post(client, message("LSKeepaliveRequest", ""))) == [
        "error.ls.keepalive.key_not_found"
    ]
    assert texts(post(client, message("LSKeepaliveRequest", ""))) == ["Key not found in message."]


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        ('<nmwg:parameter name="lsTTL" units="minutes">3</nmwg:parameter>', 180),
        ('<nmwg:parameter name="lsTTL" units="hours">1</nmwg:parameter>', 3600),
        ('<nmwg:parameter name="lsTTL">90</nmwg:parameter>', 90),  # seconds by default
        ('<nmwg:parameter name="lsTTL" units="hours">100</nmwg:parameter>', 7200),  # max_ttl
        ('<nmwg:parameter name="lsTTL">-5</nmwg:parameter>', 600),  # unusable: [ls] ttl
        ('<nmwg:parameter name="lsTTL" units="hours">1e307</nmwg:parameter>', 600),  # inf s
        ('<nmwg:parameter name="lsTTL">nan</nmwg:parameter>', 600),
        ('<nmwg:parameter name="lsTTL" units="fortnights">1</nmwg:parameter>', 600),
        ("", 600),
    ],
)
def test_the_lease_is_lsttl_capped_at_max_ttl(
    tmp_path: Path, store_location: str, ttl: str, expected: int
) -> None:
    with client_for(tmp_path, db=store_location, ttl="10m", max_ttl="2h") as c:
        start = time.time()
        body = message("LSRegisterRequest", service_xml(), [item("10.0.0.2")], ttl)
        assert codes(post(c, body)) == ["success.ls.register"]
        registry = LookupRegistry(store_location)
        found = registry.group_service(KEY)
        assert found is not None
        assert start + expected - 2 <= found.expires <= time.time() + expected + 1


# ---- deregister ---------------------------------------------------------------------------


def test_deregister_items_or_everything(client: TestClient) -> None:
    register(client, items=[item("10.0.0.2"), item("10.0.0.3", item_id="j")])
    m = post(client, message("LSDeregisterRequest", key_xml(KEY), [item("10.0.0.3", item_id="z")]))
    assert codes(m) == ["success.ls.deregister"]
    assert texts(m) == [f'Removed [1] data elements for key "{KEY}".']
    assert [p["psmetadata-dst-address"] for p in records(client, type="psmetadata")] == [
        ["10.0.0.2"]
    ]
    m = post(client, message("LSDeregisterRequest", key_xml(KEY)))
    assert texts(m) == [f'Removed [1] data elements and service info for key "{KEY}".']
    assert records(client) == []
    m = post(client, message("LSDeregisterRequest", key_xml(KEY)))
    assert codes(m) == ["error.ls.deregister.key_not_found"]
    assert codes(post(client, message("LSDeregisterRequest", ""), {})) == [
        "error.common.authentication"
    ]


# ---- key ----------------------------------------------------------------------------------


def test_key_request_is_open_and_answers_the_key(client: TestClient) -> None:
    register(client)
    m = post(client, message("LSKeyRequest", service_xml()), headers={})
    assert codes(m) == []
    assert m.findtext("nmwg:data/nmwg:key//nmwg:parameter", namespaces=NSMAP) == KEY
    assert (
        m.findtext("nmwg:metadata/psservice:service/psservice:accessPoint", namespaces=NSMAP) == AP
    )
    assert codes(post(client, message("LSKeyRequest", service_xml(AP2)), {})) == [
        "error.ls.key.not_registered"
    ]
    assert codes(post(client, message("LSKeyRequest", ""), {})) == ["error.ls.key.service_missing"]


# ---- one registry: JSON and NMWG ------------------------------------------------------------


def test_a_json_service_is_seen_by_nmwg_and_kept_alive_by_its_key(client: TestClient) -> None:
    body = {"type": "service", "service-locator": [AP2], "service-name": ["json"], "ttl": 60}
    assert client.post(RECORDS, json=body, headers=AUTH).status_code == 201
    m = post(client, message("LSKeyRequest", service_xml(AP2)), {})
    assert m.findtext("nmwg:data/nmwg:key//nmwg:parameter", namespaces=NSMAP) == KEY2
    found = query(client, f'/nmwg:store/nmwg:metadata[@id="{KEY2}"]//psservice:serviceName')
    name = found.find(".//psservice:datum/psservice:serviceName", NSMAP)
    assert name is not None and name.text == "json"
    (before,) = records(client)
    time.sleep(1.1)
    assert codes(post(client, message("LSKeepaliveRequest", key_xml(KEY2)))) == [
        "success.ls.keepalive"
    ]
    (after,) = records(client)
    assert after["uri"] == before["uri"] and after["expires"] > before["expires"]
    m = post(client, message("LSDeregisterRequest", key_xml(KEY2)))
    assert codes(m) == ["success.ls.deregister"] and records(client) == []


def test_json_psmetadata_and_other_records_are_rendered_for_xquery(client: TestClient) -> None:
    pair = {
        "type": "psmetadata",
        "psmetadata-ma-locator": [AP],
        "psmetadata-src-address": ["10.5.0.1"],
        "psmetadata-dst-address": ["10.5.0.2"],
        "psmetadata-event-types": ["http://ggf.org/ns/nmwg/tools/pinger/2.0/"],
    }
    hostrec = {"type": "host", "host-name": ["ls.example.org"]}
    for body in (pair, hostrec):
        assert client.post(RECORDS, json=body, headers=AUTH).status_code == 201
    found = query(
        client,
        'declare namespace nmwgt="http://ggf.org/ns/nmwg/topology/2.0/";'
        f' /nmwg:store/nmwg:data[@metadataIdRef="{KEY}"]//nmwgt:dst/@value/string()',
    )
    assert found.findtext(".//psservice:datum", namespaces=NSMAP) == "10.5.0.2"
    found = query(
        client,
        'declare namespace n="http://netsonde.org/ns/lookup/record/1.0/";'
        ' string( /nmwg:store/n:record[@type="host"]/n:value[@name="host-name"])',
    )
    assert found.findtext(".//psservice:datum", namespaces=NSMAP) == "ls.example.org"


def test_the_hls_endpoint_is_the_same_service(client: TestClient) -> None:
    register(client)
    m = post(client, message("LSKeyRequest", service_xml()), {}, path="/perfSONAR_PS/services/hLS")
    assert m.findtext("nmwg:data/nmwg:key//nmwg:parameter", namespaces=NSMAP) == KEY


def test_an_ls_turned_off_says_so(tmp_path: Path) -> None:
    ls = LookupSection(enabled=False)
    with TestClient(create_app(host(tmp_path / "a.sqlite", sections={"ls": ls}))) as c:
        m = post(c, message("LSKeyRequest", service_xml()), {})
        assert codes(m) == ["error.ls.xmldb"]
        assert "enabled = false" in texts(m)[0]


# ---- the registry's groups ----------------------------------------------------------------


def member(dst: str, key: str = KEY) -> Member:
    el = etree.fromstring(f"<x {NSS}>{item(dst)}</x>")[0]
    h = item_hash(el)
    rec = record_in("psmetadata", {"psmetadata-ma-locator": [AP], "psmetadata-dst-address": [dst]})
    return Member(rec, f"<nmwg:data xmlns:nmwg='{ns.NMWG}' id='{key}/{h}'/>", f"ls:{key}/{h}")


def test_groups_share_one_lease_and_changes_are_logged(store_location: str) -> None:
    r = LookupRegistry(store_location)
    svc = Member(record_in("service", {"service-locator": [AP]}), f"<m id='{KEY}'/>")
    assert r.register_group(KEY, [member("10.0.0.2")], now=1000) is None  # append: no key yet
    assert r.register_group(KEY, [member("10.0.0.2")], service=svc, ttl=100, now=1000) == 1
    seq, changed = r.changes_since(0)
    assert changed == {KEY}
    assert r.renew_group(KEY, ttl=500, now=1050) == 2
    assert r.changes_since(seq) == (seq, set())  # a renewal changes no document
    docs = r.documents([KEY], now=1060)
    assert docs[KEY].expires == 1550 and docs[KEY].xml is not None
    assert docs[KEY].xml.index(f"id='{KEY}'") < docs[KEY].xml.index(f"id='{KEY}/")
    assert r.documents([KEY], now=1600)[KEY].xml is None  # expired: nothing live left
    assert r.delete_group(KEY, now=1100) == (1, 1)
    assert r.delete_group(KEY, now=1100) is None
    high, changed = r.changes_since(seq)
    assert high > seq and changed == {KEY}
    assert r.changes_since(high + 5)[1] is None  # a log this registry never had: reload


def test_a_registry_file_of_the_first_release_opens_and_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE records (uri TEXT PRIMARY KEY, stable_key TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL, registrant TEXT NOT NULL, body TEXT NOT NULL,
            created INTEGER NOT NULL, renewed INTEGER NOT NULL, expires INTEGER NOT NULL);
        CREATE TABLE record_values (uri TEXT NOT NULL REFERENCES records (uri) ON DELETE CASCADE,
            name TEXT NOT NULL, value TEXT NOT NULL COLLATE NOCASE);
        INSERT INTO records VALUES ('lookup/host/1', 'k', 'host', 'token',
            '{"host-name":["old.example.org"]}', 1, 1, 4000000000);
        INSERT INTO record_values VALUES ('lookup/host/1', 'host-name', 'old.example.org');
        """
    )
    db.commit()
    db.close()
    r = LookupRegistry(path)
    old = r.get("lookup/host/1")
    assert old is not None and old.values["host-name"] == ("old.example.org",)
    assert "old.example.org" in (r.documents()["lookup/host/1"].xml or "")
    svc = Member(record_in("service", {"service-locator": [AP]}), f"<m id='{KEY}'/>")
    assert r.register_group(KEY, [], service=svc) == 0
    assert r.group_live(KEY)
    r.close()
    assert LookupRegistry(path).group_live(KEY)  # opening again: nothing left to upgrade


def test_a_keepalive_with_an_unusable_lsttl_gets_the_default_lease(client: TestClient) -> None:
    register(client)
    huge = '<nmwg:parameter name="lsTTL" units="hours">1e307</nmwg:parameter>'
    m = post(client, message("LSKeepaliveRequest", key_xml(KEY), [""], huge))
    assert codes(m) == ["success.ls.keepalive"]
