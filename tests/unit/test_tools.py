"""The tool contract (``probes/base.py``), the registry, and the one deadline policy every tool
keeps (``probes/deadline.py``)."""

from __future__ import annotations

import importlib
import pkgutil
import time
from typing import Any

import pytest

import netsonde.probes
from netsonde import probes
from netsonde.model import SchedClass
from netsonde.probes import deadline as deadlines
from netsonde.probes.base import Tool

# One run of each tool, at a loopback target (or none at all: no time is left to send).
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "ping": ("127.0.0.1", {"count": 1}),
    "command": ("127.0.0.1", {"program": "/bin/true"}),
    "noop": ("x", {"sleep": 1}),
    "snmp_link": ("127.0.0.1", {"community": "c", "interfaces": ["eth0", 2]}),
    "twamp": ("127.0.0.1", {}),
    "dns": ("127.0.0.1", {"query_name": "example.test"}),
    "http": ("http://127.0.0.1:9/", {}),
    "tcp": ("127.0.0.1", {"port": 9}),
    "traceroute": ("127.0.0.1", {}),
    "iperf3": ("127.0.0.1", {}),
}


def test_every_tool_module_is_in_the_table_under_its_name() -> None:
    modules = [
        importlib.import_module(f"netsonde.probes.{m.name}")
        for m in pkgutil.iter_modules(netsonde.probes.__path__)
    ]
    declared = {m.TOOL.name: m.TOOL for m in modules if hasattr(m, "TOOL")}
    assert declared == probes.TOOLS
    assert all(isinstance(t, Tool) and t.name == name for name, t in probes.TOOLS.items())
    assert probes.get("ping") is probes.TOOLS["ping"]
    with pytest.raises(ValueError, match="unknown tool 'nope'"):
        probes.get("nope")


def test_only_iperf3_asks_for_a_class_of_its_own() -> None:
    classes = {name: t.default_class for name, t in probes.TOOLS.items()}
    assert classes.pop("iperf3") is SchedClass.EXCLUSIVE
    assert set(classes.values()) == {SchedClass.BACKGROUND}


def test_budget_keeps_the_margin_back_and_respects_a_limit() -> None:
    deadline = time.time() + 10
    assert 10 - deadlines.MARGIN - 0.1 < deadlines.budget(deadline) <= 10 - deadlines.MARGIN
    assert deadlines.budget(deadline, 2.0) == 2.0
    assert deadlines.budget(time.time()) <= -deadlines.MARGIN + 0.01
    end = deadlines.monotonic_end(deadline, 3.0)
    assert abs(end - time.monotonic() - 3.0) < 0.1


def test_default_timeouts_leave_the_margin() -> None:
    # A run given its default timeout must have time to measure before the margin.
    for name, tool in probes.TOOLS.items():
        params = tool.Params(**SAMPLES[name][1])
        assert tool.default_timeout(params) > 2 * deadlines.MARGIN, name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_no_time_left_is_reported_at_once(name: str) -> None:
    """Handed a deadline with less than the margin left, every tool returns at once with an
    error instead of starting what it cannot finish (and being killed)."""
    assert set(SAMPLES) == set(probes.TOOLS)
    tool = probes.TOOLS[name]
    target, fields = SAMPLES[name]
    params = tool.Params(**fields)
    started = time.monotonic()
    result = tool.run(tool.check_target(target), params, time.time() + deadlines.MARGIN / 2)
    assert time.monotonic() - started < 0.2, name
    assert result.tool == name and result.target == target
    assert result.error is not None and deadlines.NO_TIME_LEFT in result.error, result
    assert result.sent == 0 and not result.replies
