"""The probe registry: one module per tool, all with the same small interface.

Each tool module exposes
    NAME: str
    Params: a pydantic model (extra keys forbidden), validated when the config is loaded
    check_target(target: str) -> str      raise ValueError if the target is unacceptable
    default_timeout(params) -> float       the hard deadline of one run when none is configured
    run(target: str, params, deadline: float) -> Result   (deadline: epoch seconds)

Adding a tool is one new module and one line in ``TOOLS``.
"""

from __future__ import annotations

from types import ModuleType

from netsonde.probes import (
    command,
    dns,
    http,
    iperf3,
    noop,
    ping,
    snmp_link,
    tcp,
    traceroute,
    twamp,
)

TOOLS: dict[str, ModuleType] = {
    m.NAME: m for m in (ping, command, noop, snmp_link, twamp, dns, http, tcp, traceroute, iperf3)
}


def get(name: str) -> ModuleType:
    try:
        return TOOLS[name]
    except KeyError:
        raise ValueError(f"unknown tool {name!r} (known: {', '.join(sorted(TOOLS))})") from None
