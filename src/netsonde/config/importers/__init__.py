"""Other systems' configurations → netsonde config text.

``psconfig``: a pSConfig template → this host's ``[[test]]``s; ``perfsonar``: the seed's
perfSONAR-PS daemon.conf (and its PingER landmarks) → sections and ``[[test]]``s. Both build an
:class:`~netsonde.config.importers.output.Imported` (``output`` writes it as TOML, with a comment
for everything left out) or raise :class:`Unmappable` naming where in the input.
"""

from __future__ import annotations

from netsonde.config.importers.output import Imported, TestEntry, Unmappable, to_toml

__all__ = ["Imported", "TestEntry", "Unmappable", "to_toml"]
