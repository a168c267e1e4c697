"""Echo against the project's own vectors (tests/vectors/echo): every eventType form, the URI
message type, several units, a SOAP-enveloped and a bare request, and units that are no echo."""

from __future__ import annotations

import pytest

from .own_vectors import (
    NS,
    Endpoint,
    check_common,
    check_unit_results,
    echo_only,
    facts,
    only_result_pairs,
    read,
    vector_names,
)
from .pinger_fixtures import canonical_prefixes_only

FAMILY = "echo"
FACTS = facts(FAMILY)
VECTORS = {v["file"]: v for v in FACTS["vector"]}


@pytest.fixture(scope="module")
def endpoint() -> Endpoint:
    return echo_only(FACTS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_echo_vector(name: str, endpoint: Endpoint) -> None:
    fact = VECTORS[name]
    document = read(FAMILY, name)
    message = endpoint.post(document)
    check_common(message, document, fact)
    only_result_pairs(message)
    check_unit_results(message, document)
    assert canonical_prefixes_only(message) == []
    for md in message.findall("nmwg:metadata", NS):
        if md.findtext("nmwg:eventType", namespaces=NS) == "success.echo":
            (data,) = message.findall(f"nmwg:data[@metadataIdRef='{md.get('id')}']", NS)
            assert data.findtext("nmwgr:datum", namespaces=NS) == FACTS["success_text"]


def test_every_echo_vector_has_facts() -> None:
    assert set(vector_names(FAMILY)) == set(VECTORS)
    assert all(v["codes"] for v in VECTORS.values())  # every answer here is result pairs


def test_the_echo_grammar_can_fail(endpoint: Endpoint) -> None:
    """The grammar every answer went through rejects an EchoResponse that echoes the request
    metadata after its result pair (as the seed's RequestHandler did), and a bare datum."""
    document = read(FAMILY, "echo-admin.xml")
    message = endpoint.post(document)
    grammars = endpoint.grammars
    assert grammars.errors("echo-response.rng", message) == []
    request = message.makeelement(f"{{{NS['nmwg']}}}metadata", {"id": "m-admin"})
    message.append(request)
    assert grammars.errors("echo-response.rng", message) != []
    message.remove(request)
    message.find("nmwg:data/nmwgr:datum", NS).text = None
    message.find("nmwg:data", NS).set("metadataIdRef", "metadata.1")
    assert grammars.errors("echo-response.rng", message) == []  # an empty datum is text still
    message.find("nmwg:data", NS).remove(message.find("nmwg:data/nmwgr:datum", NS))
    assert grammars.errors("echo-response.rng", message) != []
