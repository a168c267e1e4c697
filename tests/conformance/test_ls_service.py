"""The NMWG lookup service (PROTOCOL.md §4.15) answering the legacy LS and gLS requests
(``requests/ls``, ``requests/gls`` of ../shared/conformance, skipped when absent) and the
project's own vectors (``tests/vectors/ls/service``, always run).

Each legacy request is sent to a fresh LS that already holds three registrations (the
accessPoints the requests' keys are made from), so keys resolve as they would on a live LS.
Every answer is checked for what all NMWG answers share (``own_vectors.Endpoint``: envelope,
unique ids, resolving references) and against the project's LS answer grammar
(``tests/vectors/schemas/ls-response.rng``); the legacy ``schemas/ls`` grammars are applied
where rnc2rng can convert them (none of this corpus's can: see ``rng.py``). Then the response
type and, per unit in order, the outcome: its eventType, or ``key`` for a key answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hosting import host
from netsonde.api.app import create_app
from netsonde.nmwg import ns
from netsonde.nmwg.ls import ls_key
from netsonde.services.lookup.settings import LookupSection

from . import CONFORMANCE_DIR, LEGACY, conformance_path, legacy_corpus_present
from .own_vectors import Endpoint, TestClient, facts, read, vector_names
from .rng import RngCache, SchemaError

ENDPOINT = "/perfSONAR_PS/services/LS"
TOKEN = "conformance-ls-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEMAS = {
    **dict.fromkeys(
        (
            "LSRegisterResponse",
            "LSKeepaliveResponse",
            "LSDeregisterResponse",
            "LSQueryResponse",
            "LSLookupResponse",
            "LSKeyResponse",
        ),
        "ls-response.rng",
    ),
    "ErrorResponse": "error-response.rng",
    "EchoResponse": "echo-response.rng",
}
PRELOADED = (
    "http://localhost:8080/axis/services/snmpMA",  # 5cfb07ea…, the key of requests/ls
    "http://localhost:8181/axis/services/snmpMA",  # a3f9c690…
    "http://localhost:8080/perfSONAR_PS/services/gLS",  # 932397b7…, of the gLS requests
)
OK, KEY = "success", "key"
REG, KEEP, DEREG = "success.ls.register", "success.ls.keepalive", "success.ls.deregister"
QUERY = "success.ls.query"
REG_KEY_NF = "error.ls.register.key_not_found"
KEEP_NF = "error.ls.keepalive.key_not_found"
DEREG_NF = "error.ls.deregister.key_not_found"
HLS = "error.hls.register"

# What each legacy request gets, unit by unit. Notes: a clobber removes the key it names, so
# later units naming it find nothing; 2007 keys were accessPoints, not md5 (not found here);
# the hLS refuses gLS summary and synchronization registrations (error.hls.register); the
# shipped LSDiscoveryRequest is not well-formed XML.
LEGACY_ANSWERS: dict[str, tuple[str, list[str]]] = {
    "ls/LSRegisterRequest.xml": ("LSRegisterResponse", [REG]),
    "ls/LSRegisterRequest-key.xml": ("LSRegisterResponse", [REG]),
    # Both triggers name the one clobbering metadata: the key is clobbered once, both
    # triggers' items are registered under the new key (as LS.pm did).
    "ls/LSRegisterRequest-update.xml": ("LSRegisterResponse", [REG, REG]),
    "ls/LSKeepaliveRequest.xml": ("LSKeepaliveResponse", [KEEP, KEEP]),
    "ls/LSDeregisterRequest.xml": ("LSDeregisterResponse", [DEREG]),
    "ls/LSKeyRequest.xml": ("LSKeyResponse", [KEY]),
    "ls/LSQueryRequest.xml": ("LSQueryResponse", [QUERY]),
    "ls/2007-accesspoint-keys/EchoRequest.xml": ("EchoResponse", ["success.echo"]),
    "ls/2007-accesspoint-keys/LSRegisterRequest.xml": ("LSRegisterResponse", [REG, REG, REG]),
    "ls/2007-accesspoint-keys/LSRegisterRequest-update.xml": (
        "LSRegisterResponse",
        [REG_KEY_NF, REG_KEY_NF],
    ),
    "ls/2007-accesspoint-keys/LSKeepaliveRequest.xml": ("LSKeepaliveResponse", [KEEP_NF] * 2),
    "ls/2007-accesspoint-keys/LSDeregisterRequest.xml": ("LSDeregisterResponse", [DEREG_NF]),
    "ls/2007-accesspoint-keys/LSQueryRequest.xml": (
        "LSQueryResponse",
        ["error.ls.query.empty_results"],
    ),
    "gls/LSRegisterRequest-orig.xml": ("LSRegisterResponse", [REG, REG, HLS, HLS]),
    "gls/LSRegisterRequest-key.xml": (
        "LSRegisterResponse",
        [REG, REG_KEY_NF, HLS, REG_KEY_NF, REG_KEY_NF],
    ),
    "gls/LSRegisterRequest-clobber.xml": (
        "LSRegisterResponse",
        [REG, REG_KEY_NF, HLS, REG_KEY_NF, REG_KEY_NF],
    ),
    "gls/LSRegisterRequest-Summary-orig.xml": ("LSRegisterResponse", [HLS] * 3),
    "gls/LSRegisterRequest-Summary-key.xml": ("LSRegisterResponse", [HLS] * 6),
    "gls/LSRegisterRequest-Summary-clobber.xml": ("LSRegisterResponse", [HLS] * 6),
    "gls/LSRegisterRequest-syn-orig.xml": ("LSRegisterResponse", [HLS] * 4),
    "gls/LSRegisterRequest-syn-key.xml": ("LSRegisterResponse", [HLS] * 8),
    "gls/LSRegisterRequest-syn-clobber.xml": ("LSRegisterResponse", [HLS] * 8),
    "gls/LSKeepaliveRequest.xml": (
        "LSKeepaliveResponse",
        [KEEP, KEEP_NF, KEEP, KEEP_NF, KEEP, KEEP_NF],
    ),
    "gls/LSDeregisterRequest.xml": ("LSDeregisterResponse", [DEREG, DEREG] + [DEREG_NF] * 8),
    "gls/LSKeyRequest.xml": (
        "LSKeyResponse",
        [KEY, "error.ls.key.not_registered"] * 3,
    ),
    "gls/LSQueryRequest.xml": ("LSQueryResponse", [QUERY]),
    "gls/LSDiscoveryRequest.xml": ("ErrorResponse", ["error.transport.parse_error"]),
}


def register_request(access_point: str) -> bytes:
    return f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" type="LSRegisterRequest" id="pre">
  <nmwg:metadata id="m"><perfsonar:subject xmlns:perfsonar="{ns.PERFSONAR}">
    <psservice:service xmlns:psservice="{ns.PSSERVICE}">
      <psservice:serviceName>preloaded</psservice:serviceName>
      <psservice:accessPoint>{access_point}</psservice:accessPoint>
      <psservice:serviceType>MA</psservice:serviceType>
    </psservice:service></perfsonar:subject></nmwg:metadata>
  <nmwg:data id="d" metadataIdRef="m"><nmwg:metadata id="item">
    <nmwg:eventType>http://ggf.org/ns/nmwg/characteristic/utilization/2.0</nmwg:eventType>
  </nmwg:metadata></nmwg:data>
</nmwg:message>""".encode()


