"""Run a site's own probe program (as SmokePing's external probes or Nagios plugins).

The program is executed directly, never through a shell. ``{target}`` in an argument is
replaced by the (validated) target. The program prints one JSON object of metric name →
number (or null) on stdout; a non-zero exit status fails the run with its last stderr line.
A program still running when the run's time is up (``deadline.py``) is killed with what it
started, and the run fails with "did not finish".
"""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

from netsonde.model import Result
from netsonde.probes.base import Tool
from netsonde.probes.external import DidNotFinish, last_line, run_program
from netsonde.probes.targets import check_host

NAME = "command"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    program: str = Field(description="absolute path of the program")
    args: tuple[str, ...] = ()

    @field_validator("program")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not os.path.isabs(v):
            raise ValueError("program must be an absolute path")
        return v


def check_target(target: str) -> str:
    return check_host(target)


def default_timeout(params: Params) -> float:
    return 60.0


def run(target: str, params: Params, deadline: float) -> Result:
    argv = [params.program, *(a.replace("{target}", target) for a in params.args)]
    try:
        proc = run_program(argv, deadline)
    except OSError as e:
        return Result(tool=NAME, target=target, error=f"cannot run {params.program}: {e.strerror}")
    except DidNotFinish as e:
        return Result(tool=NAME, target=target, error=str(e))
    if proc.returncode != 0:
        tail = last_line(proc.stderr)
        return Result(tool=NAME, target=target, error=f"exit status {proc.returncode} {tail}")
    try:
        values = json.loads(proc.stdout)
        if not isinstance(values, dict) or not all(
            isinstance(v, int | float) or v is None for v in values.values()
        ):
            raise ValueError
    except ValueError:
        return Result(tool=NAME, target=target, error="output is not a JSON object of numbers")
    return Result(tool=NAME, target=target, values=values)


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
