"""Polling until a condition holds, for tests of things that happen in other processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait(what: Callable[[], Any], within: float, why: str, step: float = 0.2) -> Any:
    """``what()``'s first truthy value, polled every ``step`` s; AssertionError naming ``why``
    when ``within`` seconds pass without one."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if value := what():
            return value
        time.sleep(step)
    raise AssertionError(f"{why}: not within {within}s")
