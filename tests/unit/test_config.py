"""Config loading: every error is one line ``FILE:LINE: key.path: message`` at the right line.

Configs are written as lists of lines (``toml(...)``) so that each expected line number can be
read off the list: element k is line k + 1.
"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from netsonde import config, units
from netsonde import probes as tools
from netsonde.archive import open_archive
from netsonde.config import EMBEDDED_DEFAULT, Config, ConfigError, KeyLines
from netsonde.model import SchedClass, Schedule
from netsonde.probes import ping

NAME = "x.toml"

# Lines 1-5: a valid ping test. Appended lines start at line 6.
PING = [
    "[[test]]",
    'id = "a"',
    'tool = "ping"',
    'target = "192.0.2.1"',
    'interval = "10s"',
]


def toml(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def ping_test(test_id: str, **overrides: str) -> list[str]:
    """A [[test]] block as lines; ``overrides`` replace (or, when new, append) ``key = value``."""
    fields = {"id": f'"{test_id}"', "tool": '"ping"', "target": '"192.0.2.1"', "interval": '"10s"'}
    fields.update(overrides)
    return ["[[test]]", *(f"{k} = {v}" for k, v in fields.items())]


def parse(text: str, base: Path) -> Config:
    return config.parse(text, Path(NAME), tools.TOOLS, base=base)


def error_of(text: str, base: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, base)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


def assert_error(text: str, base: Path, line: int, key: str, fragment: str) -> str:
    msg = error_of(text, base)
    assert msg.startswith(f"{NAME}:{line}: {key}: "), msg
    assert fragment in msg, msg
    return msg


# ---- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "line", "key", "fragment"),
    [
        pytest.param(["bogus = 1", *PING], 1, "bogus", "unknown key", id="top-level"),
        pytest.param(
            [*PING, "", "[bogus]", "x = 1"], 7, "bogus", "unknown key", id="top-level-table"
        ),
        pytest.param(
            ["[daemon]", 'data_dir = "d"', 'listn = "127.0.0.1:1"', *PING],
            3,
            "daemon.listn",
            "did you mean 'listen'?",
            id="daemon",
        ),
        pytest.param(
            [*PING, 'intervall = "5s"'],
            6,
            "test[0].intervall",
            "did you mean 'interval'?",
            id="test",
        ),
        pytest.param(
            ['archive = { uri = "sqlite:///a" }', *PING],
            1,
            "archive.uri",
            "did you mean 'url'?",
            id="archive-inline",
        ),
        pytest.param(
            ["[spool]", 'url = "http://127.0.0.1:1"', "batchsize = 5", *PING],
            3,
            "spool.batchsize",
            "did you mean 'batch_size'?",
            id="optional-section",
        ),
        pytest.param(
            [*PING, "params = { cout = 3 }"],
            6,
            "test[0].params.cout",
            "did you mean 'count'?",
            id="inline-params",
        ),
        pytest.param(
            [*PING, "params = { count = 3, ttl = 9, cout = 3 }"],
            6,
            "test[0].params.cout",
            "did you mean 'count'?",
            id="inline-params-not-first",
        ),
        pytest.param(
            [*PING, "params.cout = 3"],
            6,
            "test[0].params.cout",
            "did you mean 'count'?",
            id="dotted-params",
        ),
        pytest.param(
            [*PING, "", "[test.params]", "count = 3", "cout = 3"],
            9,
            "test[0].params.cout",
            "did you mean 'count'?",
            id="params-subtable",
        ),
        pytest.param(
            [*PING, "", *ping_test("b"), "", "[test.params]", "count = 3", "cout = 3"],
            15,
            "test[1].params.cout",
            "did you mean 'count'?",
            id="params-subtable-second-test",
        ),
        pytest.param(
            [*PING, "params = { count = 3 }", "", *ping_test("b", params="{ cout = 3 }")],
            13,
            "test[1].params.cout",
            "did you mean 'count'?",
            id="inline-params-second-test",
        ),
        pytest.param(
            [*PING, "", *ping_test("b"), 'intervall = "5s"'],
            12,
            "test[1].intervall",
            "did you mean 'interval'?",
            id="second-test",
        ),
    ],
)
def test_unknown_key(tmp_path: Path, lines: list[str], line: int, key: str, fragment: str) -> None:
    assert_error(toml(*lines), tmp_path, line, key, fragment)


def test_unknown_param_lists_the_tools_own_keys(tmp_path: Path) -> None:
    msg = error_of(toml(*PING, "params = { cout = 3 }"), tmp_path)
    allowed = msg.split("(allowed: ", 1)[1].rstrip(")").split(", ")
    assert allowed == sorted(ping.Params.model_fields)
    assert "daemon" not in allowed


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path: Path) -> None:
    msg = assert_error(toml("[daemon]", "zzz = 1"), tmp_path, 2, "daemon.zzz", "unknown key")
    assert "did you mean" not in msg
    assert "data_dir" in msg and "listen" in msg


# ---- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('"5x"', "invalid duration '5x'"),
        ('"-1s"', "invalid duration '-1s'"),
        ('""', "invalid duration ''"),
        ("0", "greater than 0"),
        ('"0s"', "greater than 0"),
        ("-1", "negative"),
        ("inf", "inf"),
        ("nan", "nan"),
        ("true", "invalid duration True"),
        ("[1]", "invalid duration"),
    ],
)
def test_bad_interval(tmp_path: Path, value: str, fragment: str) -> None:
    lines = [*PING[:4], 'class = "normal"', f"interval = {value}", "max_runs = 3"]
    assert_error(toml(*lines), tmp_path, 6, "test[0].interval", fragment)


def test_bad_interval_in_second_test(tmp_path: Path) -> None:
    lines = [*PING, "", *ping_test("b", interval='"5x"')]
    assert_error(toml(*lines), tmp_path, 11, "test[1].interval", "invalid duration '5x'")


@pytest.mark.parametrize(
    ("offset", "ok"),
    [('"4.9s"', True), ('"5s"', False), ('"6s"', False), ("4", True), ('"1m"', False)],
)
def test_offset_must_be_under_half_the_interval(tmp_path: Path, offset: str, ok: bool) -> None:
    text = toml(*PING, 'class = "normal"', f"offset = {offset}")
    if ok:
        assert parse(text, tmp_path).tests[0].schedule.offset < 5.0
    else:
        assert_error(text, tmp_path, 7, "test[0].offset", "less than half the interval")


@pytest.mark.parametrize(
    ("line", "key", "fragment"),
    [
        ('class = "bogus"', "test[0].class", "'exclusive', 'normal' or 'background'"),
        ('class = "Normal"', "test[0].class", "got 'Normal'"),
        ('schedule = "random"', "test[0].schedule", "'periodic' or 'poisson'"),
        ('start = "2024-99-01T00:00:00"', "test[0].start", "invalid time '2024-99-01T00:00:00'"),
        ('start = "tomorrow"', "test[0].start", "use ISO 8601"),
        ("start = 2024-01-01", "test[0].start", "invalid time"),
        ("start = 12:00:00", "test[0].start", "invalid time"),
        ("start = true", "test[0].start", "invalid time"),
        ('until = "x"', "test[0].until", "invalid time"),
        ("max_runs = 0", "test[0].max_runs", "greater than or equal to 1"),
        ('slip = "soon"', "test[0].slip", "invalid duration"),
        ("slip = inf", "test[0].slip", "must be finite"),
        ("offset = nan", "test[0].offset", "must be finite"),
        ("timeout = inf", "test[0].timeout", "must be finite"),
        ("timeout = 0", "test[0].timeout", "greater than 0"),
    ],
)
def test_bad_test_value(tmp_path: Path, line: str, key: str, fragment: str) -> None:
    assert_error(toml(*PING, line), tmp_path, 6, key, fragment)


@pytest.mark.parametrize("test_id", ["bad id", "", "-a", "a" * 129, "a,b"])
def test_bad_test_id(tmp_path: Path, test_id: str) -> None:
    lines = [*PING[:1], *PING[2:], f'id = "{test_id}"']
    assert_error(toml(*lines), tmp_path, 5, "test[0].id", "should match pattern")


def test_until_must_follow_start(tmp_path: Path) -> None:
    lines = [*PING, "start = 2030-01-02T00:00:00Z", "until = 2030-01-01T00:00:00Z"]
    assert_error(toml(*lines), tmp_path, 7, "test[0].until", "until must be after start")


@pytest.mark.parametrize(
    ("lines", "line", "key", "fragment"),
    [
        pytest.param(
            ["", "[[test]]", 'id = "a"', 'target = "h"', "interval = 1"],
            2,
            "test[0].tool",
            "required key is missing",
            id="missing-tool",
        ),
        pytest.param(
            ["[[test]]", 'id = "a"', 'tool = "ping"', 'target = "h"'],
            1,
            "test[0].interval",
            "required key is missing",
            id="missing-interval",
        ),
        pytest.param(
            [*PING, "", "[[test]]", 'tool = "ping"', 'target = "h"', "interval = 1"],
            7,
            "test[1].id",
            "required key is missing",
            id="missing-id-second-test",
        ),
        pytest.param(
            ["[[test]]", 'id = "a"', 'tool = "ping"', "interval = 1"],
            1,
            "test[0]",
            "give exactly one of 'target' or 'targets'",
            id="no-target",
        ),
        pytest.param(
            [*PING, 'targets = ["h"]'],
            1,
            "test[0]",
            "give exactly one of 'target' or 'targets'",
            id="target-and-targets",
        ),
        pytest.param(
            [*PING[:3], "targets = []", PING[4]],
            4,
            "test[0].targets",
            "at least 1 item",
            id="empty-targets",
        ),
        pytest.param(
            ["[daemon]", "max_children = 0"],
            2,
            "daemon.max_children",
            "greater than or equal to 1",
            id="max-children",
        ),
        pytest.param(
            ["[daemon]", 'stop_timeout = "2h"'],
            2,
            "daemon.stop_timeout",
            "less than or equal to 3600",
            id="stop-timeout",
        ),
        pytest.param(
            ['test = { id = "a" }'], 1, "test", "valid list", id="test-not-an-array-of-tables"
        ),
        pytest.param(["[test]", 'id = "a"'], 1, "test", "valid list", id="test-single-table"),
    ],
)
def test_bad_structure(
    tmp_path: Path, lines: list[str], line: int, key: str, fragment: str
) -> None:
    assert_error(toml(*lines), tmp_path, line, key, fragment)


# ---- duplicate ids ---------------------------------------------------------------------------


def test_duplicate_id_points_at_the_second(tmp_path: Path) -> None:
    lines = [*PING, "", "[[test]]", 'tool = "ping"', 'id = "a"', 'target = "192.0.2.2"']
    lines += ["interval = 30"]
    msg = assert_error(toml(*lines), tmp_path, 9, "test[1].id", "duplicate test id 'a'")
    assert "first at test[0]" in msg


def test_duplicate_id_from_targets_expansion(tmp_path: Path) -> None:
    b = ping_test("b", target='"192.0.2.2"')  # not a's definition too: that is refused first
    lines = [*ping_test("a/192.0.2.1"), "", *b, "", "[[test]]", 'id = "a"']
    lines += ['tool = "ping"', 'targets = ["192.0.2.9", "192.0.2.1"]', "interval = 30"]
    msg = assert_error(toml(*lines), tmp_path, 14, "test[2].id", "duplicate test id 'a/192.0.2.1'")
    assert "first at test[0]" in msg


def test_duplicate_target_in_one_targets_list(tmp_path: Path) -> None:
    lines = ["[[test]]", 'id = "a"', 'tool = "ping"', 'targets = ["h1", "h2", "h1"]']
    lines += ["interval = 30"]
    msg = assert_error(toml(*lines), tmp_path, 2, "test[0].id", "duplicate test id 'a/h1'")
    assert "first at test[0]" in msg


def test_same_id_with_and_without_expansion_is_fine(tmp_path: Path) -> None:
    lines = [*ping_test("a"), *ping_test("b", target='"192.0.2.3"')]
    lines += ["[[test]]", 'id = "a"', 'tool = "noop"', 'targets = ["x"]', "interval = 1"]
    ids = [t.id for t in parse(toml(*lines), tmp_path).tests]
    assert ids == ["a", "b", "a/x"]


# ---- tools, targets and their parameters -----------------------------------------------------


def test_unknown_tool(tmp_path: Path) -> None:
    lines = [*PING[:2], 'tool = "pong"', *PING[3:]]
    msg = assert_error(toml(*lines), tmp_path, 3, "test[0].tool", "unknown tool 'pong'")
    assert f"(known: {', '.join(sorted(tools.TOOLS))})" in msg and "ping" in tools.TOOLS


@pytest.mark.parametrize(
    "target",
    ["-oProxyCommand=x", "a b", "", "host_name", "a..b", "-h", "h-", "x;reboot", "a/b", "é.net"],
)
def test_bad_target(tmp_path: Path, target: str) -> None:
    lines = [*PING[:3], 'interval = "10s"', f"target = {target!r}".replace("'", '"')]
    msg = assert_error(toml(*lines), tmp_path, 5, "test[0].target", "target")
    assert "empty" in msg or "neither an IP address nor a valid host name" in msg


def test_bad_target_in_targets_names_its_index(tmp_path: Path) -> None:
    lines = [*PING[:3], 'interval = "10s"', "targets = [", '  "192.0.2.1",', '  "a b",', "]"]
    assert_error(toml(*lines), tmp_path, 5, "test[0].targets[1]", "'a b' is neither")


@pytest.mark.parametrize(
    "target", ["192.0.2.1", "::1", "2001:db8::1", "example.net", "example.net.", "h", "a-b.c0"]
)
def test_good_target(tmp_path: Path, target: str) -> None:
    lines = [*PING[:3], 'interval = "10s"', f'target = "{target}"']
    assert parse(toml(*lines), tmp_path).tests[0].target == target


@pytest.mark.parametrize(
    ("params", "key", "fragment"),
    [
        ("count = 0", "count", "greater than or equal to 1"),
        ("count = 10001", "count", "less than or equal to 10000"),
        ("ttl = 300", "ttl", "less than or equal to 255"),
        ("ttl = 0", "ttl", "greater than or equal to 1"),
        ("interval = 0.001", "interval", "greater than or equal to 0.002"),
        ("wait = 0", "wait", "greater than 0"),
        ('family = "ipv5"', "family", "'auto', 'ipv4' or 'ipv6'"),
        ('count = "many"', "count", "valid integer"),
    ],
)
def test_ping_params_out_of_range(tmp_path: Path, params: str, key: str, fragment: str) -> None:
    inline = toml(*PING, "params = { " + params + " }")
    assert_error(inline, tmp_path, 6, f"test[0].params.{key}", fragment)
    subtable = toml(*PING, "[test.params]", "packet_size = 100", params)
    assert_error(subtable, tmp_path, 8, f"test[0].params.{key}", fragment)


def command_test(program: str) -> list[str]:
    return [
        "[[test]]",
        'id = "c"',
        'tool = "command"',
        'target = "example.net"',
        'interval = "1m"',
        "[test.params]",
        f'program = "{program}"',
        'args = ["-t", "{target}"]',
    ]


@pytest.mark.parametrize("program", ["bin/probe", "probe", "./probe", ""])
def test_command_needs_an_absolute_program(tmp_path: Path, program: str) -> None:
    lines = command_test(program)
    assert_error(toml(*lines), tmp_path, 7, "test[0].params.program", "absolute path")


def test_command_missing_program(tmp_path: Path) -> None:
    lines = [*command_test("/x")[:6], 'args = ["a"]']
    assert_error(toml(*lines), tmp_path, 6, "test[0].params.program", "required key is missing")


def test_command_absolute_program(tmp_path: Path) -> None:
    (spec,) = parse(toml(*command_test("/usr/lib/probe")), tmp_path).tests
    assert spec.params.program == "/usr/lib/probe"
    assert spec.params.args == ("-t", "{target}")
    assert spec.timeout == 60.0


# ---- TOML syntax, files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        pytest.param(toml("x = 1", "[[test]"), 2, "Expected ']]'", id="header"),
        pytest.param(toml(*PING, "offset = 5x"), 6, "Expected newline", id="bare-value"),
        pytest.param(toml(*PING, 'interval = "1s"'), 6, "Cannot overwrite", id="duplicate-key"),
        pytest.param(toml(*PING, "", "[[test]]", "id = "), 8, "Invalid value", id="no-value"),
        pytest.param(toml(*PING).rstrip("\n") + "\noffset =", 6, "Invalid value", id="at-eof"),
        pytest.param(toml(*PING, "params = { count = 3,"), 6, "", id="open-inline-table"),
        pytest.param(toml(*PING, 'offset = "1s'), 6, "", id="open-string"),
    ],
)
def test_invalid_toml(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    msg = error_of(text, tmp_path)
    assert msg.startswith(f"{NAME}:{line}: invalid TOML: "), msg
    assert fragment in msg
    assert "(at line" not in msg and "(at end of document)" not in msg


def test_unclosed_array_at_end_of_file_names_the_last_line(tmp_path: Path) -> None:
    text = toml(*PING[:4], "targets = [", '  "h1",', '  "h2",')
    msg = error_of(text, tmp_path)
    assert msg.startswith(f"{NAME}:7: invalid TOML: "), msg
    assert "(at end of document)" not in msg


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path, tools.TOOLS)
    assert str(info.value) == f"{path}: no such config file"


@pytest.mark.parametrize("kind", ["directory", "not-utf8"])
def test_unreadable_file_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c.toml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b'x = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path, tools.TOOLS)
    msg = str(info.value)
    assert msg.startswith(f"{path}: cannot read: "), msg
    assert "\n" not in msg


def test_load_errors_name_the_path_given(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml(*PING, "ofset = 1"))
    with pytest.raises(ConfigError) as info:
        config.load(path, tools.TOOLS)
    assert str(info.value).startswith(f"{path}:6: test[0].ofset: unknown key; did you mean")


def test_key_with_newline_stays_on_one_line(tmp_path: Path) -> None:
    msg = error_of(toml('"a\\nb" = 1', *PING), tmp_path)
    assert msg.startswith(f'{NAME}:1: "a\\nb": unknown key'), msg


# ---- several errors --------------------------------------------------------------------------


def test_several_errors_report_the_first_by_line(tmp_path: Path) -> None:
    # pydantic reports [daemon] (declared first in the model) before the test; line order wins.
    lines = [*PING, "intervall = 1", "", "[daemon]", "bogus = 1", "also = 2"]
    msg = assert_error(toml(*lines), tmp_path, 6, "test[0].intervall", "unknown key")
    assert msg.endswith(" (and 2 more)"), msg


def test_several_errors_across_tests(tmp_path: Path) -> None:
    lines = [*PING, 'offset = "9s"', "", *ping_test("b", tool='"pong"'), "", *ping_test("a")]
    msg = assert_error(toml(*lines), tmp_path, 6, "test[0].offset", "half the interval")
    assert msg.endswith(" (and 2 more)"), msg


def test_single_error_has_no_count(tmp_path: Path) -> None:
    msg = error_of(toml(*PING, "ofset = 1"), tmp_path)
    assert "more)" not in msg


# ---- units.parse_duration / units.parse_time ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("2m30s500ms", 150.5),
        (" 10s ", 10.0),
        ("0s", 0.0),
        (2.5, 2.5),
        (10, 10.0),
        (0, 0.0),
    ],
)
def test_parse_duration_ok(value: object, seconds: float) -> None:
    result = units.parse_duration(value)
    assert isinstance(result, float)
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "5x",
        "s",
        "1h 30",
        "30",
        "-1s",
        "1.s",
        "ms5",
        "5 s x",
        "1h30m!",
        True,
        False,
        None,
        [1],
        -1,
        -0.5,
        math.inf,
        math.nan,
        "inf",
    ],
)
def test_parse_duration_invalid(value: object) -> None:
    with pytest.raises(ValueError):
        units.parse_duration(value)


def test_parse_time() -> None:
    epoch_2030 = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert units.parse_time(datetime(2030, 1, 1, tzinfo=UTC)) == epoch_2030
    assert units.parse_time("2030-01-01T00:00:00+00:00") == epoch_2030
    tz2 = timezone(timedelta(hours=2))
    assert units.parse_time(datetime(2030, 1, 1, 2, tzinfo=tz2)) == epoch_2030
    assert units.parse_time(1_893_456_000) == 1_893_456_000.0
    for bad in ("tomorrow", True, None, [2030]):
        with pytest.raises(ValueError):
            units.parse_time(bad)


# ---- a valid file, end to end ----------------------------------------------------------------

FULL = """\
[daemon]
data_dir = "data"
listen = "0.0.0.0:9000"
max_children = 4
stop_timeout = "30s"

