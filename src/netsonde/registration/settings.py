"""The ``[registration]`` section: register this instance's services with lookup services."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field

from netsonde.config import Duration, Paths, Section, SectionError
from netsonde.config.schema import MIN_TOKEN

NAME = "registration"
URL = r"^https?://[^\s/]+(/[^\s]*)?$"


class RegistrationSection(Section):
    """``urls``: lookup services (their NMWG endpoint, ``…/perfSONAR_PS/services/LS``), tried in
    order as root hints are; none: nothing registers. ``token`` (or ``token_file``) is sent as
    ``Authorization: Bearer``. ``interval``: the keepalive period (jittered ±10 %); ``ttl``: the
    lease asked for (lsTTL). ``timeout``: of one exchange, connecting and answering included, so
    an unreachable or slow lookup service costs the registrar that much and nothing else.
    ``advertise``: the base URL others reach this instance's services at (default: from
    ``[daemon] listen``)."""

    urls: list[Annotated[str, Field(pattern=URL)]] = Field(default_factory=list, max_length=16)
    token: str | None = Field(None, min_length=MIN_TOKEN, repr=False)
    token_file: str | None = None
    interval: Duration = Field(1800.0, ge=1, le=86400)
    ttl: Duration = Field(7200.0, ge=1, le=366 * 86400)
    timeout: Duration = Field(5.0, gt=0, le=120)
    advertise: str | None = Field(None, pattern=URL)

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def settle(self, paths: Paths) -> Self:
        if self.urls and self.ttl < self.interval:
            # Each lease would lapse before its keepalive: the services would blink in and out.
            raise SectionError("ttl", f"ttl ({self.ttl:g}s) is shorter than interval")
        try:
            token = paths.read_token(self.token, self.token_file)
        except ValueError as e:
            raise SectionError("token_file", str(e)) from None
        advertise = self.advertise.rstrip("/") if self.advertise else None
        return self.model_copy(update={"token": token, "advertise": advertise})


SECTIONS: dict[str, type[Section]] = {NAME: RegistrationSection}
