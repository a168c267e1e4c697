"""A tool that measures nothing: for benchmarks of the scheduler and runner themselves."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from netsonde.model import Result

NAME = "noop"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sleep: float = Field(0.0, ge=0, le=3600, description="seconds to wait before returning")


def check_target(target: str) -> str:
    return target


def default_timeout(params: Params) -> float:
    return params.sleep + 10.0


def run(target: str, params: Params, deadline: float) -> Result:
    if params.sleep:
        time.sleep(params.sleep)
    return Result(tool=NAME, target=target, values={"slept": params.sleep})
