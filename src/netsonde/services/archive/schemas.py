"""The REST API's request and response bodies.

Typed, so that the OpenAPI document says exactly what goes in and what comes out. Times are
integer epoch microseconds (``…_us``), each with its ISO 8601 UTC twin (``…_iso``) for people
and for clients that would rather not do the arithmetic.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import timedelta
from typing import Annotated, Any, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from netsonde.config import TEST_ID
from netsonde.model import US_PER_S, PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.units import EPOCH, TIME_MAX

# The largest time an ISO 8601 string can say (datetime's range): stored times stay printable.
MAX_TIME_US = (TIME_MAX + 1) * US_PER_S - 1
SUMMARY_KEY = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"  # what the archive can aggregate by


def iso_utc(us: int) -> str:
    """Epoch µs → ``2023-11-14T22:13:20.000001Z``, exactly (no float on the way). Three per
    run in a results page: the date is looked up per day, the rest is integer arithmetic
    (datetime arithmetic and isoformat were ~15 % of a 60-row page)."""
    days, us_of_day = divmod(us, US_PER_DAY)
    seconds, fraction = divmod(us_of_day, US_PER_S)
    minutes, seconds = divmod(seconds, 60)
    return f"{_iso_date(days)}T{_HH_MM[minutes]}{_SS[seconds]}{fraction:06d}Z"


US_PER_DAY = 86_400 * US_PER_S
ONE_DAY = timedelta(days=1)
_HH_MM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]  # by minute of the day
_SS = [f"{s:02d}." for s in range(60)]


@functools.lru_cache(maxsize=4096)
def _iso_date(days: int) -> str:
    """``YYYY-MM-DD`` of a day since the epoch; OverflowError outside datetime's years."""
    return (EPOCH + days * ONE_DAY).date().isoformat()


# ---- responses -------------------------------------------------------------------------------


class _WithIsoTimes(BaseModel):
    """Fills in each ``X_iso`` field from its ``X_us`` sibling, so no caller can forget one."""

    @model_validator(mode="before")
    @classmethod
    def _iso_twins(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in cls.model_fields:
            if name.endswith("_iso"):
                us = data.get(name.removesuffix("_iso") + "_us")
                data[name] = None if us is None else iso_utc(us)
        return data


class StoredTest(_WithIsoTimes):
    key: str = Field(description="stable key: hash of source, tool, target and parameters")
    test_id: str = Field(description="the label the test was last registered under")
    source: str = Field("", description="the measurement point that runs it")
    tool: str
    target: str
    params: dict[str, Any]
    first_seen_us: int
    first_seen_iso: str
    last_seen_us: int
    last_seen_iso: str
    runs: int = Field(description="runs stored under this key")
    last_run_us: int | None = Field(description="planned start of the latest run")
    last_run_iso: str | None


class Sample(BaseModel):
    seq: int
    rtt_ms: float | None = Field(description="null: no reply")
    ttl: int | None
    size: int | None
    recv_us: int | None = Field(description="arrival time, epoch µs")


class StoredResult(BaseModel):
    sent: int = Field(description="probes sent")
    values: dict[str, float | int | None] = Field(description="summary, e.g. the PingER set")
    samples: list[Sample] | None = Field(None, description="per packet; only with samples=true")
    extra: dict[str, JsonValue] | None = Field(
        None, description="tool detail (traceroute hops, TWAMP T1–T4…); only with samples=true"
    )


class StoredRun(_WithIsoTimes):
    run_id: str
    test_id: str
    test_key: str
    tool: str
    target: str
    slot: int
    state: RunState
    planned_us: int
    planned_iso: str
    actual_us: int | None = Field(description="when the tool started; null if it never did")
    actual_iso: str | None
    end_us: int | None
    end_iso: str | None
    lateness_us: int | None = Field(description="actual minus planned start")
    error: str | None
    result: StoredResult | None

    @classmethod
    def from_row(cls, row: dict[str, Any], *, samples: bool) -> StoredRun:
        """From an archive row (``Archive.find_runs``); ``sent`` is null without result."""
        result = None
        if row["sent"] is not None:
            result = {
                "sent": row["sent"],
                "values": row["values"],
                "samples": row["samples"] if samples else None,
                "extra": row["extra"] if samples else None,
            }
        actual = row["actual_us"]
        lateness = None if actual is None else actual - row["planned_us"]
        return cls.model_validate({**row, "lateness_us": lateness, "result": result})


class _Page(BaseModel):
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="pass as cursor to get the next page; null on the last page"
    )


