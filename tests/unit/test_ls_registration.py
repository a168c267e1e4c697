"""The lookup-service hook: what the Status MA would register, as an LSRegisterRequest."""

from __future__ import annotations

from pathlib import Path

from netsonde.api.context import ApiContext, ArchiveConnections, StatusConnections
from netsonde.api.status import LINK_STATUS, STATUS_MA
from netsonde.ls.registration import ITEMS_PER_MESSAGE, ServiceInfo, register_requests
from netsonde.nmwg import ns

NS = {"nmwg": ns.NMWG, "perfsonar": ns.PERFSONAR, "psservice": ns.PSSERVICE, "topoid": ns.TOPOID}
LINKS = [f"urn:ogf:network:domain=test:host=r1:port=eth{i}:link=l{i}" for i in range(60)]


def test_status_ma_registers_every_link_in_messages_of_fifty(tmp_path: Path) -> None:
    status = StatusConnections(tmp_path / "status.sqlite")
    for link in LINKS:
        status.get().update(link, 1_700_000_000, "up", "normal")
    api = ApiContext(archive=ArchiveConnections(tmp_path / "a.sqlite"), status_store=status)
    assert STATUS_MA.lookup_data is not None
    items = STATUS_MA.lookup_data(api)
    service = ServiceInfo("netsonde status", "http://127.0.0.1:8075/perfSONAR_PS/services/status")
    first, second = register_requests(service, items)
    assert first.get("type") == "LSRegisterRequest"
    assert first.findtext(".//psservice:accessPoint", namespaces=NS) == service.access_point
    assert first.findtext(".//psservice:serviceType", namespaces=NS) == "MA"
    registered = [
        m.findtext("topoid:subject", namespaces=NS)
        for msg in (first, second)
        for m in msg.findall("nmwg:data/nmwg:metadata", NS)
    ]
    assert registered == sorted(LINKS) and len(first.findall("nmwg:data", NS)) == ITEMS_PER_MESSAGE
    assert {e.text for e in first.iterfind(".//nmwg:data//nmwg:eventType", NS)} == {LINK_STATUS}
    data_refs = {d.get("metadataIdRef") for d in first.findall("nmwg:data", NS)}
    assert data_refs == {first.find("nmwg:metadata", NS).get("id")}


def test_no_store_registers_no_links(tmp_path: Path) -> None:
    api = ApiContext(archive=ArchiveConnections(tmp_path / "a.sqlite"))
    assert STATUS_MA.lookup_data is not None and STATUS_MA.lookup_data(api) == []
    (only,) = register_requests(ServiceInfo("x", "http://127.0.0.1:1/x"), [])
    assert only.find("nmwg:data", NS) is None
