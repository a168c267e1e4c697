"""The ``[ls]`` section: serve a lookup service in this instance."""

from __future__ import annotations

import os
from typing import Annotated, Self

from pydantic import BeforeValidator, Field

from netsonde.archive.pg import is_url
from netsonde.config import Duration, Paths, Section, SectionError
from netsonde.config.schema import MIN_TOKEN
from netsonde.units import parse_size


class LookupSection(Section):
    """A registry of records with leases (the seed's LS; the sLS JSON records).

    ``token`` (or ``token_file``) is needed to register, renew and delete; queries are open.
    ``ttl``: the lease of a registrant that asks for none; ``max_ttl`` caps what it may ask.
    ``expire_every``: how often expired records are removed (they are never answered anyway).
    ``query_timeout``: the longest an NMWG XQuery may run (the request's deadline may cut it
    shorter); ``query_memory``: the data segment of the XQuery worker process.
    """

    enabled: bool = False
    token: str | None = Field(None, min_length=MIN_TOKEN, repr=False)
    token_file: str | None = None
    # A SQLite path or a postgresql:// URL; default: the archive's PostgreSQL database when
    # it has one, else DATA_DIR/lookup.sqlite (Paths.store).
    db: str | None = Field(None, min_length=1)
    ttl: Duration = Field(7200.0, ge=1, le=366 * 86400)
    max_ttl: Duration = Field(86400.0, ge=1, le=366 * 86400)
    max_records_per_registrant: int = Field(1000, ge=1, le=10_000_000)
    max_record_bytes: Annotated[int, BeforeValidator(parse_size)] = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024
    )
    expire_every: Duration = Field(60.0, ge=1, le=86400)
    query_timeout: Duration = Field(10.0, ge=0.1, le=3600)
    query_memory: Annotated[int, BeforeValidator(parse_size)] = Field(
        2 << 30, ge=256 << 20, le=1 << 40
    )

    def settle(self, paths: Paths) -> Self:
        try:
            db = paths.store(self.db, "lookup.sqlite")
        except ValueError as e:
            raise SectionError("db", str(e)) from None
        # os.path: an unreadable data_dir is the daemon's to name
        if not is_url(db) and os.path.isdir(db):
            raise SectionError("db", f"{db} is a directory")
        if self.ttl > self.max_ttl:
            raise SectionError("ttl", f"ttl ({self.ttl:g}s) is longer than max_ttl")
        try:
            token = paths.read_token(self.token, self.token_file)
        except ValueError as e:
            raise SectionError("token_file", str(e)) from None
        if self.enabled and not token:
            raise SectionError("token", "a lookup service needs a token (token or token_file)")
        return self.model_copy(update={"db": db, "token": token})
