"""The netsonde command as a newcomer reads it: every --help without markup glitches (brackets
kept, no "<bool>" on flags, summaries not cut at 80 columns), table headers that say their units,
and `results` showing the newest runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from netsonde.archive import open_archive
from netsonde.cli import app
from netsonde.model import PacketSample, Result, Run, RunState, Schedule, TestSpec, to_us
from netsonde.probes import ping

runner = CliRunner()
WIDTH = {"COLUMNS": "80"}  # a common terminal


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command's words, groups included (typer's click objects, duck-typed: typer may
    ship its own click)."""
    yield prefix
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from command_paths(cmd, (*prefix, name))
        elif not cmd.hidden:
            yield (*prefix, name)


PATHS = list(command_paths(typer.main.get_command(app)))


def help_of(path: tuple[str, ...]) -> str:
    done = runner.invoke(app, [*path, "--help"], env=WIDTH)
    assert done.exit_code == 0, done.output
    return done.output


def test_every_command_has_help() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"", "run", "results", "dead-letters", "ping", "config", "config check"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "netsonde")
def test_help_has_no_markup_glitches(path: tuple[str, ...]) -> None:
    text = help_of(path)
    assert "<bool>" not in text  # a flag takes no value
    assert "()" not in text  # what markup leaves of "([spool])"
    assert "[OPTIONS]" in text
    in_commands = False
    for line in text.splitlines():
        in_commands = in_commands or line.startswith("Commands:")
        if in_commands:
            assert not line.endswith("..."), f"summary cut at 80 columns: {line!r}"


def test_brackets_in_help_survive() -> None:
    assert "refused for good ([spool])" in help_of(())
    assert "([spool])" in help_of(("dead-letters",))
    assert "[default: 1h]" in help_of(("results",))


def test_ping_table_headers_say_units() -> None:
    done = runner.invoke(app, ["ping", "127.0.0.1", "-c", "1", "-i", "0.01"])
    assert done.exit_code == 0, done.output
    header = next(line for line in done.output.splitlines() if "target" in line)
    for name in ("minRtt (ms)", "medianRtt (ms)", "lossPercent (%)", "iqrIpd (ms)", "duplicates"):
        assert name in header


NOTE = "exit 2: [/tmp/x] [spool] missing"  # brackets that rich would take for markup
SPEC = TestSpec("lo4", "ping", "127.0.0.1", Schedule(interval=10), ping.Params(count=1))


@pytest.fixture
def config_with_runs(tmp_path: Path) -> Path:
    """A config whose archive holds a failed run of lo4, then five finished ones a minute apart,
    the last one a minute ago (RTTs 1..5 ms: the run's number)."""
    config = tmp_path / "n.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n\n'
        '[[test]]\nid = "lo4"\ntool = "ping"\ntarget = "127.0.0.1"\ninterval = "10s"\n'
    )
    (tmp_path / "data").mkdir()
    archive = open_archive(f"sqlite:///{tmp_path / 'data' / 'archive.sqlite'}")
    now = to_us(time.time())
    first = now - 5 * 60_000_000
    archive.register_tests([SPEC], first)
    runs = []
    for k in range(5):
        planned = first + k * 60_000_000
        rtt = float(k + 1)
        result = Result(
            "ping",
            "127.0.0.1",
            sent=1,
            replies=[PacketSample(1, rtt, 64, 64, planned + 100)],
            values={"minRtt": rtt, "medianRtt": rtt, "maxRtt": rtt, "lossPercent": 0.0},
        )
        runs.append(
            Run.of(
                SPEC,
                planned,
                slot=k,
                state=RunState.FINISHED,
                actual_us=planned + 2_000,
                end_us=planned + 1_000_000,
                result=result,
            )
        )
    failed = Run.of(SPEC, first - 60_000_000, slot=-1, state=RunState.FAILED, error=NOTE)
    archive.store_runs([failed, *runs])
    archive.close()
    return config


def test_results_table_shows_the_newest_runs_with_units(config_with_runs: Path) -> None:
    done = runner.invoke(app, ["results", "--config", str(config_with_runs), "--limit", "2"])
    assert done.exit_code == 0, done.output
    header = next(line for line in done.output.splitlines() if "time (UTC)" in line)
    for unit in ("late (ms)", "min RTT (ms)", "median RTT (ms)", "max RTT (ms)", "loss (%)"):
        assert unit in header
    rows = [line for line in done.output.splitlines() if " lo4 " in line]
    # The two newest of five (RTT 4 and 5 ms), oldest first: the newest is the last row.
    assert len(rows) == 2
    assert "4.000" in rows[0] and "5.000" in rows[1]
    assert "2.0" in rows[0]  # started 2 ms late


def test_tests_table_headers_say_units(config_with_runs: Path) -> None:
    done = runner.invoke(app, ["tests", "--config", str(config_with_runs)])
    assert done.exit_code == 0, done.output
    assert "every (s)" in done.output and "timeout (s)" in done.output
    row = next(line for line in done.output.splitlines() if " lo4 " in line)
    assert " 10 " in row  # the number under its unit, not "10s"


def test_printed_data_keeps_its_brackets(config_with_runs: Path) -> None:
    done = runner.invoke(app, ["results", "--config", str(config_with_runs)])
    assert done.exit_code == 0, done.output
    assert (
        NOTE in done.output and len([ln for ln in done.output.splitlines() if " lo4 " in ln]) == 6
    )
