"""Prometheus exposition: the latest measurements per test, run counts, the daemon's own state
and the HTTP API's request counts and latencies.

Each ``Metrics`` has a private registry (never prometheus_client's global one), so several can
live in one process — one per app, one per test.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from netsonde.model import Run, TestSpec
from netsonde.mp.status import (
    DaemonStatus,
    RegistrationStatus,
    SpoolStats,
    StatusSource,
    WorkerStatus,
)

log = logging.getLogger(__name__)

# Round-trip times from loopback (~0.05 ms) through LAN and continental WAN to satellite and
# congested intercontinental paths (seconds).
RTT_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RTT_STATS = {"min": "minRtt", "median": "medianRtt", "max": "maxRtt"}
UNMATCHED = "<unmatched>"  # one label for every path no route knows: bounded cardinality


class Metrics:
    def __init__(
        self,
        status: StatusSource | None = None,
        *,
        runs: bool = True,
        http: bool = True,
        multiprocess_dir: str | None = None,
        appended: Callable[[], bytes] | None = None,
    ) -> None:
        """``status``: the daemon's live snapshot (``Host.status``), read at scrape time.

        With API workers in processes of their own, the daemon keeps the run metrics
        (``http=False``) and writes them to a file; each worker keeps only HTTP metrics
        (``runs=False``) in prometheus_client's multiprocess files under ``multiprocess_dir``
        (PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported), and a
        scrape sums the workers' files and appends the daemon's text (``appended``).
        """
        self.registry = CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        self._appended = appended
        r = self.registry
        self.runs_enabled, self.http_enabled = runs, http
        if runs:
            self._run_metrics(r)
        if http:
            self._http_metrics(r)
        if status is not None:
            r.register(StatusCollector(status))

    def _run_metrics(self, r: CollectorRegistry) -> None:
        self.last_rtt = Gauge(
            "netsonde_last_rtt_ms",
            "RTT statistics of the latest run of a test, ms (NaN: no reply)",
            ["test", "target", "stat"],
            registry=r,
        )
        self.last_loss = Gauge(
            "netsonde_last_loss_percent",
            "Packet loss of the latest run of a test, percent",
            ["test", "target"],
            registry=r,
        )
        self.rtt = Histogram(
            "netsonde_rtt_ms",
            "RTT of every reply, ms",
            ["test"],
            buckets=RTT_BUCKETS_MS,
            registry=r,
        )
        self.runs = Counter(
            "netsonde_runs", "Runs recorded, by test and state", ["test", "state"], registry=r
        )

    def _http_metrics(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "netsonde_http_requests",
            "HTTP requests by method, path template and status",
            ["method", "path", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "netsonde_http_request_duration_seconds",
            "HTTP request latency by method, path template and status, seconds",
            ["method", "path", "status"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )

    def observe_run(self, run: Run, spec: TestSpec | None = None) -> None:
        """Record one finished, failed, timed-out or missed run (the daemon's run sink)."""
        if not self.runs_enabled:
            return
        test = spec.id if spec is not None else run.test_id
        self.runs.labels(test=test, state=str(run.state)).inc()
        result = run.result
        if result is None:  # nothing measured: the last measurement stays the latest
            return
        target = spec.target if spec is not None else result.target
        for stat, name in RTT_STATS.items():
            self.last_rtt.labels(test=test, target=target, stat=stat).set(
                _number(result.values.get(name))
            )
        if "lossPercent" in result.values:
            self.last_loss.labels(test=test, target=target).set(
                _number(result.values["lossPercent"])
            )
        histogram = self.rtt.labels(test=test)
        for reply in result.replies:
            if reply.rtt_ms is not None:
                histogram.observe(reply.rtt_ms)

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        if not self.http_enabled:
            return
        labels = {"method": method, "path": path, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.request_seconds.labels(**labels).observe(seconds)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (Prometheus text by default)."""
        if self._multiprocess_dir is None:
            encoder, content_type = choose_encoder(accept)
            return encoder(self.registry), content_type
        summed = CollectorRegistry()
        MultiProcessCollector(summed, path=self._multiprocess_dir)
        body = generate_latest(summed) + (self._appended() if self._appended else b"")
        return body, CONTENT_TYPE_LATEST  # text only: the appended part is in that format


def _number(value: Any) -> float:
    """A summary value as a gauge value: a missing RTT (100 % loss) is NaN, so the gauge does
    not go on showing the previous run's RTT as if it were current."""
    return float(value) if isinstance(value, int | float) else math.nan


class StatusCollector(Collector):
    """The daemon's state, read when scraped (nothing to keep in step between scrapes)."""

    def __init__(self, status: StatusSource) -> None:
        self._status = status

    def describe(self) -> Iterable[Metric]:
        return []  # not known before the first scrape; do not call status() at registration

    def collect(self) -> Iterable[Metric]:
        try:
            status = self._status()
        except Exception:  # a scrape must still answer with the metrics that do not need it
            log.exception("status snapshot failed")
            return []
        return [] if status is None else list(_status_metrics(status))


def _status_metrics(status: DaemonStatus) -> Iterable[Metric]:
    point = status.point
    for name, doc, value in (
        ("netsonde_tests", "Tests configured", point.tests),
        ("netsonde_runs_in_progress", "Runs in progress", point.in_progress),
        ("netsonde_runs_waiting", "Runs due but waiting for a free slot", point.waiting),
        ("netsonde_archive_backlog", "Runs waiting for the archive writer", status.archive_backlog),
        (
            "netsonde_archive_rollup_backlog",
            "Runs stored but not yet rolled up",
            status.upkeep.rollup_backlog,
        ),
    ):
        yield GaugeMetricFamily(name, doc, value=value)
    if point.lateness is not None:
        family = GaugeMetricFamily(
            "netsonde_scheduler_lateness_ms",
            "Start lateness of recent runs (actual minus planned start), ms",
            labels=["stat"],
        )
        family.add_metric(["p50"], point.lateness.p50_ms)
        family.add_metric(["p99"], point.lateness.p99_ms)
        family.add_metric(["max"], point.lateness.max_ms)
        yield family
    yield CounterMetricFamily(
        "netsonde_archive_stored", "Runs stored in the archive", value=status.stored
    )
    yield CounterMetricFamily(
        "netsonde_archive_expired",
        "Runs removed by [archive] retention",
        value=status.upkeep.expired,
    )
    yield from _supervision_metrics(status)
    yield GaugeMetricFamily(
        "netsonde_archive_write_failing",
        "1 while the last archive write failed (it is retried)",
        value=0 if status.archive_error is None else 1,
    )


def _supervision_metrics(status: DaemonStatus) -> Iterable[Metric]:
    """Workers (restarts, heartbeat age, up), the spool, the reaper and loop stalls."""
    yield from _worker_metrics(status.workers)
    if (spool := status.spool) is not None:
        yield from _spool_metrics(spool)
    if status.registration:
        yield from _registration_metrics(status.registration)
    if (reaper := status.reaper) is not None:
        kills = CounterMetricFamily(
            "netsonde_reaper_kills", "Processes signalled by the cleanup list", labels=["signal"]
        )
        kills.add_metric(["TERM"], reaper.kills_term)
        kills.add_metric(["KILL"], reaper.kills_kill)
        yield kills
        yield CounterMetricFamily(
            "netsonde_reaper_reaped", "Orphaned children reaped", value=reaper.reaped
        )
    yield CounterMetricFamily(
        "netsonde_event_loop_stalls",
        "Times the daemon's event loop did not turn for heartbeat_timeout",
        value=status.loop_stalls,
    )


def _worker_metrics(workers: Mapping[str, WorkerStatus]) -> Iterable[Metric]:
    restarts = CounterMetricFamily(
        "netsonde_worker_restarts",
        "Restarts of a supervised worker (died or stopped beating)",
        labels=["worker"],
    )
    age = GaugeMetricFamily(
        "netsonde_worker_heartbeat_age_seconds",
        "Seconds since a worker's last heartbeat",
        labels=["worker"],
    )
    up = GaugeMetricFamily(
        "netsonde_worker_up",
        "1 while a worker runs (0: backing off or exited)",
        labels=["worker"],
    )
    for name, w in workers.items():
        restarts.add_metric([name], w.restarts)
        age.add_metric([name], w.heartbeat_age_s)
        up.add_metric([name], 1 if w.state == "running" else 0)
    return (restarts, age, up)


def _registration_metrics(states: Mapping[str, RegistrationStatus]) -> Iterable[Metric]:
    registered = GaugeMetricFamily(
        "netsonde_ls_registered",
        "1 while a service is registered with a lookup service",
        labels=["service"],
    )
    success = GaugeMetricFamily(
        "netsonde_ls_last_success_seconds",
        "Unix time of a service's last answered registration or keepalive",
        labels=["service"],
    )
    failures = CounterMetricFamily(
        "netsonde_ls_failures",
        "Failed exchanges with lookup services (unreachable, refused)",
        labels=["service"],
    )
    for name, r in states.items():
        registered.add_metric([name], 1 if r.key is not None else 0)
        if r.last_success is not None:
            success.add_metric([name], r.last_success)
        failures.add_metric([name], r.failures)
    return (registered, success, failures)


def _spool_metrics(spool: SpoolStats) -> Iterable[Metric]:
    yield GaugeMetricFamily(
        "netsonde_spool_backlog", "Results in the spool waiting for delivery", value=spool.backlog
    )
    if spool.oldest_age_s is not None:  # nothing waiting: no age
        yield GaugeMetricFamily(
            "netsonde_spool_oldest_age_seconds",
            "Age of the oldest undelivered result",
            value=spool.oldest_age_s,
        )
    yield GaugeMetricFamily(
        "netsonde_spool_dead_letters",
        "Results refused for good (dead-letter table)",
        value=spool.dead_letters,
    )
    yield CounterMetricFamily(
        "netsonde_spool_delivered",
        "Results delivered to the remote archive",
        value=spool.delivered,
    )


# ---- HTTP ------------------------------------------------------------------------------------


class MetricsMiddleware:
    """Counts requests and their latency by method, path template and status.

    Use: ``app.add_middleware(MetricsMiddleware, metrics=metrics)``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an exception is a server error
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(
                scope["method"], path_template(scope), status, time.perf_counter() - started
            )


def path_template(scope: Scope) -> str:
    """``/api/v1/tests/{key}`` for ``/api/v1/tests/abc``: a label per route, not per URL.

    The router leaves the matched route in the scope; an included router's route knows only
    its own part of the path (``/tests/{key}``), so the prefix is taken from the request path.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return _match_top_level(scope)
    concrete = _fill(template, scope.get("path_params", {}))
    path = scope.get("path", "")
    if concrete is not None and path.endswith(concrete):
        return path[: len(path) - len(concrete)] + template
    return template


def _fill(template: str, params: Mapping[str, Any]) -> str | None:
    try:
        return template.format_map({k: str(v) for k, v in params.items()})
    except (KeyError, ValueError, IndexError):  # a {name:convertor} the format can't fill
        return None


def _match_top_level(scope: Scope) -> str:
    """For responses sent before routing left a route in the scope (404s, middleware)."""
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        if isinstance(route, Route) and route.matches(scope)[0] is Match.FULL:
            return route.path
    return UNMATCHED


def metrics_route(metrics: Metrics, path: str = "/metrics") -> Route:
    """``GET /metrics`` in the Prometheus text format (or OpenMetrics, when asked)."""

    # async on purpose: status() reads the scheduler, which lives on the event loop's thread.
    async def scrape(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    return Route(path, scrape, methods=["GET"], include_in_schema=False)
