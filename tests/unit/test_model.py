from __future__ import annotations

import socket
from pathlib import Path

from netsonde import config
from netsonde import probes as tools
from netsonde.model import Schedule, TestSpec, run_id_for
from netsonde.probes import ping


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
