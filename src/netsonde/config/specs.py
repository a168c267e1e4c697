"""``[[test]]`` sections → the TestSpecs the scheduler runs, each checked by its tool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from netsonde.config.errors import Loc, Problems, format_key
from netsonde.config.schema import TestSection
from netsonde.model import SchedClass, Schedule, TestSpec


class ToolContract(Protocol):
    """What the config needs of a tool (``netsonde.probes.base.Tool``)."""

    @property
    def Params(self) -> type[BaseModel]: ...

    @property
    def default_class(self) -> SchedClass: ...

    def check_target(self, target: str) -> str: ...

    def default_timeout(self, params: Any) -> float: ...


def build_tests(
    sections: list[TestSection],
    param_models: Mapping[str, ToolContract],
    problems: Problems,
    *,
    source: str,
) -> list[TestSpec]:
    specs: list[TestSpec] = []
    seen: dict[str, int] = {}
    # The archive files runs by key (source, tool, target, params): two tests with one key
    # would share run ids, and one test's runs would be dropped as the other's duplicates.
    keys: dict[str, tuple[str, Loc]] = {}
    for i, t in enumerate(sections):
        here: Loc = ("test", i)
        tool = param_models.get(t.tool)
        if tool is None:
            problems.add(
                (*here, "tool"),
                f"unknown tool {t.tool!r} (known: {', '.join(sorted(param_models))})",
            )
            continue
        if (t.target is None) == (t.targets is None):
            problems.add(here, "give exactly one of 'target' or 'targets'")
            continue
        if t.offset * 2 >= t.interval:
            problems.add((*here, "offset"), "offset must be less than half the interval")
        if t.until is not None and t.start is not None and t.until <= t.start:
            problems.add((*here, "until"), "until must be after start")
        try:
            params = tool.Params.model_validate(t.params)
        except ValidationError as e:
            problems.add_validation(e, tool.Params, at=(*here, "params"))
            continue
        targets = [t.target] if t.target is not None else list(t.targets or [])
        for j, target in enumerate(targets):
            where = (*here, "target") if t.target is not None else (*here, "targets", j)
            try:
                tool.check_target(target)
            except ValueError as e:
                problems.add(where, str(e))
                continue
            test_id = t.id if t.target is not None else f"{t.id}/{target}"
            if test_id in seen:
                problems.add(
                    (*here, "id"), f"duplicate test id {test_id!r} (first at test[{seen[test_id]}])"
                )
                continue
            seen[test_id] = i
            spec = TestSpec(
                id=test_id,
                tool=t.tool,
                target=target,
                schedule=Schedule(
                    interval=t.interval,
                    offset=t.offset,
                    poisson=t.schedule == "poisson",
                    start=t.start,
                    until=t.until,
                    max_runs=t.max_runs,
                    slip=t.slip,
                ),
                params=params,
                # A tool may say which class it belongs in (iperf3: exclusive); the
                # config's own `class` wins.
                sched_class=t.sched_class
                if "sched_class" in t.model_fields_set
                else tool.default_class,
                timeout=t.timeout or tool.default_timeout(params),
                source=source,
            )
            if (first := keys.get(spec.key)) is not None:
                first_id, first_loc = first
                problems.add(
                    where,
                    f"test {test_id!r} has the same tool, target and params as test"
                    f" {first_id!r} ({format_key(first_loc)}, line {problems.line_of(first_loc)}):"
                    " they would share one archive key; change one, or remove it",
                )
                continue
            keys[spec.key] = (test_id, where)
            specs.append(spec)
    return specs
