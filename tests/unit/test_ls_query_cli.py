"""`netsonde ls query`'s logic (services/lookup/lsquery.py) against the real app in process:
where it asks, how --type/--host/--event-type become key=value queries, paging past the
server's page size, and every failure said in one line (ClientError)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hosting import host
from netsonde import config
from netsonde import probes as tools
from netsonde.api.app import create_app
from netsonde.api.docs import PREFIX as API_PREFIX
from netsonde.nmwg import ns
from netsonde.nmwg.client import ClientError, exchange
from netsonde.nmwg.ls import ServiceInfo, ls_key, read_reply, register_request
from netsonde.services import SECTIONS
from netsonde.services import lookup as lookup_service
from netsonde.services.lookup import lsquery
from netsonde.services.lookup.nmwg import QUERY_EVENT_TYPES
from netsonde.services.lookup.records import record_in
from netsonde.services.lookup.registry import MAX_LIMIT, LookupRegistry
from netsonde.services.lookup.settings import LookupSection

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "lookup-token-0123456789"
BASE = "http://testserver"
RECORDS = BASE + lsquery.RECORDS_PATH
NS = {"nmwg": ns.NMWG, "xquery": ns.XQUERY}
PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
DECLARE = f'declare namespace nmwg="{ns.NMWG}"; declare namespace psservice="{ns.PSSERVICE}";'


def ls_client(tmp_path: Path, **section: Any) -> TestClient:
    ls = LookupSection(enabled=True, token=TOKEN, db=str(tmp_path / "lookup.sqlite"), **section)
    return TestClient(create_app(host(tmp_path / "a.sqlite", sections={"ls": ls})))


def register(c: TestClient, type_: str, **values: list[str]) -> str:
    body = {"type": [type_], **{k.replace("_", "-"): v for k, v in values.items()}}
    answer = c.post(RECORDS, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["uri"])


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """An LS holding services on three hosts, a host record and a metadata record."""
    with ls_client(tmp_path) as c:
        uris = {
            "ma-a": register(
                c,
                "service",
                service_type=["MA"],
                service_name=["a MA"],
                service_locator=["http://a.example.org:8075/perfSONAR_PS/services/pinger/ma"],
                psservice_eventtypes=["http://ggf.org/ns/nmwg/tools/pinger/2.0/"],
            ),
            "owamp-a": register(
                c, "service", service_type=["owamp"], service_locator=["tcp://a.example.org:861"]
            ),
            "ma-ab": register(  # a.example.org.evil is not a.example.org
                c, "service", service_type=["MA"], service_locator=["http://a.example.org.evil/"]
            ),
            "ma-v6": register(
                c, "service", service_type=["ma"], service_locator=["http://[2001:db8::1]:8075/"]
            ),
            "host-a": register(c, "host", host_name=["a.example.org"]),
            "md-b": register(
                c,
                "psmetadata",
                psmetadata_ma_locator=["http://b.example.org/"],
                psmetadata_event_types=["http://ggf.org/ns/nmwg/tools/pinger/2.0/"],
            ),
        }
        yield c, uris


def uris_of(records: list[dict[str, Any]]) -> list[str]:
    return [r["uri"] for r in records]


def test_the_records_path_is_where_the_app_mounts_the_lookup_api() -> None:
    assert f"{API_PREFIX}{lookup_service.rest.PREFIX}/records" == lsquery.RECORDS_PATH


@pytest.mark.parametrize(
    ("url", "records", "nmwg"),
    [
        (
            "http://h:8075",
            "http://h:8075/api/v1/lookup/records",
            "http://h:8075/perfSONAR_PS/services/LS",
        ),
        (
            "http://h:8075/",
            "http://h:8075/api/v1/lookup/records",
            "http://h:8075/perfSONAR_PS/services/LS",
        ),
        (
            "https://h/perfSONAR_PS/services/hLS",
            "https://h/api/v1/lookup/records",
            "https://h/perfSONAR_PS/services/hLS",
        ),
        (
            "http://[::1]:9995/x/perfSONAR_PS/services/LS/",
            "http://[::1]:9995/x/api/v1/lookup/records",
            "http://[::1]:9995/x/perfSONAR_PS/services/LS",
        ),
    ],
)
def test_a_url_says_where_key_value_queries_and_xqueries_go(
    url: str, records: str, nmwg: str
) -> None:
    assert lsquery.target(url) == lsquery.Target(records, nmwg)


@pytest.mark.parametrize("url", ["ftp://h/", "h:8075", "http:///x"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ClientError, match="not an http"):
        lsquery.target(url)


def parse(tmp_path: Path, *lines: str) -> config.Config:
    text = "\n".join(["[daemon]", f'data_dir = "{tmp_path}"', *lines]) + "\n"
    return config.parse(text, Path("t.toml"), tools.TOOLS, base=tmp_path, sections=SECTIONS)


def test_the_local_lookup_service_is_found_from_the_config(tmp_path: Path) -> None:
    cfg = parse(tmp_path, 'listen = "0.0.0.0:9075"', "[ls]", "enabled = true", f'token = "{TOKEN}"')
    assert lsquery.local_target(cfg).records_url == "http://127.0.0.1:9075/api/v1/lookup/records"
    cfg = parse(tmp_path, 'listen = "[::]:9075"', "[ls]", "enabled = true", f'token = "{TOKEN}"')
    assert lsquery.local_target(cfg).nmwg_url == "http://[::1]:9075/perfSONAR_PS/services/LS"
    plain = parse(tmp_path)
    with pytest.raises(ClientError, match=r"registers with none \(\[registration\] urls\): give"):
        lsquery.local_target(plain)
    # Without an [ls] of its own: the first lookup service it registers with.
    ls_url = "http://ls.example.org:9995/perfSONAR_PS/services/hLS"
    assert lsquery.local_target(plain, [ls_url, "http://other/"]) == lsquery.target(ls_url)


def test_by_service_type_case_insensitive_with_wildcards(fleet: Any) -> None:
    c, uris = fleet
    found = lsquery.find(c, RECORDS, lsquery.Wanted(service_type="MA"))
    assert uris_of(found) == [uris["ma-a"], uris["ma-ab"], uris["ma-v6"]]
    found = lsquery.find(c, RECORDS, lsquery.Wanted(service_type="o*"))
    assert uris_of(found) == [uris["owamp-a"]]


def test_by_host_in_a_locator_or_a_host_record_and_never_a_longer_name(fleet: Any) -> None:
    c, uris = fleet
    found = lsquery.find(c, RECORDS, lsquery.Wanted(host="a.example.org"))
    assert uris_of(found) == [uris["ma-a"], uris["owamp-a"], uris["host-a"]]
    found = lsquery.find(c, RECORDS, lsquery.Wanted(host="2001:db8::1"))
    assert uris_of(found) == [uris["ma-v6"]]
    found = lsquery.find(c, RECORDS, lsquery.Wanted(service_type="owamp", host="A.example.ORG"))
    assert uris_of(found) == [uris["owamp-a"]]


def test_by_event_type_in_a_service_or_a_metadata_record(fleet: Any) -> None:
    c, uris = fleet
    pinger = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
    found = lsquery.find(c, RECORDS, lsquery.Wanted(event_type=pinger))
    assert uris_of(found) == [uris["ma-a"], uris["md-b"]]
    both = lsquery.Wanted(service_type="MA", host="a.example.org", event_type=pinger)
    assert uris_of(lsquery.find(c, RECORDS, both)) == [uris["ma-a"]]
    assert lsquery.find(c, RECORDS, lsquery.Wanted(event_type="nothing")) == []


def test_nothing_asked_lists_everything_and_limit_cuts(fleet: Any) -> None:
    c, uris = fleet
    assert uris_of(lsquery.find(c, RECORDS, lsquery.Wanted())) == list(uris.values())
    assert uris_of(lsquery.find(c, RECORDS, lsquery.Wanted(), limit=2)) == list(uris.values())[:2]


def test_more_records_than_one_page_are_paged(tmp_path: Path) -> None:
    many = MAX_LIMIT + 5
    with ls_client(tmp_path, max_records_per_registrant=10_000) as c:
        registry = LookupRegistry(tmp_path / "lookup.sqlite", max_records_per_registrant=10_000)
        for i in range(many):
            registry.register(record_in("service", {"service-locator": f"http://h{i}/"}))
        registry.close()
        found = lsquery.find(c, RECORDS, lsquery.Wanted(host="h*"), limit=5000)
        assert len(found) == many and len(set(uris_of(found))) == many
        assert len(lsquery.find(c, RECORDS, lsquery.Wanted(), limit=MAX_LIMIT + 1)) == MAX_LIMIT + 1


def test_a_row_says_what_where_and_how_long_it_lives(fleet: Any) -> None:
    c, _ = fleet
    now = time.time()
    ma, *_, host_rec, md = lsquery.find(c, RECORDS, lsquery.Wanted())
    kind, stype, name, locator, left = lsquery.row(ma, now)
    assert (kind, stype, name) == ("service", "MA", "a MA")
    assert locator.startswith("http://a.example.org:8075/") and 7190 <= left <= 7201  # ttl 2h
    assert lsquery.row(host_rec, now)[:4] == ("host", "", "a.example.org", "a.example.org")
    assert lsquery.row(md, now)[3] == "http://b.example.org/"
    assert lsquery.row(ma, now + 10_000)[4] == 0


def test_refusals_are_said_in_one_line_with_the_servers_reason(fleet: Any, tmp_path: Path) -> None:
    c, _ = fleet
    with pytest.raises(ClientError, match=r"HTTP 400: .*more than 8 '\*' wildcards"):
        lsquery.find(c, RECORDS, lsquery.Wanted(service_type="*a" * 9))
    with pytest.raises(ClientError, match="HTTP 404: no netsonde lookup API here"):
        lsquery.find(c, BASE + "/nothing/here", lsquery.Wanted())
    with pytest.raises(ClientError, match="--limit"):
        lsquery.find(c, RECORDS, lsquery.Wanted(), limit=0)
    off = TestClient(create_app(host(tmp_path / "b.sqlite")))  # [ls] not enabled
    with off, pytest.raises(ClientError, match=r"HTTP 404: .*\[ls\] enabled = false"):
        lsquery.find(off, RECORDS, lsquery.Wanted())


def test_an_unreachable_lookup_service_is_one_line() -> None:
    import httpx

    with httpx.Client(timeout=5) as http, pytest.raises(ClientError, match="cannot reach"):
        lsquery.find(http, "http://127.0.0.1:1/api/v1/lookup/records", lsquery.Wanted())


def test_the_xquery_request_asks_for_native_output() -> None:
    query = 'declare namespace nmwg="http://ggf.org/ns/nmwg/base/2.0/"; /nmwg:store'
    message = etree.fromstring(etree.tostring(lsquery.xquery_request(query)))
    assert message.get("type") == "LSQueryRequest"
    md = message.find("nmwg:metadata", NS)
    assert md.findtext("xquery:subject", namespaces=NS) == query
    assert md.findtext("nmwg:eventType", namespaces=NS) == lsquery.XQUERY_EVENT_TYPE
    assert md.findtext("xquery:parameters/nmwg:parameter[@name='lsOutput']", namespaces=NS) == (
        "native"
    )
    assert message.find("nmwg:data", NS).get("metadataIdRef") == md.get("id")


def test_the_xquery_event_type_is_one_the_ls_takes() -> None:
    assert lsquery.XQUERY_EVENT_TYPE in QUERY_EVENT_TYPES


@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")
def test_xquery_answers_what_nmwg_and_json_registered_and_errors_name_their_code(
    tmp_path: Path,
) -> None:
    service = ServiceInfo("pinger MA", "http://a.example.org:8075/perfSONAR_PS/services/ma", "MA")
    item = etree.fromstring(
        f'<nmwg:metadata xmlns:nmwg="{ns.NMWG}" id="m1">'
        f"<nmwg:eventType>{PINGER}</nmwg:eventType></nmwg:metadata>"
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    nmwg_url = BASE + lsquery.NMWG_PATH
    with ls_client(tmp_path) as c:
        c.headers.update(auth)  # the token for the registration, sent along to the queries
        done = exchange(nmwg_url, etree.tostring(register_request(service, [item])), client=c)
        assert read_reply(done).ok, etree.tostring(done)
        register(c, "service", service_locator=["http://b.example.org/"], service_type=["MP"])

        key = ls_key(service.access_point)
        by_key = f'{DECLARE} /nmwg:store[@type="LSStore"]/nmwg:metadata[@id="{key}"]'
        (found,) = lsquery.xquery(nmwg_url, by_key, client=c)
        assert isinstance(found, etree._Element) and found.get("id") == key
        text = lsquery.xml_text(found, pretty=True)
        assert service.access_point in text and "\n  " in text  # indented for a person
        types = f"{DECLARE} for $t in //psservice:serviceType order by $t return string($t)"
        # The JSON-registered service is in the collection too; atomic values come as one text.
        assert lsquery.xquery(nmwg_url, types, client=c) == ["MA MP"]
        # The seed's rule: a "/" after whitespace starts at the collection (so "count( /").
        count = f"{DECLARE} count( /nmwg:store/nmwg:data[.//nmwg:eventType = '{PINGER}'])"
        assert lsquery.xquery(nmwg_url, count, client=c) == ["1"]
        nothing = f'{DECLARE} /nmwg:store/nmwg:metadata[@id = "no such key"]'
        assert lsquery.xquery(nmwg_url, nothing, client=c) == []
        for hostile, code in [
            ('doc("file:///etc/passwd")', "error.ls.xmldb"),
            ("count(1 to 10000000000000)", None),  # an error or an answer, never a hang
            ("this is not xquery (", "error.ls.xmldb"),
        ]:
            if code is None:
                try:
                    lsquery.xquery(nmwg_url, hostile, client=c, timeout=30)
                except ClientError as e:
                    assert "error.ls." in str(e)
                continue
            with pytest.raises(ClientError, match=code):
                lsquery.xquery(nmwg_url, hostile, client=c)


def test_an_answer_is_read_no_further_than_its_bound(
    fleet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, _ = fleet
    monkeypatch.setattr(lsquery, "MAX_ANSWER_BYTES", 1000)  # the fleet's answer is ~3 kB
    with pytest.raises(ClientError, match="answer larger than 1000 bytes"):
        lsquery.find(c, RECORDS, lsquery.Wanted())
    assert len(lsquery.find(c, RECORDS, lsquery.Wanted(service_type="owamp"))) == 1
