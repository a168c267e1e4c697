"""TOML → validated, typed configuration. Every error names the file, the line and the key.

``schema``: the file's sections (services contribute their own); ``load``: text → Config;
``settings``: the Config; ``specs``: [[test]] → TestSpecs; ``errors`` and ``locate``: saying a
mistake with its line. Here: the names the rest of netsonde uses.
"""

from __future__ import annotations

from netsonde.config.errors import ConfigError, SectionError
from netsonde.config.load import EMBEDDED_DEFAULT, load, parse
from netsonde.config.locate import KeyLines
from netsonde.config.schema import TEST_ID, CleanupRule, Duration, Paths, Section
from netsonde.config.settings import Config, ServerSpec

__all__ = [
    "EMBEDDED_DEFAULT",
    "TEST_ID",
    "CleanupRule",
    "Config",
    "ConfigError",
    "Duration",
    "KeyLines",
    "Paths",
    "Section",
    "SectionError",
    "ServerSpec",
    "load",
    "parse",
]
