"""Config errors, said the way a config author needs them: ``FILE:LINE: key: message``, one line,
the first in the file (and how many more)."""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from typing import Any, get_args

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic.fields import FieldInfo

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

    def line_of(self, loc: Loc) -> int:
        return self._lines.line_of(loc)

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
    """Pydantic's error, said the way a config author needs it (``model``: what was validated).

    The value given is shown, except a secret's (a field with ``repr=False`` or a ``SecretStr``:
    the message reaches the log and status.json) and a table's or an array's (which may hold a
    secret, and would not fit one line anyway)."""
    kind = err["type"]
    fields, _ = _walk(err["loc"], model)
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        _, parent = _walk(err["loc"][:-1], model)
        allowed = _keys(parent)
        hint = difflib.get_close_matches(key, allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        listed = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key{suggestion}{listed}" if suggestion else f"unknown key{listed}"
    if kind == "missing":
        return "required key is missing"
    if any(_is_secret(f) for f in fields):
        # A validator's own message may quote the value: say only what kind of check failed.
        return (
            "invalid value (not shown: it is secret)"
            if kind == "value_error"
            else f"{err['msg']} (value not shown: it is secret)"
        )
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("value_error",):
        msg += f" (got {_shown(err['input'])})"
    return msg


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _is_secret(field: FieldInfo) -> bool:
    return field.repr is False or any(_types_in(field.annotation, (SecretStr, SecretBytes)))


def _types_in(ann: object, kinds: tuple[type, ...]) -> list[type]:
    """The classes of ``kinds`` named in an annotation: ``list[X]``, ``X | None`` → X."""
    if isinstance(ann, type) and issubclass(ann, kinds):
        return [ann]
    return [t for arg in get_args(ann) for t in _types_in(arg, kinds)]


def _walk(
    loc: tuple[Any, ...], model: type[BaseModel]
) -> tuple[list[FieldInfo], type[BaseModel] | None]:
    """The fields named along ``loc`` in ``model``, and the model the path ends in (None: it
    does not end in one). Indices, dict keys and union tags are passed over."""
    fields: list[FieldInfo] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = _field(current, part)
        if field is None:
            current = None
            continue
        fields.append(field)
        models = _types_in(field.annotation, (BaseModel,))
        current = models[0] if models else None
    return fields, current


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    found = model.model_fields.get(key)
    if found is not None:
        return found
    return next((f for f in model.model_fields.values() if f.alias == key), None)


def _keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
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
