"""The PingER MA against the legacy vectors (PROTOCOL.md §3, §4.13, §4.14, §7).

The app runs in-process over an archive populated to match the vectors' hosts, parameters and
time windows (pinger_fixtures.py). Every request vector gets HTTP 200 and a well-formed answer
of the exact expected type; positives find exactly the expected keys or data, invalid ones a
failure and nothing else (and, corrected, would have found data); every MetadataKeyResponse and
SetupDataResponse validates against its pinger grammar (mended as pinger_fixtures.patched_rng
explains); the answers keep the captured 2011 responses' shape without their bugs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from netsonde.nmwg import build, codes
from netsonde.services.pinger.views import DATUM_NAMES

from . import CONFORMANCE_DIR, LEGACY, conformance_path, vectors
from .pinger_fixtures import (
    BUCKET,
    LABELS,
    MDK_FAILURE,
    NAME,
    NS,
    PINGER,
    PROBES,
    RESPONSE_GRAMMARS,
    SD_FAILURE,
    SELECT,
    W2007,
    W2011,
    W_DST,
    W_HOST_PAIR,
    W_SRC,
    PingerMA,
    assert_nothing_but_failures,
    canonical_prefixes_only,
    check_ids,
    common_times,
    data_keys,
    datums,
    event_types,
    mdk_by_key,
    mdk_for,
    patched_rng,
    replace_all,
    request_id,
    request_metadata_ids,
    request_type,
    result_codes,
    sd_by_key,
    split_messages,
    strip_preamble,
    times_in,
    unpatched_rng,
)
from .rng import RngCache

pytestmark = LEGACY  # reads ../shared/conformance: skipped when it is absent

MDK_2011 = "requests/pinger/2011/example_MDK_request.xml"
SD_2011 = "requests/pinger/2011/example_SD_request.xml"
MDK_2011_RESPONSE = "requests/pinger/2011/example_MDK_response.xml"
SD_2011_RESPONSE = "requests/pinger/2011/example_SD_response.xml"
HARNESS = "test_harness/requests/PingER"
HARNESS_CONFIG = "test_harness/pinger-test-config.xml"
CONCATENATED = "test_harness/requests/requests-pinger.xml"

PINGER_REQUESTS = vectors(
    "requests/pinger/2007/*Request*.xml",
    "requests/pinger/2011/*_request.xml",
    f"{HARNESS}/**/*.xml",
)


@pytest.fixture(scope="module")
def ma(module_store_location: str, rng: RngCache) -> PingerMA:
    """On each backend in turn (the module runs once per backend)."""
    return PingerMA.build(module_store_location, rng, int(time.time()))


# --- what each vector must get ----------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """A MetadataKeyResponse with exactly these tests' keys (by fixture label)."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class Data:
    """A SetupDataResponse with exactly these commonTimes per test."""

    series: dict[str, list[int]]


@dataclass(frozen=True)
class Failure:
    """The request type's response, every unit answered with ``code`` and nothing else."""

    code: str


@dataclass(frozen=True)
class Error:
    """An ErrorResponse (whole-message failure) with ``code``."""

    code: str


Expected = Keys | Data | Failure | Error

# (The harness windows are fixed: times_in's ``now`` does not matter for them.)
TUKKI = ("tukki-slac-1000", "tukki-slac-100", "tukki-www")
HOST_PAIR_DATA = {
    "tukki-slac-1000": times_in("tukki-slac-1000", W_HOST_PAIR, 0),
    "tukki-slac-100": times_in("tukki-slac-100", W_HOST_PAIR, 0),
}

