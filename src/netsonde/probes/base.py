"""The tool contract: what every probe offers the config, the runner and the CLI.

After blackbox_exporter's ``ProbeFn``: one type every tool is a value of, one table
(``netsonde.probes.TOOLS``) that only looks tools up, and the run's deadline computed once by
the runner and handed down (``deadline.py`` says how a tool spends it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from netsonde.model import Result, SchedClass

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Tool(Generic[P]):
    """One measurement tool. ``run`` executes in a forked child of its own; it must return
    before ``deadline`` (epoch seconds), where the runner kills the run's processes."""

    name: str
    Params: type[P]  # validated when the config is loaded; extra keys forbidden
    check_target: Callable[[str], str]  # the target unchanged, or ValueError
    default_timeout: Callable[[P], float]  # a run's hard deadline when none is configured
    run: Callable[[str, P, float], Result]  # (target, params, deadline)
    default_class: SchedClass = SchedClass.BACKGROUND  # the config's `class` wins
