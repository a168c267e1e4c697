"""Target validation. A target ends up on a command line (never through a shell, but still as
an argument), so only IP literals and RFC 1123 host names are accepted."""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_host(target: str) -> str:
    """Return the target unchanged if it is an IP address or a host name, else raise."""
    if not target:
        raise ValueError("target is empty")
    try:
        ipaddress.ip_address(target)
        return target
    except ValueError:
        pass
    name = target[:-1] if target.endswith(".") else target
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"target {target!r} is neither an IP address nor a valid host name")
    return target


def family_of(target: str) -> int | None:
    """4 or 6 for an IP literal, None for a host name."""
    try:
        return ipaddress.ip_address(target).version
    except ValueError:
        return None


def check_ip(target: str) -> str:
    """The target must be an IP literal, for probes that never resolve names."""
    try:
        ipaddress.ip_address(target)
    except ValueError:
        raise ValueError(
            f"target {target!r} is not an IP address (names are not resolved)"
        ) from None
    return target
