"""RELAX NG validation of NMWG documents against the conformance grammars.

The grammars ship in the compact syntax (RNC); rnc2rng converts them to RNG XML and lxml
validates. Converted files go to a per-session pytest tmp dir, never into the repository.
rnc2rng inlines ``include``s but drops an include's override block, so grammars written as
"include nmbase.rnc { Type = ... }" (schemas/ls) do not convert; that is reported as a
:class:`SchemaError`, not worked around.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import rnc2rng
from lxml import etree


class SchemaError(Exception):
    """An RNC grammar that cannot be turned into a usable RELAX NG schema."""


class RngCache:
    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._schemas: dict[Path, etree.RelaxNG] = {}

    def rng_file(self, rnc: Path) -> Path:
        """The RNG conversion of ``rnc``, made once per session."""
        digest = hashlib.sha256(rnc.read_bytes()).hexdigest()[:16]
        out = self.cache_dir / f"{rnc.stem}-{digest}.rng"
        if not out.exists():
            try:
                text = rnc2rng.dumps(rnc2rng.load(str(rnc)))
            except Exception as exc:
                raise SchemaError(f"rnc2rng cannot convert {rnc}: {exc!r}") from exc
            out.write_text(text, encoding="utf-8")
        return out

    def schema(self, rnc: Path) -> etree.RelaxNG:
        rnc = rnc.resolve()
        if rnc not in self._schemas:
            rng = self.rng_file(rnc)
            try:
                self._schemas[rnc] = etree.RelaxNG(etree.parse(str(rng)))
            except etree.RelaxNGParseError as exc:
                raise SchemaError(f"{rng} (from {rnc}) is not a usable schema: {exc}") from exc
        return self._schemas[rnc]

    def errors(self, rnc: Path, element: etree._Element) -> list[str]:
        """Validation errors of ``element`` (as its own document) against ``rnc``; [] if valid."""
        schema = self.schema(rnc)
        document = etree.ElementTree(etree.fromstring(etree.tostring(element)))
        if schema.validate(document):
            return []
        return [f"line {e.line}: {e.message}" for e in schema.error_log]
