"""`netsonde config import psconfig`: a pSConfig template → the [[test]]s one host runs.

The vector (tests/vectors/import/psconfig/mesh.json) has every group type, excludes-self and
excludes pairs, labels and remote-addresses, a no-agent and a disabled address, every mapped test
type and every schedule form; each host's import must load with netsonde's own loader and hold
exactly the tests the template gives that host. Malformed or unmappable templates fail with the
JSON path, never a traceback."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.importing import load_imported, round_trip
from netsonde import probes
from netsonde.config.importers import Imported, TestEntry, Unmappable, to_toml
from netsonde.config.importers.output import format_duration
from netsonde.config.importers.psconfig import import_psconfig, iso_duration, max_offset
from netsonde.units import parse_duration

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "import" / "psconfig"
MESH = VECTORS / "mesh.json"


def mesh() -> dict[str, Any]:
    return json.loads(MESH.read_text())


def run(doc: dict[str, Any] | str, host: str, **kw: Any) -> Imported:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return import_psconfig(text, "t.json", host, probes.TOOLS, **kw)


def by_id(imported: Imported) -> dict[str, dict[str, Any]]:
    return {t.fields["id"]: t.fields for t in imported.tests}


# ---- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iso", "seconds"),
    [
        ("PT30S", 30),
        ("PT4H", 14400),
        ("PT10M", 600),
        ("P1D", 86400),
        ("P1W", 604800),
        ("P1DT2H3M4.5S", 93784.5),
        ("PT0.5S", 0.5),
        ("PT1H30M", 5400),
    ],
)
def test_iso_durations(iso: str, seconds: float) -> None:
    assert iso_duration(iso) == seconds


@pytest.mark.parametrize("bad", ["P", "PT", "30S", "PT5X", "P1Y", "-PT1S", 30, None, "P1DT"])
def test_iso_durations_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        iso_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (7199, "1h59m59s"),
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (600, "10m"),
        (90061, "1d1h1m1s"),
        (0, "0s"),
        (86400, "1d"),
        (36.9, "36.9s"),
    ],
)
def test_durations_written(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=400 * 86400 * 1000))
def test_written_durations_read_back(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000, abs=1e-9)


@pytest.mark.parametrize("interval", [600, 14400, 5, 4, 3.999, 1, 0.01])
def test_max_offset_is_the_largest_netsonde_allows(interval: float) -> None:
    off = max_offset(interval)
    assert off >= 0 and off * 2 < interval
    step = 1 if interval >= 4 else 0.001
    assert (off + step) * 2 >= interval


# ---- the mesh vector, host by host -------------------------------------------------------------


def test_alpha_measures_what_the_template_gives_it(tmp_path: Path) -> None:
    imported = run(mesh(), "alpha")
    round_trip(imported, tmp_path)
    tests = by_id(imported)
    # mesh: beta and gamma; alpha-owamp shares alpha's host (excludes-self host), epsilon is
    # disabled; gamma→alpha is excluded, alpha→gamma is not.
    assert tests["rtt-mesh"]["targets"] == ["192.0.2.2", "192.0.2.3"]
    assert tests["rtt-mesh"]["params"] == {
        "count": 20,
        "interval": 0.5,
        "packet_size": 1000,
        "ttl": 32,
        "wait": 3.0,
    }
    # sliprand over the whole period: the widest offset netsonde allows, under half of it
    assert (tests["rtt-mesh"]["interval"], tests["rtt-mesh"]["offset"]) == (600, 299)
    # a label picks the other address; slip without sliprand is netsonde's slip
    assert tests["rtt-v6"]["targets"] == ["2001:db8::2"]
    assert tests["rtt-v6"]["params"] == {"family": "ipv6"}
    assert (tests["rtt-v6"]["slip"], "offset" in tests["rtt-v6"]) == (60, False)
    # excludes-self address: two addresses of one host do measure each other
    trace = tests["trace-same-host"]
    assert trace["targets"] == ["192.0.2.11"]
    assert trace["params"] == {
        "method": "icmp",
        "first_ttl": 2,
        "max_hops": 20,
        "wait": 1.0,
        "queries": 2,
    }
    assert (trace["start"], trace["until"], trace["max_runs"]) == (
        "2026-12-01T00:00:00+00:00",
        "2027-06-01T00:00:00+00:00",
        1000,
    )
    # unidirectional disjoint: a-side to b-side, a no-agent target included
    assert tests["tput-out"]["targets"] == ["192.0.2.2", "192.0.2.4"]
    assert tests["tput-out"]["offset"] == 900  # slip PT30M, sliprand: ±15 min
    assert tests["tput-out"]["params"] == {
        "duration": 20,
        "omit": 2,
        "parallel": 4,
        "bandwidth": "1000000000",
    }
    assert tests["owamp-out"]["params"] == {"count": 50, "interval": 0.2, "variation_of": "forward"}
    assert tests["dns-each"]["targets"] == ["203.0.113.53"]
    assert tests["dns-each"]["params"] == {
        "query_name": "www.example.net",
        "query_type": "AAAA",
        "timeout": 2.0,
        "recursion_desired": False,
    }
    # list group: {% address[0] %} is the host itself
    assert tests["http-each"]["targets"] == ["http://192.0.2.1:8080/health"]
    assert tests["http-each"]["params"]["fail_if_body_not_matches_regexp"] == ["OK\\ \\(all\\)"]
    assert "old-task" not in tests
    assert "tasks.old-task: disabled, skipped" in imported.notes


def test_no_agent_end_is_measured_from_this_side() -> None:
    """delta has no agent: for delta→alpha, alpha schedules it (pSConfig's flip). Throughput
    then runs reversed, so data still flow delta → alpha; one-way delay takes the backward
    direction; alpha → delta is scheduled by alpha as usual."""
    tests = by_id(run(mesh(), "alpha"))
    assert tests["tput-in"]["params"]["reverse"] is True
    assert tests["tput-in"]["targets"] == ["192.0.2.4"]
    assert "reverse" not in tests["tput-in.2"]["params"]
    assert tests["tput-in.2"]["params"]["protocol"] == "udp"
    assert {
        tests["owamp-bg-in"]["params"]["variation_of"],
        tests["owamp-bg-in.2"]["params"]["variation_of"],
    } == {"backward", "forward"}


def test_latencybg_without_schedule_streams_back_to_back() -> None:
    """powstream's sessions follow each other: one run of 300 packets, planned as soon as the
    last one may have ended (its deadline), so none overlaps the next."""
    bg = by_id(run(mesh(), "alpha"))["owamp-bg-in"]
    twamp = probes.get("twamp")
    longest = twamp.default_timeout(twamp.Params.model_validate(bg["params"]))
    assert bg["interval"] == pytest.approx(longest, abs=0.001)
    assert bg["params"]["count"] == 300 and bg["params"]["dscp"] == 46  # ip-tos 184: EF


def test_remote_addresses_change_what_the_other_end_targets(tmp_path: Path) -> None:
    """beta is 198.51.100.2 as seen from gamma (remote-addresses)."""
    imported = run(mesh(), "gamma")
    round_trip(imported, tmp_path)
    tests = by_id(imported)
    assert tests["rtt-mesh"]["targets"] == ["192.0.2.11", "198.51.100.2"]  # not alpha: excluded
    assert tests["tput-out"]["targets"] == ["198.51.100.2", "192.0.2.4"]


def test_the_far_end_is_told_what_it_must_serve(tmp_path: Path) -> None:
    imported = run(mesh(), "beta")
    round_trip(imported, tmp_path)
    tests = by_id(imported)
    assert "tput-out" not in tests and "owamp-out" not in tests  # unidirectional a → b
    assert any(
        "tasks.tput-out: this host is the far end" in n and "iperf3" in n for n in imported.notes
    )
    assert any("tasks.owamp-out" in n and "TWAMP reflector" in n for n in imported.notes)


def test_a_host_name_selects_all_its_addresses(tmp_path: Path) -> None:
    imported = run(mesh(), "alpha-host")
    round_trip(imported, tmp_path)
    tests = by_id(imported)
    assert tests["trace-same-host"]["targets"] == ["192.0.2.11", "192.0.2.1"]
    # alpha and alpha-owamp both ping beta and gamma: one test each, not two
    assert tests["rtt-mesh"]["targets"] == ["192.0.2.2", "192.0.2.3"]


def test_excludes_self_disabled_measures_itself() -> None:
    doc = mesh()
    doc["groups"]["mesh-same-host"]["excludes-self"] = "disabled"
    assert by_id(run(doc, "alpha"))["trace-same-host"]["targets"] == ["192.0.2.1", "192.0.2.11"]
    doc["groups"]["mesh-same-host"]["excludes-self"] = "host"
    assert "trace-same-host" not in by_id(run(doc, "alpha"))


def test_a_pair_measured_by_two_tasks_is_kept_once() -> None:
    doc = mesh()
    doc["tasks"]["rtt-again"] = copy.deepcopy(doc["tasks"]["rtt-mesh"])
    imported = run(doc, "alpha")
    assert "rtt-again" not in by_id(imported)
    assert "tasks.rtt-again: 192.0.2.2 is measured by tasks.rtt-mesh already: skipped" in (
        imported.notes
    )


def test_a_host_in_no_task_gets_an_empty_loadable_config(tmp_path: Path) -> None:
    doc = mesh()
    doc["addresses"]["lonely"] = {"address": "192.0.2.99"}
    imported = run(doc, "lonely")
    _, cfg = load_imported(imported, tmp_path)
    assert cfg.tests == () and "this host measures nothing in this template" in imported.notes


# ---- what cannot be mapped -------------------------------------------------------------------


def _mutate(path: list[str | int], value: Any) -> dict[str, Any]:
    doc = mesh()
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


UNMAPPABLE = [
    (
        ["tests", "ping-1000", "type"],
        "owamp",
        'tasks.rtt-mesh.test: test type "owamp" has no netsonde tool',
    ),
    (
        ["tests", "tput", "spec", "window-size"],
        1024000,
        "tests.tput.spec.window-size: has no netsonde equivalent",
    ),
    (
        ["tests", "ping-1000", "spec", "count"],
        "ten",
        "tests.ping-1000.spec.count: expected a whole number",
    ),
    (["tests", "ping-1000", "spec", "count"], 100000, "tests.ping-1000.spec: ping parameter count"),
    (["tests", "trace", "spec", "probe-type"], "paris", "tests.trace.spec.probe-type"),
    (
        ["tests", "tput", "spec", "duration"],
        "PT1.5S",
        "tests.tput.spec.duration: 'PT1.5S': iperf3 takes whole seconds",
    ),
    (["tests", "owamp", "spec", "ip-tos"], 1, "tests.owamp.spec.ip-tos"),
    (
        ["tests", "resolver", "spec", "nameserver"],
        "ns.example.net",
        "tests.resolver.spec.nameserver: dns",
    ),
    (["tests", "web", "spec", "url"], "http://www.example.net/", "tests.web.spec.url: http"),
    (
        ["tests", "ping-1000", "spec", "dest"],
        "{% jq .x %}",
        "tests.ping-1000.spec.dest: template variable {% jq .x %}",
    ),
    (["tests", "ping-1000", "spec", "dest"], "{% address[2] %}", "the group's tuples have 2"),
    (["tasks", "rtt-mesh", "schedule"], "nope", "tasks.rtt-mesh.schedule: no schedule 'nope'"),
    (["tasks", "rtt-mesh", "group"], "nope", "tasks.rtt-mesh.group: no group 'nope'"),
    (
        ["tasks", "rtt-mesh", "subtasks"],
        ["x"],
        "tasks.rtt-mesh.subtasks: subtasks have no netsonde equivalent",
    ),
    (["tasks", "rtt-mesh", "scheduled-by"], 2, "tasks.rtt-mesh.scheduled-by"),
    (
        ["schedules", "every-10m-rand", "start"],
        "PT1H",
        "schedules.every-10m-rand.start: 'PT1H': only absolute",
    ),
    (["schedules", "every-10m-rand", "repeat"], "10 minutes", "schedules.every-10m-rand.repeat"),
    (["schedules", "every-10m-rand", "max-runs"], 0, "schedules.every-10m-rand.max-runs"),
    (["groups", "mesh-all", "type"], "star", 'groups.mesh-all.type: group type "star"'),
    (
        ["groups", "mesh-all", "addresses", 0],
        {"class": "dmz"},
        "groups.mesh-all.addresses[0]: address classes",
    ),
    (
        ["groups", "mesh-all", "addresses", 0],
        {"name": "zeta"},
        "groups.mesh-all.addresses[0].name: no address 'zeta'",
    ),
    (["groups", "mesh-all", "excludes-self"], "yes", "groups.mesh-all.excludes-self"),
    (["addresses", "gamma", "address"], 7, "addresses.gamma.address: expected a host name"),
    (["addresses", "gamma", "address"], "bad_name!", "addresses.gamma.address: ping: target"),
    (["includes"], ["https://example.net/more.json"], "includes: includes are not fetched"),
]


@pytest.mark.parametrize(("path", "value", "message"), UNMAPPABLE, ids=lambda v: None)
def test_what_cannot_be_mapped_names_its_json_path(
    path: list[str | int], value: Any, message: str
) -> None:
    with pytest.raises(Unmappable) as e:
        run(_mutate(path, value), "alpha")
    assert str(e.value).startswith("t.json: ")
    assert message in str(e.value)


def test_a_task_without_schedule_is_an_error_unless_latencybg() -> None:
    doc = mesh()
    del doc["tasks"]["rtt-mesh"]["schedule"]
    with pytest.raises(Unmappable, match=r"tasks\.rtt-mesh\.schedule: none: pScheduler runs"):
        run(doc, "alpha")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "t.json:1: invalid JSON"),
        ("[]", "t.json: (top level): expected an object"),
        ('{"addresses": {}}', "t.json: groups: required, missing"),
        ("[" * 100_000 + "]" * 100_000, "t.json: invalid JSON: nested too deeply"),
    ],
)
def test_not_a_template(text: str, message: str) -> None:
    with pytest.raises(Unmappable) as e:
        run(text, "alpha")
    assert str(e.value).startswith(message)


def test_an_unknown_host_is_named() -> None:
    with pytest.raises(Unmappable, match="--host 'omega': no address of the template"):
        run(mesh(), "omega")


def test_skipping_leaves_a_comment_and_keeps_the_rest(tmp_path: Path) -> None:
    doc = _mutate(["tests", "tput", "spec", "window-size"], 1024000)
    imported = run(doc, "alpha", skip_unmappable=True)
    round_trip(imported, tmp_path)
    tests = by_id(imported)
    assert "tput-out" not in tests and "rtt-mesh" in tests
    assert (
        "skipped tasks.tput-out: tests.tput.spec.window-size: has no netsonde equivalent"
        " (iperf3 tool)" in imported.notes
    )
    text = to_toml(imported)
    assert "# skipped tasks.tput-out: tests.tput.spec.window-size" in text


def test_a_task_this_host_is_not_in_need_not_map() -> None:
    """A test type netsonde lacks, in a task among other hosts only, is no error for alpha."""
    doc = mesh()
    doc["addresses"]["x1"] = {"address": "192.0.2.201"}
    doc["addresses"]["x2"] = {"address": "192.0.2.202"}
    doc["groups"]["others"] = {"type": "mesh", "addresses": [{"name": "x1"}, {"name": "x2"}]}
    doc["tests"]["snmp"] = {"type": "snmpget", "spec": {"dest": "{% address[0] %}"}}
    doc["tasks"]["snmp-others"] = {"group": "others", "test": "snmp"}
    assert "rtt-mesh" in by_id(run(doc, "alpha"))
    with pytest.raises(Unmappable, match='test type "snmpget"'):
        run(doc, "x1")


def _paths(node: Any, at: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [at] if at else []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, value in items:
        found += _paths(value, (*at, key))
    return found


JUNK = [None, 1, -1, 2.5, True, "x", "", [], {}, [1], {"a": 1}, "{% address[0] %}", "PT1S"]
JUNK += ["bad_name!", "192.0.2.9", 10**30, "P" + "9" * 400 + "W", "{% flip %}", "alpha"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_paths(mesh())), st.sampled_from(JUNK)), min_size=1, max_size=3
    ),
    st.sampled_from(["alpha", "beta", "gamma", "alpha-host"]),
    st.booleans(),
)
def test_a_mangled_template_imports_and_loads_or_says_where(
    changes: list[tuple[tuple[str | int, ...], Any]], host: str, skip: bool
) -> None:
    """Any value anywhere: a clean error naming the file, or a config that loads."""
    doc = mesh()
    for path, value in changes:
        node: Any = doc
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced the parent
    try:
        imported = run(doc, host, skip_unmappable=skip)
    except Unmappable as e:
        assert str(e).startswith("t.json")
        return
    with tempfile.TemporaryDirectory() as tmp:
        load_imported(imported, Path(tmp))


# ---- the TOML written ------------------------------------------------------------------------


def test_hostile_strings_stay_inside_their_values() -> None:
    """Names and values from the input reach the TOML: quotes, newlines, DEL and lone
    surrogates stay in their string or comment."""
    evil = 'a"b\\c\nd\x7fe\ud800[[test]]'
    imported = Imported(source=evil, notes=[evil])
    imported.tests.append(
        TestEntry({"id": "x", "params": {"query_name": evil, evil: [evil]}}, notes=[evil])
    )
    parsed = tomllib.loads(to_toml(imported))
    assert len(parsed["test"]) == 1
    value = parsed["test"][0]["params"]["query_name"]
    assert value == evil.replace("\ud800", "?")
    assert list(parsed["test"][0]["params"]) == ["query_name", evil.replace("\ud800", "?")]


# ---- the command -------------------------------------------------------------------------------


def _netsonde(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netsonde", *args], capture_output=True, text=True, timeout=60
    )


def test_the_command_writes_a_loadable_file(tmp_path: Path) -> None:
    out = tmp_path / "alpha.toml"
    done = _netsonde("config", "import", "psconfig", str(MESH), "--host", "alpha", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(out.read_text())["test"][0]["id"] == "rtt-mesh"
    check = _netsonde("config", "check", str(out))
    assert check.returncode == 0, check.stderr
    assert "14 test(s)" in check.stdout


def test_the_command_says_what_cannot_be_mapped_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_mutate(["tests", "ping-1000", "type"], "owamp")))
    done = _netsonde("config", "import", "psconfig", str(bad), "--host", "alpha")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f'netsonde: {bad}: tasks.rtt-mesh.test: test type "owamp" has no netsonde tool'
        " (mapped: dns, http, latency, latencybg, rtt, throughput, trace)\n"
    )