class StoredTestPage(_Page):
    items: list[StoredTest]


class StoredRunPage(_Page):
    items: list[StoredRun]


class Window(_WithIsoTimes):
    start_us: int
    start_iso: str
    end_us: int = Field(description="exclusive")
    end_iso: str
    runs: int = Field(description="results in the window")
    count: int = Field(description="results with a numeric value of the metric")
    min: float | None
    mean: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    mean_loss_percent: float | None = Field(description="mean lossPercent of the results")


class Aggregation(BaseModel):
    test_id: str | None
    test_key: str | None
    metric: str
    window_s: float
    windows: list[Window] = Field(description="windows with results only, oldest first")
    next_cursor: str | None


class RttBands(BaseModel):
    """Per-packet round-trip times (ms) of a bucket: the smoke bands of a latency graph."""

    count: int = Field(description="replies (the first of each probe)")
    min: float
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float
    max: float
    mean: float


class MetricStats(BaseModel):
    count: int = Field(description="finished runs with a numeric value of the metric")
    min: float
    mean: float
    max: float
    last: float = Field(description="the latest run's value")


class RollupBucket(_WithIsoTimes):
    start_us: int
    start_iso: str
    end_us: int = Field(description="exclusive")
    end_iso: str
    runs: int = Field(description="runs of any state (missed and failed ones too)")
    results: int = Field(description="runs with a result")
    sent: int = Field(description="probes sent by the finished runs")
    received: int = Field(description="probes answered")
    loss_percent: float | None = Field(description="packet loss over every probe sent")
    rtt: RttBands | None = Field(description="percentiles within 1 %; null without replies")
    metric: MetricStats | None = Field(description="null when no run had a value")


class Rollups(BaseModel):
    test_id: str | None
    test_key: str | None
    resolution_s: float
    metric: str
    buckets: list[RollupBucket] = Field(description="buckets with results only, oldest first")
    next_cursor: str | None


class StoreReply(BaseModel):
    tests: int = Field(description="test definitions registered (sent or inline in runs)")
    runs: int = Field(description="runs received")
    new: int = Field(description="runs stored by this request")
    duplicates: int = Field(description="runs already stored before (same run_id): ignored")


# ---- the store request -------------------------------------------------------------------------


def _number_or_null(value: Any) -> Any:
    """One clear message instead of one per member of the int | float union."""
    if value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ):
        return value
    raise ValueError("must be a finite number or null")


def _json_at_most(limit: int) -> AfterValidator:
    def check(value: Any) -> Any:
        if len(json.dumps(value)) > limit:
            raise ValueError(f"at most {limit} bytes as JSON")
        return value

    return AfterValidator(check)


_NO_CONTROL = r"^[^\s\x00-\x1f\x7f]"
TimeUs = Annotated[int, Field(strict=True, ge=0, le=MAX_TIME_US, description="epoch µs")]
Count = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
Number = Annotated[int | float | None, BeforeValidator(_number_or_null)]
SummaryKey = Annotated[str, StringConstraints(pattern=SUMMARY_KEY)]
TestIdStr = Annotated[str, StringConstraints(pattern=TEST_ID)]
ToolStr = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
TargetStr = Annotated[str, StringConstraints(pattern=_NO_CONTROL + "{1,255}$")]
SourceStr = Annotated[str, StringConstraints(pattern=_NO_CONTROL + "{0,255}$")]
TestKeyStr = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
RunIdStr = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")]
Params = Annotated[dict[str, JsonValue], _json_at_most(16 * 1024)]

# The archive keeps a test's id, source, tool, target and parameters; its schedule belongs to
# the measurement point that runs it and is not sent, but TestSpec (which computes the key)
# needs one.
_UNSCHEDULED = Schedule(interval=1.0)


