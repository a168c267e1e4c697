"""The lookup-service hook: what the Status MA would register, as an LSRegisterRequest."""

from __future__ import annotations

from pathlib import Path

from hosting import host
from netsonde.nmwg import ns
from netsonde.nmwg.ls import ITEMS_PER_MESSAGE, ServiceInfo, register_requests
from netsonde.services import status as status_service
from netsonde.services.status.nmwg import LINK_STATUS
from netsonde.services.status.settings import StatusSection

NS = {"nmwg": ns.NMWG, "perfsonar": ns.PERFSONAR, "psservice": ns.PSSERVICE, "topoid": ns.TOPOID}
LINKS = [f"urn:ogf:network:domain=test:host=r1:port=eth{i}:link=l{i}" for i in range(60)]


def test_status_ma_registers_every_link_in_messages_of_fifty(tmp_path: Path) -> None:
    section = StatusSection(db=str(tmp_path / "status.sqlite"))
    served = status_service.serve(host(tmp_path / "a.sqlite", sections={"status": section}))
    for link in LINKS:
        served.state.store.get().update(link, 1_700_000_000, "up", "normal")  # type: ignore[union-attr]
    items = served.lookup_data()
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
    off = StatusSection(enabled=False)
    assert (
        status_service.serve(host(tmp_path / "a.sqlite", sections={"status": off})).lookup_data()
        == []
    )
    # Still one data (empty): a lookup service refuses a registration without any.
    (only,) = register_requests(ServiceInfo("x", "http://127.0.0.1:1/x"), [])
    (data,) = only.findall("nmwg:data", NS)
    assert len(data) == 0 and data.get("metadataIdRef") == only.find("nmwg:metadata", NS).get("id")
