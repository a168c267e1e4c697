"""A lookup record's shape (the sLS JSON record) and its checks, shared by the registry and
the REST routes.

A record is a ``type`` (``service``, ``host``, ``interface``, ``psmetadata``, …) and a flat
dict of key → list of strings (``service-locator``, ``service-type``, ``group-communities``…).
Keys the server sets itself (``uri``, ``expires``, …) cannot be registered.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

TYPE = re.compile(r"[a-z][a-z0-9-]{0,63}")
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_KEYS = 256  # per record
MAX_VALUES = 256  # per key
MAX_VALUE_CHARS = 4096
# Set by the server, never by a registrant.
RESERVED = frozenset({"uri", "type", "ttl", "expires", "state", "registrant", "created", "renewed"})
# What makes two registrations "the same thing" (an upsert, not a second record), by type.
# A type not listed here, or a record without any of its keys, is keyed by its whole content.
LOCATOR_KEYS: dict[str, tuple[str, ...]] = {
    "service": ("service-locator",),
    "host": ("host-name",),
    "interface": ("interface-name", "interface-addresses"),
    "person": ("person-emails",),
    "psmetadata": (
        "psmetadata-ma-locator",
        "psmetadata-src-address",
        "psmetadata-dst-address",
        "psmetadata-event-types",
        "psmetadata-tool-name",
    ),
}


class RecordError(ValueError):
    """A record refused: ``field`` names where (``type``, ``service-locator[3]``…)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.reason = field, message


@dataclass(frozen=True, slots=True)
class RecordIn:
    """What a registrant asks to register: checked, values as tuples."""

    type: str
    values: Mapping[str, tuple[str, ...]]

    def size(self) -> int:
        """Its size as stored (JSON bytes): what ``max_record_bytes`` caps."""
        return len(values_json(self.values).encode())

    def stable_key(self) -> str:
        """Same type and same locator values → same key (order of values ignored)."""
        wanted = [k for k in LOCATOR_KEYS.get(self.type, ()) if k in self.values]
        chosen = {k: sorted(self.values[k]) for k in wanted} if wanted else dict(self.values)
        canonical = json.dumps([self.type, chosen], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def values_json(values: Mapping[str, tuple[str, ...]]) -> str:
    return json.dumps({k: list(v) for k, v in values.items()}, separators=(",", ":"))


def _strings(field: str, value: object) -> tuple[str, ...]:
    """A list of strings (a lone string is taken as a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise RecordError(field, "must be a list of strings")
    if len(items) > MAX_VALUES:
        raise RecordError(field, f"more than {MAX_VALUES} values")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise RecordError(f"{field}[{i}]", "must be a string")
        if len(item) > MAX_VALUE_CHARS:
            raise RecordError(f"{field}[{i}]", f"longer than {MAX_VALUE_CHARS} characters")
    return tuple(items)


def check_type(value: object) -> str:
    """``"service"`` or ``["service"]`` (the sLS form) → ``"service"``."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not TYPE.fullmatch(value):
        raise RecordError("type", f"must be one name matching {TYPE.pattern}")
    return value


def record_in(type_: object, values: Mapping[str, object]) -> RecordIn:
    """A record as given → ``RecordIn``, or RecordError naming the first thing wrong."""
    kind = check_type(type_)
    if len(values) > MAX_KEYS:
        raise RecordError("record", f"more than {MAX_KEYS} keys")
    checked: dict[str, tuple[str, ...]] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise RecordError(repr(key)[:140], f"a key must match {KEY.pattern}")
        if key in RESERVED:
            raise RecordError(key, "is set by the server, not by a registrant")
        checked[key] = _strings(key, value)
    return RecordIn(kind, checked)
