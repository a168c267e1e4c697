"""The Status MA against the project's own vectors (tests/vectors/status).

The store starts empty and is filled by the ``fill`` store vectors, in order; every other vector
is then posted and its answer must have the facts of ``facts.toml``: the states per link (in
2008 datum form), the keys, the E2EMon circuits with their combined states, the request
metadata echoed, or the result code of a refusal. Every answer validates against the project's
RELAX NG schema of the Status MA's answers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from starlette.applications import Starlette

from hosting import status_state
from netsonde.http.soap import soap_routes
from netsonde.limits import RequestLimits
from netsonde.nmwg import ns
from netsonde.services.status.nmwg import status_ma

from . import OWN_VECTORS
from .own_vectors import (
    NS,
    Endpoint,
    TestClient,
    check_common,
    facts,
    only_result_pairs,
    read,
    vector_names,
)
from .pinger_fixtures import canonical_prefixes_only

FAMILY = "status"
FACTS = facts(FAMILY)
VECTORS = {v["file"]: v for v in FACTS["vector"] if v.get("auth") != "none"}
REFUSED_WITHOUT_TOKEN = [v for v in FACTS["vector"] if v.get("auth") == "none"]
LINKS: dict[str, str] = FACTS["links"]
ALIASES = {urn: alias for alias, urn in LINKS.items()}
STATUS_NS = {
    **NS,
    "topoid": ns.TOPOID,
    "nmtopo": ns.NMTOPO,
    "ifevt": ns.IFEVT,
    "nmwgtopo3": ns.NMWGTOPO3,
    "nmtl2": ns.NMTL2_E2EMON,
}


def endpoint_for(db: str, definitions: Path | None) -> Endpoint:
    state = status_state(db, token=FACTS["token"], definitions=definitions)
    routes = soap_routes(RequestLimits(), {FACTS["endpoint"]: [status_ma(state)]})
    return Endpoint(TestClient(Starlette(routes=routes)), FACTS["endpoint"], FACTS["schemas"])


@dataclass
class Posted:
    document: bytes
    message: etree._Element
    sent: float  # time.time() around the request: E2EMon's "now"
    answered: float


def post(
    endpoint: Endpoint, fact: Mapping[str, Any], values: Mapping[str, str] | None = None
) -> Posted:
    document = read(FAMILY, fact["file"], {"token": FACTS["token"], **(values or {})})
    auth = fact.get("auth", "none")
    headers = {"Authorization": f"Bearer {FACTS['token']}"} if auth == "header" else {}
    sent = time.time()
    message = endpoint.post(document, headers)
    return Posted(document, message, sent, time.time())


@pytest.fixture(scope="module")
def filled(module_store_location: str) -> tuple[Endpoint, list[Posted]]:
    """The endpoint, its store (on each backend in turn) filled by the fill vectors (their
    answers, in order)."""
    endpoint = endpoint_for(module_store_location, OWN_VECTORS / FAMILY / FACTS["definitions"])
    return endpoint, [post(endpoint, fact) for fact in FACTS["fill"]]


# --- reading answers ---------------------------------------------------------------------


def _link_of(md: etree._Element) -> tuple[str, str]:
    """(alias of the link, response format) of a per-link metadata."""
    topoid = md.findtext("topoid:subject", namespaces=STATUS_NS)
    if topoid is not None:
        return ALIASES.get(topoid.strip(), topoid), "topoid"
    link = md.find("nmwg:subject/nmtopo:link", STATUS_NS)
    assert link is not None, etree.tostring(md)
    return ALIASES.get(link.get("id", ""), link.get("id", "")), "linkid"


def _datum(el: etree._Element) -> dict[str, Any]:
    """A datum as the facts write it; the time types are all unix."""
    for name in ("timeType", "startTimeType", "endTimeType"):
        assert el.get(name) in (None, "unix"), etree.tostring(el)
    out: dict[str, Any] = {"time": int(el.get("timeValue", ""))}
    if el.get("knowledge") is not None:
        out["knowledge"] = el.get("knowledge")
    if el.get("startTime") is not None:
        out["start"], out["end"] = int(el.get("startTime", "")), int(el.get("endTime", ""))
    states = [(etree.QName(c).localname, c.text) for c in el]
    out.update({name.removeprefix("state").lower(): text for name, text in states})
    out["order"] = [name for name, _ in states]
    return out


def states(message: etree._Element, requested: set[str]) -> list[dict[str, Any]]:
    metadata = {md.get("id"): md for md in message.findall("nmwg:metadata", NS)}
    out = []
    for data in message.findall("nmwg:data", NS):
        if data.find("nmwg:key", NS) is not None or data.find("nmwgr:datum", NS) is not None:
            continue
        ref = data.get("metadataIdRef", "")
        if ref in requested:
            entry: dict[str, Any] = {"link": f"request:{ref}"}
        else:
            link, fmt = _link_of(metadata[ref])
            entry = {"link": link, "format": fmt}
        entry["datums"] = [_datum(d) for d in data.findall("ifevt:datum", STATUS_NS)]
        out.append(entry)
    return out


def key_parameters(data: etree._Element) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in data.iterfind("nmwg:key/nmwg:parameters/nmwg:parameter", NS):
        value = (p.text or "").strip()
        if p.get("name") == "maKey":
            params.setdefault("maKey", []).append(ALIASES.get(value, value))
        else:
            params[p.get("name")] = value
    return params


def expected_datums(
    want: list[Mapping[str, Any]], got: list[dict[str, Any]], posted: Posted, oper_first: bool
) -> list[dict[str, Any]]:
    """The facts' datums in the form :func:`_datum` reads. ``time = "now"`` stands for a time
    within the exchange: it takes the answer's time if that lies within it."""
    out = []
    for i, fact in enumerate(want):
        datum = {k: v for k, v in fact.items() if k not in ("oper", "admin")}
        within = i < len(got) and int(posted.sent) <= got[i]["time"] <= posted.answered
        if fact.get("time") == "now" and within:
            datum["time"] = got[i]["time"]
        datum.update(oper=fact["oper"], admin=fact["admin"])
        order = ["stateOper", "stateAdmin"]
        datum["order"] = order if oper_first else order[::-1]
        out.append(datum)
    return out


