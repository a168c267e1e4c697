from __future__ import annotations

import pickle
import socket
from dataclasses import asdict
from pathlib import Path

from netsonde import config
from netsonde import probes as tools
from netsonde.archive import open_archive
from netsonde.model import LinkObservation, Result, Run, RunState, Schedule, TestSpec, run_id_for
from netsonde.probes import ping, snmp_link


def spec(source: str = "", target: str = "127.0.0.1", test_id: str = "a") -> TestSpec:
    return TestSpec(test_id, "ping", target, Schedule(10), ping.Params(), source=source)


def test_key_depends_on_source_tool_target_params_but_not_id() -> None:
    assert spec().key == spec(test_id="renamed").key
    assert spec(source="mp1").key != spec(source="mp2").key  # a shared archive keeps them apart
    assert spec(target="::1").key != spec().key
    assert len(spec().key) == 16


def test_run_id_is_stable_and_distinct() -> None:
    assert run_id_for("k", 1) == run_id_for("k", 1)
    assert len({run_id_for("k", 1), run_id_for("k", 2), run_id_for("j", 1)}) == 3


def test_config_name_is_the_tests_source(tmp_path: Path) -> None:
    body = '[[test]]\nid = "a"\ntool = "ping"\ntarget = "127.0.0.1"\ninterval = 10\n'
    named = config.parse(
        '[daemon]\nname = "mp1.example"\n' + body, None, tools.TOOLS, base=tmp_path
    )
    assert named.name == "mp1.example" and named.tests[0].source == "mp1.example"
    default = config.parse(body, None, tools.TOOLS, base=tmp_path)
    assert default.name == socket.gethostname() == default.tests[0].source


def test_run_of_fills_identity_from_spec_and_nominal_time() -> None:
    from netsonde.model import Run

    s = spec(source="mp1")
    run = Run.of(s, 1_700_000_000_000_000, slot=7, planned_us=1_700_000_000_500_000)
    assert (run.run_id, run.test_id, run.test_key) == (
        run_id_for(s.key, 1_700_000_000_000_000),
        "a",
        s.key,
    )
    assert (run.slot, run.planned_us) == (7, 1_700_000_000_500_000)
    assert Run.of(s, 5).slot == 5 and Run.of(s, 5).planned_us == 5


def _snmp_run() -> tuple[TestSpec, Run]:
    s = TestSpec(
        "sw", "snmp_link", "192.0.2.7", Schedule(10),
        snmp_link.Params(community="c", interfaces=["eth0"]),
    )  # fmt: skip
    seen = LinkObservation(
        "urn:x:eth0", "eth0", 2, "down", "maintenance", 1_700_000_000_250_000, 2, 2
    )
    result = Result("snmp_link", s.target, values={"links": 1}, extra={"port": 161}, links=[seen])
    return s, Run.of(s, 1_700_000_000_000_000, state=RunState.FINISHED, result=result)


def test_link_observations_are_one_shape_in_the_tool_detail() -> None:
    _, run = _snmp_run()
    assert run.result is not None
    detail = run.result.detail()
    assert detail == {"port": 161, "links": [asdict(run.result.links[0])]}
    assert detail["links"][0]["time_us"] == 1_700_000_000_250_000
    assert run.result.extra == {"port": 161}  # the typed observations are not copied into it
    assert Result("ping", "x", extra={"a": 1}).detail() == {"a": 1}


def test_link_observations_survive_the_fork_server_and_the_archive(tmp_path: Path) -> None:
    s, run = _snmp_run()
    assert pickle.loads(pickle.dumps(run)) == run  # the forked child's way to the daemon
    archive = open_archive(f"sqlite:///{tmp_path / 'a.sqlite'}")
    archive.register_tests([s], run.planned_us)
    assert archive.store_runs([run]) == 1
    (row,) = archive.find_runs(test_id="sw", samples=True)
    assert run.result is not None and row["extra"] == run.result.detail()
