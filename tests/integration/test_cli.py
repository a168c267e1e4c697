"""The netsonde command as a user types it: one-shot ping, tests, results, the embedded default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from integration.conftest import DaemonProcess
from integration.test_daemon import PING_EVERY_SECOND, finished_with_rtts


def netsonde(bin_: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_), *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_one_shot_ping_prints_pinger_metrics_for_v4_and_v6(netsonde_bin: Path) -> None:
    done = netsonde(netsonde_bin, "ping", "127.0.0.1", "::1", "-c", "4", "-i", "0.05", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["target"]: r for r in json.loads(done.stdout)}
    assert set(rows) == {"127.0.0.1", "::1"}
    for r in rows.values():
        assert r["error"] is None and r["sent"] == 4 and r["lossPercent"] == 0.0
        assert 0 < r["minRtt"] <= r["medianRtt"] <= r["maxRtt"]
        assert r["duplicates"] == 0 and r["outOfOrder"] == 0


def test_one_shot_ping_table_and_hostile_target(netsonde_bin: Path) -> None:
    table = netsonde(netsonde_bin, "ping", "127.0.0.1", "-c", "2", "-i", "0.05")
    assert table.returncode == 0 and "127.0.0.1" in table.stdout and "minRtt" in table.stdout
    bad = netsonde(netsonde_bin, "ping", "-c", "1", "--", "-oProxyCommand=x")
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "neither an IP address" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_tests_lists_the_config(netsonde_bin: Path, tmp_path: Path) -> None:
    config = tmp_path / "n.toml"
    config.write_text(PING_EVERY_SECOND)
    rows = json.loads(netsonde(netsonde_bin, "tests", "--config", str(config), "--json").stdout)
    assert [(r["id"], r["tool"], r["target"], r["interval_s"]) for r in rows] == [
        ("lo4", "ping", "127.0.0.1", 1.0)
    ]
    assert rows[0]["params"]["count"] == 3 and len(rows[0]["key"]) == 16
    table = netsonde(netsonde_bin, "tests", "--config", str(config))
    assert table.returncode == 0 and "lo4" in table.stdout


def test_results_table_and_time_filters(daemon_factory: Callable[[str], DaemonProcess]) -> None:
    d = daemon_factory(PING_EVERY_SECOND)
    d.start()
    runs = d.wait_for(lambda: (r := finished_with_rtts(d)) and len(r) >= 2 and r, 10)
    table = d.cli("results", "--since", "10m")
    assert table.returncode == 0 and "lo4" in table.stdout and "finished" in table.stdout
    future = d.cli_json("results", "--since", "2999-01-01T00:00:00+00:00")
    assert future == []
    first = runs[0]["planned_us"]
    upto = d.cli_json("results", "--since", str(first / 1e6), "--until", str((first + 1) / 1e6))
    assert [r["run_id"] for r in upto] == [runs[0]["run_id"]]
    with_samples = d.cli_json("results", "lo4", "--limit", "1", "--samples")
    assert len(with_samples) == 1 and [s["seq"] for s in with_samples[0]["samples"]] == [1, 2, 3]
    bad = d.cli("results", "--since", "yesterday-ish")
    assert bad.returncode == 1 and "invalid time" in bad.stderr
    d.stop()


def test_embedded_default_runs_with_no_config(netsonde_bin: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(netsonde_bin), "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        pidfile = tmp_path / "netsonde-data" / "netsonde.pid"
        deadline = time.monotonic() + 10
        status: dict = {}
        while time.monotonic() < deadline:
            done = netsonde(netsonde_bin, "status", "--json", cwd=tmp_path)
            status = json.loads(done.stdout) if done.stdout else {}
            if status.get("upcoming"):
                break
            time.sleep(0.2)
        assert status.get("running") and pidfile.exists()
        assert {u["test_id"] for u in status["upcoming"]} == {"loopback-v4", "loopback-v6"}
        assert status["tests"] == 2
        assert status["archive"].endswith("netsonde-data/archive.sqlite")
    finally:
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "2 test(s)" in out and "Traceback" not in out
    assert not pidfile.exists()


def test_version(netsonde_bin: Path) -> None:
    done = netsonde(netsonde_bin, "--version")
    assert done.returncode == 0 and done.stdout.startswith("netsonde 0.")