def _spec(test_id: str, source: str, tool: str, target: str, params: dict[str, Any]) -> TestSpec:
    return TestSpec(
        id=test_id,
        tool=tool,
        target=target,
        schedule=_UNSCHEDULED,
        params=params,
        source=source,
    )


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewTest(_Input):
    test_id: TestIdStr
    source: SourceStr = ""
    tool: ToolStr
    target: TargetStr
    params: Params = Field(default_factory=dict)

    def spec(self) -> TestSpec:
        return _spec(self.test_id, self.source, self.tool, self.target, self.params)


class NewSample(TypedDict):
    """One packet. A TypedDict, not a model: a run carries ten or more of these, and building
    a model per sample was two thirds of the time of validating a store request."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    seq: Count
    rtt_ms: Annotated[float, Field(strict=True, ge=0, le=3.6e6, allow_inf_nan=False)] | None
    ttl: NotRequired[Annotated[int, Field(strict=True, ge=0, le=255)] | None]
    size: NotRequired[Annotated[int, Field(strict=True, ge=0, le=65535)] | None]
    recv_us: NotRequired[TimeUs | None]


class NewResult(_Input):
    sent: Count
    values: Annotated[dict[SummaryKey, Number], Field(max_length=256)] = Field(default_factory=dict)
    samples: list[NewSample] = Field(default_factory=list, max_length=100_000)
    extra: Annotated[dict[str, JsonValue], _json_at_most(64 * 1024)] = Field(default_factory=dict)

    def result(self) -> Result:
        replies = [
            PacketSample(s["seq"], s["rtt_ms"], s.get("ttl"), s.get("size"), s.get("recv_us"))
            for s in self.samples
        ]
        # tool and target are the test's; the archive keeps them with the test, not the result.
        return Result(
            tool="",
            target="",
            sent=self.sent,
            replies=replies,
            values=dict(self.values),
            extra=dict(self.extra),
        )


class NewRun(_Input):
    run_id: RunIdStr
    test_key: TestKeyStr | None = Field(None, description="a test already stored or sent along")
    test_id: TestIdStr | None = Field(None, description="with tool and target: the test inline")
    source: SourceStr = ""
    tool: ToolStr | None = None
    target: TargetStr | None = None
    params: Params | None = None
    slot: Annotated[int, Field(strict=True, ge=0, le=2**62)]
    state: RunState
    planned_us: TimeUs
    actual_us: TimeUs | None = None
    end_us: TimeUs | None = None
    error: Annotated[str, Field(max_length=4096)] | None = None
    result: NewResult | None = None

    @model_validator(mode="after")
    def _consistent(self) -> NewRun:
        inline = (self.test_id, self.tool, self.target)
        if self.test_key is not None and any(v is not None for v in (*inline, self.params)):
            raise ValueError("give either test_key or test_id, tool, target and params, not both")
        if self.test_key is None and any(v is None for v in inline):
            raise ValueError("give test_key, or test_id, tool and target (and params)")
        if self.state is RunState.FINISHED and self.result is None:
            raise ValueError("a finished run needs its result")
        if self.state is RunState.MISSED and self.result is not None:
            raise ValueError("a missed run has no result")
        return self

    def inline_spec(self) -> TestSpec | None:
        """The test defined inline by this run, or None when it names a test_key."""
        if self.test_id is None or self.tool is None or self.target is None:
            return None
        return _spec(self.test_id, self.source, self.tool, self.target, self.params or {})

    def run(self, test_key: str) -> Run:
        return Run(
            run_id=self.run_id,
            test_id=self.test_id or "",
            test_key=test_key,
            slot=self.slot,
            planned_us=self.planned_us,
            state=self.state,
            actual_us=self.actual_us,
            end_us=self.end_us,
            error=self.error,
            result=None if self.result is None else self.result.result(),
        )


class StoreRequest(_Input):
    tests: list[NewTest] = Field(default_factory=list, max_length=10_000)
    runs: list[NewRun] = Field(default_factory=list, max_length=10_000)

    def to_domain(self) -> tuple[list[TestSpec], list[Run]]:
        """The tests to register (sent, and inline in runs) and the runs, keyed."""
        specs = {s.key: s for s in (t.spec() for t in self.tests)}
        runs = []
        for new in self.runs:
            spec = new.inline_spec()
            if spec is not None:
                specs.setdefault(spec.key, spec)
            key = spec.key if spec is not None else new.test_key
            assert key is not None  # NewRun._consistent: one or the other
            runs.append(new.run(key))
        return list(specs.values()), runs
