"""`netsonde run`: wires config, archive, runner and scheduler together and owns the lifecycle.

SIGTERM/SIGINT stop gracefully (in-flight runs end or are killed, the archive is flushed,
the pidfile removed); SIGHUP reloads the config, keeping the calendar of unchanged tests.
The daemon publishes what it is doing in ``DATA_DIR/status.json`` for ``netsonde status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from netsonde import config as config_mod
from netsonde import probes as tools
from netsonde.api.app import create_app
from netsonde.api.metrics import Metrics
from netsonde.archive import Archive, connections, open_archive
from netsonde.archive.maintenance import Maintenance
from netsonde.archive.writer import BatchWriter
from netsonde.config import Config, ConfigError, ServerSpec
from netsonde.daemon.api_workers import ApiWorkers
from netsonde.daemon.pidfile import PidFile
from netsonde.daemon.reaper import Reaper
from netsonde.daemon.received import Received
from netsonde.daemon.servers import KeptServer, should_restart
from netsonde.daemon.sink import Consumer, RunSink
from netsonde.daemon.supervisor import (
    Exited,
    Heartbeat,
    LoopWatchdog,
    Supervisor,
    watch_task,
)
from netsonde.http.bounded import BoundedRequests
from netsonde.http.server import bind, raise_open_files_limit, serve
from netsonde.model import Run, TestSpec, to_us
from netsonde.mp.lookup import lookup_data as mp_lookup_data
from netsonde.mp.point import MeasurementPoint
from netsonde.mp.runner import ForkServerGone, Runner
from netsonde.mp.spool import Spool
from netsonde.mp.status import DaemonStatus, SpoolStats, UpkeepStatus
from netsonde.nmwg.ls import ServiceInfo
from netsonde.registration import NAME as REGISTRATION
from netsonde.registration import SECTIONS as REGISTRATION_SECTIONS
from netsonde.registration import Registrant, Registrar, RegistrationSection
from netsonde.services import SECTIONS, SERVICES
from netsonde.services.base import Feed, Host
from netsonde.services.pinger import MP_PATH

log = logging.getLogger("netsonde")

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.prom"
SPOOL_FILE = "spool.sqlite"
DEREGISTER_TIMEOUT = 5.0  # seconds a clean stop gives the deregistrations from lookup services


def load_config(path: str | Path | None) -> Config:
    return config_mod.load(path, tools.TOOLS, {**SECTIONS, **REGISTRATION_SECTIONS})


def status_path(cfg: Config) -> Path:
    """Beside the pidfile: with both on a runtime directory (/run), status stays readable
    when the data directory's disk is full or read-only."""
    return cfg.pidfile.parent / STATUS_FILE


def metrics_path(cfg: Config) -> Path:
    return cfg.pidfile.parent / METRICS_FILE


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    write_bytes_atomically(path, json.dumps(data, indent=1).encode())