def seen(got: list[dict[str, Any]], i: int, field: str) -> list[dict[str, Any]]:
    return got[i].get(field, []) if i < len(got) else []


# --- the vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(FACTS["fill"])))
def test_fill_vector(index: int, filled: tuple[Endpoint, list[Posted]]) -> None:
    fact = FACTS["fill"][index]
    posted = filled[1][index]
    check_common(posted.message, posted.document, fact)
    only_result_pairs(posted.message)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_status_vector(name: str, filled: tuple[Endpoint, list[Posted]]) -> None:
    fact = VECTORS[name]
    check_answer(post(filled[0], fact), fact)


@pytest.mark.parametrize(
    "fact", FACTS["replay"], ids=[f"{r['mdk']}#{r['key']}" for r in FACTS["replay"]]
)
def test_a_key_sent_back_as_given(
    fact: dict[str, Any], filled: tuple[Endpoint, list[Posted]]
) -> None:
    endpoint = filled[0]
    keys = post(endpoint, VECTORS[fact["mdk"]]).message.findall("nmwg:data/nmwg:key", NS)
    key = etree.tostring(keys[fact["key"]]).decode()
    check_answer(post(endpoint, fact, {"key": key}), fact)


def check_answer(posted: Posted, fact: Mapping[str, Any]) -> None:
    message, document = posted.message, posted.document
    check_common(message, document, fact)
    assert canonical_prefixes_only(message) == []
    if fact.get("codes"):
        only_result_pairs(message)
        return
    requested = set(fact.get("echoed", []))
    if "states" in fact:
        got = states(message, requested)
        want = [
            {
                **entry,
                "datums": expected_datums(entry["datums"], seen(got, i, "datums"), posted, True),
            }
            for i, entry in enumerate(fact["states"])
        ]
        assert got == want
    if "keys" in fact:
        metadata = {md.get("id"): md for md in message.findall("nmwg:metadata", NS)}
        got_keys = []
        for data in message.iterfind("nmwg:data[nmwg:key]", NS):
            link, fmt = _link_of(metadata[data.get("metadataIdRef")])
            got_keys.append({"link": link, "format": fmt, "parameters": key_parameters(data)})
        assert got_keys == fact["keys"]
    if "circuits" in fact:
        check_circuits(message, posted, fact)