EXPECTED: dict[str, Expected] = {
    # 2007: the MDK example asks for eventType characteristic/errors/2.0/, not PingER's
    "requests/pinger/2007/pingerMetadataKeyRequest.xml": Failure(codes.EVENT_TYPE_NOT_SUPPORTED),
    # select parameters inside the subject metadata; both window bounds inclusive
    "requests/pinger/2007/pingerSetupDataRequest.xml": Data(
        {"ictp-bw": [W2007[0], 1193950000, W2007[1]]}
    ),
    # as stored it opens with '#' comment lines: not XML (test_2011_mdk_example_* sends the XML)
    MDK_2011: Error(codes.PARSE_ERROR),
    # keys "1", "3", "2" were metaIDs of the 2011 MA, unknown here (the round trip is below)
    SD_2011: Failure(SD_FAILURE),
    f"{HARNESS}/MetadataKeyRequest/MDKR-all.xml": Keys(LABELS),  # the harness's getAll
    f"{HARNESS}/MetadataKeyRequest/MDKR-host-and-params.xml": Keys(("tukki-slac-1000",)),
    f"{HARNESS}/MetadataKeyRequest/MDKR-host-pair.xml": Keys(("tukki-slac-1000", "tukki-slac-100")),
    f"{HARNESS}/MetadataKeyRequest/MDKR-src.xml": Keys(TUKKI),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-eventype.xml": Failure(
        codes.EVENT_TYPE_NOT_SUPPORTED
    ),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-mismatch-eventype.xml": Failure(codes.MERGE),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-miss-metaid.xml": Failure(codes.MERGE),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-nodata.xml": Error(codes.NO_METADATA_DATA_PAIR),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-nometa.xml": Error(codes.NO_METADATA_DATA_PAIR),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-notype.xml": Error(codes.ACTION_NOT_SUPPORTED),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-type-miss.xml": Error(codes.ACTION_NOT_SUPPORTED),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-wrong-metaid.xml": Failure(codes.MERGE),
    f"{HARNESS}/MetadataKeyRequest/MDKR-invalid-wrongtype.xml": Error(codes.ACTION_NOT_SUPPORTED),
    f"{HARNESS}/SetupDataRequest/SDR-dst.xml": Data(
        {"tukki-slac-1000": times_in("tukki-slac-1000", W_DST, 0)}
    ),
    f"{HARNESS}/SetupDataRequest/SDR-host-pair-merge.xml": Data(HOST_PAIR_DATA),
    f"{HARNESS}/SetupDataRequest/SDR-host-pair.xml": Data(  # packetSize 1000, count 10
        {"tukki-slac-1000": HOST_PAIR_DATA["tukki-slac-1000"]}
    ),
    f"{HARNESS}/SetupDataRequest/SDR-src.xml": Data(
        {label: times_in(label, W_SRC, 0) for label in TUKKI}
    ),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-empty-type.xml": Error(codes.ACTION_NOT_SUPPORTED),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-mismatch-eventype.xml": Failure(codes.MERGE),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-no-data.xml": Error(codes.NO_METADATA_DATA_PAIR),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-no-md-id.xml": Failure(codes.MERGE),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-no-md.xml": Error(codes.NO_METADATA_DATA_PAIR),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-notype.xml": Error(codes.ACTION_NOT_SUPPORTED),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-wrong-eventype.xml": Failure(
        codes.EVENT_TYPE_NOT_SUPPORTED
    ),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-wrong-id.xml": Failure(codes.MERGE),
    f"{HARNESS}/SetupDataRequest/SDR-invalid-wrong-type.xml": Error(codes.ACTION_NOT_SUPPORTED),
}

# requests-pinger.xml: the messages that are not copies of a harness file.
EXPECTED_UNMATCHED_MESSAGES: dict[int, Expected] = {
    # empty subject, packetInterval 1: every test but the one probing every 0.5 s
    4: Keys(tuple(p.label for p in PROBES if p.interval == 1.0)),
    # src lhcopnmon1-mgm.fnal.gov with type="notype": the type attribute does not filter
    14: Keys(("lhcopn-www",)),
    # SDR-host-pair without its parameters: both tukki→slac tests
    17: Data(HOST_PAIR_DATA),
}


def check(ma: PingerMA, document: bytes, expected: Expected) -> etree._Element:
    """Post ``document``; assert the answer is exactly ``expected``."""
    message = ma.post(document)
    sent, sent_id = request_type(document), request_id(document)
    check_ids(message, request_metadata_ids(document))
    if expected != Error(codes.PARSE_ERROR):  # else the request's id could not be read
        assert message.get("messageIdRef") == sent_id
    if isinstance(expected, Error):
        assert message.get("type") == "ErrorResponse"
        assert event_types(message) == [expected.code] == result_codes(message)
        assert_nothing_but_failures(message)
        return message
    assert sent and message.get("type") == build.response_type(sent)
    if isinstance(expected, Failure):
        units = len(etree.fromstring(document).findall("nmwg:data", NS))
        assert result_codes(message) == [expected.code] * units
        assert_nothing_but_failures(message)
        # The failure answers the request metadata the data trigger named.
        refs = [d.get("metadataIdRef") for d in etree.fromstring(document).findall("nmwg:data", NS)]
        assert [md.get("metadataIdRef") for md in message.findall("nmwg:metadata", NS)] == refs
    elif isinstance(expected, Keys):
        assert message.get("type") == "MetadataKeyResponse"
        assert result_codes(message) == []
        assert sorted(ma.key_labels(message)) == sorted(expected.labels)
    else:
        assert message.get("type") == "SetupDataResponse"
        assert result_codes(message) == []
        assert ma.series(message) == expected.series
    return message


