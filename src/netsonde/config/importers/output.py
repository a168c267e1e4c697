"""What an importer produces, and its TOML text: sections and ``[[test]]``s, each with comment
lines for what the input said that netsonde does differently or not at all."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from netsonde.config.errors import ConfigError

# Keys whose values are durations: written as "4h", "1h59m59s", "500ms", never as bare seconds.
DURATION_KEYS = frozenset(
    {"interval", "offset", "slip", "timeout", "stop_timeout", "request_timeout", "ttl"}
    | {"max_recent_age", "expire_every", "max_ttl"}
)
# Sections in the order the README lists them; others after.
_ORDER = ("daemon", "archive", "api", "spool", "status", "ls", "registration")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Unmappable(ConfigError):
    """Something in the input netsonde cannot do; the message names where (a JSON path, or a
    file, line and key)."""


@dataclass
class TestEntry:
    """One ``[[test]]``: its keys in the order written (durations in seconds), and notes."""

    __test__ = False  # not a pytest test class

    fields: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass
class Imported:
    """A config built from another system's: ``sections`` in the order written."""

    source: str  # what it was imported from (the header says so)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    section_notes: dict[str, list[str]] = field(default_factory=dict)
    tests: list[TestEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the header: what was left out, and why

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.setdefault(name, {})

    def section_note(self, name: str, text: str) -> None:
        self.sections.setdefault(name, {})
        notes = self.section_notes.setdefault(name, [])
        if text not in notes:
            notes.append(text)


def format_duration(seconds: float) -> str:
    """Seconds → the shortest netsonde duration that says them: 7199 → "1h59m59s",
    0.25 → "250ms", 1.5 → "1.5s" (to the millisecond)."""
    if not math.isfinite(seconds * 1000) or seconds < 0:
        raise ValueError(f"not a duration: {seconds!r}")
    total_ms = round(seconds * 1000)
    if total_ms == 0:
        return "0s"
    whole, ms = divmod(total_ms, 1000)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if ms and not secs and not out:
        return f"{ms}ms"
    if ms:
        return out + f"{secs + ms / 1000:g}s"
    return out + (f"{secs}s" if secs else "")


def to_toml(imported: Imported) -> str:
    lines = [f"# Imported by `netsonde config import` from {_comment(imported.source)}."]
    lines += [f"# {_comment(n)}" for n in imported.notes]
    for name, values in sorted(imported.sections.items(), key=_position):
        lines.append("")
        lines += [f"# {_comment(n)}" for n in imported.section_notes.get(name, [])]
        lines.append(f"[{_key(name)}]")
        lines += [f"{_key(k)} = {_value(k, v)}" for k, v in values.items()]
    for test in imported.tests:
        lines.append("")
        lines += [f"# {_comment(n)}" for n in test.notes]
        lines.append("[[test]]")
        lines += [f"{_key(k)} = {_value(k, v)}" for k, v in test.fields.items()]
    return "\n".join(lines) + "\n"


def _position(section: tuple[str, dict[str, Any]]) -> int:
    return _ORDER.index(section[0]) if section[0] in _ORDER else len(_ORDER)


def _comment(text: str) -> str:
    # Input files reach comments: a line break in one would start a line of TOML.
    return _CONTROL.sub(" ", _encodable(text))


def _encodable(text: str) -> str:
    """A lone surrogate (JSON allows "\\ud800") cannot be written as UTF-8: "?" instead."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(key: str, value: Any) -> str:
    if key in DURATION_KEYS and isinstance(value, int | float) and not isinstance(value, bool):
        return _string(format_duration(value))
    return _literal(value)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no value for {value!r} here")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(str(k))} = {_literal(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _string(text: str) -> str:
    # A JSON string is a TOML basic string, except that TOML wants DEL escaped too.
    return json.dumps(_encodable(text), ensure_ascii=False).replace("\x7f", "\\u007f")
