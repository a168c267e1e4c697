"""snmp_link runs → link status updates (the pure mapping), the feed's writer thread, and the
``[status]`` config section."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from netsonde import probes as tools
from netsonde.archive.stores import StoreError
from netsonde.config import ConfigError, parse
from netsonde.model import LinkObservation, Result, Run, RunState, Schedule, TestSpec
from netsonde.probes import noop, snmp_link
from netsonde.services import SECTIONS
from netsonde.services.status.feed import StatusFeed, readings_from_run
from netsonde.services.status.store import LinkStatusStore, Update
from pgcluster import PgCluster

T0 = 1_700_000_000  # unix seconds
TEMPLATE = "urn:ogf:network:domain=test:host={target}:port={interface}:index={if_index}"
SPEC = TestSpec(
    "sw1",
    "snmp_link",
    "192.0.2.7",
    Schedule(interval=1),
    snmp_link.Params(community="c", interfaces=["ge-0/0/1", 3], link_id=TEMPLATE),
)
ID_GE = "urn:ogf:network:domain=test:host=192.0.2.7:port=ge-0/0/1:index=5"
ID_3 = "urn:ogf:network:domain=test:host=192.0.2.7:port=3:index=3"


def link(
    link_id: str, oper: Any, admin: Any, time_us: int = T0 * 1_000_000, **more: Any
) -> LinkObservation:
    interface = link_id.partition(":port=")[2].partition(":")[0]
    return LinkObservation(link_id, interface, None, oper, admin, time_us, **more)


def run_of(state: RunState, links: list[LinkObservation] | None, *, k: int = 0) -> Run:
    start = (T0 + k) * 1_000_000
    result = None
    if links is not None:
        result = Result(tool="snmp_link", target=SPEC.target, extra={"port": 161}, links=links)
    return Run.of(
        SPEC, start, state=state, actual_us=start + 1000, end_us=start + 900_000, result=result
    )


def test_finished_run_gives_one_update_per_link_at_the_poll_second() -> None:
    t = T0 * 1_000_000 + 999_999  # floored, not rounded
    run = run_of(
        RunState.FINISHED, [link(ID_GE, "up", "normal", t), link(ID_3, "down", "maintenance", t)]
    )
    assert readings_from_run(run, SPEC) == [
        Update(ID_GE, T0, "up", "normal", "full", True),
        Update(ID_3, T0, "down", "maintenance", "full", True),
    ]


def test_failed_run_with_unknown_readings_is_unknown() -> None:
    t = (T0 + 2) * 1_000_000
    links = [
        link(ID_GE.replace("=5", "="), "unknown", "unknown", t, error="No SNMP response"),
        link(ID_3, "unknown", "unknown", t, error="No SNMP response"),
    ]
    run = run_of(RunState.FAILED, links)
    run.error = "no answer from the SNMP agent: No SNMP response"
    updates = readings_from_run(run, SPEC)
    assert [(u.time, u.oper, u.admin) for u in updates] == [(T0 + 2, "unknown", "unknown")] * 2


def test_the_spec_is_not_needed_when_the_run_has_its_observations() -> None:
    run = run_of(RunState.FINISHED, [link(ID_3, "up", "normal", (T0 + 3) * 1_000_000)])
    assert readings_from_run(run, None) == [Update(ID_3, T0 + 3, "up", "normal")]


def test_timeout_without_result_is_unknown_for_every_configured_link() -> None:
    run = run_of(RunState.TIMEOUT, None, k=10)
    run.error = "killed at its 4s deadline"
    # a name's ifIndex is not known without an answer; an index is its own
    ids = ["urn:ogf:network:domain=test:host=192.0.2.7:port=ge-0/0/1:index=", ID_3]
    assert readings_from_run(run, SPEC) == [Update(i, T0 + 10, "unknown", "unknown") for i in ids]
    assert readings_from_run(run, None) == []  # without the spec nobody knows the links


@pytest.mark.parametrize("state", [RunState.MISSED, RunState.FAILED])
def test_nobody_looked_nothing_recorded(state: RunState) -> None:
    assert readings_from_run(run_of(state, None), SPEC) == []


def test_other_tools_are_ignored() -> None:
    other = Run.of(
        TestSpec("n", "noop", "x", Schedule(interval=1), noop.Params()),
        T0 * 1_000_000,
        state=RunState.FINISHED,
        result=Result(tool="noop", target="x", links=[link(ID_3, "up", "normal")]),
    )
    assert readings_from_run(other, None) == []


def test_the_tool_and_the_feed_agree_on_the_link_ids_of_an_unanswered_poll() -> None:
    # No time left for the poll: the tool reports every link unknown, under the ids the feed
    # gives the same links when the run is killed at its deadline instead.
    result = snmp_link.run(SPEC.target, SPEC.params, time.time())
    assert result.error == "no time left before the deadline"
    assert result.values["unknown"] == 2 and result.values["errors"] == 2
    timed_out = run_of(RunState.TIMEOUT, None)
    assert [o.link_id for o in result.links] == [
        u.link_id for u in readings_from_run(timed_out, SPEC)
    ]
    assert all(not o.agent_answered and o.oper == o.admin == "unknown" for o in result.links)


def _ranges(db: str, link_id: str) -> list[tuple[int, int, str, str]]:
    with LinkStatusStore(db) as store:
        return [(r.start, r.end, r.oper, r.admin) for r in store.history(link_id)]


def test_feed_writes_ranges_from_runs(store_location: str) -> None:
    db = store_location
    feed = StatusFeed(LinkStatusStore(db))
    states = ["up", "up", "down", "down", "down", "up"]
    for k, oper in enumerate(states):
        admin = "maintenance" if oper == "down" else "normal"
        run = run_of(RunState.FINISHED, [link(ID_3, oper, admin, (T0 + k) * 1_000_000 + 5)])
        assert feed.submit(run, SPEC) == 1
    assert feed.submit(run_of(RunState.MISSED, None), SPEC) == 0
    feed.close()
    assert _ranges(db, ID_3) == [
        (T0, T0 + 1, "up", "normaloperation"),
        (T0 + 2, T0 + 4, "down", "maintenance"),
        (T0 + 5, T0 + 5, "up", "normaloperation"),
    ]


class FlakyStore(LinkStatusStore):
    """Locked for the first ``failures`` writes, as another writer holding the file would."""

    def __init__(self, db: str, failures: int) -> None:
        super().__init__(db)
        self.failures = failures

    def update_many(self, updates: Any) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreError("database is locked")
        return super().update_many(updates)


def test_transient_store_error_is_retried_not_lost(store_location: str) -> None:
    db = store_location
    feed = StatusFeed(FlakyStore(db, failures=2), max_delay=0.01)
    feed.submit(run_of(RunState.FINISHED, [link(ID_3, "up", "normal")]), SPEC)
    feed.close()
    assert _ranges(db, ID_3) == [(T0, T0, "up", "normaloperation")]
    assert feed.stats.stored == 1 and feed.stats.error is None


def test_refused_update_is_dropped_alone(store_location: str) -> None:
    db = store_location
    with LinkStatusStore(db) as store:
        store.update(ID_3, T0 + 5, "up", "normal")
    feed = StatusFeed(LinkStatusStore(db), max_delay=0.5)  # both runs land in one batch
    past = run_of(RunState.FINISHED, [link(ID_3, "up", "normal")])
    later = run_of(RunState.FINISHED, [link(ID_GE, "down", "normal")])
    feed.submit(past, SPEC)  # the clock went back: "update in the past"
    feed.submit(later, SPEC)
    feed.close()
    assert feed.stats.rejected == 1 and feed.stats.stored == 1
    assert _ranges(db, ID_3) == [(T0 + 5, T0 + 5, "up", "normaloperation")]
    assert _ranges(db, ID_GE) == [(T0, T0, "down", "normaloperation")]


def test_a_dropped_database_connection_is_retried_not_lost(
    pg_cluster: PgCluster, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL ends the feed's connection (a restart) between two polls: the second poll's
    write fails once, is kept and retried on a new connection."""
    feed = StatusFeed(LinkStatusStore(pg_url), max_delay=0.01)
    feed.submit(run_of(RunState.FINISHED, [link(ID_3, "up", "normal")]), SPEC)
    deadline = time.monotonic() + 10
    while feed.stats.stored < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert feed.stats.stored == 1
    pg_cluster.disconnect(pg_url)
    later = run_of(RunState.FINISHED, [link(ID_3, "down", "normal", (T0 + 1) * 1_000_000)])
    feed.submit(later, SPEC)
    feed.close()
    assert feed.stats.stored == 2 and feed.stats.error is None
    assert [r.message for r in caplog.records if "will retry" in r.message] != []
    assert _ranges(pg_url, ID_3) == [
        (T0, T0, "up", "normaloperation"),
        (T0 + 1, T0 + 1, "down", "normaloperation"),
    ]