# --- 1. every request vector ---------------------------------------------------------------------


@pytest.mark.parametrize("path", PINGER_REQUESTS)
def test_pinger_request_vector(path: Path | None, ma: PingerMA) -> None:
    path = conformance_path(path)
    check(ma, path.read_bytes(), EXPECTED[str(path.relative_to(CONFORMANCE_DIR))])


def test_every_pinger_vector_has_an_expectation() -> None:
    found = {
        str(conformance_path(p.values[0]).relative_to(CONFORMANCE_DIR)) for p in PINGER_REQUESTS
    }
    assert found == set(EXPECTED)
    assert len(found) == 30  # 2 (2007) + 2 (2011) + 13 MDKR + 13 SDR


def _messages() -> list[object]:
    path = CONFORMANCE_DIR / CONCATENATED
    if not path.is_file():
        return [pytest.param(None, id="requests-pinger-missing")]
    count = len(split_messages(path.read_bytes()))
    return [pytest.param(i, id=f"requests-pinger.xml#{i}") for i in range(count)]


def _squash(document: bytes) -> bytes:
    return re.sub(rb"\s+", b" ", document).strip()


def _harness_copy(document: bytes) -> str | None:
    """The harness file this message is a copy of (whitespace aside), if any."""
    for path in sorted(conformance_path(HARNESS).glob("**/*.xml")):
        if _squash(path.read_bytes()) == _squash(document):
            return str(path.relative_to(CONFORMANCE_DIR))
    return None


@pytest.mark.parametrize("index", _messages())
def test_concatenated_harness_message(index: int | None, ma: PingerMA) -> None:
    messages = split_messages(conformance_path(CONCATENATED).read_bytes())
    assert index is not None and len(messages) == 29
    document = messages[index]
    copy_of = _harness_copy(document)
    expected = EXPECTED[copy_of] if copy_of else EXPECTED_UNMATCHED_MESSAGES[index]
    assert (copy_of is None) == (index in EXPECTED_UNMATCHED_MESSAGES)
    check(ma, document, expected)


# --- 2. the harness's own expectations; invalid vectors really fail -------------------------------


def _harness_tests() -> list[tuple[str, str, str | None]]:
    """(input, expected element, required attribute) from pinger-test-config.xml, plus its
    getAll request (expected to list keys)."""
    config = etree.parse(str(conformance_path(HARNESS_CONFIG))).getroot()
    requests = (config.findtext("requestDir") or "").strip("/")
    assert requests == "test_harness/requests"
    out = [(f"{requests}/{config.findtext('getAll')}", "key", None)]
    for test in config.iter("test"):
        expected = test.find("expected_output")
        assert expected is not None
        out.append(
            (f"{requests}/{test.findtext('input')}", expected.text or "", expected.get("attrib"))
        )
    return out


def test_harness_config_expectations(ma: PingerMA) -> None:
    """What test_PS.py checked: the reply contains the expected element (with the attribute)."""
    cases = _harness_tests()
    assert len(cases) == 8 and {c[1] for c in cases} == {"key", "datum"}
    for relative, element, attribute in cases:
        message = ma.post(conformance_path(relative).read_bytes())
        found = [el for el in message.iter(etree.Element) if etree.QName(el).localname == element]
        if attribute:
            found = [el for el in found if el.get(attribute)]
        assert found, f"{relative}: no <{element}> in the reply"
        assert result_codes(message) == [], relative


INVALID = sorted(
    name for name, expected in EXPECTED.items() if "invalid" in name and name.startswith(HARNESS)
)


def test_every_invalid_harness_vector_is_a_failure() -> None:
    assert len(INVALID) == 18  # 9 MDKR + 9 SDR
    assert all(isinstance(EXPECTED[name], Failure | Error) for name in INVALID)


@dataclass(frozen=True)
class Recent:
    """A SetupDataResponse with the recent runs (the last 24 hours, the default window) of
    these tests."""

    labels: tuple[str, ...]


