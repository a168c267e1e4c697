"""A SetupDataResponse's rows are written as text and spliced into the serialized answer
(``build.Splices``); they must be byte for byte what lxml writes for the same elements, so
every pinger vector's answer must come out of a parse and lxml's own serialization unchanged.
"""

from __future__ import annotations

import pytest
from lxml import etree

from netsonde.nmwg import build

from .own_vectors import vector_names
from .test_vectors_pinger import FAMILY, PingerVectors

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@pytest.fixture(scope="module")
def ma(tmp_path_factory: pytest.TempPathFactory) -> PingerVectors:
    return PingerVectors.build(str(tmp_path_factory.mktemp("pinger-rows") / "archive.sqlite"))


def answer(ma: PingerVectors, name: str) -> bytes:
    response = ma.endpoint.client.post(
        ma.endpoint.path, content=ma.document(name), headers={"Content-Type": "text/xml"}
    )
    assert response.status_code == 200
    return response.content


def test_every_answer_is_what_lxml_writes_for_it(ma: PingerVectors) -> None:
    rows = 0
    for name in vector_names(FAMILY):
        if "store" in name:
            continue  # stores write to the archive: they have their own tests
        body = answer(ma, name)
        assert body.startswith(build.ENVELOPE_HEAD) and body.endswith(build.ENVELOPE_TAIL), name
        inner = body[len(build.ENVELOPE_HEAD) : -len(build.ENVELOPE_TAIL)]
        message = etree.fromstring(inner, _PARSER)
        assert build.envelope(message) == body, name
        rows += len(message.findall(".//{*}commonTime"))
        assert b"<!--" not in body, name  # every splice mark replaced
    assert rows > 20  # the comparison covered rows, not just empty answers