def write_bytes_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Daemon:
    """One measurement point's process: every part of it a supervised worker (see
    ``supervisor.py``), stopped in the order that loses nothing."""

    def __init__(self, cfg: Config, config_path: str | Path | None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.started = time.time()
        self.reloads = 0
        self.last_reload_error: str | None = None
        self.restart_requested = False
        self.supervisor = Supervisor(stale_after=cfg.heartbeat_timeout)
        self.watchdog = LoopWatchdog(stall_after=cfg.heartbeat_timeout)
        self.api_workers: ApiWorkers | None = None
        self.metrics: Metrics | None = None
        self.feeds: dict[str, Feed] = {}
        self.spool: Spool | None = None
        self.reaper: Reaper | None = None
        self.received: Received | None = None  # runs stored over the API
        self.servers: list[KeptServer] = []
        self.registrar: Registrar | None = None  # [registration]: with lookup services
        # Set by main before anything asks for the status.
        self.writer: BatchWriter | None = None
        self.upkeep: Maintenance | None = None
        self.point: MeasurementPoint | None = None

    async def main(self, on_ready: Callable[[], None] | None = None) -> None:
        cfg = self.cfg
        workers = cfg.api.workers if cfg.api.enabled else 0
        raise_open_files_limit()  # slow clients and many runs: not the common soft 1,024
        # First, so that a busy address fails the start before anything else is set up.
        listener = bind(*cfg.listen_address) if cfg.api.enabled else None
        # First too: as a child subreaper the daemon gets the orphans of runs and servers (not
        # init), and the reaper finds and reaps them.
        self.reaper = reaper = Reaper(cfg.cleanup, keep=self._children, exempt=self._children)
        archive, writer = self._open_storage()
        self.received = Received(cfg.archive_url)
        runner = Runner()
        # Before the calendar is made: slots due while the tools import would be missed.
        await runner.start()
        # With API workers the daemon keeps the run metrics; the workers count requests.
        sink = RunSink(self._consumers(writer, http=not workers))
        # Before the calendar: its HTTP client takes a moment that the first slots would lose.
        self.registrar = self._registrar()
        point = self._build_point(archive, runner, sink)
        stop = asyncio.Event()
        self._handle_signals(stop, point, archive)
        self._add_workers(point, runner, writer, reaper, stop)
        self._add_api(listener, workers, stop)
        watching = asyncio.create_task(self.watchdog.beat_forever())
        self.watchdog.start()
        restarting = self._schedule_restart(stop)
        self._log_start(serving=listener is not None)
        self.supervisor.start(stop)
        if on_ready:
            on_ready()
        try:
            await stop.wait()
        finally:
            stop.set()
            await self._stop_in_order(point, runner)
            await self._close(archive, writer, reaper)
            watching.cancel()
            self.watchdog.stop()
            if restarting is not None:
                restarting.cancel()
            with contextlib.suppress(FileNotFoundError):
                status_path(cfg).unlink()
            log.info("stopped: %s", dict(point.counts))

    def _open_storage(self) -> tuple[Archive, BatchWriter]:
        """The archive (and its writer thread), the services' feeds and the spool: everything
        that keeps runs."""
        cfg = self.cfg
        archive = open_archive(cfg.archive_url)
        archive.register_tests(cfg.tests, to_us(time.time()))
        self.writer = writer = BatchWriter(archive)
        self.upkeep = Maintenance(
            lambda: open_archive(cfg.archive_url), retention=cfg.archive_retention
        )
        # Services that consume runs (the Status MA's link states from snmp_link runs), each
        # writing from a thread of its own.
        for service in SERVICES:
            made = service.feed(cfg) if service.feed else None
            if made is not None:
                self.feeds[service.name] = made
        self.spool = self._open_spool()
        return archive, writer

    def _consumers(self, writer: BatchWriter, *, http: bool) -> list[Consumer]:
        """Who gets each run, in this order: the archive, the run metrics, each service's feed,
        the spool. ``http``: the metrics count HTTP requests too (no API worker processes)."""
        self.metrics = metrics = Metrics(self.status, http=http)
        consumers: list[Consumer] = [lambda run, _spec: writer.submit(run), metrics.observe_run]
        consumers += [feed.submit for feed in self.feeds.values()]
        if self.spool is not None:
            consumers.append(_spooled(self.spool))
        return consumers

    def _build_point(self, archive: Archive, runner: Runner, sink: RunSink) -> MeasurementPoint:
        # Crash recovery: continue each periodic test after its last stored slot (so no slot
        # runs twice) and record the slots that passed while down as missed, through ``sink``.
        cfg = self.cfg
        resume = archive.last_slots(t.key for t in cfg.tests if not t.schedule.poisson)
        self.point = point = MeasurementPoint(
            cfg.tests,
            executor=runner,
            sink=sink,
            max_children=cfg.max_children,
            resume=resume,
        )
        sink.follow(point.scheduler)
        return point

    def _handle_signals(
        self, stop: asyncio.Event, point: MeasurementPoint, archive: Archive
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._reload(point, archive))

    def _add_workers(
        self,
        point: MeasurementPoint,
        runner: Runner,
        writer: BatchWriter,
        reaper: Reaper,
        stop: asyncio.Event,
    ) -> None:
        """Every part that runs as a supervised worker, and the ``[[server]]`` keep-alives."""
        sup = self.supervisor
        sup.add("scheduler", lambda hb: point.run(stop, hb.beat))
        sup.add(
            "runner",
            lambda hb: runner_body(runner, hb),
            pid=lambda: runner.fork_server_pid,
            on_stale=runner.kill_fork_server,
        )
        sup.add_thread("archive-writer", writer)
        if self.upkeep is not None:
            sup.add_thread("archive-upkeep", self.upkeep)
        for name, feed in self.feeds.items():
            sup.add_thread(f"{name}-feed", feed.worker)
        if self.spool is not None:
            sup.add_thread("spool", self.spool)
        if self.registrar is not None:
            sup.add_thread("registrar", self.registrar)
        sup.add("publisher", self._publish)
        sup.add("reaper", lambda hb: reap_forever(reaper, hb))
        for spec in self.cfg.servers:
            self._keep_server(spec)

    def _log_start(self, *, serving: bool) -> None:
        cfg = self.cfg
        log.info(
            "netsonde %s: %d test(s), %d server(s), archive %s%s, serving %s",
            os.getpid(),
            len(cfg.tests),
            len(cfg.servers),
            cfg.archive_url,
            f", spool to {cfg.spool.url}" if cfg.spool else "",
            self.url if serving else "nothing (api disabled)",
        )

    async def _stop_in_order(self, point: MeasurementPoint, runner: Runner) -> None:
        """Nothing new starts, the runs in progress end (they need the fork server), then the
        rest; the writer threads are flushed by ``_close`` after this."""
        sup = self.supervisor
        await sup.stop_worker("scheduler")
        # Deregistered while the runs end: a stopped instance leaves the lookup services now.
        deregistering = (
            asyncio.create_task(asyncio.to_thread(self.registrar.close, DEREGISTER_TIMEOUT))
            if self.registrar is not None
            else None
        )
        await point.drain(self.cfg.stop_timeout)
        await sup.stop_worker("runner")
        await runner.close()
        await sup.stop_worker("http", wait=10.0)
        if self.api_workers is not None:
            await self.api_workers.stop()
        await sup.stop_all()  # servers, publisher, reaper; threads are left to their close()
        if deregistering is not None:
            await deregistering

    async def _close(self, archive: Archive, writer: BatchWriter, reaper: Reaper) -> None:
        """Flush what writes from threads, close the stores, then leave no child behind."""
        writer.close()
        if self.upkeep is not None:
            self.upkeep.close()
        archive.close()
        if self.received is not None:
            self.received.close()
        for feed in self.feeds.values():
            feed.close()
        if self.spool is not None:
            self.spool.close()
        await asyncio.to_thread(reaper.final_sweep, 5.0)

    def _children(self) -> set[int]:
        """Our direct children that others wait for: never reaped nor killed by the reaper."""
        pids = {w.pid() for w in self.supervisor.workers.values() if w.pid is not None}
        return {p for p in pids if p is not None}

    def _open_spool(self) -> Spool | None:
        sp = self.cfg.spool
        if sp is None:
            return None
        return Spool(
            self.cfg.data_dir / SPOOL_FILE,
            sp.url,
            protocol=sp.protocol,
            token=sp.token,
            batch_size=sp.batch_size,
            timeout=sp.timeout,
            max_backoff=sp.max_backoff,
        )

    def _keep_server(self, spec: ServerSpec) -> None:
        kept = KeptServer(spec)
        self.servers.append(kept)
        self.supervisor.add(
            f"server:{spec.id}",
            kept.body,
            pid=lambda: kept.pid,
            restart=lambda code: should_restart(spec, code),
        )

    def _schedule_restart(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        """``restart_every``: stop gracefully after that long; ``run_foreground`` re-executes."""
        every = self.cfg.restart_every
        if every is None:
            return None

        async def later() -> None:
            await asyncio.sleep(every)
            log.info("restart_every %gs reached: restarting", every)
            self.restart_requested = True
            stop.set()

        return asyncio.create_task(later())

    def _add_api(self, listener: socket.socket | None, workers: int, stop: asyncio.Event) -> None:
        """Serve HTTP until ``stop``: in this loop, or in ``workers`` processes."""
        if listener is None:
            return
        if workers:
            settings = self._worker_settings()
            ApiWorkers.prepare_multiprocess_dir(Path(settings["multiprocess_dir"]))
            self.api_workers = ApiWorkers(workers, listener, settings)
            self.api_workers.supervise(self.supervisor)
            return
        assert self.metrics is not None
        host = self._host()
        app = BoundedRequests(create_app(host, self.metrics), host.limits.request_timeout)
        self.supervisor.add(
            "http", lambda hb: watch_task(serve(app, listener, stop, host.limits), hb)
        )

    def _host(self) -> Host:
        """What the services are given in this process (serving HTTP, registering)."""
        cfg = self.cfg
        return Host(
            archive=connections(cfg.archive_url),
            name=cfg.name,
            token=cfg.api.token,
            limits=cfg.api.limits(),
            status=self.status,
            sections=cfg.sections,
        )

    def _registrar(self) -> Registrar | None:
        """``[registration]``: the measurement point (its tests) and every service with an NMWG
        endpoint, registered with the lookup services by a thread of their own."""
        cfg = self.cfg
        section = cfg.sections.get(REGISTRATION)
        if not isinstance(section, RegistrationSection) or not section.enabled:
            return None
        if not cfg.api.enabled:
            log.warning("[registration] ignored: [api] is disabled, nothing could be reached")
            return None
        base = section.advertise or self._advertised_url()
        mp = ServiceInfo(f"{cfg.name} MP", base + MP_PATH, "MP", f"netsonde on {cfg.name}")
        address = urllib.parse.urlsplit(base).hostname or cfg.name
        registrants = [Registrant("mp", mp, lambda: mp_lookup_data(self.cfg.tests, address))]
        host = self._host()
        for service in SERVICES:
            if getattr(cfg.sections.get(service.name), "enabled", True) is False:
                continue  # turned off in its section: nothing of it to find
            served = service.serve(host)
            paths = list(served.nmwg()) if served is not None else []
            if served is None or not paths:  # no NMWG endpoint to register as
                continue
            info = ServiceInfo(f"{cfg.name} {service.name}", base + paths[0], "MA")
            registrants.append(Registrant(service.name, info, served.lookup_data))
        return Registrar(registrants, section)

    def _advertised_url(self) -> str:
        """This instance's base URL from ``listen``; a wildcard address gives the host name."""
        host, port = self.cfg.listen_address
        if host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _worker_settings(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "archive": cfg.archive_url,
            "name": cfg.name,
            "token": cfg.api.token,
            "limits": dataclasses.asdict(cfg.api.limits()),
            "max_worker_rss": cfg.api.max_worker_rss,
            "nice": cfg.api.nice,
            "idle": cfg.api.idle,
            "status_file": str(status_path(cfg)),
            "sections": {
                n: s.model_dump(mode="json") for n, s in cfg.sections.items() if n in SECTIONS
            },  # the services' own: [registration] is the daemon's
            "metrics_file": str(metrics_path(cfg)),
            "multiprocess_dir": str(cfg.data_dir / "prometheus"),
            "host": cfg.listen_address[0],
            "port": cfg.listen_address[1],
        }

    @property
    def url(self) -> str:
        host, port = self.cfg.listen_address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def status(self) -> DaemonStatus:
        """What the daemon is doing: published in status.json, read by ``/metrics``."""
        point, writer = self.point, self.writer
        if point is None or writer is None:
            raise RuntimeError("no status before the daemon has started")
        api = self.api_workers
        return DaemonStatus(
            pid=os.getpid(),
            started_us=to_us(self.started),
            config=str(self.config_path) if self.config_path else None,
            archive=self.cfg.archive_url,
            url=self.url if self.cfg.api.enabled else None,
            reloads=self.reloads,
            reload_error=self.last_reload_error,
            stored=writer.stored,
            archive_backlog=writer.backlog,
            archive_error=writer.last_error,
            upkeep=self._upkeep_status(),
            received=self.received.count if self.received else 0,
            api_workers=tuple(api.pids) if api else None,
            api_worker_restarts=api.restarts if api else 0,
            feeds={name: feed.stats for name, feed in self.feeds.items()},
            workers=self.supervisor.status(),
            worker_restarts=self.supervisor.restarts,
            loop_stalls=self.watchdog.stalls,
            # The spool's stats are a dict of exactly these keys (a renamed one fails here).
            spool=SpoolStats(**self.spool.stats) if self.spool else None,
            reaper=self.reaper.stats if self.reaper else None,
            registration=self.registrar.states() if self.registrar else {},
            restart_every_s=self.cfg.restart_every,
            point=point.status(),
        )

    def _upkeep_status(self) -> UpkeepStatus:
        up = self.upkeep
        if up is None:
            return UpkeepStatus()
        return UpkeepStatus(up.rolled_up, up.backlog, up.expired, up.last_error)

    def _reload(self, point: MeasurementPoint, archive: Archive) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            self.last_reload_error = str(e)
            log.error("reload refused, keeping the running config: %s", e)
            return
        archive.register_tests(new.tests, to_us(time.time()))
        point.reload(new.tests)
        self.cfg = new
        if self.registrar is not None:
            self.registrar.check_now()  # the tests registered as they are now
        self.reloads += 1
        self.last_reload_error = None
        log.info("reloaded %s: %d test(s)", self.config_path or "embedded default", len(new.tests))

    def _write_metrics(self, metrics: Metrics) -> None:
        write_bytes_atomically(metrics_path(self.cfg), metrics.exposition()[0])

    async def _publish(self, hb: Heartbeat) -> None:
        """Write status.json (and the run metrics for API workers) every second."""
        failing: str | None = None
        while True:
            hb.beat()
            if self.received is not None:
                self.received.refresh()
            try:
                write_json_atomically(status_path(self.cfg), self.status().to_json())
                if self.api_workers is not None and self.metrics is not None:
                    # In a thread: the exposition of 100 tests' histograms takes 30-50 ms of
                    # CPU, which on the loop made the scheduler start runs that much late
                    # once a second (p99 lateness 48-63 ms at 50 runs/s).
                    await asyncio.to_thread(self._write_metrics, self.metrics)
                if failing:
                    log.info("status file written again")
                failing = None
            except OSError as e:
                if str(e) != failing:  # once per new error, not every second
                    log.error("cannot write %s: %s", status_path(self.cfg), e)
                failing = str(e)
            await asyncio.sleep(1.0)


def _spooled(spool: Spool) -> Consumer:
    """The spool as a run consumer: it sends a run as its test's spec says (none: not sent)."""

    def consume(run: Run, spec: TestSpec | None) -> None:
        if spec is not None:
            spool.submit(spec, run)

    return consume


async def runner_body(runner: Runner, hb: Heartbeat) -> None:
    """The fork server as a worker: (re)started and pinged every half second. One that died
    ends the body (ForkServerGone); one that stops answering stops the heartbeat, and the
    supervisor kills it (``on_stale``) and starts another."""
    await runner.start()
    pid = runner.fork_server_pid
    while True:
        try:
            await runner.ping(timeout=2.0)
            hb.beat()
        except TimeoutError:
            pass  # no beat: stale after heartbeat_timeout
        except ForkServerGone:
            raise Exited(f"fork server (pid {pid}) died", None) from None
        if runner.fork_server_pid != pid:  # a run found it dead and started another
            raise Exited(f"fork server (pid {pid}) died", None)
        await asyncio.sleep(0.5)


async def reap_forever(reaper: Reaper, hb: Heartbeat, every: float = 1.0) -> None:
    failing: str | None = None
    while True:
        hb.beat()
        try:
            reaper.scan()
            failing = None
        except OSError as e:  # out of descriptors (EMFILE) …: skip a pass, not the reaper
            if str(e) != failing:
                log.warning("reaper: a scan failed, trying again: %s", e)
            failing = str(e)
        await asyncio.sleep(every)


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """Rotates by size; with ``stdio``, also points stdout and stderr (where a detached daemon
    sends them, and its children inherit them) at the new file."""

    def __init__(self, path: Path, max_bytes: int, backups: int, stdio: bool) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups)
        self.stdio = stdio

    def doRollover(self) -> None:
        super().doRollover()
        if self.stdio and self.stream is not None:
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


def setup_logging(
    log_file: Path | None, *, max_bytes: int = 0, backups: int = 0, stdio: bool = False
) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = _RotatingLog(log_file, max_bytes, backups, stdio)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run_foreground(
    cfg: Config, config_path: str | Path | None, on_ready: Callable[[], None] | None = None
) -> bool:
    """Lock the pidfile and run until stopped. Raises AlreadyRunning before doing anything.
    Returns True when the daemon stopped to restart itself (``restart_every``)."""
    pidfile = PidFile(cfg.pidfile)
    pidfile.acquire()
    daemon = Daemon(cfg, config_path)
    try:
        # uvloop (installed with uvicorn[standard]) serves HTTP with less overhead per request
        uvloop.run(daemon.main(on_ready))
    finally:
        pidfile.release()
    return daemon.restart_requested
