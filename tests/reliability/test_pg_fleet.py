"""One PostgreSQL archive for a fleet, and the server goes away while they write.

Real daemons: a central archive (REST store, two API workers) on PostgreSQL, a second netsonde
instance writing its own runs straight into the same database, and five measurement points
delivering through their spools to the central one. The database server is killed for a while
and started again. Every run measured anywhere must then be in the database exactly once: none
lost while it was away (the writer and the spools keep them and retry), none doubled by the
retries (the run id is the key), no deadlock between the concurrent writers.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pgcluster
from integration.conftest import DaemonProcess
from netsonde.archive import pg as archive_pg
from ports import free_port

TOKEN = "pg-fleet-test-token-0123456789"
OUTAGE_S = 6.0
MAX_RUNS = 100  # at 200 ms: 20 s of measuring, the outage in the middle

CENTRAL = """
[daemon]
name = "central"
data_dir = "central"
listen = "127.0.0.1:{port}"
stop_timeout = "5s"

[archive]
url = "{url}"

[api]
token = "{token}"
"""

WRITER = """
[daemon]
name = "second"
data_dir = "second"
stop_timeout = "5s"

[archive]
url = "{url}"

[api]
enabled = false

[[test]]
id = "w"
tool = "noop"
targets = ["a", "b"]
interval = "200ms"
max_runs = {max_runs}
"""

MP = """
[daemon]
name = "mp{n}"
data_dir = "mp{n}"
stop_timeout = "5s"

[api]
enabled = false

[status]
enabled = false

[spool]
url = "http://127.0.0.1:{port}"
token = "{token}"
max_backoff = "1s"

[[test]]
id = "n"
tool = "noop"
targets = ["a", "b"]
interval = "200ms"
max_runs = {max_runs}
"""


@pytest.fixture
def cluster() -> Iterator[pgcluster.PgCluster]:
    with pgcluster.running() as c:  # its own: this test kills it
        yield c


def fill(template: str, **values: Any) -> str:
    for k, v in values.items():
        template = template.replace("{" + k + "}", str(v))
    return template


def pg_run_ids(url: str) -> list[str]:
    with archive_pg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs").fetchall()]


def local_run_ids(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT run_id FROM runs")]
    finally:
        con.close()


def finished(d: DaemonProcess, *, spool: bool) -> bool:
    st = d.cli_json("status")
    done = st["upcoming"] == [] and st["in_progress"] == 0 and st["archive_backlog"] == 0
    if spool:
        done = done and st["spool"]["backlog"] == 0 and st["spool"]["queued"] == 0
    return bool(done)


def test_a_fleet_writes_into_one_postgresql_through_an_outage_each_run_once(
    daemon_factory: Callable[..., DaemonProcess], cluster: pgcluster.PgCluster, tmp_path: Path
) -> None:
    url = cluster.database("fleet")
    port = free_port()
    central = daemon_factory(fill(CENTRAL, port=port, url=url, token=TOKEN), "central.toml")
    second = daemon_factory(fill(WRITER, url=url, max_runs=MAX_RUNS), "second.toml")
    mps = [
        daemon_factory(fill(MP, n=n, port=port, token=TOKEN, max_runs=MAX_RUNS), f"mp{n}.toml")
        for n in range(5)
    ]
    central.start()
    central.wait_for(lambda: central.cli_json("status").get("url"), 20)
    second.start()
    for mp in mps:
        mp.start()
    central.wait_for(lambda: len(pg_run_ids(url)) > 100, 30)

    cluster.kill()
    time.sleep(OUTAGE_S)
    # While it is away the second instance keeps its runs and says why it cannot write.
    st = second.cli_json("status")
    assert st["archive_error"], st
    assert st["archive_backlog"] > 0, st
    cluster.restart()

    second.wait_for(lambda: finished(second, spool=False), 60)
    for mp in mps:
        mp.wait_for(lambda mp=mp: finished(mp, spool=True), 60)
        spooled = mp.cli_json("status")["spool"]
        assert spooled["dead_letters"] == 0 and spooled["last_error"] is None, (
            spooled,
            mp.cli("dead-letters").stdout,
            central.output()[-3000:],
        )
    st = second.cli_json("status")
    assert st["archive_error"] is None, st

    stored = pg_run_ids(url)
    assert len(stored) == len(set(stored))  # the key forbids it; checked all the same
    measured: set[str] = set()
    for n in range(5):
        mine = local_run_ids(tmp_path / f"mp{n}" / "archive.sqlite")
        assert len(mine) == 2 * MAX_RUNS
        measured |= set(mine)
    assert measured <= set(stored), f"{len(measured - set(stored))} spooled runs lost"
    # The second instance's own runs: everything it measured, nothing more.
    assert len(stored) == len(measured) + 2 * MAX_RUNS
    with archive_pg.connect(url) as conn:
        received = conn.execute("SELECT value FROM meta WHERE name = 'runs_received'").fetchone()
    assert received is not None and int(received[0]) == len(measured)
    for d in (*mps, second, central):
        d.stop()