# ---- [status] in the config --------------------------------------------------------------


def _load(text: str, base: Path) -> Any:
    return parse(text, base / "netsonde.toml", tools.TOOLS, base=base, sections=SECTIONS)  # type: ignore[arg-type]


def _status_db(text: str, base: Path) -> Path | None:
    section = _load(text, base).sections["status"]
    return Path(section.db) if section.enabled else None


def test_status_db_defaults_to_the_data_dir(tmp_path: Path) -> None:
    assert _status_db('[daemon]\ndata_dir = "d"\n', tmp_path) == tmp_path / "d" / "status.sqlite"


def test_status_db_relative_to_the_file_and_disabled(tmp_path: Path) -> None:
    assert _status_db('[status]\ndb = "s/links.db"\n', tmp_path) == tmp_path / "s/links.db"
    assert _status_db("[status]\nenabled = false\n", tmp_path) is None


PG_ARCHIVE = '[archive]\nurl = "postgresql://ns@db.example/fleet"\n'


def test_status_db_defaults_to_a_postgresql_archive(tmp_path: Path) -> None:
    section = _load(PG_ARCHIVE, tmp_path).sections["status"]
    assert section.db == "postgresql://ns@db.example/fleet"


def test_status_db_of_its_own_beside_a_postgresql_archive(tmp_path: Path) -> None:
    own = PG_ARCHIVE + '[status]\ndb = "postgresql://st@other.example/links"\n'
    assert _load(own, tmp_path).sections["status"].db == "postgresql://st@other.example/links"
    on_file = PG_ARCHIVE + '[status]\ndb = "links.sqlite"\n'
    assert _load(on_file, tmp_path).sections["status"].db == str(tmp_path / "links.sqlite")
    secret = '[status]\ndb = "postgresql://st@h/links?password_file=pw"\n'
    assert _load(secret, tmp_path).sections["status"].db == (
        f"postgresql://st@h/links?password_file={tmp_path / 'pw'}"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('\n[status]\nenabled = "maybe"\n', ":3: status.enabled: Input should be a valid boolean"),
        ("\n\n[status]\ndbb = 1\n", ":4: status.dbb: unknown key; did you mean 'db'?"),
        ('[status]\ndb = ""\n', ":2: status.db: String should have at least 1 character"),
        ('[status]\n\ndb = "."\n', ":3: status.db: {tmp} is a directory"),
        (
            '[status]\ndb = "postgresql://st:hunter2@h/links"\n',
            ":2: status.db: the archive URL must not hold a password",
        ),
        (
            '[status]\ndb = "postgresql://st@h"\n',
            ":2: status.db: the archive URL names no database",
        ),
        (
            '[status]\n\n\ne2emon_definitions = "links.conf"\n',
            ":4: status.e2emon_definitions: {tmp}/links.conf: no such file",
        ),
    ],
)
def test_status_errors_name_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(text, tmp_path)
    assert message.replace("{tmp}", str(tmp_path)) in str(e.value)
