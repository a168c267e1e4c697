"""Run a site's own probe program (as SmokePing's external probes or Nagios plugins).

The program is executed directly, never through a shell. ``{target}`` in an argument is
replaced by the (validated) target. The program prints one JSON object of metric name →
number (or null) on stdout; a non-zero exit status fails the run with its last stderr line.
The runner's hard deadline applies: a program that hangs is killed with its process group.
"""

from __future__ import annotations

import json
import os
import subprocess

from pydantic import BaseModel, ConfigDict, Field, field_validator

from netsonde.model import Result
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
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as e:
        return Result(tool=NAME, target=target, error=f"cannot run {params.program}: {e.strerror}")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        tail = lines[-1] if lines else ""
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
