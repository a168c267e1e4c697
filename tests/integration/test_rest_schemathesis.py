"""Property-based: requests generated from the REST API's own OpenAPI document (valid and
invalid ones) never get a 5xx, against a small populated archive."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from hosting import host, sqlite_url
from netsonde.archive import open_archive
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.probes import ping
from netsonde.services.archive.rest import build_router

TOKEN = "schemathesis-token-0123456789"
T0 = 1_700_000_000_000_000
SPECS = [
    TestSpec("loop-a", "ping", "127.0.0.1", Schedule(interval=10), ping.Params(count=2)),
    TestSpec("loop-b", "ping", "::1", Schedule(interval=10), ping.Params(count=2)),
]


def runs(spec: TestSpec) -> list[Run]:
    out = []
    for k in range(20):
        planned = T0 + k * 30_000_000
        lost = k % 5 == 4
        rtt = None if lost else 0.1 * (k + 1)
        out.append(
            Run.of(
                spec,
                planned,
                slot=k,
                state=RunState.MISSED if k == 7 else RunState.FINISHED,
                actual_us=planned + 100,
                end_us=planned + 1_000_000,
                result=None
                if k == 7
                else Result(
                    "ping",
                    spec.target,
                    sent=1,
                    replies=[PacketSample(1, rtt, 64, 64, planned + 200)],
                    values={"medianRtt": rtt, "lossPercent": 100.0 if lost else 0.0},
                ),
            )
        )
    return out


def build_app(path: Path) -> FastAPI:
    archive = open_archive(sqlite_url(path))
    archive.register_tests(SPECS, T0)
    for spec in SPECS:
        archive.store_runs(runs(spec))
    archive.close()
    app = FastAPI()
    ctx = host(path, token=TOKEN, max_body_bytes=256 * 1024)
    app.include_router(build_router(ctx), prefix="/api/v1")
    return app


# Built at import: schemathesis.pytest.from_fixture fails under pytest 9 (it reads a private
# node attribute that pytest no longer has). The directory goes when the interpreter exits.
_DATA = tempfile.TemporaryDirectory(prefix="netsonde-schemathesis-")
schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(Path(_DATA.name) / "a.sqlite"))


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    # With the token, so that store requests get past authentication into validation.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
    )
