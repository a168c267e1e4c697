"""Bad input against the project's own vectors (tests/vectors/errors): unreadable documents,
unsupported or missing message types, broken pairing and merge chains, and HTTP misuse, each
answered with the result code the protocol gives it, as HTTP 200."""

from __future__ import annotations

import pytest

from . import OWN_VECTORS
from .own_vectors import (
    Endpoint,
    check_common,
    check_unit_results,
    echo_only,
    facts,
    only_result_pairs,
    read,
    response_message,
    vector_names,
)

FAMILY = "errors"
FACTS = facts(FAMILY)
VECTORS = {v["file"]: v for v in FACTS["vector"]}


@pytest.fixture(scope="module")
def endpoint() -> Endpoint:
    return echo_only(FACTS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_error_vector(name: str, endpoint: Endpoint) -> None:
    fact = VECTORS[name]
    document = read(FAMILY, name)
    message = endpoint.post(document)
    check_common(message, document, fact)
    only_result_pairs(message)
    if message.get("type") == "ErrorResponse":
        return
    check_unit_results(message, document)


def test_every_error_vector_has_facts() -> None:
    assert set(vector_names(FAMILY)) == set(VECTORS)
    assert all(v["codes"] for v in VECTORS.values())  # every answer here is result pairs


@pytest.mark.parametrize("fact", FACTS["http"], ids=[h["what"] for h in FACTS["http"]])
def test_http_misuse(fact: dict[str, str], endpoint: Endpoint) -> None:
    body = (OWN_VECTORS / FAMILY / fact["body"]).read_bytes() if "body" in fact else b""
    response = endpoint.client.request(fact["method"], fact["path"], content=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    message = response_message(response.content)
    check_common(message, body, {"type": "ErrorResponse", **fact, "answers_id": "type" in fact})
    grammar = endpoint.schemas[message.get("type", "")]
    assert endpoint.grammars.errors(grammar, message) == []
