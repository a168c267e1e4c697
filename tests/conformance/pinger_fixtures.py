"""The PingER MA under test: an archive whose ping tests and finished runs match the hosts,
parameters and time windows of the legacy vectors, the app over it, and the pinger grammars.

Each vector host pair is one test here; runs sit inside the vectors' windows (and a few just
outside, to prove the bounds), so the "positive" vectors find data and the invalid ones would
find data too if their errors were ignored.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree
from starlette.exceptions import StarletteDeprecationWarning

from hosting import host, sqlite_url
from netsonde.api.app import create_app
from netsonde.archive import open_archive
from netsonde.model import Result, Run, RunState, Schedule, TestSpec, to_us
from netsonde.nmwg import ns
from netsonde.probes import ping
from netsonde.services.pinger import MA_PATH

from . import conformance_path
from .rng import RngCache

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NAME = "pinger.ictp.it"  # the MP's own name: the src of the 2007 vectors
ENDPOINT = MA_PATH

PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"
SELECT = "http://ggf.org/ns/nmwg/ops/select/2.0/"
MDK_FAILURE = "http://schemas.perfsonar.net/status/failure/metadatakey/1.0/"
SD_FAILURE = "http://schemas.perfsonar.net/status/failure/setupdata/1.0/"
NS = {
    "nmwg": ns.NMWG,
    "nmwgr": ns.NMWGR,
    "nmwgt": ns.NMWGT,
    "pinger": ns.PINGER,
    "select": ns.SELECT,
}
NMWG = f"{{{ns.NMWG}}}"

# Time windows of the vectors (both bounds inclusive, as the PingER MA had them).
W2007 = (1193876292, 1194045045)  # requests/pinger/2007/pingerSetupDataRequest.xml
W2011 = (1300740344, 1300742144)  # requests/pinger/2011/example_SD_request.xml
W_HOST_PAIR = (1205176292, 1205186292)  # SDR-host-pair(-merge).xml
W_SRC = (1205176292, 1205185045)  # SDR-src.xml
W_DST = (1206644292, 1206656292)  # SDR-dst.xml


def summary(min_rtt: float, **changes: float | int | None) -> dict[str, float | int | None]:
    """A full PingER summary whose RTT statistics all differ (min < median < mean < max: a
    mean/max or mean/median swap shows) and whose loss, clp, duplicates and outOfOrder are
    zero (the original MA dropped zeros)."""
    values: dict[str, float | int | None] = {
        "minRtt": min_rtt,
        "meanRtt": min_rtt + 1.5,
        "medianRtt": min_rtt + 1.0,
        "maxRtt": min_rtt + 3.0,
        "lossPercent": 0.0,
        "clp": 0.0,
        "minIpd": 0.125,
        "meanIpd": 0.25,
        "maxIpd": 0.5,
        "iqrIpd": 0.375,
        "duplicates": 0,
        "outOfOrder": 0,
    }
    values.update(changes)
    return values


# Every packet lost: the RTT and IPD statistics are null, loss and clp 100 %.
ALL_LOST: dict[str, float | int | None] = {
    **{k: None for k in ("minRtt", "meanRtt", "medianRtt", "maxRtt")},
    **{k: None for k in ("minIpd", "meanIpd", "maxIpd", "iqrIpd")},
    "lossPercent": 100.0,
    "clp": 100.0,
    "duplicates": 0,
    "outOfOrder": 0,
}


@dataclass(frozen=True)
class Probe:
    """One ping test; ``source`` "" means measured here, so the MA reports it as NAME."""

    label: str
    source: str
    target: str
    packet_size: int
    count: int = 10
    ttl: int = 255
    interval: float = 1.0

    def spec(self) -> TestSpec:
        params = ping.Params(
            count=self.count, interval=self.interval, packet_size=self.packet_size, ttl=self.ttl
        )
        return TestSpec(
            id=self.label,
            tool="ping",
            target=self.target,
            schedule=Schedule(interval=60),
            params=params,
            source=self.source,
        )


PROBES = (
    # 2007: pinger.ictp.it (this MP) to foundation.bw and ping.desy.de
    Probe("ictp-bw", "", "foundation.bw", 100),
    Probe("ictp-desy", "", "ping.desy.de", 100),
    # 2011 (captured MDK response): keys 1, 3, 2
    Probe("fnal-80", "131.225.110.2", "131.225.80.108", 64),
    Probe("fnal-bnl", "131.225.110.2", "130.199.3.7", 1000),
    Probe("fnal-v6", "fe80::230:48ff:fec5:48c", "fe80::212:3fff:fe56:76b8", 64),
    # test harness: the host pair twice (MDKR-host-and-params picks packetSize 1000, count 10;
    # the 100-byte one is the only test whose packetInterval is not 1)
    Probe("tukki-slac-1000", "tukki.fnal.gov", "pinger.slac.stanford.edu", 1000),
    Probe("tukki-slac-100", "tukki.fnal.gov", "pinger.slac.stanford.edu", 100, interval=0.5),
    # the hosts of the harness's invalid-* vectors
    Probe("tukki-www", "tukki.fnal.gov", "www.slac.stanford.edu", 100),
    Probe("lhcopn-www", "lhcopnmon1-mgm.fnal.gov", "www.slac.stanford.edu", 100),
)
LABELS = tuple(p.label for p in PROBES)

# 2011 pair 1, AVERAGE/MIN/MAX over 5 s: 1300741845, ...46 and ...49 share the bucket
# starting at 1300741845 (= 260148369 * 5); 1300741850 starts the next one.
BUCKET = 1300741845
BUCKET_MIN_RTTS = (1.0, 2.0, 4.5)


def runs_by_label(now: int) -> dict[str, list[tuple[int, dict[str, float | int | None]]]]:
    """(planned unix second, summary) per test; ``now`` anchors the recent runs (the default
    window of the invalid vectors is the last 24 hours)."""
    lo7, hi7 = W2007
    lo11, hi11 = W2011
    return {
        "ictp-bw": [
            (lo7 - 1, summary(90.0)),
            (lo7, summary(91.0)),
            (1193950000, summary(92.0, lossPercent=10.0)),
            (hi7, summary(93.0)),
            (hi7 + 1, summary(94.0)),
        ],
        "ictp-desy": [(1193950000, summary(30.0))],
        "fnal-80": [
            (lo11 - 1, summary(9.0)),
            (lo11, summary(0.5)),
            *(
                (BUCKET + d, summary(rtt))
                for d, rtt in zip((0, 1, 4), BUCKET_MIN_RTTS, strict=True)
            ),
            (BUCKET + 5, summary(8.0)),
            (hi11, summary(0.75)),
            (hi11 + 1, summary(9.0)),
        ],
        "fnal-bnl": [(1300741000, summary(31.0)), (1300742000, summary(32.0))],
        "fnal-v6": [(1300741500, ALL_LOST)],
        "tukki-slac-1000": [
            (1205180000, summary(53.0)),
            (1205186000, summary(54.0)),  # in the host-pair window, after SDR-src's end
            (1206650000, summary(55.0)),  # SDR-dst's window
        ],
        "tukki-slac-100": [(1205181000, summary(56.0))],
        "tukki-www": [
            (1205182000, summary(60.0)),
            (now - 900, summary(61.0)),
            (now - 600, summary(62.0)),
        ],
        "lhcopn-www": [(now - 600, summary(70.0))],
    }


Rows = Mapping[str, Iterable[tuple[int, Mapping[str, float | int | None]]]]


def archive_url(location: Path | str) -> str:
    """A store location as the tests give it (``store_location``: a path, or a PostgreSQL
    URL) → an archive URL."""
    text = str(location)
    return text if "://" in text else sqlite_url(Path(text))


def populate(
    archive_at: Path | str,
    now: int,
    probes: Iterable[Probe] = PROBES,
    rows_by_label: Rows | None = None,
) -> dict[str, str]:
    """Write the tests and their finished runs (by default the legacy vectors' ones) into the
    archive at ``archive_at`` (a SQLite file's path or an archive URL); label → archive key."""
    specs = {p.label: p.spec() for p in probes}
    runs = []
    rows_of = runs_by_label(now) if rows_by_label is None else rows_by_label
    for label, rows in rows_of.items():
        spec = specs[label]
        for second, values in rows:
            us = to_us(second)
            result = Result(
                tool="ping", target=spec.target, sent=spec.params.count, values=dict(values)
            )
            runs.append(
                Run.of(
                    spec,
                    us,
                    state=RunState.FINISHED,
                    actual_us=us,
                    end_us=us + 10 * 10**6,
                    result=result,
                )
            )
    archive = open_archive(archive_url(archive_at))
    try:
        assert archive.store_batch(specs.values(), runs, to_us(now)) == len(runs)
    finally:
        archive.close()
    return {label: spec.key for label, spec in specs.items()}


# --- the pinger grammars ------------------------------------------------------------------------

RNG_NS = "http://relaxng.org/ns/structure/1.0"
GRAMMAR_DEFECT = "L4EndpointPairContent"


def unpatched_rng(rng: RngCache, name: str) -> etree._ElementTree:
    return etree.parse(str(rng.rng_file(conformance_path(f"schemas/pinger/{name}.rnc"))))


def patched_rng(rng: RngCache, name: str) -> etree._ElementTree:
    """The rnc2rng conversion with the one defect of every pinger grammar mended.

    ``L4EndpointPairContent = L4Endpoint? & L4Endpoint?`` interleaves two patterns for the same
    element (nmtl4:endPoint), which RELAX NG forbids (spec §7.4: element names of interleave
    operands must not overlap), so libxml2 refuses the whole grammar ("Element or text
    conflicts in interleave"). Interleaving two copies of one pattern accepts exactly what
    their sequence accepts, so the interleave becomes a group: same language, legal grammar.
    Nothing else is touched.
    """
    tree = unpatched_rng(rng, name)
    (define,) = tree.getroot().findall(f"{{{RNG_NS}}}define[@name='{GRAMMAR_DEFECT}']")
    (interleave,) = define
    assert interleave.tag == f"{{{RNG_NS}}}interleave", etree.tostring(define)
    first, second = interleave
    assert etree.tostring(first, with_tail=False) == etree.tostring(second, with_tail=False)
    interleave.tag = f"{{{RNG_NS}}}group"
    return tree


@dataclass
class Grammars:
    rng: RngCache
    _schemas: dict[str, etree.RelaxNG] = field(default_factory=dict)

    def schema(self, name: str) -> etree.RelaxNG:
        if name not in self._schemas:
            self._schemas[name] = etree.RelaxNG(patched_rng(self.rng, name))
        return self._schemas[name]

    def errors(self, name: str, message: etree._Element) -> list[str]:
        schema = self.schema(name)
        document = etree.ElementTree(etree.fromstring(etree.tostring(message)))
        if schema.validate(document):
            return []
        return [f"line {e.line}: {e.message}" for e in schema.error_log]


RESPONSE_GRAMMARS = ("MetadataKeyResponse", "SetupDataResponse")


# --- documents ---------------------------------------------------------------------------------


def _request_message(document: bytes) -> etree._Element | None:
    """The request's nmwg:message, read forgivingly (the document may be broken)."""
    root = etree.fromstring(document, etree.XMLParser(recover=True))
    if root is None or root.tag == f"{NMWG}message":
        return root
    return root.find(f".//{NMWG}message")


def request_type(document: bytes) -> str | None:
    message = _request_message(document)
    return None if message is None else message.get("type")


def request_id(document: bytes) -> str | None:
    message = _request_message(document)
    return None if message is None else message.get("id")


def request_metadata_ids(document: bytes) -> set[str]:
    message = _request_message(document)
    found = [] if message is None else message.findall(f"{NMWG}metadata")
    return {md.get("id", "") for md in found}


def check_ids(
    message: etree._Element, request_metadata: Iterable[str] = ()
) -> dict[str, etree._Element]:
    """Unique ids; a data's metadataIdRef names a metadata of this response, a metadata's one
    of this response or (result metadata, PROTOCOL.md §3.2) ``request_metadata``. Returns the
    metadata by id. (nmwg:key/@id is no identifier but the key itself, which the original, and
    netsonde, put in both the metadata and the data; a topology link's @id is the link's name,
    repeated when a Status answer echoes the request subject that named it.)"""
    key = f"{NMWG}key"
    ids = [
        el.get("id")
        for el in message.iter(etree.Element)
        if el.get("id") and el.tag != key and etree.QName(el).localname != "link"
    ]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    metadata = {md.get("id"): md for md in message.findall("nmwg:metadata", NS)}
    for el in message.findall("nmwg:data", NS):
        assert el.get("metadataIdRef") in metadata, f"dangling {el.get('metadataIdRef')!r}"
    for el in metadata.values():
        ref = el.get("metadataIdRef")
        assert ref is None or ref in metadata or ref in set(request_metadata), f"dangling {ref!r}"
    return metadata


def split_messages(document: bytes) -> list[bytes]:
    """The nmwg:message documents concatenated in one file (requests-pinger.xml)."""
    starts = [m.start() for m in re.finditer(rb"<nmwg:message\b", document)]
    ends = [*starts[1:], len(document)]
    return [document[a:b].strip() for a, b in zip(starts, ends, strict=True)]


def strip_preamble(document: bytes) -> bytes:
    """Drop what precedes the first element (the 2011 MDK example opens with '#' lines)."""
    return document[document.index(b"<") :]


def response_message(body: bytes) -> etree._Element:
    """The single nmwg:message in a SOAP response (strict parse: the body must be well formed)."""
    root = etree.fromstring(body)
    assert root.tag == f"{{{ns.SOAP_ENV}}}Envelope"
    (message,) = root.findall(f"{{{ns.SOAP_ENV}}}Body/{NMWG}message")
    return message


def event_types(message: etree._Element) -> list[str]:
    return [(e.text or "").strip() for e in message.findall("nmwg:metadata/nmwg:eventType", NS)]


def result_codes(message: etree._Element) -> list[str]:
    """eventTypes of result metadata: those with a paired nmwgr:datum."""
    ids = {d.get("metadataIdRef") for d in message.findall("nmwg:data[nmwgr:datum]", NS)}
    return [
        (md.findtext("nmwg:eventType", namespaces=NS) or "").strip()
        for md in message.findall("nmwg:metadata", NS)
        if md.get("id") in ids
    ]


def assert_nothing_but_failures(message: etree._Element) -> None:
    """No key, no data point: only result-code pairs."""
    assert message.findall(".//nmwg:key", NS) == []
    assert message.findall(".//nmwg:commonTime", NS) == []
    assert message.findall(".//pinger:datum", NS) == []
    assert len(message.findall("nmwg:data", NS)) == len(
        message.findall("nmwg:data[nmwgr:datum]", NS)
    )
    assert event_types(message) == result_codes(message)


def data_keys(message: etree._Element) -> list[str]:
    return [k.get("id", "") for k in message.findall("nmwg:data/nmwg:key", NS)]


def common_times(message: etree._Element) -> list[etree._Element]:
    return message.findall("nmwg:data/nmwg:commonTime", NS)


def datums(common: etree._Element) -> list[tuple[str, str]]:
    return [(d.get("name", ""), d.get("value", "")) for d in common.findall("pinger:datum", NS)]


@dataclass
class PingerMA:
    """The app over a populated archive. :meth:`post` checks what every answer must be (HTTP
    200, text/xml, a well-formed SOAP envelope with one nmwg:message) and validates every
    MetadataKeyResponse / SetupDataResponse, and every ErrorResponse to such a request,
    against its pinger grammar."""

    client: TestClient
    keys: Mapping[str, str]  # label → archive key
    now: int
    grammars: Grammars
    validated: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, location: str, rng: RngCache, now: int) -> PingerMA:
        """Over the archive at ``location``: a SQLite file's path or a PostgreSQL URL."""
        url = archive_url(location)
        keys = populate(url, now)
        return cls(TestClient(create_app(host(url, name=NAME))), keys, now, Grammars(rng))

    @property
    def labels(self) -> dict[str, str]:
        """archive key → label."""
        return {key: label for label, key in self.keys.items()}

    def post(self, document: bytes | str) -> etree._Element:
        body = document.encode() if isinstance(document, str) else document
        response = self.client.post(ENDPOINT, content=body, headers={"Content-Type": "text/xml"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/xml")
        message = response_message(response.content)
        kind = message.get("type", "")
        grammar = kind
        if kind == "ErrorResponse":  # both grammars allow it: by the type of the request
            grammar = (request_type(body) or "").replace("Request", "Response")
        if grammar in RESPONSE_GRAMMARS:
            assert self.grammars.errors(grammar, message) == [], etree.tostring(message)
            self.validated[kind] = self.validated.get(kind, 0) + 1
        return message

    def key_labels(self, message: etree._Element) -> list[str]:
        return key_labels(message, self.labels)

    def series(self, message: etree._Element) -> dict[str, list[int]]:
        return series(message, self.labels)


def key_labels(message: etree._Element, labels: Mapping[str, str]) -> list[str]:
    """The labels (``labels``: archive key → label) of a MetadataKeyResponse's data keys."""
    return [labels.get(k, f"unknown key {k}") for k in data_keys(message)]


def series(message: etree._Element, labels: Mapping[str, str]) -> dict[str, list[int]]:
    """label → the commonTime values of its data, from a SetupDataResponse."""
    metadata = {md.get("id"): md for md in message.findall("nmwg:metadata", NS)}
    out: dict[str, list[int]] = {}
    for data in message.findall("nmwg:data[nmwg:commonTime]", NS):
        key = metadata[data.get("metadataIdRef")].find("nmwg:key", NS)
        assert key is not None, "SetupData data must reference the pinger metadata"
        times = [int(c.get("value", "")) for c in data.findall("nmwg:commonTime", NS)]
        out.setdefault(labels[key.get("id", "")], []).extend(times)
    return out


def times_in(label: str, window: tuple[int, int], now: int) -> list[int]:
    """The fixture's run times of ``label`` inside ``window`` (inclusive)."""
    lo, hi = window
    return [t for t, _ in runs_by_label(now)[label] if lo <= t <= hi]


def replace_all(document: bytes, replacements: Iterable[tuple[str, str]]) -> bytes:
    out = document.decode()
    for old, new in replacements:
        assert old in out, f"{old!r} not in the vector"
        out = out.replace(old, new)
    return out.encode()


def mdk_for(src: str | None, dst: str | None) -> str:
    """A MetadataKeyRequest for a host pair (either end may be left out)."""
    ends = "".join(
        f'<nmwgt:{tag} type="hostname" value="{value}"/>'
        for tag, value in (("src", src), ("dst", dst))
        if value is not None
    )
    return f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" xmlns:pinger="{PINGER}"
    xmlns:nmwgt="{ns.NMWGT}" type="MetadataKeyRequest" id="mdk.1">
  <nmwg:metadata id="m1">
    <pinger:subject id="s1"><nmwgt:endPointPair>{ends}</nmwgt:endPointPair></pinger:subject>
    <nmwg:eventType>{PINGER}</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="m1"/>
</nmwg:message>"""


def mdk_by_key(key: str) -> str:
    return f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" type="MetadataKeyRequest" id="mdk.2">
  <nmwg:metadata id="m1"><nmwg:key id="{key}"/><nmwg:eventType>{PINGER}</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="m1"/>
</nmwg:message>"""


def sd_by_key(
    key: str,
    select: Mapping[str, Any],
    *,
    message_parameters: Mapping[str, Any] | None = None,
) -> str:
    """A SetupDataRequest by key with a select filter chained to it."""
    params = "".join(f'<nmwg:parameter name="{k}">{v}</nmwg:parameter>' for k, v in select.items())
    message_block = ""
    if message_parameters:
        inner = "".join(
            f'<nmwg:parameter name="{k}" value="{v}"/>' for k, v in message_parameters.items()
        )
        message_block = f'<nmwg:parameters id="mp">{inner}</nmwg:parameters>'
    return f"""<nmwg:message xmlns:nmwg="{ns.NMWG}" xmlns:pinger="{PINGER}"
    xmlns:select="{SELECT}" type="SetupDataRequest" id="sd.1">
  {message_block}
  <nmwg:metadata id="m1"><nmwg:key id="{key}"/><nmwg:eventType>{PINGER}</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:metadata id="f1">
    <select:subject id="fs1" metadataIdRef="m1"/>
    <select:parameters id="fp1">{params}</select:parameters>
    <nmwg:eventType>{SELECT}</nmwg:eventType>
  </nmwg:metadata>
  <nmwg:data id="d1" metadataIdRef="f1"/>
</nmwg:message>"""


def canonical_prefixes_only(message: etree._Element) -> list[str]:
    """Elements whose prefix is not the canonical one of their namespace (empty if none)."""
    wrong = []
    for el in message.iter(etree.Element):
        uri, local = ns.split(el.tag)
        if uri is None or ns.URI_PREFIXES.get(uri) != el.prefix:
            wrong.append(f"{el.prefix}:{local} ({uri})")
    return wrong
