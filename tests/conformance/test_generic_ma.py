"""The generic-MA vectors (SNMP MA, perfSONARBUOY) posted to the PingER MA endpoint.

None of them is a PingER request: Echo is answered as on every endpoint, the MetadataKey and
SetupData requests are answered per unit with error.common.event_type_not_supported (their
eventTypes, or their lack of one, are not PingER's), message types the endpoint does not handle
(DataInfoRequest, and the captured responses sent back as requests) with an ErrorResponse. Every
answer is HTTP 200 and well formed, and every MetadataKeyResponse/SetupDataResponse (and every
ErrorResponse to such a request) validates against the pinger grammar (PingerMA.post).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from netsonde.nmwg import codes

from . import CONFORMANCE_DIR, LEGACY, conformance_path, vectors
from .pinger_fixtures import (
    NS,
    PingerMA,
    assert_nothing_but_failures,
    check_ids,
    request_id,
    request_metadata_ids,
    result_codes,
)
from .rng import RngCache

pytestmark = LEGACY  # reads ../shared/conformance: skipped when it is absent

GENERIC = vectors("requests/generic-ma/**/*.xml")

# Not well-formed XML: its leading comment nests another "<!-- ... -->", and "--" may not
# occur inside an XML comment (XML 1.0 §2.5).
MALFORMED = {"requests/generic-ma/perfSONARBUOY/SetupDataRequest-owamp-6.xml"}


@pytest.fixture(scope="module")
def ma(module_store_location: str, rng: RngCache) -> PingerMA:
    return PingerMA.build(module_store_location, rng, int(time.time()))


def expected(relative: str) -> tuple[str, str]:
    """(response type, result code) for a vector, from its file name."""
    name = Path(relative).stem.split("-")[0]
    if relative in MALFORMED:
        return "ErrorResponse", codes.PARSE_ERROR
    if name == "EchoRequest":
        return "EchoResponse", codes.SUCCESS_ECHO
    if name in ("MetadataKeyRequest", "SetupDataRequest"):
        return name.replace("Request", "Response"), codes.EVENT_TYPE_NOT_SUPPORTED
    # DataInfoRequest, and captured responses: no service on this endpoint takes them
    return "ErrorResponse", codes.ACTION_NOT_SUPPORTED


@pytest.mark.parametrize("path", GENERIC)
def test_generic_ma_vector_on_the_pinger_endpoint(path: Path | None, ma: PingerMA) -> None:
    path = conformance_path(path)
    relative = str(path.relative_to(CONFORMANCE_DIR))
    document = path.read_bytes()
    response_type, code = expected(relative)
    message = ma.post(document)
    assert message.get("type") == response_type
    check_ids(message, request_metadata_ids(document))
    if relative in MALFORMED:
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(document)
        assert result_codes(message) == [code]
        return
    assert message.get("messageIdRef") == request_id(document)
    if code == codes.SUCCESS_ECHO:
        (md,) = message.findall("nmwg:metadata", NS)
        assert md.findtext("nmwg:eventType", namespaces=NS) == code
        return
    if response_type == "ErrorResponse":
        assert result_codes(message) == [code]
    else:  # one failure per data trigger, referencing the metadata it names
        refs = [d.get("metadataIdRef") for d in etree.fromstring(document).findall("nmwg:data", NS)]
        assert refs and result_codes(message) == [code] * len(refs)
        assert [md.get("metadataIdRef") for md in message.findall("nmwg:metadata", NS)] == refs
    assert_nothing_but_failures(message)


def test_the_generic_vectors_are_all_found() -> None:
    found = [str(conformance_path(p.values[0]).relative_to(CONFORMANCE_DIR)) for p in GENERIC]
    kinds = Counter(expected(relative)[0] for relative in found)
    assert len(found) == 105
    assert kinds == {
        "EchoResponse": 2,
        "MetadataKeyResponse": 35,  # 25 SNMP + 10 pSB
        "SetupDataResponse": 35,  # 25 SNMP + 10 pSB (the 11th pSB one is MALFORMED)
        "ErrorResponse": 33,  # 10 DataInfo + 1 malformed + 22 captured pSB responses
    }
    assert set(found) >= MALFORMED


def test_every_mdk_and_sd_answer_was_validated(ma: PingerMA) -> None:
    """PingerMA.post validates against the pinger grammars; make sure the generic answers, all
    of them failures, went through it (one of each kind here, the rest in the vector test)."""
    ma.validated.clear()
    for relative in (
        "requests/generic-ma/SNMPMA/MetadataKeyRequest-snmp-1.xml",
        "requests/generic-ma/perfSONARBUOY/SetupDataRequest-owamp-1.xml",
        "requests/generic-ma/SNMPMA/DataInfoRequest-snmp-1.xml",
    ):
        ma.post(conformance_path(relative).read_bytes())
    assert ma.validated == {"MetadataKeyResponse": 1, "SetupDataResponse": 1}