@pytest.fixture
def ls(tmp_path: Path, store_location: str) -> Iterator[Endpoint]:
    """The LS with its registry on each backend in turn."""
    section = LookupSection(enabled=True, token=TOKEN, db=store_location)
    with TestClient(create_app(host(tmp_path / "a.sqlite", sections={"ls": section}))) as c:
        yield Endpoint(c, ENDPOINT, SCHEMAS)


def outcomes(message: etree._Element) -> list[str]:
    """Per answer metadata in order: its eventType, or ``key`` for an LSKeyResponse unit."""
    found = message.findall(f"{{{ns.NMWG}}}metadata")
    return [md.findtext(f"{{{ns.NMWG}}}eventType") or KEY for md in found]


def legacy_grammar(rng: RngCache, response_type: str) -> Any:
    """The legacy grammar for a response type, or None when there is none or rnc2rng cannot
    convert it."""
    rnc = CONFORMANCE_DIR / "schemas" / "ls" / f"{response_type}.rnc"
    if not rnc.exists():
        return None
    try:
        return rng.schema(rnc)
    except SchemaError:
        return None


# ---- the legacy corpus ---------------------------------------------------------------------


def legacy_requests() -> list[Any]:
    if not legacy_corpus_present():
        return [pytest.param(None, id="conformance-dir-missing", marks=LEGACY)]
    root = CONFORMANCE_DIR / "requests"
    files = sorted([*root.glob("ls/**/*.xml"), *root.glob("gls/*.xml")])
    return [pytest.param(str(p.relative_to(root)), id=str(p.relative_to(root))) for p in files]


