"""The PingER MA against the project's own vectors (tests/vectors/pinger).

The app runs in-process over an archive built from ``archive.toml``; every vector named in
``facts.toml`` is posted and its answer must have the facts written there, validate against
the project's RELAX NG schema, keep ids unique and references resolvable, and use the
canonical prefixes. The store vectors write to an archive of their own, in order, and what
they wrote is read back.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from lxml import etree

from hosting import host
from netsonde.api.app import create_app

from . import OWN_VECTORS
from .own_vectors import (
    Endpoint,
    TestClient,
    check_common,
    facts,
    only_result_pairs,
    read,
    vector_names,
)
from .pinger_fixtures import (
    ALL_LOST,
    NS,
    Probe,
    archive_url,
    canonical_prefixes_only,
    datums,
    key_labels,
    populate,
    series,
    summary,
)

FAMILY = "pinger"
FACTS = facts(FAMILY)
VECTORS = {v["file"]: v for v in FACTS["vector"]}
SELECT_ET = "http://ggf.org/ns/nmwg/ops/select/2.0/"


def _archive() -> dict[str, Any]:
    with (OWN_VECTORS / FAMILY / "archive.toml").open("rb") as f:
        return tomllib.load(f)


ARCHIVE = _archive()


def _values(run: Mapping[str, Any]) -> dict[str, float | int | None]:
    if run.get("lost"):
        return dict(ALL_LOST)
    return summary(run["min_rtt"], lossPercent=run.get("loss", 0.0))


def build_archive(url: str, now: int) -> dict[str, str]:
    """archive.toml written to the archive at ``url``; label → archive key."""
    probes = [
        Probe(
            t["label"],
            t["source"],
            t["target"],
            t["packet_size"],
            t["count"],
            t["ttl"],
            t["interval"],
        )
        for t in ARCHIVE["test"]
    ]
    rows = {
        t["label"]: [(r["t"], _values(r)) for r in t.get("runs", [])]
        + [(now - r["ago"], _values(r)) for r in t.get("recent", [])]
        for t in ARCHIVE["test"]
    }
    return populate(url, now, probes, rows)


@dataclass
class PingerVectors:
    endpoint: Endpoint
    keys: dict[str, str]  # label → archive key
    now: int

    @classmethod
    def build(cls, location: str) -> PingerVectors:
        """Over the archive at ``location``: a SQLite file's path or a PostgreSQL URL."""
        now = int(time.time())
        url = archive_url(location)
        keys = build_archive(url, now)
        app = create_app(host(url, name=ARCHIVE["mp_name"], token=FACTS["token"]))
        endpoint = Endpoint(TestClient(app), FACTS["endpoint"], FACTS["schemas"])
        return cls(endpoint, keys, now)

    def document(self, name: str) -> bytes:
        values = {f"key:{label}": key for label, key in self.keys.items()}
        return read(FAMILY, name, {**values, "token": FACTS["token"]})

    def post(self, name: str, auth: str = "none") -> tuple[bytes, etree._Element]:
        document = self.document(name)
        headers = {"Authorization": f"Bearer {FACTS['token']}"} if auth == "header" else {}
        return document, self.endpoint.post(document, headers)

    def time(self, value: int | str) -> int:
        """A fact's time: unix seconds, or "now-N"."""
        if isinstance(value, str):
            assert value.startswith("now-"), value
            return self.now - int(value.removeprefix("now-"))
        return value


@pytest.fixture(scope="module")
def ma(module_store_location: str) -> PingerVectors:
    """On each backend in turn (the module runs once per backend)."""
    return PingerVectors.build(module_store_location)


