"""`netsonde config import perfsonar`: the seed's daemon.conf and PingER landmarks → a netsonde
config that loads, with every mapped value where netsonde keeps it, and every unmappable key,
block or module an error naming file, line and key (tests/vectors/import/perfsonar)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.importing import REGISTRATION_KNOWN, load_imported, round_trip
from netsonde import probes
from netsonde.config.importers import Unmappable, to_toml
from netsonde.config.importers.cgeneral import read
from netsonde.config.importers.perfsonar import import_perfsonar

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "import" / "perfsonar"


def imported(path: Path, landmarks: Path | None = None) -> dict:
    return tomllib.loads(to_toml(import_perfsonar(path, probes.TOOLS, landmarks_file=landmarks)))


def fail(path: Path, landmarks: Path | None = None) -> str:
    with pytest.raises(Unmappable) as e:
        import_perfsonar(path, probes.TOOLS, landmarks_file=landmarks)
    return str(e.value)


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """The vectors, copied: a test may add or change files beside the daemon.conf."""
    for f in VECTORS.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def write(directory: Path, text: str, name: str = "daemon.conf") -> Path:
    path = directory / name
    path.write_text(text)
    return path


# ---- the vectors -------------------------------------------------------------------------------


def test_the_daemon_conf_maps_every_section(tmp_path: Path) -> None:
    result = import_perfsonar(VECTORS / "daemon.conf", probes.TOOLS)
    text, cfg = load_imported(result, tmp_path)
    round_trip(result, tmp_path)
    doc = tomllib.loads(text)
    assert doc["daemon"] == {
        "listen": "0.0.0.0:8075",
        "pidfile": "/run/perfsonar/pinger.pid",  # pid_file in pid_dir
        "max_children": 8,  # the MP's max_worker_processes: its pings at once
    }
    assert cfg.listen_address == ("0.0.0.0", 8075)
    assert doc["api"] == {"request_timeout": "2m", "max_response_datums": 50000}
    assert cfg.api.max_response_datums == 50000 and cfg.api.request_timeout == 120
    status = cfg.sections["status"]
    assert status.e2emon_definitions == str(VECTORS / "e2emon.xml")  # beside the daemon.conf
    assert status.max_recent_age == 600
    # The MA registers every 30 min (from the top), the Status MA every 15 (its own, continued
    # on the next line); the MP does not: one section, the shortest interval, a lease of two.
    assert doc["registration"] == {
        "urls": ["http://ls.import.test:8081/perfSONAR_PS/services/LS"],
        "interval": "15m",
        "ttl": "30m",
    }
    if REGISTRATION_KNOWN:
        reg = cfg.sections["registration"]
        assert (reg.interval, reg.ttl) == (900, 1800)
    # The landmarks beside it: one ping test per node, with its parameters.
    by_id = {t.id: t for t in cfg.tests}
    gw = by_id["pinger:north.test:gw"]
    assert (gw.target, gw.schedule.interval, gw.schedule.offset) == ("gw.north.test", 300, 30)
    assert (gw.params.count, gw.params.interval, gw.params.packet_size, gw.params.ttl) == (
        20,
        0.5,
        100,
        64,
    )
    db = by_id["pinger:south.test:db"]  # no hostName: its address; empty offset: none
    assert (db.target, db.schedule.interval, db.schedule.offset) == ("2001:db8::20", 1800, 0)
    assert sorted(by_id) == ["pinger:north.test:gw", "pinger:south.test:db"]
    # What was left out is said, with its line.
    assert "# ping4_exec (daemon.conf:26) left out: netsonde pings with its own ICMP engine" in text
    assert "# db_name (daemon.conf:15) left out:" in text


def test_an_hls_in_the_2008_nested_style(tmp_path: Path) -> None:
    result = import_perfsonar(VECTORS / "hls-2008-style.conf", probes.TOOLS)
    _, cfg = load_imported(result, tmp_path)
    ls = cfg.sections["ls"]
    assert ls.enabled and ls.ttl == 2 * 86400 and ls.max_ttl == 2 * 86400
    assert ls.expire_every == 30 * 60
    assert ls.token and len(ls.token) >= 16  # made up: the LS takes registrations with it
    assert cfg.listen_address == ("0.0.0.0", 9995)
    again = import_perfsonar(VECTORS / "hls-2008-style.conf", probes.TOOLS)
    assert again.sections["ls"]["token"] != result.sections["ls"]["token"]


def test_a_landmarks_file_alone_gives_its_tests(tmp_path: Path) -> None:
    result = import_perfsonar(VECTORS / "landmarks.xml", probes.TOOLS)
    cfg = round_trip(result, tmp_path)
    assert [t.id for t in cfg.tests] == ["pinger:north.test:gw", "pinger:south.test:db"]
    assert result.sections == {}


def test_landmarks_given_on_the_command_line_replace_the_configured_ones(conf_dir: Path) -> None:
    (conf_dir / "landmarks.xml").unlink()
    message = fail(conf_dir / "daemon.conf")
    assert message == (
        f"{conf_dir / 'daemon.conf'}:24: <pingermp> configuration_file:"
        f" {conf_dir / 'landmarks.xml'}: no such file (give --landmarks)"
    )
    doc = imported(conf_dir / "daemon.conf", landmarks=VECTORS / "landmarks.xml")
    assert len(doc["test"]) == 2


# ---- Config::General -------------------------------------------------------------------------


def test_config_general_reading(tmp_path: Path) -> None:
    write(tmp_path, "db_password secret\\#1\n", "extra.conf")
    path = write(
        tmp_path,
        "# comment\n"
        "a   1   # trailing comment\n"
        "b = two words\n"
        "c long \\\n   continued\n"
        "<port 80>\n  <<include extra.conf>>\n  <endpoint /x>\n  </endpoint>\n</port>\n"
        "a 2\n",
    )
    root = read(path)
    assert [(i.key, i.value, i.line) for i in root.items] == [
        ("a", "1", 2),
        ("b", "two words", 3),
        ("c", "long continued", 4),
        ("a", "2", 11),
    ]
    assert root.get("a").value == "2"  # the last one, as Config::General
    (port,) = root.blocks
    assert (port.name, port.arg, port.line) == ("port", "80", 6)
    assert [(i.key, i.value, i.file.name) for i in port.items] == [
        ("db_password", "secret#1", "extra.conf")
    ]
    assert [(b.name, b.arg) for b in port.blocks] == [("endpoint", "/x")]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("<port 80>\n<endpoint /x>\n</port>\n", 3, "</port> where </endpoint> was expected"),
        ("a 1\n<port 80>\n", 2, "<port> is never closed"),
        ("</port>\n", 1, "</port> where no closing tag was expected"),
        ("PORT?8080\n", 1, "PORT?…: the 2007 KEY?value format is not imported"),
        ("a <<EOF\nx\nEOF\n", 1, "here-documents (<<) are not supported"),
        ("<<include nowhere.conf>>\n", 1, "nowhere.conf: no such file"),
        ("<port 80\n", 1, "not a block tag"),
    ],
)
def test_config_general_errors_name_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(Unmappable) as e:
        read(path)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert message in str(e.value)


def test_an_include_of_itself_ends(tmp_path: Path) -> None:
    path = write(tmp_path, "<<include daemon.conf>>\n")
    with pytest.raises(Unmappable, match="includes nested deeper than 8"):
        read(path)


# ---- what cannot be mapped ---------------------------------------------------------------------

PINGER_MA = (
    "<port 8075>\n  <endpoint /perfSONAR_PS/services/pinger/ma>\n"
    "    module perfSONAR_PS::Services::MA::PingER\n{inner}  </endpoint>\n</port>\n"
)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            PINGER_MA.replace("MA::PingER", "MA::SNMP").format(inner=""),
            3,
            "module perfSONAR_PS::Services::MA::SNMP has no netsonde service",
        ),
        (
            PINGER_MA.format(inner="    <pingerma>\n      frobnicate 1\n    </pingerma>\n"),
            5,
            "<pingerma> frobnicate: unknown key, not imported",
        ),
        ("colour blue\n" + PINGER_MA.format(inner=""), 1, "colour: unknown top-level key"),
        (
            PINGER_MA.format(inner="    <status>\n    </status>\n"),
            4,
            "<status> belongs to no module of it",
        ),
        (
            PINGER_MA.format(inner="") + "<port 8084>\n  <endpoint /s>\n"
            "    module perfSONAR_PS::Services::MA::Status\n  </endpoint>\n</port>\n",
            7,
            "port 8084: netsonde serves every service on one address, and port 8075",
        ),
        ("<port 80000>\n</port>\n", 1, "<port 80000>: not a port number"),
        ("<port 80>\n  <endpoint /x>\n  </endpoint>\n</port>\n", 2, "endpoint /x: no module"),
        ("<port 80>\n  <thing>\n  </thing>\n</port>\n", 2, "only <endpoint> blocks go in a port"),
        (
            "max_worker_lifetime 7200\n" + PINGER_MA.format(inner=""),
            1,
            "max_worker_lifetime: 7200 s (netsonde allows up to 3600)",
        ),
        (
            PINGER_MA.format(
                inner="    <pingerma>\n      query_size_limit lots\n    </pingerma>\n"
            ),
            5,
            "query_size_limit: 'lots' is not a number",
        ),
        (
            PINGER_MA.replace("MA::PingER", "LS::gLS").format(
                inner="    <gls>\n      root 1\n    </gls>\n"
            ),
            5,
            "a gLS root (root 1): netsonde serves an hLS only",
        ),
        (
            PINGER_MA.replace("MA::PingER", "MA::Status").format(
                inner="    <status>\n      e2emon_definitions_file missing.xml\n    </status>\n"
            ),
            5,
            "e2emon_definitions_file: ",
        ),
        (
            PINGER_MA.replace("MA::PingER", "MP::PingER").format(inner=""),
            3,
            "<pingermp> has no configuration_file",
        ),
        ("a 1\n", 1, "no <port> block: not a perfSONAR-PS daemon.conf"),
    ],
)
def test_what_cannot_be_mapped_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    got = fail(path)
    if "no <port> block" in message:
        assert got == f"{path}: {message}"
        return
    assert got.startswith(f"{path}:{line}: "), got
    assert message in got


def test_disabled_endpoints_and_echo_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "<port 8075>\n  <endpoint /a>\n    disabled 1\n    module Some::Unknown\n  </endpoint>\n"
        "  <endpoint /perfSONAR_PS/services/echo>\n    module perfSONAR_PS::Services::Echo\n"
        "  </endpoint>\n</port>\n",
    )
    result = import_perfsonar(path, probes.TOOLS)
    assert result.sections == {"daemon": {"listen": "0.0.0.0:8075"}}
    assert any("endpoint /a" in n and "disabled, skipped" in n for n in result.notes)


def test_registration_without_an_ls_instance_is_said(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PINGER_MA.format(inner="    <pingerma>\n      enable_registration 1\n    </pingerma>\n"),
    )
    result = import_perfsonar(path, probes.TOOLS)
    assert "registration" not in result.sections
    assert any("registers through the gLS root hints" in n for n in result.notes)


def test_an_endpoint_elsewhere_than_netsondes_is_said(tmp_path: Path) -> None:
    path = write(tmp_path, PINGER_MA.replace("pinger/ma", "pingerMA").format(inner=""))
    result = import_perfsonar(path, probes.TOOLS)
    assert any(
        "netsonde serves MA PingER at /perfSONAR_PS/services/pinger/ma" in n for n in result.notes
    )


LINES = ["<port 1>", "</port>", "<endpoint /x>", "</endpoint>", "<<include landmarks.xml>>"]
LINES += ["module perfSONAR_PS::Services::MA::Status", "<status>", "</status>", "a \\", "x = "]
LINES += ["<>", "<9>", "enable_registration 1", "ls_registration_interval nan", "ls_ttl 1e400"]
LINES += ["ls_instance & http://x", "max_recent_age 1e308", "max_worker_processes 99999"]
LINES += ["<pingermp>", "</pingermp>", "configuration_file e2emon.xml", "root x", "pid_file \x00"]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["daemon.conf", "hls-2008-style.conf", "landmarks.xml"]),
    st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(["drop", "insert"]), st.sampled_from(LINES)),
        min_size=1,
        max_size=4,
    ),
)
def test_a_mangled_file_imports_and_loads_or_names_its_line(
    name: str, changes: list[tuple[int, str, str]]
) -> None:
    """Lines dropped or added anywhere: a clean error naming the file, or a config that loads."""
    lines = (VECTORS / name).read_text().splitlines()
    for at, op, line in changes:
        at %= len(lines)
        if op == "drop":
            del lines[at]
        else:
            lines.insert(at, line)
    with tempfile.TemporaryDirectory() as tmp:
        for f in VECTORS.iterdir():
            shutil.copy(f, Path(tmp) / f.name)
        path = write(Path(tmp), "\n".join(lines), f"mangled-{name}")
        try:
            result = import_perfsonar(path, probes.TOOLS)
        except Unmappable as e:
            assert str(e).startswith(str(Path(tmp)))
            return
        load_imported(result, Path(tmp))


# ---- landmarks -------------------------------------------------------------------------------

NODE = (
    '<t:topology xmlns:t="http://ogf.org/ns/nmwg/tools/pinger/landmarks/1.0/"'
    ' xmlns:b="http://ogf.org/schema/network/topology/base/20070707/"'
    ' xmlns:w="http://ggf.org/ns/nmwg/base/2.0/">\n'
    '<t:domain id="urn:ogf:network:domain=d">\n'
    '<t:node id="urn:ogf:network:domain=d:node=n">\n'
    "<b:hostName>{host}</b:hostName>\n"
    "<w:parameters>\n{params}</w:parameters>\n"
    "</t:node>\n</t:domain>\n</t:topology>\n"
)


def _params(**p: str) -> str:
    return "".join(f'<w:parameter name="{k}">{v}</w:parameter>\n' for k, v in p.items())


@pytest.mark.parametrize(
    ("host", "params", "line", "message"),
    [
        (
            "h.test",
            _params(measurementPeriod="60", measurementOffset="30"),
            3,
            "measurementOffset 30 must be under half the measurementPeriod 60",
        ),
        ("h.test", _params(count="10"), 3, "no measurementPeriod"),
        (
            "h.test",
            _params(measurementPeriod="60", count="many"),
            7,
            "parameter count: 'many' is not a number",
        ),
        (
            "h.test",
            _params(measurementPeriod="60", ttl="300"),
            3,
            "node urn:ogf:network:domain=d:node=n:",
        ),
        ("-rf", _params(measurementPeriod="60"), 3, "node urn:ogf:network:domain=d:node=n:"),
        ("", _params(measurementPeriod="60"), 3, "no hostName and no ipAddress"),
    ],
)
def test_landmark_errors_name_the_line(
    tmp_path: Path, host: str, params: str, line: int, message: str
) -> None:
    path = write(tmp_path, NODE.format(host=host, params=params), "landmarks.xml")
    got = fail(path)
    assert got.startswith(f"{path}:{line}: "), got
    assert message in got


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<config><domain>x</domain></config>", "not a PingER landmarks file (root <config>)"),
        ("<?xml version='1.0'?><a><b></a>", "not a landmarks file"),
        ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>', "DOCTYPE"),
    ],
)
def test_other_xml_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text, "other.xml")
    assert message in fail(path)


def test_the_command_prints_a_loadable_config(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "netsonde",
            "config",
            "import",
            "perfsonar",
            str(VECTORS / "landmarks.xml"),
            "-o",
            str(tmp_path / "out.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(tomllib.loads((tmp_path / "out.toml").read_text())["test"]) == 2
