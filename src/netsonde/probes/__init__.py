"""The probe registry: one module per tool, each exporting one ``TOOL`` (``base.Tool``: its
name, parameter model, target check, default timeout and run function).

Every tool spends the run's deadline the same way (``deadline.py``). Adding a tool is one new
module and one line in ``TOOLS``.
"""

from __future__ import annotations

from typing import Any

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
from netsonde.probes.base import Tool

TOOLS: dict[str, Tool[Any]] = {
    tool.name: tool
    for tool in (
        ping.TOOL,
        command.TOOL,
        noop.TOOL,
        snmp_link.TOOL,
        twamp.TOOL,
        dns.TOOL,
        http.TOOL,
        tcp.TOOL,
        traceroute.TOOL,
        iperf3.TOOL,
    )
}


def get(name: str) -> Tool[Any]:
    try:
        return TOOLS[name]
    except KeyError:
        raise ValueError(f"unknown tool {name!r} (known: {', '.join(sorted(TOOLS))})") from None