def check_setup_data_chain(message: etree._Element) -> None:
    """Each row data → the PingER metadata (with the key) → the select metadata of the window."""
    metadata = {md.get("id"): md for md in message.findall("nmwg:metadata", NS)}
    for data in message.findall("nmwg:data[nmwg:commonTime]", NS):
        pinger_md = metadata[data.get("metadataIdRef")]
        assert pinger_md.find("pinger:subject", NS) is not None
        assert pinger_md.find("nmwg:key", NS) is not None
        select_md = metadata[pinger_md.get("metadataIdRef")]
        assert select_md.findtext("nmwg:eventType", namespaces=NS) == SELECT_ET
        window = {
            p.get("name"): int(p.get("value", ""))
            for p in select_md.iterfind("select:parameters/nmwg:parameter", NS)
        }
        times = [int(c.get("value", "")) for c in data.findall("nmwg:commonTime", NS)]
        assert all(window["startTime"] <= t <= window["endTime"] for t in times), (window, times)


def rows_by_time(message: etree._Element, key: str) -> dict[int, list[tuple[str, str]]]:
    """commonTime value → its datums, for the data of the test with ``key``."""
    metadata = {md.get("id"): md for md in message.findall("nmwg:metadata", NS)}
    out = {}
    for data in message.findall("nmwg:data[nmwg:commonTime]", NS):
        md_key = metadata[data.get("metadataIdRef")].find("nmwg:key", NS)
        if md_key is not None and md_key.get("id") == key:
            commons = data.findall("nmwg:commonTime", NS)
            out.update({int(c.get("value", "")): datums(c) for c in commons})
    return out


def check_datum_order(message: etree._Element) -> None:
    order = FACTS["datum_order"]
    for common in message.iterfind("nmwg:data/nmwg:commonTime", NS):
        names = [name for name, _ in datums(common)]
        assert names == sorted(names, key=order.index), names


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_pinger_vector(name: str, ma: PingerVectors) -> None:
    fact = VECTORS[name]
    document, message = ma.post(name)
    check_common(message, document, fact)
    assert canonical_prefixes_only(message) == []
    if fact.get("codes"):
        only_result_pairs(message)
    labels = {key: label for label, key in ma.keys.items()}
    if "keys" in fact:
        assert sorted(key_labels(message, labels)) == sorted(fact["keys"])
        for data in message.findall("nmwg:data", NS):  # the key twice: metadata and data
            md = message.find(f"nmwg:metadata[@id='{data.get('metadataIdRef')}']", NS)
            assert md.find("nmwg:key", NS).get("id") == data.find("nmwg:key", NS).get("id")
    if "series" in fact:
        want = {label: [ma.time(t) for t in times] for label, times in fact["series"].items()}
        assert series(message, labels) == want
        check_setup_data_chain(message)
        check_datum_order(message)
    if "order" in fact:
        found = [k.get("id") for k in message.iterfind("nmwg:metadata/nmwg:key", NS)]
        assert [labels[k] for k in found] == fact["order"]
    for label, by_time in fact.get("values", {}).items():
        rows = rows_by_time(message, ma.keys[label])
        for t, values in by_time.items():
            row = dict(rows[int(t)])
            assert {n: row.get(n) for n in values} == values, (label, t, row)
    for label, by_time in fact.get("names", {}).items():
        rows = rows_by_time(message, ma.keys[label])
        for t, names in by_time.items():
            assert [n for n, _ in rows[int(t)]] == names


def test_every_pinger_vector_has_facts() -> None:
    used = set(VECTORS) | {s["file"] for s in FACTS["store"]} | {FACTS["stored"]["file"]}
    assert set(vector_names(FAMILY)) == used
    # and every fact says what the answer holds: result codes, or keys, or rows
    assert all(v.get("codes") or {"keys", "series"} & set(v) for v in VECTORS.values())


def test_the_vectors_cover_both_request_kinds_and_their_failures() -> None:
    kinds = {(v["type"], bool(v.get("codes"))) for v in VECTORS.values()}
    assert kinds == {
        ("MetadataKeyResponse", False),
        ("MetadataKeyResponse", True),
        ("SetupDataResponse", False),
        ("SetupDataResponse", True),
        ("ErrorResponse", True),
    }


