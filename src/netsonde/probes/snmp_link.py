"""Layer-2 link state from an SNMP agent's IF-MIB, for the Status MA.

One run polls ifOperStatus/ifAdminStatus of the configured interfaces of one agent (the
target) and reports one ``LinkObservation`` per link in ``Result.links``; the Status MA's feed
turns consecutive observations into ranges. States and their mapping are described in
``netsonde.engines.snmp``. An agent that does not answer yields ``unknown`` readings (and a run
error), never ``down``; so does a run with no time left for the poll (``deadline.py``).
"""

from __future__ import annotations

import math
import time
from string import Formatter

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from netsonde.engines.snmp import LinkReading, poll_interfaces_sync, unknown_reading
from netsonde.model import LinkObservation, Result, to_us
from netsonde.probes import deadline as deadlines
from netsonde.probes.base import Tool
from netsonde.probes.targets import check_host

NAME = "snmp_link"

_LINK_ID_FIELDS = {"target", "interface", "if_index"}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # SecretStr: kept out of repr, logs and the JSON dump (and so out of the test key:
    # rotating a community does not start a new series).
    community: SecretStr = Field(description="SNMP v2c read community")
    port: int = Field(161, ge=1, le=65_535)
    interfaces: list[int | str] = Field(
        min_length=1, description="ifIndex numbers, or names matched against ifDescr"
    )
    timeout: float = Field(1.0, gt=0, le=60, description="seconds to wait for one response")
    retries: int = Field(1, ge=0, le=10)
    link_id: str = Field(
        "urn:ogf:network:host={target}:port={interface}",
        description="link id template; fields {target}, {interface}, {if_index}",
    )

    @field_validator("interfaces")
    @classmethod
    def _distinct(cls, value: list[int | str]) -> list[int | str]:
        if len({str(i) for i in value}) != len(value):
            raise ValueError("interfaces are listed more than once")
        if any(isinstance(i, int) and i < 1 for i in value):
            raise ValueError("an ifIndex is a positive integer")
        return value

    @field_validator("link_id")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        used = {f for _, f, _, _ in Formatter().parse(value) if f is not None}
        if unknown := used - _LINK_ID_FIELDS:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; use {sorted(_LINK_ID_FIELDS)}")
        return value


def check_target(target: str) -> str:
    return check_host(target)


def default_timeout(params: Params) -> float:
    # Worst case: the ifDescr walk's first request and every get chunk each exhaust their
    # retries (a live agent answers the rest of a walk at once).
    requests = 1 + math.ceil(2 * len(params.interfaces) / 40)
    return requests * params.timeout * (params.retries + 1) + 2.0


def link_id(params: Params, target: str, reading: LinkReading) -> str:
    index = "" if reading.if_index is None else str(reading.if_index)
    return params.link_id.format(target=target, interface=reading.interface, if_index=index)


def observation(params: Params, target: str, reading: LinkReading, time_us: int) -> LinkObservation:
    return LinkObservation(
        link_id=link_id(params, target, reading),
        interface=reading.interface,
        if_index=reading.if_index,
        oper=reading.oper,
        admin=reading.admin,
        time_us=time_us,
        oper_raw=reading.oper_raw,
        admin_raw=reading.admin_raw,
        error=reading.error,
        agent_answered=reading.agent_answered,
    )


def unknown_links(target: str, params: Params, why: str, time_us: int) -> list[LinkObservation]:
    """Every configured link ``unknown``: the agent was not asked, or not in time."""
    return [
        observation(params, target, unknown_reading(i, why, answered=False), time_us)
        for i in params.interfaces
    ]


def _counts(links: list[LinkObservation]) -> dict[str, float | int | None]:
    counts: dict[str, float | int | None] = {"links": len(links)}
    for state in ("up", "down", "degraded", "unknown"):
        counts[state] = sum(o.oper == state for o in links)
    counts["maintenance"] = sum(o.admin == "maintenance" for o in links)
    counts["errors"] = sum(o.error is not None for o in links)
    return counts


def _agent_error(links: list[LinkObservation]) -> str | None:
    """The run's error when the agent told us nothing at all (every link unknown, one cause)."""
    if links and not any(o.agent_answered for o in links):
        return f"no answer from the SNMP agent: {links[0].error}"
    return None


def run(target: str, params: Params, deadline: float) -> Result:
    limit = deadlines.budget(deadline)
    if limit <= 0:
        error: str | None = deadlines.NO_TIME_LEFT
        links = unknown_links(target, params, deadlines.NO_TIME_LEFT, to_us(time.time()))
    else:
        readings = poll_interfaces_sync(
            target,
            params.community.get_secret_value(),
            params.interfaces,
            port=params.port,
            timeout=params.timeout,
            retries=params.retries,
            limit=limit,
        )
        now_us = to_us(time.time())  # the answers are in: the time of every observation
        links = [observation(params, target, r, now_us) for r in readings.values()]
        error = _agent_error(links)
    return Result(
        tool=NAME,
        target=target,
        values=_counts(links),
        extra={"port": params.port},
        error=error,
        links=links,
    )


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
