"""The one store-token check. Transports differ only in how they say no: REST answers 401/403,
NMWG a result code (``http.rest.require_token``, ``nmwg.service.require_store_token``)."""

from __future__ import annotations

import enum
import hmac


class Refusal(enum.Enum):
    DISABLED = "storing is disabled: this server has no API token configured ([api] token)"
    DENIED = "missing or wrong token"


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    scheme, _, given = (authorization or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def token_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; no configured token means nothing matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def refusal(expected: str | None, given: str | None) -> Refusal | None:
    """Why a store with ``given`` is refused, or None when it may go ahead."""
    if not expected:
        return Refusal.DISABLED
    return None if token_matches(expected, given) else Refusal.DENIED
