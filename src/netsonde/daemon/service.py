"""`netsonde run`: wires config, archive, runner and scheduler together and owns the lifecycle.

SIGTERM/SIGINT stop gracefully (in-flight runs end or are killed, the archive is flushed,
the pidfile removed); SIGHUP reloads the config, keeping the calendar of unchanged tests.
The daemon publishes what it is doing in ``DATA_DIR/status.json`` for ``netsonde status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from netsonde import config as config_mod
from netsonde.api.app import create_app
from netsonde.api.context import ApiContext, ArchiveConnections, StatusConnections
from netsonde.api.metrics import Metrics
from netsonde.api.server import bind, serve
from netsonde.api.workers import ApiWorkers
from netsonde.archive.sqlite import SQLiteArchive
from netsonde.archive.status import LinkStatusStore
from netsonde.archive.writer import BatchWriter
from netsonde.config import Config, ConfigError
from netsonde.daemon.pidfile import PidFile
from netsonde.model import Run, to_us
from netsonde.mp import tools
from netsonde.mp.point import MeasurementPoint
from netsonde.mp.runner import Runner
from netsonde.mp.status_feed import StatusFeed

log = logging.getLogger("netsonde")

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.prom"


def load_config(path: str | Path | None) -> Config:
    return config_mod.load(path, tools.TOOLS)  # type: ignore[arg-type]


def status_path(cfg: Config) -> Path:
    return cfg.data_dir / STATUS_FILE


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    write_bytes_atomically(path, json.dumps(data, indent=1).encode())


def write_bytes_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Daemon:
    def __init__(self, cfg: Config, config_path: str | Path | None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.started = time.time()
        self.reloads = 0
        self.last_reload_error: str | None = None
        self.api_workers: ApiWorkers | None = None
        self.metrics: Metrics | None = None
        self.feed: StatusFeed | None = None

    async def main(self, on_ready: Callable[[], None] | None = None) -> None:
        cfg = self.cfg
        assert cfg.sqlite_path is not None
        workers = cfg.api.workers if cfg.api.enabled else 0
        # First, so that a busy address fails the start before anything else is set up.
        listener = bind(*cfg.listen_address, reuse_port=bool(workers)) if cfg.api.enabled else None
        archive = SQLiteArchive(cfg.sqlite_path)
        archive.register_tests(cfg.tests, to_us(time.time()))
        writer = BatchWriter(archive)
        # The Status MA's link states, fed by snmp_link runs (from the feed's own thread).
        self.feed = feed = StatusFeed(LinkStatusStore(cfg.status_db)) if cfg.status_db else None
        runner = Runner()
        # With API workers the daemon keeps the run metrics; the workers count requests.
        self.metrics = metrics = Metrics(lambda: self.snapshot(point, writer), http=not workers)

        def sink(run: Run) -> None:
            writer.submit(run)
            spec = point.scheduler.spec(run.test_id)
            metrics.observe_run(run, spec)
            if feed is not None:
                feed.submit(run, spec)

        # Crash recovery: continue each periodic test after its last stored slot (so no slot
        # runs twice) and record the slots that passed while down as missed, through ``sink``.
        resume = archive.last_slots(t.key for t in cfg.tests if not t.schedule.poisson)
        point = MeasurementPoint(
            cfg.tests,
            executor=runner,
            sink=sink,
            max_children=cfg.max_children,
            resume=resume,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._reload(point, archive))
        publisher = asyncio.create_task(self._publish(point, writer))
        api = self._start_api(listener, workers, lambda: self.snapshot(point, writer), stop)
        log.info(
            "netsonde %s: %d test(s), archive %s, serving %s",
            os.getpid(),
            len(cfg.tests),
            cfg.archive_url,
            self.url if listener else "nothing (api disabled)",
        )
        await runner.start()
        if on_ready:
            on_ready()
        try:
            await point.serve(stop, stop_timeout=cfg.stop_timeout)
        finally:
            stop.set()
            publisher.cancel()
            if api is not None:
                await asyncio.gather(api, return_exceptions=True)
            await runner.close()
            writer.close()
            archive.close()
            if feed is not None:
                feed.close()
            with contextlib.suppress(FileNotFoundError):
                status_path(cfg).unlink()
            log.info("stopped: %s", dict(point.counts))

    def _start_api(
        self,
        listener: socket.socket | None,
        workers: int,
        status: Callable[[], dict[str, Any]],
        stop: asyncio.Event,
    ) -> asyncio.Task[None] | None:
        """Serve HTTP until ``stop``: in this loop, or in ``workers`` processes."""
        if listener is None:
            return None
        if workers:
            settings = self._worker_settings()
            ApiWorkers.prepare_multiprocess_dir(Path(settings["multiprocess_dir"]))
            self.api_workers = ApiWorkers(workers, listener, settings)
            return asyncio.create_task(self.api_workers.run(stop))
        cfg = self.cfg
        assert cfg.sqlite_path is not None and self.metrics is not None
        ctx = ApiContext(
            archive=ArchiveConnections(cfg.sqlite_path),
            name=cfg.name,
            token=cfg.api.token,
            request_timeout=cfg.api.request_timeout,
            max_body_bytes=cfg.api.max_body_bytes,
            status=status,
            status_store=StatusConnections(cfg.status_db) if cfg.status_db else None,
        )
        return asyncio.create_task(serve(create_app(ctx, self.metrics), listener, stop))

    def _worker_settings(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "archive": str(cfg.sqlite_path),
            "name": cfg.name,
            "token": cfg.api.token,
            "request_timeout": cfg.api.request_timeout,
            "max_body_bytes": cfg.api.max_body_bytes,
            "status_file": str(status_path(cfg)),
            "status_db": str(cfg.status_db) if cfg.status_db else None,
            "metrics_file": str(cfg.data_dir / METRICS_FILE),
            "multiprocess_dir": str(cfg.data_dir / "prometheus"),
            "host": cfg.listen_address[0],
            "port": cfg.listen_address[1],
        }

    @property
    def url(self) -> str:
        host, port = self.cfg.listen_address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def snapshot(self, point: MeasurementPoint, writer: BatchWriter) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_us": to_us(self.started),
            "config": str(self.config_path) if self.config_path else None,
            "archive": self.cfg.archive_url,
            "url": self.url if self.cfg.api.enabled else None,
            "reloads": self.reloads,
            "reload_error": self.last_reload_error,
            "stored": writer.stored,
            "archive_backlog": writer.backlog,
            "archive_error": writer.last_error,
            "api_workers": self.api_workers.pids if self.api_workers else None,
            "api_worker_restarts": self.api_workers.restarts if self.api_workers else 0,
            "status_feed": self.feed.stats if self.feed else None,
            **point.snapshot(),
        }

    def _reload(self, point: MeasurementPoint, archive: SQLiteArchive) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            self.last_reload_error = str(e)
            log.error("reload refused, keeping the running config: %s", e)
            return
        archive.register_tests(new.tests, to_us(time.time()))
        point.reload(new.tests)
        self.cfg = new
        self.reloads += 1
        self.last_reload_error = None
        log.info("reloaded %s: %d test(s)", self.config_path or "embedded default", len(new.tests))

    async def _publish(self, point: MeasurementPoint, writer: BatchWriter) -> None:
        while True:
            try:
                write_json_atomically(status_path(self.cfg), self.snapshot(point, writer))
                if self.api_workers is not None:  # the workers serve these at /metrics
                    write_bytes_atomically(
                        self.cfg.data_dir / METRICS_FILE, self.metrics.exposition()[0]
                    )
            except OSError as e:
                log.error("cannot write %s: %s", status_path(self.cfg), e)
            await asyncio.sleep(1.0)


def setup_logging(log_file: Path | None) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run_foreground(
    cfg: Config, config_path: str | Path | None, on_ready: Callable[[], None] | None = None
) -> None:
    """Lock the pidfile and run until stopped. Raises AlreadyRunning before doing anything."""
    pidfile = PidFile(cfg.pidfile)
    pidfile.acquire()
    try:
        # uvloop (installed with uvicorn[standard]) serves HTTP with less overhead per request
        uvloop.run(Daemon(cfg, config_path).main(on_ready))
    finally:
        pidfile.release()