PINGER_2_3 = [("pinger2/2.0/", "pinger/2.0/"), ("pinger3/2.0/", "pinger/2.0/")]
PINGER_2 = PINGER_2_3[:1]
META1 = [("<nmwg:metadata>", '<nmwg:metadata id="meta1">')]
SOMEID = [('id="someid"', 'id="meta1"')]
ADD_DATA = [("</nmwg:metadata>", '</nmwg:metadata><nmwg:data id="d" metadataIdRef="meta1"/>')]
WWW = ("tukki-www", "lhcopn-www")
LHC = ("lhcopn-www",)


def typed(message_type: str, old: str = 'id="message1"') -> list[tuple[str, str]]:
    new = f'type="{message_type}"'
    return [(old, f"{old} {new}" if old.startswith("id=") else new)]


# Each invalid vector mended where it is broken finds the data its subject names: its failure
# is due to its defect, not to an empty archive. (-nometa and -no-md have nothing to mend.)
MDK, SD = "MetadataKeyRequest", "SetupDataRequest"
CONTROLS = [
    (f"{MDK}/MDKR-invalid-eventype.xml", PINGER_2, Keys(LHC)),
    (f"{MDK}/MDKR-invalid-mismatch-eventype.xml", PINGER_2_3, Keys(LHC)),
    (f"{MDK}/MDKR-invalid-miss-metaid.xml", META1, Keys(LHC)),
    (f"{MDK}/MDKR-invalid-wrong-metaid.xml", SOMEID, Keys(LHC)),
    (f"{MDK}/MDKR-invalid-nodata.xml", ADD_DATA, Keys(WWW)),
    (f"{MDK}/MDKR-invalid-notype.xml", typed(MDK), Keys(WWW)),
    (f"{MDK}/MDKR-invalid-type-miss.xml", typed(MDK, 'type=""'), Keys(WWW)),
    (f"{MDK}/MDKR-invalid-wrongtype.xml", typed(MDK, 'type="Sometype"'), Keys(WWW)),
    (f"{SD}/SDR-invalid-wrong-eventype.xml", PINGER_2, Recent(("tukki-www",))),
    (f"{SD}/SDR-invalid-mismatch-eventype.xml", PINGER_2_3, Recent(("tukki-www",))),
    (f"{SD}/SDR-invalid-no-md-id.xml", META1, Recent(LHC)),
    (f"{SD}/SDR-invalid-wrong-id.xml", SOMEID, Recent(("tukki-www",))),
    (f"{SD}/SDR-invalid-no-data.xml", ADD_DATA, Recent(WWW)),
    (f"{SD}/SDR-invalid-notype.xml", typed(SD), Recent(WWW)),
    (f"{SD}/SDR-invalid-empty-type.xml", typed(SD, 'type=""'), Recent(WWW)),
    (f"{SD}/SDR-invalid-wrong-type.xml", typed(SD, 'type="Sometype"'), Recent(WWW)),
]


@pytest.mark.parametrize(
    ("name", "fixes", "expected"), [pytest.param(*c, id=c[0].split("/")[1]) for c in CONTROLS]
)
def test_invalid_vector_mended_finds_data(
    name: str, fixes: list[tuple[str, str]], expected: Keys | Recent, ma: PingerMA
) -> None:
    assert isinstance(EXPECTED[f"{HARNESS}/{name}"], Failure | Error)
    document = replace_all(conformance_path(f"{HARNESS}/{name}").read_bytes(), fixes)
    if isinstance(expected, Recent):
        day = (ma.now - 86_400, ma.now)
        series = {label: times_in(label, day, ma.now) for label in expected.labels}
        assert all(series.values())
        check(ma, document, Data(series))
    else:
        check(ma, document, expected)


def test_every_invalid_vector_has_a_mended_control() -> None:
    mended = {f"{HARNESS}/{name}" for name, _, _ in CONTROLS}
    assert set(INVALID) - mended == {
        f"{HARNESS}/{MDK}/MDKR-invalid-nometa.xml",
        f"{HARNESS}/{SD}/SDR-invalid-no-md.xml",
    }


def test_2007_mdk_example_with_the_pinger_event_type_finds_its_test(ma: PingerMA) -> None:
    document = conformance_path("requests/pinger/2007/pingerMetadataKeyRequest.xml").read_bytes()
    errors = "http://ggf.org/ns/nmwg/characteristic/errors/2.0/"
    check(ma, replace_all(document, [(errors, PINGER)]), Keys(("ictp-desy",)))


# --- 3. the 2011 examples: MDK → key → SetupData round trip ------------------------------------


