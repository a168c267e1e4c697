"""Echo (PROTOCOL.md §4.1): the liveness check every client sends first, on every endpoint.

Each unit with an echo eventType gets one ``success.echo`` result pair referencing its
request metadata. The request metadata is *not* echoed after it, although the seed's
RequestHandler did so: the Echo protocol document's EchoResponse example, both Echo response
grammars (pSB and LS) and clients that expect exactly one ``nmwg:eventType`` in the reply all
describe the pair alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lxml import etree

from netsonde.nmwg import build, codes
from netsonde.nmwg.message import Message, Unit
from netsonde.nmwg.service import NMWGService, RequestContext

ECHO_EVENT_TYPES = frozenset(
    {
        "http://schemas.perfsonar.net/tools/admin/echo/2.0",
        "http://schemas.perfsonar.net/tools/admin/echo/ls/2.0",
        "http://schemas.perfsonar.net/tools/admin/echo/ma/2.0",
    }
)
# Short forms from the 2007 clients: echo.ma, echo.ls ...
ECHO_PATTERN = re.compile(r"echo")

# The protocol document allows the message type as a URI too; the response type follows it.
ECHO_MESSAGE_TYPES = ("EchoRequest", "http://schemas.perfsonar.net/messages/EchoRequest/1.0")

ECHO_TEXT = "The echo request has passed."


def echo(unit: Unit, message: Message, rctx: RequestContext) -> Sequence[etree._Element]:
    return build.result_pair(rctx.ids, codes.SUCCESS_ECHO, ECHO_TEXT, unit.ref)


def echo_service() -> NMWGService:
    return NMWGService(
        name="echo",
        handlers=dict.fromkeys(ECHO_MESSAGE_TYPES, echo),
        event_types=ECHO_EVENT_TYPES,
        event_type_pattern=ECHO_PATTERN,
        output_metadata=False,
    )