def check_circuits(message: etree._Element, posted: Posted, fact: Mapping[str, Any]) -> None:
    domain = message.findtext("nmwg:parameters/nmwg:parameter[@name='DomainName']", namespaces=NS)
    assert domain == fact.get("domain")
    nodes = message.findall("nmwg:metadata/nmwg:subject/nmwgtopo3:node", STATUS_NS)
    assert [n.get("id") for n in nodes] == fact["nodes"]
    for node in nodes:
        assert node.getparent().get("id") == f"sub-{node.get('id')}"
        assert node.findtext("nmwgtopo3:name", namespaces=STATUS_NS) == node.get("id")
    request = etree.fromstring(posted.document)
    request_ids = {md.get("id") for md in request.iter(f"{{{ns.NMWG}}}metadata")}
    got = []
    for md in message.findall("nmwg:metadata", NS):
        link = md.find("nmwg:subject/nmtl2:link", STATUS_NS)
        if link is None:
            continue
        # a MetadataKeyResponse says which request metadata it answers; E2EMon SetupData not
        keys = fact["type"] == "MetadataKeyResponse"
        assert md.get("metadataIdRef") in (request_ids if keys else {None})
        (data,) = message.findall(f"nmwg:data[@metadataIdRef='{md.get('id')}']", NS)
        circuit: dict[str, Any] = {
            "name": link.findtext("nmtl2:name", namespaces=STATUS_NS),
            "globalName": link.findtext("nmtl2:globalName", namespaces=STATUS_NS),
            "type": link.findtext("nmtl2:type", namespaces=STATUS_NS),
            "ends": [
                [n.get("nodeIdRef"), n.findtext("nmwgtopo3:role", namespaces=STATUS_NS)]
                for n in link.findall("nmwgtopo3:node", STATUS_NS)
            ],
        }
        if data.find("nmwg:key", NS) is not None:
            circuit["key"] = key_parameters(data)
        else:
            circuit["datums"] = [_datum(d) for d in data.findall("ifevt:datum", STATUS_NS)]
        got.append(circuit)
    want = [
        {**c, "datums": expected_datums(c["datums"], seen(got, i, "datums"), posted, False)}
        if "datums" in c
        else c
        for i, c in enumerate(fact["circuits"])
    ]
    assert got == want


def test_a_store_without_the_token_is_refused(filled: tuple[Endpoint, list[Posted]]) -> None:
    for fact in REFUSED_WITHOUT_TOKEN:
        posted = post(filled[0], fact)
        check_common(posted.message, posted.document, fact)
        only_result_pairs(posted.message)
    assert REFUSED_WITHOUT_TOKEN


def test_without_definitions_e2emon_is_a_configuration_error(tmp_path: Path) -> None:
    fact = FACTS["unconfigured"]
    posted = post(endpoint_for(str(tmp_path / "status.sqlite"), None), fact)
    check_common(posted.message, posted.document, fact)
    only_result_pairs(posted.message)


def test_every_status_vector_has_facts() -> None:
    named = {v["file"] for v in [*FACTS["fill"], *FACTS["vector"], FACTS["unconfigured"]]}
    named |= {r["file"] for r in FACTS["replay"]}
    assert set(vector_names(FAMILY)) - {FACTS["definitions"]} == named
    # and every fact says what the answer holds: result codes, or states, keys, circuits
    answered = [*FACTS["vector"], *FACTS["replay"]]
    assert all(f.get("codes") or {"states", "keys", "circuits"} & set(f) for f in answered)


def test_the_status_grammar_can_fail(filled: tuple[Endpoint, list[Posted]]) -> None:
    """The grammar every answer went through rejects, in a 2008 answer, the two changes of
    the 2009 datum form (no knowledge; stateAdmin first) and an unknown operational state."""
    endpoint = filled[0]
    grammars = endpoint.grammars

    def own_part(name: str) -> etree._Element:
        message = post(endpoint, VECTORS[name]).message
        for md_id in VECTORS[name]["echoed"]:
            message.remove(message.find(f"nmwg:metadata[@id='{md_id}']", NS))
        assert grammars.errors("status-response.rng", message) == []
        return message

    message = own_part("sd-latest.xml")
    message.find(".//ifevt:datum", STATUS_NS).attrib.pop("knowledge")
    assert grammars.errors("status-response.rng", message) != []
    message = own_part("sd-latest.xml")
    datum = message.find(".//ifevt:datum", STATUS_NS)
    datum.insert(0, datum[1])  # stateAdmin before stateOper
    assert grammars.errors("status-response.rng", message) != []
    message = own_part("sd-point.xml")
    message.find(".//ifevt:stateOper", STATUS_NS).text = "sideways"
    assert grammars.errors("status-response.rng", message) != []