@LEGACY
def test_every_legacy_ls_request_has_an_expected_answer() -> None:
    root = conformance_path("requests")
    found = {str(p.relative_to(root)) for p in [*root.glob("ls/**/*.xml"), *root.glob("gls/*.xml")]}
    assert found == set(LEGACY_ANSWERS)


@LEGACY
@pytest.mark.parametrize("name", legacy_requests())
def test_legacy_request(name: str, ls: Endpoint, rng: RngCache) -> None:
    for access_point in PRELOADED:
        assert outcomes(ls.post(register_request(access_point), AUTH)) == [REG]
    document = conformance_path(Path("requests") / name).read_bytes()
    message = ls.post(document, AUTH)
    kind, expected = LEGACY_ANSWERS[name]
    assert message.get("type") == kind
    assert outcomes(message) == expected
    grammar = legacy_grammar(rng, kind)
    if grammar is not None:
        assert grammar.validate(etree.ElementTree(etree.fromstring(etree.tostring(message))))


@LEGACY
def test_legacy_keys_are_md5_of_the_access_point(ls: Endpoint) -> None:
    """The key in requests/ls is md5("http://localhost:8080/axis/services/snmpMA")."""
    message = ls.post(conformance_path("requests/ls/LSRegisterRequest.xml").read_bytes(), AUTH)
    key = message.findtext(".//nmwg:parameter[@name='lsKey']", namespaces={"nmwg": ns.NMWG})
    assert key == "5cfb07ea7a5b840ce4f8f48b842ac9c0" == ls_key(PRELOADED[0])


@LEGACY
def test_legacy_query_finds_the_registration_in_native_and_escaped_form(ls: Endpoint) -> None:
    ls.post(register_request(PRELOADED[1]), AUTH)
    document = conformance_path("requests/ls/LSQueryRequest.xml").read_bytes()
    native = ls.post(document)
    found = native.find(f".//{{{ns.PSSERVICE}}}datum/{{{ns.NMWG}}}metadata")
    assert found is not None and found.get("id") == ls_key(PRELOADED[1])
    escaped = ls.post(document.replace(b">native<", b">text<"))
    datum = escaped.find(f".//{{{ns.PSSERVICE}}}datum")
    assert datum is not None and len(datum) == 0
    assert f'id="{ls_key(PRELOADED[1])}"' in (datum.text or "")


# ---- the project's own vectors ---------------------------------------------------------------

FAMILY = "ls/service"
FACTS = facts(FAMILY)


def test_every_own_ls_service_vector_has_facts() -> None:
    assert set(vector_names(FAMILY)) == {v["file"] for v in FACTS["sequence"]}


def test_own_vectors_in_sequence(ls: Endpoint) -> None:
    """The vectors in the order the facts list them, on one LS: each answer's type, outcomes
    and texts (``text``: substrings of the answer, in order)."""
    values = {"token": TOKEN}
    for step in FACTS["sequence"]:
        document = read(FAMILY, step["file"], values)
        headers = AUTH if step.get("auth", True) else {}
        message = ls.post(document, headers)
        assert message.get("type") == step["type"], step["file"]
        assert outcomes(message) == step["outcomes"], step["file"]
        text = etree.tostring(message, encoding="unicode")
        at = 0
        for wanted in step.get("text", []):
            found = text.find(wanted, at)
            assert found >= 0, (step["file"], wanted, text)
            at = found + len(wanted)
        for unwanted in step.get("absent", []):
            assert not re.search(re.escape(unwanted), text), (step["file"], unwanted)
    assert ls.validated["ls-response.rng"] == len(FACTS["sequence"])