def test_2011_mdk_example_lists_every_test(ma: PingerMA) -> None:
    document = strip_preamble(conformance_path(MDK_2011).read_bytes())
    message = check(ma, document, Keys(LABELS))
    assert message.get("messageIdRef") == "message.5923925"


# The 2011 keys and the host pairs they stood for (captured example_MDK_response.xml).
KEYS_2011 = {"1": "fnal-80", "3": "fnal-bnl", "2": "fnal-v6"}


def _key_by_mdk(ma: PingerMA, label: str) -> str:
    probe = next(p for p in PROBES if p.label == label)
    message = ma.post(mdk_for(probe.source, probe.target))
    (key,) = data_keys(message)
    (md_key,) = message.findall("nmwg:metadata/nmwg:key", NS)
    assert md_key.get("id") == key == ma.keys[label]
    return key


def test_2011_sd_example_by_keys_from_mdk(ma: PingerMA) -> None:
    """The example asks for keys 1, 3 and 2 (three units), AVERAGE over 5 s, in its window."""
    document = conformance_path(SD_2011).read_bytes()
    fixes = [
        (f'<nmwg:key id="{old}"/>', f'<nmwg:key id="{_key_by_mdk(ma, label)}"/>')
        for old, label in KEYS_2011.items()
    ]
    lo, hi = W2011
    # Runs at lo, BUCKET(+1, +4), BUCKET+5, hi: 5-second buckets stamped with their start.
    expected = Data(
        {
            "fnal-80": [lo - lo % 5, BUCKET, BUCKET + 5, hi - hi % 5],
            "fnal-bnl": [1300741000, 1300742000],
            "fnal-v6": [1300741500],
        }
    )
    message = check(ma, replace_all(document, fixes), expected)
    assert message.get("messageIdRef") == "message.5424672"
    # Units answered in request order: keys 1, 3, 2.
    pinger_keys = [k.get("id") for k in message.findall("nmwg:metadata/nmwg:key", NS)]
    assert pinger_keys == [ma.keys[label] for label in KEYS_2011.values()]
    # All packets lost: loss and clp are reported, the undefined RTT/IPD statistics are not.
    v6 = [c for d in message.findall("nmwg:data", NS) for c in d if c.get("value") == "1300741500"]
    assert datums(v6[0]) == [
        ("clp", "100.0"),
        ("lossPercent", "100.0"),
        ("duplicates", "false"),
        ("outOfOrder", "false"),
    ]


def test_unknown_key_gets_the_pinger_failure_code(ma: PingerMA) -> None:
    unknown = "0123456789abcdef"
    assert unknown not in ma.keys.values()
    sd = ma.post(sd_by_key(unknown, {"startTime": W2011[0], "endTime": W2011[1]}))
    assert sd.get("type") == "SetupDataResponse"
    assert result_codes(sd) == [SD_FAILURE]
    assert sd.findtext("nmwg:data/nmwgr:datum", namespaces=NS) == "no metadata found"
    message = ma.post(mdk_by_key(unknown))
    assert message.get("type") == "MetadataKeyResponse"
    assert result_codes(message) == [MDK_FAILURE]
    assert_nothing_but_failures(message)
    # The same requests with a real key find it.
    known = ma.post(mdk_by_key(ma.keys["fnal-80"]))
    assert ma.key_labels(known) == ["fnal-80"]
    found = ma.post(sd_by_key(ma.keys["fnal-80"], {"startTime": W2011[0], "endTime": W2011[1]}))
    assert list(ma.series(found)) == ["fnal-80"]


# --- 4. RelaxNG ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*RESPONSE_GRAMMARS, "MetadataKeyRequest", "SetupDataRequest"])
def test_pinger_grammar_is_invalid_relax_ng_until_its_one_defect_is_mended(
    name: str, rng: RngCache
) -> None:
    """rnc2rng converts every pinger grammar, but libxml2 refuses each conversion: the shared
    ``L4EndpointPairContent = L4Endpoint? & L4Endpoint?`` interleaves the same element twice,
    which RELAX NG forbids. The grammar is at fault, not the converter. With that interleave
    turned into a group (same language) each grammar compiles; see patched_rng."""
    with pytest.raises(etree.RelaxNGParseError, match="conflicts in interleave"):
        etree.RelaxNG(unpatched_rng(rng, name))
    etree.RelaxNG(patched_rng(rng, name))


