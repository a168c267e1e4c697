"""The `netsonde` command. Thin: parses arguments, calls the library, prints.

Every failure a user can cause ends as one line on stderr and a non-zero exit status; set
NETSONDE_DEBUG=1 to see the traceback of an unexpected error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from netsonde import __version__
from netsonde import probes as tools
from netsonde.archive import Archive, ArchiveError, open_archive
from netsonde.config import Config, ConfigError
from netsonde.config.importers import perfsonar, psconfig, to_toml
from netsonde.daemon import control, service, workdirs
from netsonde.daemon.detach import StartupReport, detach
from netsonde.daemon.pidfile import AlreadyRunning, PidFileError, running_pid
from netsonde.daemon.workdirs import DirectoryError
from netsonde.http.server import ListenError
from netsonde.model import from_us, to_us
from netsonde.mp.spool import read_dead_letters
from netsonde.mp.status import DaemonStatus, RegistrationStatus, read_status, stale, status_age
from netsonde.nmwg.client import ClientError, exchange, render
from netsonde.probes import ping as ping_tool
from netsonde.registration import NAME as REGISTRATION
from netsonde.registration import RegistrationSection
from netsonde.units import parse_duration, parse_time

app = typer.Typer(
    help="netsonde: scheduled network measurements with a perfSONAR-compatible archive.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rich markup would eat "[spool]" and label every flag "<bool>".
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="Check and import configuration files.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(config_app, name="config")
ls_app = typer.Typer(
    help="Query a lookup service (LS).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(ls_app, name="ls")
# A pipe gets full-width rows (rich would squeeze tables into 80 columns). No markup: what is
# printed (errors, test ids, "[spool]" in a config error) is data, brackets included.
out = Console(
    highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="NETSONDE_CONFIG", help="TOML config (default: embedded)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


class UserError(Exception):
    """A problem to report in one line, without a traceback."""


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _when(us: int | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(from_us(us), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _open_archive(cfg: Config) -> Archive:
    return open_archive(cfg.archive_url, readonly=True)


# ---- run / status ----------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOpt = None,
    daemon: Annotated[
        bool, typer.Option("--daemon", help="detach and run in the background")
    ] = False,
    detached: Annotated[
        bool, typer.Option("--detached", hidden=True, help="already detached: log to the file")
    ] = False,
) -> None:
    """Run the measurement point (foreground unless --daemon)."""
    if config is not None:
        config = config.absolute()  # a detached daemon runs in /: a reload reads it from there
    cfg = service.load_config(config)
    workdirs.check_all(cfg)
    pid = running_pid(cfg.pidfile)
    if pid is not None:
        raise AlreadyRunning(cfg.pidfile, pid)
    if detached:  # a restart_every re-execution of a detached daemon
        os.chdir("/")  # as detach() does; paths were resolved by the load
        _log_to_file(cfg)
        if service.run_foreground(cfg, config):
            _reexec(config, detached=True)
        return
    if not daemon:
        service.setup_logging(None)
        host, port = cfg.listen_address
        where = f"on http://{host}:{port}/" if cfg.api.enabled else "(API disabled)"
        out.print(
            f"starting netsonde {__version__} {where}: {len(cfg.tests)} test(s), "
            f"archive {cfg.archive_url}, pidfile {cfg.pidfile}",
            style="bold",
        )
        if sys.stdout.isatty():  # a person at a terminal, not systemd's journal
            out.print(
                "It runs in the foreground: Ctrl-C stops it. Use a second terminal for the "
                "other commands, or `netsonde start` to run it in the background."
            )
        if service.run_foreground(cfg, config):
            _reexec(config, detached=False)
        return
    try:
        report = detach(cfg.log_file)
    except OSError as e:
        raise UserError(f"cannot open the log file {cfg.log_file}: {e.strerror}") from None
    if isinstance(report, str):
        if not report.startswith("ok "):
            raise UserError(report)
        out.print(f"netsonde started in the background (pid {report[3:]}), log {cfg.log_file}")
        return
    _run_detached(cfg, config, report)


def _log_to_file(cfg: Config) -> None:
    service.setup_logging(
        cfg.log_file, max_bytes=cfg.log_max_bytes, backups=cfg.log_backups, stdio=True
    )


def _run_detached(cfg: Config, config: Path | None, report: StartupReport) -> None:
    _log_to_file(cfg)
    try:
        restart = service.run_foreground(cfg, config, on_ready=report.ready)
    except (AlreadyRunning, PidFileError, ArchiveError, ListenError, OSError) as e:
        report.send(str(e))
        os._exit(1)
    if restart:
        _reexec(config, detached=True)
    os._exit(0)


# Relative paths (the embedded default's data dir) resolve against where netsonde was started.
_STARTED_IN = os.getcwd()


def _reexec(config: Path | None, *, detached: bool) -> None:
    """restart_every: the same process (pid, pidfile, systemd's view) runs a fresh image."""
    logging.shutdown()
    os.chdir(_STARTED_IN)
    argv = [sys.executable, "-m", "netsonde", "run"]
    if config is not None:
        argv += ["--config", str(Path(_STARTED_IN, config))]
    if detached:
        argv.append("--detached")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


@app.command()
def start(config: ConfigOpt = None) -> None:
    """Start the daemon in the background (= run --daemon)."""
    run(config=config, daemon=True)


@app.command()
def stop(
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds before SIGKILL")] = 30.0,
) -> None:
    """Stop the daemon and wait until it has flushed and exited."""
    cfg = service.load_config(config)
    pid = control.stop(cfg.pidfile, timeout)
    out.print("netsonde was not running" if pid is None else f"netsonde stopped (pid {pid})")


@app.command()
def restart(
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds before SIGKILL")] = 30.0,
) -> None:
    """Stop the daemon if it runs, start it in the background."""
    stop(config=config, timeout=timeout)
    start(config=config)


@app.command()
def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Whether the daemon runs: pid, uptime, runs, next runs.

    Exit status 3 when it does not run, as LSB init scripts say."""
    cfg = service.load_config(config)
    pid = running_pid(cfg.pidfile)
    path = service.status_path(cfg)
    snap = read_status(path) if pid is not None else None
    warning = stale(path) if snap else None  # a frozen file: a full disk, a hung daemon
    if as_json:
        age = status_age(path) if snap else None
        extra = {"status_age_s": None if age is None else round(age, 1), "status_warning": warning}
        _print_json(
            {"running": pid is not None, "pid": pid, **extra, **(snap.to_json() if snap else {})}
        )
    elif pid is None:
        out.print(f"netsonde is not running (pidfile {cfg.pidfile})")
    else:
        up = time.time() - from_us(snap.started_us) if snap else None
        out.print(f"netsonde is running: pid {pid}" + (f", up {_duration(up)}" if up else ""))
        if warning:
            out.print(warning, style="red")
        if snap:
            _print_status(snap)
    raise typer.Exit(0 if pid is not None else 3)  # 3: "not running", as LSB init scripts say


def _print_status(snap: DaemonStatus) -> None:
    point = snap.point
    runs = ", ".join(f"{k} {v}" for k, v in sorted(point.runs.items())) or "none yet"
    out.print(
        f"tests {point.tests}, in progress {point.in_progress}, "
        f"waiting {point.waiting}, stored {snap.stored}"
        + (f", received {snap.received} over the API" if snap.received else "")
        + f"; runs: {runs}"
    )
    if late := point.lateness:
        out.print(
            f"start lateness (last runs): p50 {late.p50_ms:.1f} ms, "
            f"p99 {late.p99_ms:.1f} ms, max {late.max_ms:.1f} ms"
        )
    for what, error in (("archive error", snap.archive_error), ("reload error", snap.reload_error)):
        if error:
            out.print(f"{what}: {error}", style="red")
    _print_supervision(snap)
    table = Table("next run (UTC)", "test")
    for item in point.upcoming:
        table.add_row(_when(item.planned_us), item.test_id)
    out.print(table)


def _print_supervision(snap: DaemonStatus) -> None:
    """Workers (a line for each that restarted or is not running), spool and reaper."""
    workers = snap.workers
    if workers:
        restarts = sum(w.restarts for w in workers.values())
        out.print(f"workers: {len(workers)}, restarts {restarts}")
    for name, w in workers.items():
        if w.restarts or w.state != "running":
            pid = f" pid {w.pid}" if w.pid else ""
            last = f"; last: {w.last_exit}" if w.last_exit else ""
            style = None if w.state == "running" else "yellow"
            out.print(f"  {name}: {w.state}{pid}, restarts {w.restarts}{last}", style=style)
    if sp := snap.spool:
        age = sp.oldest_age_s
        out.print(
            f"spool ({sp.protocol}): delivered {sp.delivered}, backlog {sp.backlog}"
            + (f" (oldest {_duration(age)} old)" if age else "")
            + f", dead letters {sp.dead_letters}"
        )
        if sp.last_error:
            out.print(f"spool error: {sp.last_error}", style="red")
    for name, reg in snap.registration.items():
        _print_registration(name, reg)
    if (rp := snap.reaper) and (rp.kills_term or rp.kills_kill):
        out.print(f"cleanup: {rp.kills_term} SIGTERM, {rp.kills_kill} SIGKILL sent")
    if snap.loop_stalls:
        out.print(f"event loop stalls: {snap.loop_stalls}", style="red")


def _print_registration(name: str, reg: RegistrationStatus) -> None:
    """One line per registered service ([registration]), and its last error."""
    now = time.time()
    when = f", last ok {_duration(now - reg.last_success)} ago" if reg.last_success else ""
    due = f", next in {_duration(max(0.0, reg.next_due - now))}" if reg.next_due else ""
    if reg.key is not None:
        out.print(f"ls {name}: registered with {reg.url} ({reg.items} items){when}{due}")
    elif not reg.items and not reg.last_error:
        out.print(f"ls {name}: nothing to register")
    else:
        out.print(f"ls {name}: not registered{when}{due}", style="yellow")
    if reg.last_error and (reg.key is None or (reg.last_error_at or 0) > (reg.last_success or 0)):
        out.print(f"  ls error: {reg.last_error}", style="red")


@app.command("dead-letters")
def dead_letters(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Results the remote archive refused for good ([spool]).

    Each with the reason the archive gave."""
    cfg = service.load_config(config)
    rows = read_dead_letters(cfg.data_dir / service.SPOOL_FILE)
    for r in rows:
        r.pop("payload", None)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no dead letters")
        return
    table = Table("failed (UTC)", "run planned (UTC)", "run id", "reason")
    for r in rows:
        table.add_row(_when(r["failed_us"]), _when(r["planned_us"]), r["run_id"], r["reason"])
    out.print(table)


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


# ---- tests / results -------------------------------------------------------------------------


@app.command()
def tests(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The configured tests."""
    cfg = service.load_config(config)
    rows: list[dict[str, Any]] = [
        {
            "id": s.id,
            "tool": s.tool,
            "target": s.target,
            "interval_s": s.schedule.interval,
            "offset_s": s.schedule.offset,
            "schedule": "poisson" if s.schedule.poisson else "periodic",
            "class": str(s.sched_class),
            "timeout_s": s.timeout,
            "key": s.key,
            "params": s.params_dict(),
        }
        for s in cfg.tests
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table(
        "id", "tool", "target", "every (s)", "±offset (s)", "class", "timeout (s)", "params"
    )
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in r["params"].items())
        table.add_row(
            r["id"], r["tool"], r["target"], f"{r['interval_s']:g}", f"{r['offset_s']:g}",
            r["class"], f"{r['timeout_s']:g}", params,
        )  # fmt: skip
    out.print(table)


def _time_arg(value: str, now: float) -> int:
    """``1h`` (that long ago), an ISO 8601 time, or epoch seconds → epoch µs."""
    try:
        return to_us(now - parse_duration(value))
    except ValueError:
        pass
    try:
        return to_us(parse_time(float(value) if value.replace(".", "", 1).isdigit() else value))
    except ValueError:
        raise UserError(
            f"invalid time {value!r}: use 1h, 30m, an ISO 8601 time or epoch seconds"
        ) from None


@app.command()
def results(
    test: Annotated[
        str | None, typer.Argument(metavar="TEST", help="test id (default: all)")
    ] = None,
    since: Annotated[str, typer.Option(help="from: 1h, 30m, ISO 8601 or epoch")] = "1h",
    until: Annotated[str | None, typer.Option(help="to (default: now)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many runs (the latest)")] = 1000,
    samples: Annotated[
        bool, typer.Option(help="include per-packet samples and tool detail (extra) in --json")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stored runs and their results, oldest first.

    The latest --limit runs planned since --since (and before --until), so the newest run is
    the last row."""
    cfg = service.load_config(config)
    now = time.time()
    archive = _open_archive(cfg)
    try:
        rows = archive.runs(
            test,
            since_us=_time_arg(since, now),
            until_us=_time_arg(until, now) if until else None,
            limit=limit,
        )
    finally:
        archive.close()
    if as_json:
        if not samples:
            for r in rows:
                r.pop("samples")
                r.pop("extra")
        _print_json(rows)
        return
    table = Table(
        "time (UTC)", "test", "state", "late (ms)", "min RTT (ms)", "mean RTT (ms)",
        "median RTT (ms)", "max RTT (ms)", "loss (%)", "note",
    )  # fmt: skip
    for r in rows:
        v = r["values"]
        late = None if r["actual_us"] is None else (r["actual_us"] - r["planned_us"]) / 1000
        table.add_row(
            _when(r["actual_us"] or r["planned_us"]), r["test_id"], r["state"], _num(late, 1),
            _num(v.get("minRtt")), _num(v.get("meanRtt")), _num(v.get("medianRtt")),
            _num(v.get("maxRtt")), _num(v.get("lossPercent"), 1), r["error"] or "",
        )  # fmt: skip
    out.print(table)
    if not rows:
        out.print(
            f"no runs since {_when(_time_arg(since, now))}"
            + (f" for test {test!r}" if test else "")
        )


# ---- one-shot ping ---------------------------------------------------------------------------

# The PingER metrics the table shows (their --json names) and their units.
_PING_COLUMNS = {
    "minRtt": "ms",
    "meanRtt": "ms",
    "medianRtt": "ms",
    "maxRtt": "ms",
    "lossPercent": "%",
    "iqrIpd": "ms",
    "duplicates": "",
    "outOfOrder": "",
}


@app.command()
def ping(
    hosts: Annotated[
        list[str], typer.Argument(metavar="HOST", help="targets (IP addresses or host names)")
    ],
    count: Annotated[
        int, typer.Option("-c", "--count", min=1, max=10_000, help="packets per host")
    ] = 5,
    interval: Annotated[
        float, typer.Option("-i", "--interval", min=0.002, help="seconds between packets")
    ] = 0.2,
    size: Annotated[
        int, typer.Option("-s", "--size", min=0, max=65_000, help="payload bytes")
    ] = 56,
    as_json: JsonOpt = False,
) -> None:
    """Ping hosts once and print the PingER metrics."""
    for host in hosts:
        try:
            ping_tool.check_target(host)
        except ValueError as e:
            raise UserError(str(e)) from None
    params = ping_tool.Params(count=count, interval=interval, packet_size=size)
    found = ping_tool.run_many(hosts, params)  # one engine, all hosts at once
    if as_json:
        _print_json(
            [{"target": r.target, "error": r.error, "sent": r.sent, **r.values} for r in found]
        )
    else:
        table = Table("target", *(f"{n} ({u})" if u else n for n, u in _PING_COLUMNS.items()))
        names = tuple(_PING_COLUMNS)
        for r in found:
            if r.error:
                table.add_row(r.target, Text(r.error, style="red"))
            else:
                table.add_row(r.target, *(_num(r.values.get(n)) for n in names))
        out.print(table)
    if any(r.error for r in found):
        raise typer.Exit(1)


@app.command("twamp-reflector")
def twamp_reflector(
    listen: Annotated[
        list[str] | None,
        typer.Option(help="IP:PORT or [IPv6]:PORT to answer on; repeatable [127.0.0.1:862]"),
    ] = None,
) -> None:
    """Answer TWAMP-Light test packets (RFC 5357 Appendix I).

    Runs until SIGTERM or Ctrl-C."""
    from netsonde.engines.twamp import reflector
    from netsonde.engines.twamp.udp import parse_hostport

    try:
        addresses = [parse_hostport(a) for a in listen or [reflector.DEFAULT_LISTEN]]
    except ValueError as e:
        raise UserError(str(e)) from None
    raise typer.Exit(reflector.serve(addresses))


@app.command()
def client(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="service URL, e.g. http://127.0.0.1:8075/perfSONAR_PS/services/pinger/ma",
        ),
    ],
    request: Annotated[
        Path, typer.Argument(metavar="REQUEST.xml", help="NMWG request document (an nmwg:message)")
    ],
    filter_: Annotated[
        str | None, typer.Option("--filter", help="XPath with canonical prefixes (nmwg:, pinger:…)")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds")] = 60.0,
) -> None:
    """Send an NMWG request in SOAP and print the response.

    As the seed's client.pl did: leading # lines and the XML declaration are stripped."""
    try:
        body = request.read_bytes()
    except OSError as e:
        raise UserError(f"{request}: {e.strerror}") from None
    sys.stdout.write(render(exchange(url, body, timeout=timeout), filter_))


# ---- ls ------------------------------------------------------------------------------------------


@ls_app.command("query")
def ls_query(
    url: Annotated[
        str | None,
        typer.Option(
            help="a netsonde base URL or an NMWG LS URL (…/perfSONAR_PS/services/LS);"
            " default: this instance's own [ls], else the first of [registration] urls"
        ),
    ] = None,
    type_: Annotated[
        str | None,
        typer.Option("--type", help="service type (MA, ping, owamp…); * and ? wildcards"),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="host name or address in the service locator, or a host record"),
    ] = None,
    event_type: Annotated[str | None, typer.Option(help="an eventType the service offers")] = None,
    xquery: Annotated[
        str | None, typer.Option(help="send this XQuery in an LSQueryRequest instead")
    ] = None,
    xquery_file: Annotated[
        Path | None, typer.Option(help="send the XQuery in this file instead")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="at most this many records")] = 100,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds per request")] = 30.0,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find records in a lookup service: by type, host, eventType or XQuery.

    Key=value options match case-insensitively and combine with AND; --xquery sends an
    LSQueryRequest (lsOutput native) and prints its results."""
    from netsonde.services.lookup import lsquery

    if xquery is not None and xquery_file is not None:
        raise UserError("give --xquery or --xquery-file, not both")
    if xquery_file is not None:
        try:
            xquery = xquery_file.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{xquery_file}: {getattr(e, 'strerror', None) or e}") from None
    if xquery is not None and (type_ or host or event_type):
        raise UserError("--xquery asks by itself: leave out --type, --host and --event-type")
    if url:
        where = lsquery.target(url)
    else:
        cfg = service.load_config(config)
        registration = cfg.sections.get(REGISTRATION)
        urls = registration.urls if isinstance(registration, RegistrationSection) else []
        where = lsquery.local_target(cfg, urls)
    with httpx.Client(timeout=timeout) as http:
        if xquery is not None:
            found = lsquery.xquery(where.nmwg_url, xquery, client=http, timeout=timeout)[:limit]
            if as_json:
                _print_json([lsquery.xml_text(item) for item in found])
            else:
                for item in found:
                    sys.stdout.write(lsquery.xml_text(item, pretty=True).rstrip("\n") + "\n")
            return
        wanted = lsquery.Wanted(type_, host, event_type)
        records = lsquery.find(http, where.records_url, wanted, limit)
    if as_json:
        _print_json(records)
        return
    table = Table("record", "service type", "name", "locator", "expires in")
    now = time.time()
    for r in records:
        kind, stype, name, locator, left = lsquery.row(r, now)
        table.add_row(kind, stype, name, locator, _duration(left))
    out.print(table)
    if not records:
        out.print(f"nothing found at {where.records_url}")


# ---- config ----------------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="TOML config file")],
) -> None:
    """Check a config file: OK, or one line naming file, line and key."""
    cfg = service.load_config(file)
    out.print(f"{file}: OK, {len(cfg.tests)} test(s), archive {cfg.archive_url}")


import_app = typer.Typer(
    help="Turn other systems' configurations into netsonde's.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
config_app.add_typer(import_app, name="import")
OutOpt = Annotated[
    Path | None, typer.Option("-o", "--output", help="write here (default: standard output)")
]


@import_app.command("psconfig")
def import_psconfig(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="pSConfig template (JSON)")],
    host: Annotated[str, typer.Option(help="this host: an address name, address or host name")],
    output: OutOpt = None,
    skip_unmappable: Annotated[
        bool, typer.Option(help="leave out, with a comment, tasks that cannot be mapped")
    ] = False,
) -> None:
    """This host's tests in a pSConfig template.

    Prints netsonde [[test]]s (or writes them to -o); what cannot be mapped is an error naming
    its JSON path. See docs/import.md."""
    text = _read_input(file)
    imported = psconfig.import_psconfig(
        text, str(file), host, tools.TOOLS, skip_unmappable=skip_unmappable
    )
    _write_imported(to_toml(imported), output)


@import_app.command("perfsonar")
def import_perfsonar(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="perfSONAR-PS daemon.conf, or PingER landmarks")
    ],
    landmarks: Annotated[
        Path | None,
        typer.Option(help="PingER landmarks file (default: the MP's configuration_file)"),
    ] = None,
    output: OutOpt = None,
) -> None:
    """A config from a perfSONAR-PS daemon.conf.

    The port, PingER landmarks, Status MA, LS and LS registration become netsonde sections and
    [[test]]s; what cannot be mapped is an error naming file, line and key. See docs/import.md."""
    imported = perfsonar.import_perfsonar(file, tools.TOOLS, landmarks_file=landmarks)
    _write_imported(to_toml(imported), output)


def _read_input(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: cannot read: {e}") from None


def _write_imported(text: str, output: Path | None) -> None:
    """Written only once it loads as netsonde's own config (the importers write absolute
    paths, so where it is checked does not matter)."""
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "imported.toml"
        candidate.write_text(text, encoding="utf-8")
        try:
            service.load_config(candidate)
        except ConfigError as e:
            raise UserError(f"the imported config does not load (please report): {e}") from None
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"{output}: cannot write: {e.strerror}") from None


@app.callback(invoke_without_command=True)
def _version(
    version: Annotated[bool, typer.Option("--version", help="print the version")] = False,
) -> None:
    if version:
        out.print(f"netsonde {__version__}")
        raise typer.Exit()


def main() -> None:
    try:
        app()
    except (
        UserError,
        ConfigError,
        ArchiveError,
        AlreadyRunning,
        PidFileError,
        DirectoryError,
        ListenError,
        ClientError,
        control.StopFailed,
    ) as e:
        print(f"netsonde: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if os.environ.get("NETSONDE_DEBUG"):
            raise
        print(
            f"netsonde: internal error: {type(e).__name__}: {e} (NETSONDE_DEBUG=1 shows more)",
            file=sys.stderr,
        )
        sys.exit(70)
