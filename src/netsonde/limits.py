"""The limits every request is held to, whoever serves it (``[api]`` keys of the same names).

Each bounds one kind of work a single request can ask for, so that no request, however
crafted, costs more than these allow; past one, the answer is an error naming the limit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestLimits:
    request_timeout: float = 30.0  # seconds per request, as the seed daemon's max_worker_lifetime
    max_body_bytes: int = 10 * 1024 * 1024  # larger bodies are refused before parsing
    # A client must have sent its whole request (headers and body) within this many seconds.
    read_timeout: float = 10.0
    # Open connections per serving process; past it, new ones get a 503 at once.
    max_connections: int = 512
    # --- the NMWG document --------------------------------------------------------------
    max_elements: int = 200_000  # elements in one request document
    max_namespaces: int = 256  # namespace declarations in one request document
    max_units: int = 1_000  # metadata and data elements of one message
    max_chain: int = 32  # metadata in one merge/filter chain (metadataIdRef hops)
    max_event_types: int = 64  # eventTypes of one (merged) metadata
    # --- the answer -----------------------------------------------------------------------
    max_response_datums: int = (
        100_000  # datums (rows) in one answer: ~5 kB each in memory while built
    )
    max_response_bytes: int = 256 * 1024 * 1024  # serialised answer