def test_a_key_from_a_metadata_key_answer_gets_its_data(ma: PingerVectors) -> None:
    """The round trip a client makes: MetadataKeyRequest, then the key it got back in a
    SetupDataRequest (instead of the archive's key the vector is otherwise filled with)."""
    _, keys = ma.post("mdk-by-pair.xml")
    (key,) = {k.get("id", "") for k in keys.iterfind(".//nmwg:key", NS)}
    document = read(FAMILY, "sd-by-key-window.xml", {"key:near": key})
    message = ma.endpoint.post(document)
    fact = VECTORS["sd-by-key-window.xml"]
    check_common(message, document, fact)
    labels = {k: label for label, k in ma.keys.items()}
    assert series(message, labels) == fact["series"]


def test_answers_are_schema_checked_and_the_schema_can_fail(ma: PingerVectors) -> None:
    """Every answer went through the pinger grammar (Endpoint.post); the grammar rejects the
    2008 MA's misspelt ``lostPercent`` and a row-less data."""
    before = ma.endpoint.validated["pinger-response.rng"]
    _, message = ma.post("sd-by-key-window.xml")
    assert ma.endpoint.validated["pinger-response.rng"] == before + 1
    grammars = ma.endpoint.grammars
    datum = message.find(".//pinger:datum[@name='lossPercent']", NS)
    datum.set("name", "lostPercent")
    assert grammars.errors("pinger-response.rng", message) != []
    _, message = ma.post("mdk-by-pair.xml")
    message.find("nmwg:data", NS).clear()
    assert grammars.errors("pinger-response.rng", message) != []


# --- stores ------------------------------------------------------------------------------


Stores = tuple[PingerVectors, list[tuple[bytes, etree._Element]]]


@pytest.fixture(scope="module")
def stores(
    module_store_location: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Stores:
    """A fresh archive on the module's backend, the store vectors posted to it in order;
    (request, answer) of each."""
    if "://" in module_store_location:  # PostgreSQL: a second database
        location = request.getfixturevalue("pg_cluster").database("stores")
    else:
        location = str(tmp_path_factory.mktemp("pinger-stores") / "archive.sqlite")
    ma = PingerVectors.build(location)
    return ma, [ma.post(fact["file"], auth=fact["auth"]) for fact in FACTS["store"]]


@pytest.mark.parametrize("index", range(len(FACTS["store"])))
def test_store_vector(index: int, stores: Stores) -> None:
    fact = FACTS["store"][index]
    document, message = stores[1][index]
    check_common(message, document, fact)
    only_result_pairs(message)
    (data,) = etree.fromstring(document).findall("nmwg:data", NS)
    (result_md,) = message.findall("nmwg:metadata", NS)
    assert result_md.get("metadataIdRef") == data.get("metadataIdRef")


def test_what_the_stores_wrote_reads_back(stores: Stores) -> None:
    ma = stores[0]
    fact = FACTS["stored"]
    document, message = ma.post(fact["file"])
    check_common(message, document, fact)
    check_setup_data_chain(message)
    metadata = {md.get("id"): md for md in message.findall("nmwg:metadata", NS)}
    rows = [
        (metadata[data.get("metadataIdRef")], common)
        for data in message.findall("nmwg:data", NS)
        for common in data.findall("nmwg:commonTime", NS)
    ]
    assert len(rows) == len(fact["rows"])
    for (md, common), row in zip(rows, fact["rows"], strict=True):
        assert md.find(".//nmwgt:src", NS).get("value") == row["src"]
        assert md.find(".//nmwgt:dst", NS).get("value") == row["dst"]
        found = md.iterfind("pinger:parameters/nmwg:parameter", NS)
        params = {p.get("name"): p.get("value") for p in found}
        assert {k: params.get(k) for k in row["parameters"]} == row["parameters"]
        assert int(common.get("value")) == row["time"]
        values = dict(datums(common))
        assert {k: values.get(k) for k in row["values"]} == row["values"]
