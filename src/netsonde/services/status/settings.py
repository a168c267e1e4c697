"""The ``[status]`` section: the link-state store and E2EMon compatibility."""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field

from netsonde.config import Duration, Paths, Section, SectionError


class StatusSection(Section):
    """The Status MA's link-state store, fed by snmp_link tests.

    ``e2emon_definitions``: the E2EMon link definitions file (nodes and links; PROTOCOL.md §4.8)
    that the compat subject ``Path.Status`` answers from; without it such requests get
    ``error.configuration``. It is re-read when it changes. ``max_recent_age``: in compat output, a
    link whose latest state is older than this is reported ``unknown`` (the seed's
    ``max_recent_age``).
    """

    enabled: bool = True
    db: str | None = Field(None, min_length=1)  # default: DATA_DIR/status.sqlite
    e2emon_definitions: str | None = Field(None, min_length=1)
    max_recent_age: Duration | None = Field(None, gt=0)

    def settle(self, paths: Paths) -> Self:
        db = paths.resolve(self.db) if self.db else paths.data_dir / "status.sqlite"
        # os.path: an unreadable data_dir is not an error here (the daemon's start names it)
        if os.path.isdir(db):
            raise SectionError("db", f"{db} is a directory")
        defs = self.e2emon_definitions
        if defs is not None and not paths.resolve(defs).is_file():
            raise SectionError("e2emon_definitions", f"{paths.resolve(defs)}: no such file")
        return self.model_copy(
            update={"db": str(db), "e2emon_definitions": defs and str(paths.resolve(defs))}
        )
