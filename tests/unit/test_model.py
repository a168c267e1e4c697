from __future__ import annotations

import socket
from pathlib import Path

from netsonde import config
from netsonde.model import Schedule, TestSpec, run_id_for
from netsonde.mp import tools
from netsonde.mp.tools import ping


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
