"""/metrics: per-test gauges, the RTT histogram and run counters after known runs, the daemon's
status read at scrape time, and request counts by path template."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from hosting import host
from netsonde.api.metrics import Metrics, MetricsMiddleware, metrics_route, path_template
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec
from netsonde.mp.status import (
    DaemonStatus,
    Lateness,
    PointStatus,
    ReaperStats,
    SpoolStats,
    WorkerStatus,
)
from netsonde.probes import ping
from netsonde.services.archive.rest import build_router

with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

T0 = 1_700_000_000_000_000
SPEC = TestSpec("lan", "ping", "192.0.2.7", Schedule(interval=10), ping.Params(count=4))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run(
    slot: int,
    state: RunState,
    values: dict[str, float | None] | None = None,
    rtts: Iterable[float | None] = (),
    test_id: str = "lan",
) -> Run:
    result = None
    if values is not None:
        replies = [PacketSample(seq, rtt) for seq, rtt in enumerate(rtts, start=1)]
        result = Result("ping", "192.0.2.7", sent=4, replies=replies, values=values)
    return Run(f"{test_id}-{slot}", test_id, "k", slot, T0, state=state, result=result)


GOOD = run(
    0,
    RunState.FINISHED,
    {"minRtt": 0.2, "medianRtt": 0.3, "maxRtt": 3.0, "lossPercent": 25.0},
    [0.2, 0.3, 3.0, None],
)
ALL_LOST = run(
    1,
    RunState.FINISHED,
    {"minRtt": None, "medianRtt": None, "maxRtt": None, "lossPercent": 100.0},
    [None],
)
MISSED = run(2, RunState.MISSED)


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def scrape(metrics: Metrics) -> Samples:
    body, _ = metrics.exposition()
    return samples(body.decode())


# ---- measurements ------------------------------------------------------------------------------


def test_last_run_gauges_histogram_and_counters() -> None:
    m = Metrics()
    m.observe_run(GOOD, SPEC)
    found = scrape(m)
    rtt = {s: value(found, "netsonde_last_rtt_ms", test="lan", target="192.0.2.7", stat=s)
           for s in ("min", "median", "max")}  # fmt: skip
    assert rtt == {"min": 0.2, "median": 0.3, "max": 3.0}
    assert value(found, "netsonde_last_loss_percent", test="lan", target="192.0.2.7") == 25.0
    buckets = {
        le: value(found, "netsonde_rtt_ms_bucket", test="lan", le=le)
        for le in ("0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "5000.0", "+Inf")
    }
    assert buckets == {
        "0.1": 0,
        "0.25": 1,
        "0.5": 2,
        "1.0": 2,
        "2.5": 2,
        "5.0": 3,
        "5000.0": 3,
        "+Inf": 3,
    }
    assert value(found, "netsonde_rtt_ms_count", test="lan") == 3  # the lost probe is no RTT
    assert value(found, "netsonde_rtt_ms_sum", test="lan") == 3.5
    assert value(found, "netsonde_runs_total", test="lan", state="finished") == 1


def test_total_loss_blanks_the_rtt_and_a_missed_run_changes_nothing_measured() -> None:
    m = Metrics()
    for r in (GOOD, ALL_LOST, MISSED):
        m.observe_run(r, SPEC)
    found = scrape(m)
    for stat in ("min", "median", "max"):
        latest = value(found, "netsonde_last_rtt_ms", test="lan", target="192.0.2.7", stat=stat)
        assert math.isnan(latest)  # not the previous run's RTT
    assert value(found, "netsonde_last_loss_percent", test="lan", target="192.0.2.7") == 100.0
    assert value(found, "netsonde_rtt_ms_count", test="lan") == 3
    assert value(found, "netsonde_runs_total", test="lan", state="finished") == 2
    assert value(found, "netsonde_runs_total", test="lan", state="missed") == 1


def test_without_a_spec_the_run_and_result_name_the_test() -> None:
    m = Metrics()
    m.observe_run(run(0, RunState.FINISHED, {"medianRtt": 7.5}, [7.5], test_id="other"))
    found = scrape(m)
    labels = {"test": "other", "target": "192.0.2.7"}
    assert value(found, "netsonde_last_rtt_ms", **labels, stat="median") == 7.5
    assert math.isnan(value(found, "netsonde_last_rtt_ms", **labels, stat="min"))  # not in values
    assert ("netsonde_last_loss_percent", frozenset(labels.items())) not in found


def test_each_instance_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.observe_run(GOOD, SPEC)
    assert value(scrape(one), "netsonde_runs_total", test="lan", state="finished") == 1
    assert not any(name == "netsonde_runs_total" for name, _ in scrape(two))


# ---- the daemon's status ------------------------------------------------------------------------

STATUS = DaemonStatus(
    point=PointStatus(
        tests=12,
        in_progress=3,
        waiting=1,
        runs={"finished": 40},
        lateness=Lateness(p50_ms=0.5, p99_ms=7.25, max_ms=12.0),
    ),
    stored=40,
    archive_backlog=2,
    archive_error=None,
)


def test_status_is_read_at_scrape_time() -> None:
    status = STATUS
    m = Metrics(status=lambda: status)
    found = scrape(m)
    assert value(found, "netsonde_tests") == 12
    assert value(found, "netsonde_runs_in_progress") == 3
    assert value(found, "netsonde_runs_waiting") == 1
    assert value(found, "netsonde_archive_backlog") == 2
    assert value(found, "netsonde_archive_stored_total") == 40
    assert value(found, "netsonde_archive_write_failing") == 0
    lateness = {
        s: value(found, "netsonde_scheduler_lateness_ms", stat=s) for s in ("p50", "p99", "max")
    }
    assert lateness == {"p50": 0.5, "p99": 7.25, "max": 12.0}
    assert ("netsonde_spool_backlog", frozenset()) not in found  # no spool in this status
    status = replace(
        status,
        stored=41,
        archive_error="disk full",
        spool=SpoolStats(backlog=5, oldest_age_s=61.5, dead_letters=1, delivered=9),
        point=replace(status.point, lateness=None),
    )
    found = scrape(m)
    assert value(found, "netsonde_archive_stored_total") == 41
    assert value(found, "netsonde_archive_write_failing") == 1
    assert value(found, "netsonde_spool_backlog") == 5
    assert value(found, "netsonde_spool_oldest_age_seconds") == 61.5
    assert value(found, "netsonde_spool_dead_letters") == 1
    assert value(found, "netsonde_spool_delivered_total") == 9
    assert not any(name == "netsonde_scheduler_lateness_ms" for name, _ in found)


def test_supervised_workers_reaper_and_loop_stalls_are_exported() -> None:
    status = replace(
        STATUS,
        workers={
            "runner": WorkerStatus(state="running", restarts=2, heartbeat_age_s=0.25),
            "server:iperf3": WorkerStatus(state="backoff", restarts=7, heartbeat_age_s=3.0),
        },
        reaper=ReaperStats(kills_term=3, kills_kill=1, reaped=4),
        loop_stalls=1,
    )
    found = scrape(Metrics(status=lambda: status))
    assert value(found, "netsonde_worker_restarts_total", worker="runner") == 2
    assert value(found, "netsonde_worker_restarts_total", worker="server:iperf3") == 7
    assert value(found, "netsonde_worker_up", worker="runner") == 1
    assert value(found, "netsonde_worker_up", worker="server:iperf3") == 0
    assert value(found, "netsonde_worker_heartbeat_age_seconds", worker="server:iperf3") == 3.0
    assert value(found, "netsonde_reaper_kills_total", signal="TERM") == 3
    assert value(found, "netsonde_reaper_kills_total", signal="KILL") == 1
    assert value(found, "netsonde_reaper_reaped_total") == 4
    assert value(found, "netsonde_event_loop_stalls_total") == 1


def test_a_failing_status_does_not_break_the_scrape() -> None:
    def broken() -> DaemonStatus:
        raise RuntimeError("scheduler gone")

    m = Metrics(status=broken)
    m.observe_run(GOOD, SPEC)
    found = scrape(m)
    assert value(found, "netsonde_runs_total", test="lan", state="finished") == 1
    assert not any(name == "netsonde_tests" for name, _ in found)


def test_no_status_yet_gives_only_the_metrics_that_do_not_need_it() -> None:
    """An API worker before the daemon has written status.json (``read_status`` gives None)."""
    m = Metrics(status=lambda: None)
    m.observe_run(GOOD, SPEC)
    found = scrape(m)
    assert value(found, "netsonde_runs_total", test="lan", state="finished") == 1
    assert not any(name.startswith(("netsonde_tests", "netsonde_worker")) for name, _ in found)


# ---- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def app_and_metrics(tmp_path: Path) -> tuple[FastAPI, Metrics]:
    metrics = Metrics(status=lambda: STATUS)
    ctx = host(tmp_path / "a.sqlite")
    app = FastAPI()
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(build_router(ctx), prefix="/api/v1")
    app.router.routes.append(metrics_route(metrics))
    return app, metrics


def test_metrics_route_serves_text_with_the_right_type(
    app_and_metrics: tuple[FastAPI, Metrics],
) -> None:
    app, metrics = app_and_metrics
    metrics.observe_run(GOOD, SPEC)
    with TestClient(app) as client:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.text
        assert 'netsonde_last_rtt_ms{stat="median",target="192.0.2.7",test="lan"} 0.3' in text
        assert 'netsonde_runs_total{state="finished",test="lan"} 1.0' in text
        assert "netsonde_runs_in_progress 3.0" in text
        om = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")


def test_requests_are_counted_by_path_template_and_status(
    app_and_metrics: tuple[FastAPI, Metrics],
) -> None:
    app, _ = app_and_metrics
    with TestClient(app) as client:
        assert client.get("/api/v1/tests").status_code == 200
        for key in ("abc", "def"):
            assert client.get(f"/api/v1/tests/{key}").status_code == 404
        assert client.get("/api/v1/runs", params={"from": "never"}).status_code == 400
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/metrics").status_code == 200
        found = samples(client.get("/metrics").text)
    counts = {
        (dict(labels)["path"], dict(labels)["status"]): v
        for (name, labels), v in found.items()
        if name == "netsonde_http_requests_total" and dict(labels)["method"] == "GET"
    }
    assert counts == {
        ("/api/v1/tests", "200"): 1,
        ("/api/v1/tests/{key}", "404"): 2,
        ("/api/v1/runs", "400"): 1,
        ("<unmatched>", "404"): 1,
        ("/metrics", "200"): 1,  # the scrape in progress is not counted yet
    }
    latency = value(
        found,
        "netsonde_http_request_duration_seconds_count",
        method="GET",
        path="/api/v1/tests/{key}",
        status="404",
    )
    assert latency == 2


def test_path_template_keeps_the_mount_prefix() -> None:
    class FakeRoute:
        path = "/tests/{key}"

    scope = {"route": FakeRoute(), "path": "/x/api/v1/tests/k1", "path_params": {"key": "k1"}}
    assert path_template(scope) == "/x/api/v1/tests/{key}"
    assert path_template({"path": "/nowhere"}) == "<unmatched>"