[[test]]
id = "p1"
tool = "ping"
target = "192.0.2.1"
interval = "5m"
offset = "30s"
schedule = "poisson"
start = 2030-01-01T00:00:00Z
until = 2030-01-02T00:00:00+00:00
max_runs = 100
slip = "10s"
class = "normal"
params = { count = 3, interval = 0.5 }

[[test]]
id = "multi"
tool = "ping"
targets = [
  "192.0.2.2",  # comment ] with a bracket
  "example.net",
]
interval = 60
timeout = "45s"
class = "exclusive"

[[test]]
id = "cmd"
tool = "command"
target = "host.example"
interval = "1h30m"

[test.params]
program = "/usr/bin/true"
args = ["{target}"]
"""


def test_full_config_round_trips(tmp_path: Path) -> None:
    cfg = parse(FULL, tmp_path)
    assert cfg.source == Path(NAME)
    assert cfg.listen == "0.0.0.0:9000"
    assert cfg.max_children == 4
    assert cfg.stop_timeout == 30.0
    assert [t.id for t in cfg.tests] == ["p1", "multi/192.0.2.2", "multi/example.net", "cmd"]

    p1, m1, m2, cmd = cfg.tests
    assert p1.tool == "ping" and p1.target == "192.0.2.1"
    assert p1.schedule == Schedule(
        interval=300.0,
        offset=30.0,
        poisson=True,
        start=datetime(2030, 1, 1, tzinfo=UTC).timestamp(),
        until=datetime(2030, 1, 2, tzinfo=UTC).timestamp(),
        max_runs=100,
        slip=10.0,
    )
    assert p1.sched_class is SchedClass.NORMAL
    assert (p1.params.count, p1.params.interval, p1.params.ttl) == (3, 0.5, 64)
    # ping's own default: ceil((3 - 1) * 0.5 + wait 2) + 5
    assert p1.timeout == ping.default_timeout(p1.params) == 8.0

    for spec, target in ((m1, "192.0.2.2"), (m2, "example.net")):
        assert spec.target == target
        assert spec.schedule == Schedule(interval=60.0)
        assert spec.timeout == 45.0  # explicit, not ping's 16 s
        assert spec.sched_class is SchedClass.EXCLUSIVE
        assert spec.params == ping.Params()
    assert m1.key != m2.key

    assert cmd.tool == "command" and cmd.target == "host.example"
    assert cmd.schedule.interval == 5400.0 and cmd.schedule.poisson is False
    assert cmd.sched_class is SchedClass.BACKGROUND
    assert cmd.params.program == "/usr/bin/true" and cmd.params.args == ("{target}",)


def test_defaults_and_paths_resolve_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = conf_dir / "netsonde.toml"
    path.write_text(FULL)
    monkeypatch.chdir(tmp_path)  # relative paths must not follow the working directory
    cfg = config.load(path, tools.TOOLS)
    data = conf_dir / "data"
    assert cfg.source == path
    assert cfg.data_dir == data
    assert cfg.pidfile == data / "netsonde.pid"
    assert cfg.log_file == data / "netsonde.log"
    assert cfg.archive_url == f"sqlite:///{data / 'archive.sqlite'}"
    open_archive(cfg.archive_url).close()  # the URL names that file, wherever we run
    assert (data / "archive.sqlite").is_file()


def test_load_with_relative_path_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "n.toml").write_text(toml(*PING))
    monkeypatch.chdir(tmp_path)
    cfg = config.load("etc/n.toml", tools.TOOLS)
    assert cfg.data_dir == tmp_path / "etc" / "netsonde-data"
    assert cfg.data_dir.is_absolute()


def test_explicit_paths(tmp_path: Path) -> None:
    text = toml(
        "[daemon]",
        'data_dir = "/srv/netsonde"',
        'pidfile = "run/n.pid"',
        'log_file = "/var/log/n.log"',
        "[archive]",
        'url = "sqlite:///arch/a.sqlite"',
    )
    cfg = parse(text, tmp_path)
    assert cfg.data_dir == Path("/srv/netsonde")
    assert cfg.pidfile == tmp_path / "run" / "n.pid"
    assert cfg.log_file == Path("/var/log/n.log")
    assert cfg.archive_url == f"sqlite:///{tmp_path / 'arch' / 'a.sqlite'}"
    assert cfg.tests == ()


def test_absolute_sqlite_url_is_kept(tmp_path: Path) -> None:
    cfg = parse(toml("[archive]", 'url = "sqlite:////var/lib/n/a.sqlite"'), tmp_path)
    assert cfg.archive_url == "sqlite:////var/lib/n/a.sqlite"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://n:secret@localhost/netsonde", "unsupported archive URL scheme 'mysql'"),
        ("sqlite://relative", "invalid SQLite archive URL"),
        ("archive.sqlite", "not an archive URL"),
    ],
)
def test_unknown_or_malformed_archive_url_rejected(tmp_path: Path, url: str, fragment: str) -> None:
    lines = [*PING, "", "[archive]", "# the archive", f'url = "{url}"']
    msg = assert_error(toml(*lines), tmp_path, 9, "archive.url", fragment)
    assert "sqlite:///PATH" in msg  # says what would do
    assert "secret" not in msg  # a URL may hold a password: never echoed whole


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None, tools.TOOLS)
    assert cfg.source is None
    assert cfg.data_dir == tmp_path / "netsonde-data"
    assert {t.target for t in cfg.tests} == {"127.0.0.1", "::1"}
    assert len(cfg.tests) == 2
    for spec in cfg.tests:
        assert spec.tool == "ping"
        assert spec.schedule.interval == 10.0
        assert spec.schedule.offset < spec.schedule.interval / 2
        assert spec.timeout == ping.default_timeout(spec.params)
    assert cfg.archive_url == f"sqlite:///{tmp_path / 'netsonde-data' / 'archive.sqlite'}"
    assert "127.0.0.1" in EMBEDDED_DEFAULT


def test_embedded_default_errors_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(toml(*PING, "x = 1"), None, tools.TOOLS, base=Path("/"))
    assert str(info.value).startswith("<embedded default>:6: test[0].x: unknown key")


# ---- KeyLines --------------------------------------------------------------------------------


def test_key_lines_follows_tables_and_arrays_of_tables() -> None:
    text = toml(
        "top = 1",  # 1
        "[daemon]",  # 2
        'listen = "x"',  # 3
        "[[test]]",  # 4
        'id = "a"',  # 5
        "[test.params]",  # 6
        "count = 1",  # 7
        "[[test]]",  # 8
        "params = { count = 2, ttl = 3 }",  # 9
        "[[test]]",  # 10
        "[test.params]",  # 11
        "ttl = 4",  # 12
    )
    lines = KeyLines(text)
    expected: dict[tuple[str | int, ...], int] = {
        ("top",): 1,
        ("daemon",): 2,
        ("daemon", "listen"): 3,
        ("test", 0): 4,
        ("test", 0, "id"): 5,
        ("test", 0, "params"): 6,
        ("test", 0, "params", "count"): 7,
        ("test", 1): 8,
        ("test", 1, "params", "ttl"): 9,
        ("test", 2, "params"): 11,
        ("test", 2, "params", "ttl"): 12,
        ("test", 2, "params", "count"): 11,  # absent: its table's line
        ("test", 1, "interval"): 8,  # absent: its [[test]]'s line
        ("nowhere",): 1,
    }
    assert {loc: lines.line_of(loc) for loc in expected} == expected


def test_key_lines_skips_multiline_strings_and_arrays() -> None:
    text = toml(
        "[[test]]",  # 1
        'id = "a"',  # 2
        'params = { program = \'/p\', args = ["""',  # 3
        "[[test]]",  # 4  (inside the string)
        "ttl = [",  # 5  (inside the string)
        '"""] }',  # 6
        "targets = [",  # 7
        '  "a[",',  # 8
        '  "b\\"[",',  # 9
        "]",  # 10
        "[[test]]",  # 11
        "ttl = 1",  # 12
    )
    lines = KeyLines(text)
    assert lines.line_of(("test", 1)) == 11
    assert lines.line_of(("test", 1, "ttl")) == 12
    assert lines.line_of(("test", 0, "ttl")) == 1
    assert lines.line_of(("test", 0, "targets")) == 7