@pytest.mark.parametrize(
    ("grammar", "captured"),
    [("MetadataKeyResponse", MDK_2011_RESPONSE), ("SetupDataResponse", SD_2011_RESPONSE)],
)
def test_mended_grammar_accepts_the_captured_2011_response(
    grammar: str, captured: str, ma: PingerMA
) -> None:
    document = etree.parse(str(conformance_path(captured))).getroot()
    assert ma.grammars.errors(grammar, document) == []


def test_grammar_validation_can_fail(ma: PingerMA) -> None:
    """The check every answer goes through (PingerMA.post) rejects what the grammars forbid:
    the original's misspelt ``lostPercent``, a data element with neither key nor result."""
    sd = ma.post(sd_by_key(ma.keys["fnal-80"], {"startTime": W2011[0], "endTime": W2011[1]}))
    datum = sd.find(".//pinger:datum[@name='lossPercent']", NS)
    assert datum is not None
    datum.set("name", "lostPercent")
    assert ma.grammars.errors("SetupDataResponse", sd) != []
    mdk = ma.post(mdk_for("tukki.fnal.gov", "pinger.slac.stanford.edu"))
    mdk.find("nmwg:data", NS).clear()
    assert ma.grammars.errors("MetadataKeyResponse", mdk) != []


def test_success_and_failure_responses_of_both_kinds_are_validated(ma: PingerMA) -> None:
    ma.validated.clear()
    ok_mdk = ma.post(mdk_for("tukki.fnal.gov", None))
    bad_mdk = ma.post(mdk_for("nowhere.example", None))
    ok_sd = ma.post(sd_by_key(ma.keys["ictp-bw"], {"startTime": W2007[0], "endTime": W2007[1]}))
    bad_sd = ma.post(sd_by_key(ma.keys["ictp-bw"], {"startTime": W2011[0], "endTime": W2011[1]}))
    no_md = conformance_path(f"{HARNESS}/SetupDataRequest/SDR-invalid-no-md.xml")
    error = ma.post(no_md.read_bytes())
    assert (result_codes(ok_mdk), result_codes(bad_mdk)) == ([], [MDK_FAILURE])
    assert (result_codes(ok_sd), result_codes(bad_sd)) == ([], [SD_FAILURE])
    assert error.get("type") == "ErrorResponse"
    assert ma.validated == {"MetadataKeyResponse": 2, "SetupDataResponse": 2, "ErrorResponse": 1}


# --- 5. shape of the captured 2011 responses, bugs mended ----------------------------------------


def shape(el: etree._Element) -> tuple[object, ...]:
    """Element name with its prefix, attribute names (and parameter/datum names), children."""
    named = etree.QName(el).localname in ("parameter", "datum")
    return (
        f"{el.prefix}:{etree.QName(el).localname}",
        tuple(sorted(el.attrib)),
        el.get("name") if named else None,
        tuple(shape(c) for c in el.iterchildren(etree.Element)),
    )


def _captured(relative: str) -> etree._Element:
    return etree.parse(str(conformance_path(relative))).getroot()


def test_mdk_response_has_the_captured_shape(ma: PingerMA) -> None:
    captured = _captured(MDK_2011_RESPONSE)
    message = ma.post(strip_preamble(conformance_path(MDK_2011).read_bytes()))
    assert shape(message)[:2] == shape(captured)[:2]  # nmwg:message, id/messageIdRef/type
    want_md = {shape(md) for md in captured.findall("nmwg:metadata", NS)}
    want_data = {shape(d) for d in captured.findall("nmwg:data", NS)}
    assert len(want_md) == len(want_data) == 1
    assert {shape(md) for md in message.findall("nmwg:metadata", NS)} == want_md
    assert {shape(d) for d in message.findall("nmwg:data", NS)} == want_data
    assert canonical_prefixes_only(message) == []
    metadata = check_ids(message)
    for data in message.findall("nmwg:data", NS):
        md = metadata[data.get("metadataIdRef")]
        assert data.find("nmwg:key", NS).get("id") == md.find("nmwg:key", NS).get("id")
    # Address types as the captured response has them (ipv4, ipv6), hostname otherwise; the
    # tests measured here have the MP's name as src.
    sources = {(e.get("value"), e.get("type")) for e in message.iterfind(".//nmwgt:src", NS)}
    assert ("131.225.110.2", "ipv4") in sources and ("fe80::230:48ff:fec5:48c", "ipv6") in sources
    assert ("tukki.fnal.gov", "hostname") in sources and (NAME, "hostname") in sources


