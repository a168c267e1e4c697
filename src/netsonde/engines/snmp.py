"""Interface state over SNMP (IF-MIB ifOperStatus / ifAdminStatus), read with pysnmp.

Numeric OIDs only, so no MIB has to be compiled or installed. SNMP v2c.

The agent's numbers are mapped onto the Status MA's vocabulary (PROTOCOL.md §4):

    ifOperStatus          oper          why
    1 up                  up
    2 down                down
    3 testing             degraded      in a diagnostic mode: carries no normal traffic
    4 unknown             unknown
    5 dormant             degraded      waiting for an external event, not passing packets
    6 notPresent          down          a component is missing: the link cannot carry anything
    7 lowerLayerDown      down          down because of the layer below; still a down link

    ifAdminStatus         admin
    1 up                  normal
    2 down                maintenance   an operator took it out of service on purpose
    3 testing             troubleshooting

Anything else (an unknown number, noSuchInstance) is ``unknown``. An agent that does not
answer (timeout, wrong community — v2c agents drop those silently — or a transport error) gives
``unknown`` for both states with the error kept: we did not learn the link is down, only that we
could not look. Community strings are secrets; they never appear in errors or logs here.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    get_cmd,
    walk_cmd,
)
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

from netsonde.model import AdminState, OperState

IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
IF_OPER_STATUS = "1.3.6.1.2.1.2.2.1.8"

OPER_STATES: dict[int, OperState] = {
    1: "up",
    2: "down",
    3: "degraded",
    4: "unknown",
    5: "degraded",
    6: "down",
    7: "down",
}
ADMIN_STATES: dict[int, AdminState] = {1: "normal", 2: "maintenance", 3: "troubleshooting"}

# Two OIDs per interface; 40 varbinds stay well inside one 1500-byte response.
_GET_CHUNK = 40

Interface = int | str  # an ifIndex, or a name matched against ifDescr


@dataclass(frozen=True, slots=True)
class LinkReading:
    """One interface's state as read in one poll. ``error`` is set whenever a state is unknown
    because of the poll (agent silent, interface not found), not because the agent said so."""

    interface: str  # as configured: the name, or the index as text
    if_index: int | None
    oper: OperState
    admin: AdminState
    oper_raw: int | None = None  # the agent's ifOperStatus number, when it gave one
    admin_raw: int | None = None
    error: str | None = None
    agent_answered: bool = True  # False: the agent said nothing (timeout, transport error)


class SnmpError(Exception):
    """The agent did not answer usefully (timeout, transport or protocol error)."""


def oper_state(raw: int | None) -> OperState:
    return OPER_STATES.get(raw, "unknown") if raw is not None else "unknown"


def admin_state(raw: int | None) -> AdminState:
    return ADMIN_STATES.get(raw, "unknown") if raw is not None else "unknown"


def unknown_reading(interface: Interface, error: str, *, answered: bool = True) -> LinkReading:
    # Without an answer an index is still its own ifIndex; a name's is not known.
    index = interface if isinstance(interface, int) else None
    return LinkReading(
        str(interface), index, "unknown", "unknown", error=error, agent_answered=answered
    )


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


class _Session:
    """One engine + target + credentials for the length of one poll."""

    def __init__(self, community: str, timeout: float, retries: int) -> None:
        self.engine = SnmpEngine()
        self.auth = CommunityData(community, mpModel=1)  # mpModel=1: SNMP v2c
        self.context = ContextData()
        self.timeout = timeout
        self.retries = retries
        self.target: UdpTransportTarget | Udp6TransportTarget | None = None

    async def open(self, host: str, port: int) -> None:
        kind = Udp6TransportTarget if _is_ipv6(host) else UdpTransportTarget
        try:
            self.target = await kind.create(
                (host, port), timeout=self.timeout, retries=self.retries
            )
        except (PySnmpError, OSError) as exc:  # pysnmp wraps resolver failures in its own
            raise SnmpError(f"cannot resolve {host}: {exc}") from None

    def close(self) -> None:
        self.engine.close_dispatcher()

    async def get(self, oids: Sequence[str]) -> dict[str, Any]:
        """OID → value for each requested OID (NoSuch* values included as they came)."""
        assert self.target is not None
        found: dict[str, Any] = {}
        for start in range(0, len(oids), _GET_CHUNK):
            objs = [ObjectType(ObjectIdentity(o)) for o in oids[start : start + _GET_CHUNK]]
            err_ind, err_status, err_index, binds = await get_cmd(
                self.engine, self.auth, self.target, self.context, *objs
            )
            _raise_on_error(err_ind, err_status, err_index)
            found.update((str(name), value) for name, value in binds)
        return found

    async def walk(self, column: str) -> dict[int, Any]:
        """Last sub-identifier (the ifIndex) → value for every row of one table column."""
        assert self.target is not None
        rows: dict[int, Any] = {}
        walk = walk_cmd(
            self.engine,
            self.auth,
            self.target,
            self.context,
            ObjectType(ObjectIdentity(column)),
            lexicographicMode=False,  # stop at the end of the column, not of the MIB
        )
        async for err_ind, err_status, err_index, binds in walk:
            _raise_on_error(err_ind, err_status, err_index)
            for name, value in binds:
                if not isinstance(value, EndOfMibView):
                    rows[int(name[-1])] = value
        return rows


def _raise_on_error(err_ind: Any, err_status: Any, err_index: Any) -> None:
    if err_ind:
        raise SnmpError(str(err_ind))
    if err_status:
        raise SnmpError(f"agent error {err_status.prettyPrint()} at varbind {err_index}")


def _as_int(value: Any) -> int | None:
    """The integer an agent sent, or None for no value (noSuch*, or a non-integer type from a
    broken agent: that is unknown, not a crash)."""
    if value is None or isinstance(value, NoSuchInstance | NoSuchObject | EndOfMibView):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def _resolve(session: _Session, interfaces: Sequence[Interface]) -> dict[str, int | None]:
    """Configured interface → ifIndex (None when a name is not in ifDescr)."""
    by_name: dict[str, int] = {}
    if any(isinstance(i, str) for i in interfaces):
        by_name = {str(v): idx for idx, v in (await session.walk(IF_DESCR)).items()}
    return {str(i): i if isinstance(i, int) else by_name.get(i) for i in interfaces}


def _readings(indexes: dict[str, int | None], values: dict[str, Any]) -> dict[str, LinkReading]:
    readings: dict[str, LinkReading] = {}
    for name, idx in indexes.items():
        if idx is None:
            readings[name] = unknown_reading(name, "no such interface (ifDescr)")
            continue
        oper = _as_int(values.get(f"{IF_OPER_STATUS}.{idx}"))
        admin = _as_int(values.get(f"{IF_ADMIN_STATUS}.{idx}"))
        missing = "no such ifIndex" if oper is None and admin is None else None
        readings[name] = LinkReading(
            name, idx, oper_state(oper), admin_state(admin), oper, admin, error=missing
        )
    return readings


async def poll_interfaces(
    host: str,
    community: str,
    interfaces: Iterable[Interface],
    *,
    port: int = 161,
    timeout: float = 1.0,
    retries: int = 1,
) -> dict[str, LinkReading]:
    """Read oper/admin state of ``interfaces`` (ifIndex numbers or ifDescr names) from one agent.

    Keys are the interfaces as given (indexes as text). Never raises for an agent problem:
    every interface is then ``unknown`` with the error, because a silent agent says nothing
    about its links.
    """
    wanted = list(dict.fromkeys(interfaces))  # keep order, drop repeats
    session = _Session(community, timeout, retries)
    try:
        await session.open(host, port)
        indexes = await _resolve(session, wanted)
        oids = [
            f"{column}.{idx}"
            for idx in indexes.values()
            if idx is not None
            for column in (IF_OPER_STATUS, IF_ADMIN_STATUS)
        ]
        values = await session.get(oids) if oids else {}
    except (SnmpError, PySnmpError, OSError) as exc:
        return {str(i): unknown_reading(i, str(exc), answered=False) for i in wanted}
    finally:
        session.close()
    return _readings(indexes, values)


def poll_interfaces_sync(
    host: str,
    community: str,
    interfaces: Iterable[Interface],
    *,
    port: int = 161,
    timeout: float = 1.0,
    retries: int = 1,
    limit: float | None = None,
) -> dict[str, LinkReading]:
    """``poll_interfaces`` for callers without an event loop; ``limit`` bounds the whole poll
    (seconds) so a slow agent turns into ``unknown`` readings rather than a killed run."""
    wanted = list(dict.fromkeys(interfaces))
    poll = poll_interfaces(host, community, wanted, port=port, timeout=timeout, retries=retries)
    try:
        return asyncio.run(asyncio.wait_for(poll, limit))
    except TimeoutError:
        why = f"poll not done within {limit:g}s"
        return {str(i): unknown_reading(i, why, answered=False) for i in wanted}
