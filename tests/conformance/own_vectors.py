"""The project's own protocol vectors (tests/vectors, see its README): reading a family's
requests and facts, filling placeholders, the RELAX NG schemas of netsonde's answers, and the
checks every answer to a vector gets.

Every answer is HTTP 200, ``text/xml``, in the fixed SOAP envelope, with one ``nmwg:message``
that validates against the schema its family's facts name for its type (the request metadata
it echoes left out: they are the client's), whose ids are unique and whose references resolve
(to this response's metadata, or, for result metadata, to what the request's data triggers
name). Then each vector's own facts: response type, result codes in order, echoed request
metadata, and the family's facts (keys, series, datums ...), checked by its test module.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from collections import Counter
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from netsonde.http.soap import soap_routes
from netsonde.limits import RequestLimits
from netsonde.nmwg import build, ns

from . import OWN_VECTORS
from .pinger_fixtures import (
    NS,
    check_ids,
    event_types,
    request_id,
    request_metadata_ids,
    response_message,
    result_codes,
)

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SCHEMAS = OWN_VECTORS / "schemas"
_PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")


def facts(family: str) -> dict[str, Any]:
    """``tests/vectors/<family>/facts.toml``."""
    with (OWN_VECTORS / family / "facts.toml").open("rb") as f:
        return tomllib.load(f)


def vector_names(family: str) -> list[str]:
    """The request files of a family, by name."""
    return sorted(p.name for p in (OWN_VECTORS / family).glob("*.xml"))


def read(family: str, name: str, values: Mapping[str, str] | None = None) -> bytes:
    """A vector with its ``{{name}}`` placeholders filled from ``values``."""
    text = (OWN_VECTORS / family / name).read_text(encoding="utf-8")

    def fill(match: re.Match[str]) -> str:
        assert values is not None and match.group(1) in values, f"{name}: no {match.group(0)}"
        return values[match.group(1)]

    return _PLACEHOLDER.sub(fill, text).encode()


class Schemas:
    """The RELAX NG grammars in tests/vectors/schemas, compiled once each."""

    def __init__(self) -> None:
        self._compiled: dict[str, etree.RelaxNG] = {}

    def schema(self, name: str) -> etree.RelaxNG:
        if name not in self._compiled:
            self._compiled[name] = etree.RelaxNG(etree.parse(str(SCHEMAS / name)))
        return self._compiled[name]

    def errors(self, name: str, element: etree._Element) -> list[str]:
        """Validation errors of ``element`` (as its own document); [] if valid."""
        schema = self.schema(name)
        document = etree.ElementTree(etree.fromstring(etree.tostring(element)))
        if schema.validate(document):
            return []
        return [f"line {e.line}: {e.message}" for e in schema.error_log]


@dataclass
class Endpoint:
    """An NMWG endpoint of the app under test. :meth:`post` makes the checks every answer
    gets; ``validated`` counts the answers validated, by schema."""

    client: TestClient
    path: str
    schemas: Mapping[str, str]  # response type → schema file
    grammars: Schemas = field(default_factory=Schemas)
    validated: Counter[str] = field(default_factory=Counter)

    def post(self, document: bytes, headers: Mapping[str, str] | None = None) -> etree._Element:
        sent = {"Content-Type": "text/xml", **(headers or {})}
        response = self.client.post(self.path, content=document, headers=sent)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/xml")
        assert response.content.startswith(build.ENVELOPE_HEAD)
        message = response_message(response.content)
        kind = message.get("type", "")
        assert kind in self.schemas, f"no schema for a {kind!r} answer"
        schema = self.schemas[kind]
        requested = request_metadata_ids(document)
        own = deepcopy(message)  # what netsonde wrote, without the request metadata it echoes
        for md in own.findall("nmwg:metadata", NS):
            if md.get("id") in requested:
                own.remove(md)
        errors = self.grammars.errors(schema, own)
        assert errors == [], (schema, errors, etree.tostring(message).decode())
        self.validated[schema] += 1
        check_ids(message, requested | _trigger_refs(document))
        return message


def _trigger_refs(document: bytes) -> set[str]:
    """What the request's data triggers name: a trigger naming a missing metadata is answered
    with a result metadata naming the same (PROTOCOL.md §3.2)."""
    root = etree.fromstring(document, etree.XMLParser(recover=True)) if document else None
    if root is None:
        return set()
    return {ref for d in root.iter(f"{{{ns.NMWG}}}data") if (ref := d.get("metadataIdRef"))}


def check_common(message: etree._Element, document: bytes, fact: Mapping[str, Any]) -> None:
    """What every vector's facts say: response type, messageIdRef, result codes in order,
    the request metadata echoed after the output (``echoed``, by id; none by default)."""
    assert message.get("type") == fact["type"]
    answered = request_id(document) if fact.get("answers_id", True) else None
    assert message.get("messageIdRef") == answered
    assert result_codes(message) == fact.get("codes", [])
    requested = request_metadata_ids(document) if document else set()
    echoed = [md.get("id") for md in message.findall("nmwg:metadata", NS)]
    assert [i for i in echoed if i in requested] == fact.get("echoed", [])
    if "text" in fact:
        texts = [d.text or "" for d in message.iterfind("nmwg:data/nmwgr:datum", NS)]
        assert any(fact["text"] in t for t in texts), texts


def only_result_pairs(message: etree._Element) -> None:
    """Nothing but result-code pairs: no key, no data point, no echoed metadata."""
    data = message.findall("nmwg:data", NS)
    assert data and all(d.find("nmwgr:datum", NS) is not None and len(d) == 1 for d in data)
    assert len(message.findall("nmwg:metadata", NS)) == len(data)
    assert event_types(message) == result_codes(message)


def echo_only(family_facts: Mapping[str, Any]) -> Endpoint:
    """The family's endpoint on an app that serves nothing there but the Echo every endpoint
    gets."""
    app = Starlette(routes=soap_routes(RequestLimits(), {family_facts["endpoint"]: []}))
    return Endpoint(TestClient(app), family_facts["endpoint"], family_facts["schemas"])


def check_unit_results(message: etree._Element, document: bytes) -> None:
    """One result pair per data trigger, in data order, each result metadata referencing the
    metadata its trigger names (none for a trigger that names none)."""
    root = etree.fromstring(document)
    request = next(root.iter(f"{{{ns.NMWG}}}message"))
    triggers = [d.get("metadataIdRef") for d in request.iterfind("nmwg:data", NS)]
    results = message.findall("nmwg:metadata", NS)
    assert [md.get("metadataIdRef") for md in results] == triggers