def test_sd_response_has_the_captured_shape_with_its_bugs_mended(ma: PingerMA) -> None:
    captured = _captured(SD_2011_RESPONSE)
    lo, hi = W2011
    message = ma.post(sd_by_key(ma.keys["fnal-80"], {"startTime": lo, "endTime": hi}))
    assert canonical_prefixes_only(message) == []
    wire = etree.tostring(message)
    for raw in ("nmwg:message", "select:subject", "pinger:subject", "nmwgt:src", "pinger:datum"):
        assert f"<{raw} ".encode() in wire
    (select_md, pinger_md) = message.findall("nmwg:metadata", NS)
    (data,) = message.findall("nmwg:data", NS)
    want_select, want_pinger = captured.findall("nmwg:metadata", NS)
    assert shape(select_md) == shape(want_select)
    assert shape(pinger_md) == shape(want_pinger)
    (want_data,) = captured.findall("nmwg:data", NS)
    assert shape(data)[:2] == shape(want_data)[:2]
    assert {shape(c)[:2] for c in data} == {shape(c)[:2] for c in want_data}  # type, value
    # select metadata: the window asked for, as @value
    params = {p.get("name"): p.get("value") for p in select_md.iterfind(".//nmwg:parameter", NS)}
    assert params == {"startTime": str(lo), "endTime": str(hi)}
    assert select_md.findtext("nmwg:eventType", namespaces=NS) == SELECT
    assert pinger_md.findtext("nmwg:eventType", namespaces=NS) == PINGER
    # Mended: the pinger metadata references the select metadata (the capture says "1").
    assert want_pinger.get("metadataIdRef") == "1" != want_select.get("id")
    assert pinger_md.get("metadataIdRef") == select_md.get("id")
    assert data.get("metadataIdRef") == pinger_md.get("id")
    check_ids(message)
    # Datums: the original's names in its order, now with lossPercent and zero values.
    captured_names = [d.get("name") for d in want_data.iterfind(".//pinger:datum", NS)]
    assert "lossPercent" not in captured_names
    rows = common_times(message)
    assert [int(c.get("value")) for c in rows] == times_in("fnal-80", W2011, ma.now)
    for common in rows:
        got = dict(datums(common))
        names = [name for name, _ in datums(common)]
        assert names == list(DATUM_NAMES)  # every value present, in the original's order
        assert [n for n in names if n in captured_names] == captured_names
        assert got["lossPercent"] == got["clp"] == "0.0"  # zeros kept
        assert got["duplicates"] == got["outOfOrder"] == "false"
        rtt = {k: float(got[k]) for k in ("minRtt", "medianRtt", "meanRtt", "maxRtt")}
        assert rtt["minRtt"] <= rtt["medianRtt"] <= rtt["maxRtt"]
        assert rtt["minRtt"] <= rtt["meanRtt"] <= rtt["maxRtt"]  # the capture has mean > max
    want_rtt = {d.get("name"): d.get("value") for d in want_data.iterfind(".//pinger:datum", NS)}
    assert float(want_rtt["meanRtt"]) > float(want_rtt["maxRtt"])


def test_ids_stay_unique_across_units(ma: PingerMA) -> None:
    """The original restarted meta1/data1 per unit; two units here, even for the same key."""
    document = conformance_path(SD_2011).read_bytes()
    key = ma.keys["fnal-80"]
    fixes = [(f'<nmwg:key id="{old}"/>', f'<nmwg:key id="{key}"/>') for old in KEYS_2011]
    message = ma.post(replace_all(document, fixes))
    assert len(message.findall("nmwg:data", NS)) == 3
    check_ids(message)
    again = b'<nmwg:data metadataIdRef="metaid16459279" id="again"/></nmwg:message>'
    document = strip_preamble(conformance_path(MDK_2011).read_bytes())
    mdk = ma.post(document.replace(b"</nmwg:message>", again))
    assert len(data_keys(mdk)) == 2 * len(LABELS)
    check_ids(mdk)


# --- 6. SetupData semantics ---------------------------------------------------------------------


def test_start_time_alone_means_until_now(ma: PingerMA) -> None:
    """Not the original's exact-timestamp match: every run from startTime on."""
    recent = times_in("tukki-www", (ma.now - 86_400, ma.now), ma.now)
    assert len(recent) == 2
    before = int(time.time())
    message = ma.post(sd_by_key(ma.keys["tukki-www"], {"startTime": recent[0]}))
    after = int(time.time())
    assert ma.series(message) == {"tukki-www": recent}
    found = message.iterfind("nmwg:metadata/select:parameters/nmwg:parameter", NS)
    params = {p.get("name"): int(p.get("value")) for p in found}
    assert params["startTime"] == recent[0] and before <= params["endTime"] <= after
    # A start between runs: an exact match would find nothing.
    message = ma.post(sd_by_key(ma.keys["tukki-www"], {"startTime": recent[0] - 1}))
    assert ma.series(message) == {"tukki-www": recent}


