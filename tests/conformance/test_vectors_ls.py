"""The LSRegisterRequest netsonde sends against the project's own vectors (tests/vectors/ls):
the vectors have the registration shape the schema describes, the schema refuses what a lookup
service cannot take, and what netsonde builds for the Status MA has the vectors' shape."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
from lxml import etree

from hosting import status_state
from netsonde.nmwg import ns
from netsonde.nmwg.ls import ServiceInfo, register_requests
from netsonde.services.status.nmwg import lookup_data

from .own_vectors import Schemas, facts, read, vector_names

FAMILY = "ls"
FACTS = facts(FAMILY)
NS = {"nmwg": ns.NMWG, "perfsonar": ns.PERFSONAR, "psservice": ns.PSSERVICE}
LINKS = (
    "urn:ogf:network:domain=vectors.test:node=r1:port=ge-0/0/1:link=r1-r2",
    "urn:ogf:network:domain=vectors.test:node=r2:port=ge-0/0/3:link=r2-r3",
)
SERVICE = ServiceInfo(
    "Vectors Status MA",
    "http://127.0.0.1:8084/perfSONAR_PS/services/status",
    "MA",
    "Link status of the vectors.test domain",
)


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas()


def vector(name: str) -> etree._Element:
    return etree.fromstring(read(FAMILY, name))


def shape(el: etree._Element) -> tuple[object, ...]:
    """prefix:name, the attribute names, the children's shapes (text and values left out)."""
    return (
        f"{el.prefix}:{etree.QName(el).localname}",
        tuple(sorted(el.attrib)),
        tuple(shape(c) for c in el.iterchildren(etree.Element)),
    )


def test_every_ls_vector_is_named_in_the_facts() -> None:
    assert set(vector_names(FAMILY)) == set(FACTS["vectors"])


@pytest.mark.parametrize("name", FACTS["vectors"])
def test_the_vector_has_the_registration_shape(name: str, schemas: Schemas) -> None:
    assert schemas.errors(FACTS["schema"], vector(name)) == []


def test_the_schema_refuses_what_a_lookup_service_cannot_take(schemas: Schemas) -> None:
    good = vector(FACTS["shape_of"])
    no_access_point = deepcopy(good)
    access_point = no_access_point.find(".//psservice:accessPoint", NS)
    access_point.getparent().remove(access_point)
    not_a_url = deepcopy(good)
    not_a_url.find(".//psservice:accessPoint", NS).text = "status on port 8084"
    no_data = deepcopy(good)
    for data in no_data.findall("nmwg:data", NS):
        no_data.remove(data)
    other_type = deepcopy(good)
    other_type.set("type", "LSKeepaliveRequest")
    for bad in (no_access_point, not_a_url, no_data, other_type):
        assert schemas.errors(FACTS["schema"], bad) != []


def _status_registration(directory: Path, links: tuple[str, ...]) -> list[etree._Element]:
    state = status_state(directory / "status.sqlite")
    for link in links:
        state.store.get().update(link, 1_500_000_000, "up", "normaloperation")
    return register_requests(SERVICE, lookup_data(state))


def test_netsonde_registers_the_status_ma_in_the_vectors_shape(
    tmp_path: Path, schemas: Schemas
) -> None:
    (message,) = _status_registration(tmp_path, LINKS)
    assert schemas.errors(FACTS["schema"], message) == []
    want = vector(FACTS["shape_of"])
    assert shape(message)[:2] == shape(want)[:2]
    (service_md,) = message.findall("nmwg:metadata", NS)
    assert shape(service_md) == shape(want.find("nmwg:metadata", NS))
    for tag in ("serviceName", "accessPoint", "serviceType", "serviceDescription"):
        path = f".//psservice:{tag}"
        assert message.findtext(path, namespaces=NS) == want.findtext(path, namespaces=NS)
    data = message.findall("nmwg:data", NS)
    assert [shape(d) for d in data] == [shape(d) for d in want.findall("nmwg:data", NS)]
    assert {d.get("metadataIdRef") for d in data} == {service_md.get("id")}
    registered = [d.findtext(".//topoid:subject", namespaces={"topoid": ns.TOPOID}) for d in data]
    assert registered == list(LINKS)


def test_a_service_with_nothing_to_list_registers_with_one_empty_data(
    tmp_path: Path, schemas: Schemas
) -> None:
    (message,) = _status_registration(tmp_path, ())
    assert schemas.errors(FACTS["schema"], message) == []
    want = vector("register-request-nothing-served.xml")
    assert [shape(d) for d in message.findall("nmwg:data", NS)] == [
        shape(d) for d in want.findall("nmwg:data", NS)
    ]
