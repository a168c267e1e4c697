"""The limits every request is held to, whoever serves it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestLimits:
    request_timeout: float = 30.0  # seconds per request, as the seed daemon's max_worker_lifetime
    max_body_bytes: int = 10 * 1024 * 1024  # larger bodies are refused before parsing