# minRtt of the three runs in BUCKET: 1.0, 2.0, 4.5 (maxRtt = minRtt + 3, meanRtt + 1.5);
# the run at BUCKET + 5 has minRtt 8.0.
@pytest.mark.parametrize(
    ("function", "min_rtt", "mean_rtt", "max_rtt"),
    [
        ("AVERAGE", 2.5, 4.0, 5.5),  # (1 + 2 + 4.5) / 3 ...
        ("MIN", 1.0, 2.5, 4.0),
        ("MAX", 4.5, 6.0, 7.5),
    ],
)
def test_consolidation_by_resolution_bucket(
    function: str, min_rtt: float, mean_rtt: float, max_rtt: float, ma: PingerMA
) -> None:
    select = {"startTime": BUCKET, "endTime": BUCKET + 5}
    select.update(consolidationFunction=function, resolution=5)
    message = ma.post(sd_by_key(ma.keys["fnal-80"], select))
    first, second = common_times(message)
    assert (int(first.get("value")), int(second.get("value"))) == (BUCKET, BUCKET + 5)
    got = {name: float(value) for name, value in datums(first) if name.endswith("Rtt")}
    assert (got["minRtt"], got["meanRtt"], got["maxRtt"]) == (min_rtt, mean_rtt, max_rtt)
    assert dict(datums(first))["lossPercent"] == "0.0"
    assert dict(datums(second))["minRtt"] == "8.0"  # alone in its bucket


def test_consolidation_one_bucket_and_none(ma: PingerMA) -> None:
    window = {"startTime": BUCKET, "endTime": BUCKET + 5}
    hourly = ma.post(
        sd_by_key(
            ma.keys["fnal-80"], {**window, "consolidationFunction": "AVERAGE", "resolution": 3600}
        )
    )
    (bucket,) = common_times(hourly)
    assert int(bucket.get("value")) == BUCKET - BUCKET % 3600 == 1300741200
    assert dict(datums(bucket))["minRtt"] == "3.875"  # (1 + 2 + 4.5 + 8) / 4
    raw = ma.post(sd_by_key(ma.keys["fnal-80"], window))
    times = [int(c.get("value")) for c in common_times(raw)]
    assert times == [BUCKET, BUCKET + 1, BUCKET + 4, BUCKET + 5]
    assert [dict(datums(c))["minRtt"] for c in common_times(raw)] == ["1.0", "2.0", "4.5", "8.0"]


def test_set_limit(ma: PingerMA) -> None:
    window = {"startTime": W2011[0], "endTime": W2011[1]}
    everything = times_in("fnal-80", W2011, ma.now)
    assert len(everything) == 6
    limit = {"setLimit": 2}  # a message parameter, as in the 2008 service document
    message = ma.post(sd_by_key(ma.keys["fnal-80"], window, message_parameters=limit))
    assert ma.series(message) == {"fnal-80": everything[:2]}
    message = ma.post(sd_by_key(ma.keys["fnal-80"], {**window, "setLimit": 3}))
    assert ma.series(message) == {"fnal-80": everything[:3]}


def test_window_without_data_is_the_setupdata_failure(ma: PingerMA) -> None:
    empty = {"startTime": 1300000000, "endTime": 1300000100}
    assert times_in("fnal-80", (empty["startTime"], empty["endTime"]), ma.now) == []
    message = ma.post(sd_by_key(ma.keys["fnal-80"], empty))
    assert message.get("type") == "SetupDataResponse"
    assert result_codes(message) == [SD_FAILURE]
    assert_nothing_but_failures(message)
    assert "no matching data" in message.findtext("nmwg:data/nmwgr:datum", namespaces=NS)
    # By subject too: the harness's host pair, in the 2011 window where it has no runs.
    document = conformance_path(f"{HARNESS}/SetupDataRequest/SDR-host-pair.xml").read_bytes()
    document = replace_all(document, [("1205176292", str(W2011[0])), ("1205186292", str(W2011[1]))])
    check(ma, document, Failure(SD_FAILURE))
