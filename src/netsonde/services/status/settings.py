"""The ``[status]`` section: the link-state store and E2EMon compatibility."""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field

from netsonde.archive.pg import is_url
from netsonde.config import Duration, Paths, Section, SectionError


class StatusSection(Section):
    """The Status MA's link-state store, fed by snmp_link tests.

    ``db``: where the link states are kept, a SQLite file or a ``postgresql://`` URL; by
    default the archive's database when the archive is on PostgreSQL (a fleet keeps
    everything on one server), else ``status.sqlite`` in data_dir.

    ``e2emon_definitions``: the E2EMon link definitions file (nodes and links; PROTOCOL.md §4.8)
    that the compat subject ``Path.Status`` answers from; without it such requests get
    ``error.configuration``. It is re-read when it changes. ``max_recent_age``: in compat output, a
    link whose latest state is older than this is reported ``unknown`` (the seed's
    ``max_recent_age``).
    """

    enabled: bool = True
    db: str | None = Field(None, min_length=1)  # a path or URL; default: see above
    e2emon_definitions: str | None = Field(None, min_length=1)
    max_recent_age: Duration | None = Field(None, gt=0)

    def settle(self, paths: Paths) -> Self:
        try:
            db = paths.store(self.db, "status.sqlite")
        except ValueError as e:
            raise SectionError("db", str(e)) from None
        # os.path: an unreadable data_dir is not an error here (the daemon's start names it)
        if not is_url(db) and os.path.isdir(db):
            raise SectionError("db", f"{db} is a directory")
        defs = self.e2emon_definitions
        if defs is not None and not paths.resolve(defs).is_file():
            raise SectionError("e2emon_definitions", f"{paths.resolve(defs)}: no such file")
        return self.model_copy(
            update={"db": db, "e2emon_definitions": defs and str(paths.resolve(defs))}
        )
