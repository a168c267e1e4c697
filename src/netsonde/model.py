"""Domain types shared by every layer: what a test is, when it runs, what a run produced.

Times are integer epoch microseconds (UTC) wherever they are stored or exchanged; durations
inside the scheduler are float seconds.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

US_PER_S = 1_000_000


def to_us(seconds: float) -> int:
    """Epoch (or duration) seconds → integer microseconds."""
    return round(seconds * US_PER_S)


def from_us(us: int) -> float:
    return us / US_PER_S


class SchedClass(enum.StrEnum):
    """Scheduling classes, after pScheduler.

    exclusive  – never overlaps another exclusive or normal run (throughput tests).
    normal     – may overlap other normal and background runs, never an exclusive one.
    background – runs whenever a slot is free (ping, SNMP polls).
    """

    EXCLUSIVE = "exclusive"
    NORMAL = "normal"
    BACKGROUND = "background"


class RunState(enum.StrEnum):
    FINISHED = "finished"  # the tool ran and produced a result
    FAILED = "failed"  # the tool ran and reported an error (bad target, tool missing…)
    TIMEOUT = "timeout"  # killed at its hard deadline
    MISSED = "missed"  # could not start within its slip (busy, or the daemon was down)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a test runs.

    Periodic: slot k is due at ``start + k*interval``, moved by a uniform random amount in
    ``[-offset, +offset]`` (the PingER MP's measurementOffset). Anchoring on a grid instead of
    "now + period" keeps runs from drifting and gives every run a stable slot number.
    Poisson: gaps are exponential with mean ``interval`` (RFC 2330 §11.1.1).
    """

    interval: float  # seconds, > 0
    offset: float = 0.0  # seconds, 0 <= offset < interval / 2
    poisson: bool = False
    start: float | None = None  # epoch seconds; None = when the daemon starts
    until: float | None = None  # epoch seconds; no run is planned at or after it
    max_runs: int | None = None  # stop after this many planned runs
    slip: float | None = None  # how late a run may start; None = interval / 2


@dataclass(frozen=True, slots=True)
class TestSpec:
    """One configured test. ``params`` is the tool's validated parameter object."""

    __test__ = False  # not a pytest test class

    id: str
    tool: str
    target: str
    schedule: Schedule
    params: Any  # the tool's pydantic Params model
    sched_class: SchedClass = SchedClass.BACKGROUND
    timeout: float = 60.0  # hard deadline of one run, seconds
    source: str = ""  # the measurement point's name: PingER's "src"

    def params_dict(self) -> dict[str, Any]:
        dump = getattr(self.params, "model_dump", None)
        return dump(mode="json") if dump else dict(self.params or {})

    @property
    def key(self) -> str:
        """Stable metadata key: same source, tool, target and parameters → same key, whatever
        the id (two measurement points writing to one archive never share a key).

        This is what the archive groups results by, like the PingER metaID.
        """
        canon = json.dumps(
            {
                "source": self.source,
                "tool": self.tool,
                "target": self.target,
                "params": self.params_dict(),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


_RUN_NS = uuid.UUID("6a1f2d3c-8e4b-5f60-9a7b-0c1d2e3f4a5b")


def run_id_for(test_key: str, nominal_us: int) -> str:
    """A run's id is derived from its test key and the nominal time of its slot, so a
    re-delivery (or a restart that plans the same slot) never duplicates it."""
    return str(uuid.uuid5(_RUN_NS, f"{test_key}/{nominal_us}"))


@dataclass(slots=True)
class PacketSample:
    """One probe packet. ``rtt_ms`` is None when no reply came back."""

    seq: int
    rtt_ms: float | None
    ttl: int | None = None
    size: int | None = None
    recv_us: int | None = None  # arrival time, epoch µs, when known


# The Status MA's link state vocabulary (PROTOCOL.md §4): what an SNMP agent's numbers map to.
OperState = Literal["up", "down", "degraded", "unknown"]
AdminState = Literal["normal", "maintenance", "troubleshooting", "unknown"]


@dataclass(frozen=True, slots=True)
class LinkObservation:
    """One link's state as one poll saw it: what snmp_link hands the Status MA's feed.

    ``error`` says why a state is ``unknown`` when the poll, not the agent, is the cause (no
    answer, interface not found); ``agent_answered`` is False when the agent said nothing at all.
    """

    link_id: str
    interface: str  # as configured: the name, or the index as text
    if_index: int | None
    oper: OperState
    admin: AdminState
    time_us: int  # when the poll's answers came back
    oper_raw: int | None = None  # the agent's own ifOperStatus number, when it gave one
    admin_raw: int | None = None
    error: str | None = None
    agent_answered: bool = True


@dataclass(slots=True)
class Result:
    """What a tool produced for one run.

    ``replies`` are in arrival order and may contain duplicates (same seq twice) and
    reordering; ``sent`` is how many probes went out. ``values`` holds the summary (for ping,
    the PingER metric set); tools without packets leave ``replies`` empty.
    """

    tool: str
    target: str
    sent: int = 0
    replies: list[PacketSample] = field(default_factory=list)
    values: dict[str, float | int | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # tool-specific detail (resolved addr…)
    error: str | None = None  # set when the tool could not measure (state becomes FAILED)
    links: list[LinkObservation] = field(default_factory=list)  # snmp_link: one per link

    def detail(self) -> dict[str, Any]:
        """The tool detail as JSON-ready data: ``extra``, with the link observations under
        ``"links"``. What the archive keeps and serves for the run (and the spool sends)."""
        if not self.links:
            return self.extra
        return {**self.extra, "links": [asdict(o) for o in self.links]}


@dataclass(slots=True)
class Run:
    """One execution (or non-execution) of a test in one slot."""

    run_id: str
    test_id: str
    test_key: str
    slot: int
    planned_us: int
    state: RunState | None = None
    actual_us: int | None = None
    end_us: int | None = None
    error: str | None = None
    result: Result | None = None

    @classmethod
    def of(cls, spec: TestSpec, nominal_us: int, *, slot: int | None = None, **fields: Any) -> Run:
        """The run of ``spec`` whose slot is nominally at ``nominal_us``: id, test and key
        filled in (planned and slot default to the nominal time)."""
        fields.setdefault("planned_us", nominal_us)
        return cls(
            run_id=run_id_for(spec.key, nominal_us),
            test_id=spec.id,
            test_key=spec.key,
            slot=nominal_us if slot is None else slot,
            **fields,
        )

    @property
    def lateness_us(self) -> int | None:
        return None if self.actual_us is None else self.actual_us - self.planned_us
