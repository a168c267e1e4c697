"""Config errors, said the way a config author needs them: ``FILE:LINE: key: message``, one line,
the first in the file (and how many more)."""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from netsonde.config.locate import KeyLines

Loc = tuple[str | int, ...]  # a key path: ("test", 2, "params", "count")


class ConfigError(Exception):
    """A configuration problem, already formatted as ``FILE:LINE: key: message``."""


class SectionError(ValueError):
    """A section's ``settle`` refuses a value: ``key`` is the key within the section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def toml_error(name: str, text: str, e: tomllib.TOMLDecodeError) -> ConfigError:
    """tomllib's message with its position moved to the front, where every config error has it."""
    m = re.search(r"\(at line (\d+), column \d+\)", str(e))
    # "(at end of document)": the error is on the last line.
    line = m[1] if m else str(max(1, len(text.splitlines())))
    msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
    return ConfigError(f"{name}:{line}: invalid TOML: {msg}")


class Problems:
    """The mistakes found in one file (``name``), each at the line of its key; all are collected
    so that the author hears of the first in the file, not the first checked."""

    def __init__(self, name: str, lines: KeyLines) -> None:
        self.name = name
        self._lines = lines
        self._found: list[tuple[int, str]] = []

    def add(self, loc: Loc, msg: str) -> None:
        self._found.append((self._lines.line_of(loc), f"{format_key(loc)}: {msg}"))

    def add_validation(self, e: ValidationError, model: type[BaseModel], at: Loc = ()) -> None:
        """Each of pydantic's errors in validating ``model`` (found at ``at`` in the file)."""
        for err in e.errors():
            self.add((*at, *err["loc"]), describe(err, model))

    def raise_first(self) -> None:
        if not self._found:
            return
        found = sorted(self._found, key=lambda e: e[0])
        line, msg = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{self.name}:{line}: {msg}{more}")


def describe(err: Any, model: type[BaseModel]) -> str:
    """Pydantic's error, said the way a config author needs it (``model``: what was validated)."""
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        allowed = _allowed_keys(err["loc"][:-1], model)
        hint = difflib.get_close_matches(key, allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        listed = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key{suggestion}{listed}" if suggestion else f"unknown key{listed}"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("value_error",):
        msg += f" (got {err['input']!r})"
    return msg


def _allowed_keys(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    names = [x for x in loc if isinstance(x, str)]
    for name in names:
        field = model.model_fields.get(name)
        if field is None:
            return []
        ann = field.annotation
        inner = get_args(ann)[0] if get_origin(ann) else ann  # list[X], X | None → X
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return sorted(f.alias or n for n, f in model.model_fields.items())


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_key(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # A quoted TOML key may hold anything, newlines included: quote it to stay on one line.
        name = part if _BARE_KEY.match(part) else json.dumps(part)
        out += f".{name}" if out else name
    return out or "(top level)"
