"""Durations and times as users write them (config files, query parameters, the CLI)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)

# The epoch seconds a datetime, and so an ISO 8601 answer, can say: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59Z. A time outside them is refused where it enters: let in, it would fail
# later, every time something printed it.
TIME_MIN = -62_135_596_800
TIME_MAX = 253_402_300_799
# The longest interval or timeout a config may give: longer is a typo, never a plan.
YEAR_S = 366 * 86400.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m[1]) * _UNIT_SECONDS[m[2]]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError(f"invalid duration {value!r} (use e.g. 500ms, 30s, 5m, 1h30m)")
    else:
        raise ValueError(f"invalid duration {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r} (must be finite)")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    return seconds


def check_epoch(seconds: float, name: str = "time") -> float:
    """``seconds`` if it is a time ISO 8601 can say (TIME_MIN … TIME_MAX), else ValueError
    naming ``name``."""
    if TIME_MIN <= seconds <= TIME_MAX:  # False for NaN, too
        return float(seconds)
    try:
        value = float(seconds)
    except OverflowError:  # an int beyond any float
        value = math.inf if seconds > 0 else -math.inf
    whole = math.isfinite(value) and value.is_integer() and abs(value) < 1e15
    shown = str(int(value)) if whole else f"{value:g}"
    raise ValueError(
        f"{name} {shown} is out of range: times go from 0001-01-01T00:00:00Z ({TIME_MIN})"
        f" to 9999-12-31T23:59:59Z ({TIME_MAX})"
    )


def parse_time(value: object) -> float:
    """Epoch seconds from a TOML datetime, an ISO 8601 string or a number, in range."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return check_epoch(float(value))
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"invalid time {value!r} (use ISO 8601)") from None
    if isinstance(value, datetime):
        try:
            seconds = value.timestamp()  # naive datetimes are local time, as TOML says
        except (OverflowError, ValueError):  # a naive 0001-01-01 or 9999-12-31 in some zones
            raise ValueError(f"time {value.isoformat()} is out of range") from None
        return check_epoch(seconds)
    raise ValueError(f"invalid time {value!r}")


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"512k"``, ``"384MB"``, ``"1GiB"`` (binary multiples)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        unit = (m[2] or "").lower()[:1]
        return int(float(m[1]) * _SIZE_FACTOR[unit])
    raise ValueError(f"invalid size {value!r} (use e.g. 65536, 512k, 384M, 1G)")


def iso_seconds(t: int) -> str:
    """Unix seconds → ``2023-11-14T22:13:20Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