def test_multiline_string_does_not_shift_later_lines(tmp_path: Path) -> None:
    lines = [
        *PING[:3],
        'target = "example.net"',
        "interval = 60",
        "[test.params]",
        "args = ['''",
        "{",
        "''']",
        "",
        *ping_test("b"),
        "intervall = 1",
    ]
    lines[2] = 'tool = "command"'
    lines.insert(6, 'program = "/bin/probe"')
    assert_error(toml(*lines), tmp_path, 17, "test[1].intervall", "did you mean 'interval'?")


# ---- the CLI ---------------------------------------------------------------------------------

NETSONDE = Path(sys.executable).parent / "netsonde"


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NETSONDE), "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_config_check_ok(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(FULL)
    proc = run_check(path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.replace("\n", "")  # rich folds long lines at the terminal width
    assert f"{path}: OK, 4 test(s)" in out
    assert f"sqlite:///{tmp_path / 'data' / 'archive.sqlite'}" in out
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("lines", "line", "key"),
    [
        pytest.param([*PING, "", 'intervall = "5s"'], 7, "test[0].intervall", id="unknown-key"),
        pytest.param([*PING, "params = { ttl = 300 }"], 6, "test[0].params.ttl", id="param"),
        pytest.param([*PING[:3], 'target = "-oProxyCommand=x"', PING[4]], 4, "test[0].target"),
        pytest.param([*PING, "", "[[test]", ""], 7, "invalid TOML", id="syntax"),
    ],
)
def test_cli_config_check_bad(tmp_path: Path, lines: list[str], line: int, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml(*lines))
    proc = run_check(path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert f"{path}:{line}: {key}" in err[0]


def test_cli_config_check_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    proc = run_check(path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "no such config file" in err[0], err


def test_archive_retention_is_a_duration_of_a_day_at_least(tmp_path: Path) -> None:
    assert parse("", tmp_path).archive_retention is None
    assert parse('[archive]\nretention = "400d"\n', tmp_path).archive_retention == 400 * 86400
    assert_error('[archive]\nretention = "2h"\n', tmp_path, 2, "archive.retention", "86400")


def test_a_postgresql_archive_url_holds_no_password_and_its_password_file_is_resolved(
    tmp_path: Path,
) -> None:
    msg = error_of('[archive]\nurl = "postgresql://u:secret@db/ns"\n', tmp_path)
    assert "password" in msg and "secret" not in msg
    cfg = parse('[archive]\nurl = "postgresql://u@db/ns?password_file=pw"\n', tmp_path)
    assert cfg.archive_url == f"postgresql://u@db/ns?password_file={tmp_path / 'pw'}"
