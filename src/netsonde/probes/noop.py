"""A tool that measures nothing: for benchmarks of the scheduler and runner themselves.

It keeps the deadline policy like any tool: a sleep that does not fit ends at the budget and
the run fails with "no time left".
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from netsonde.model import Result
from netsonde.probes import deadline as deadlines
from netsonde.probes.base import Tool

NAME = "noop"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sleep: float = Field(0.0, ge=0, le=3600, description="seconds to wait before returning")


def check_target(target: str) -> str:
    return target


def default_timeout(params: Params) -> float:
    return params.sleep + 10.0


def run(target: str, params: Params, deadline: float) -> Result:
    slept = max(0.0, deadlines.budget(deadline, params.sleep))
    if slept:
        time.sleep(slept)
    error = deadlines.NO_TIME_LEFT if slept < params.sleep else None
    return Result(tool=NAME, target=target, values={"slept": slept}, error=error)


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
