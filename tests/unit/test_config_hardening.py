"""Config values a careless or hostile author may write: out-of-range intervals and times, a
secret in a bad value, a nesting bomb, two tests with one definition. Each is refused at load in
one line naming its key and line, never with a traceback and never quoting a secret.

Configs are lists of lines: element k is line k + 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netsonde import config
from netsonde import probes as tools
from netsonde.config import ConfigError
from netsonde.config.load import MAX_NESTING

NAME = "x.toml"
PING = ["[[test]]", 'id = "a"', 'tool = "ping"', 'target = "192.0.2.1"', 'interval = "10s"']


def error_of(lines: list[str], base: Path) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse("\n".join(lines) + "\n", Path(NAME), tools.TOOLS, base=base)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# ---- durations and times in range -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("interval = 1e300", "test[0].interval"),
        ('interval = "400d"', "test[0].interval"),
        ("timeout = 1e300", "test[0].timeout"),
        ('slip = "1000d"', "test[0].slip"),
    ],
)
def test_huge_test_durations_are_refused(tmp_path: Path, line: str, key: str) -> None:
    lines = [*PING[:4], line] if line.startswith("interval") else [*PING, line]
    msg = error_of(lines, tmp_path)
    assert msg.startswith(f"{NAME}:5: {key}: ") or msg.startswith(f"{NAME}:6: {key}: "), msg
    assert "less than or equal to 31622400" in msg  # a year (366 d) in seconds


def test_a_year_is_still_an_interval(tmp_path: Path) -> None:
    lines = [*PING[:4], 'interval = "366d"', 'timeout = "366d"', 'slip = "1d"']
    cfg = config.parse("\n".join(lines) + "\n", Path(NAME), tools.TOOLS, base=tmp_path)
    assert cfg.tests[0].schedule.interval == 366 * 86400


def test_huge_restart_every_is_refused(tmp_path: Path) -> None:
    msg = error_of(["[daemon]", "restart_every = 1e300"], tmp_path)
    assert msg.startswith(f"{NAME}:2: daemon.restart_every: "), msg


@pytest.mark.parametrize(
    "value",
    [
        "1e30",
        str(2**63 - 1),
        "253402300800",  # 10000-01-01T00:00:00Z
        "9999-12-31T23:59:59-05:00",  # after 9999-12-31T23:59:59Z in UTC
        "-1e30",
    ],
)
@pytest.mark.parametrize("key", ["start", "until"])
def test_times_out_of_range_are_refused(tmp_path: Path, key: str, value: str) -> None:
    msg = error_of([*PING, f"{key} = {value}"], tmp_path)
    assert msg.startswith(f"{NAME}:6: test[0].{key}: time "), msg
    assert "out of range" in msg and "9999-12-31T23:59:59Z" in msg


def test_the_last_second_of_9999_is_a_time(tmp_path: Path) -> None:
    lines = [*PING, "until = 9999-12-31T23:59:59Z"]
    cfg = config.parse("\n".join(lines) + "\n", Path(NAME), tools.TOOLS, base=tmp_path)
    assert cfg.tests[0].schedule.until == 253_402_300_799


# ---- secrets are never echoed -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "line", "key", "fragment"),
    [
        (["[api]", 'token = "hunter2-short"'], 2, "api.token", "at least 16 characters"),
        (["[api]", "token = 12345"], 2, "api.token", "valid string"),
        (
            ["[spool]", 'url = "http://127.0.0.1:1/"', 'token = "hunter2-short"'],
            3,
            "spool.token",
            "at least 16 characters",
        ),
        (
            [
                "[[test]]",
                'id = "s"',
                'tool = "snmp_link"',
                'target = "127.0.0.1"',
                "interval = 10",
                'params = { community = ["hunter2-short"], interfaces = [1] }',
            ],
            6,
            "test[0].params.community",
            "valid string",
        ),
    ],
)
def test_a_secret_is_not_echoed(
    tmp_path: Path, lines: list[str], line: int, key: str, fragment: str
) -> None:
    msg = error_of(lines, tmp_path)
    assert msg.startswith(f"{NAME}:{line}: {key}: "), msg
    assert fragment in msg and "not shown: it is secret" in msg
    assert "hunter2" not in msg and "12345" not in msg


def test_a_table_holding_a_secret_is_not_echoed(tmp_path: Path) -> None:
    # [spool] written as an array of tables: the whole value is wrong, and holds the token.
    msg = error_of(['spool = [{ url = "http://h/", token = "hunter2-hunter2-hunter2" }]'], tmp_path)
    assert msg.startswith(f"{NAME}:1: spool: "), msg
    assert "(got an array)" in msg and "hunter2" not in msg


def test_other_values_are_still_echoed(tmp_path: Path) -> None:
    msg = error_of([*PING, 'class = "Normal"'], tmp_path)
    assert "(got 'Normal')" in msg


# ---- nesting bombs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        ("[" * 100_000 + "]" * 100_000, 100_000),
        ("{a = " * 50_000 + "1" + "}" * 50_000, 50_000),
        ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), MAX_NESTING + 1),
    ],
    ids=["arrays", "inline-tables", "one-too-deep"],
)
def test_a_nesting_bomb_is_one_line_naming_its_line(tmp_path: Path, value: str, depth: int) -> None:
    path = tmp_path / "bomb.toml"
    path.write_text("\n".join([*PING, "", f"params = {{ x = {value} }}"]) + "\n")
    with pytest.raises(ConfigError) as info:  # not RecursionError
        config.load(path, tools.TOOLS)
    # params = { x = …: one inline table around the bomb.
    assert str(info.value) == (
        f"{path}:7: arrays or inline tables nested {depth + 1} deep (at most {MAX_NESTING})"
    )


def test_brackets_in_strings_and_comments_are_not_nesting(tmp_path: Path) -> None:
    deep = "[" * 1000
    lines = [*PING, f'offset = "1s" # {deep}', "[test.params]", f"ttl = 64 # {deep}"]
    lines[1] = f"id = 'a' # {deep}"
    text = "\n".join(lines) + f'\n\n[daemon]\nname = "{deep}x"\n'
    with pytest.raises(ConfigError) as info:  # the name is bad, the nesting is not
        config.parse(text, Path(NAME), tools.TOOLS, base=tmp_path)
    assert "nested" not in str(info.value)
    assert str(info.value).startswith(f"{NAME}:11: daemon.name: "), info.value


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    # One inline table around MAX_NESTING - 1 arrays: as deep as allowed, so the file is read
    # and the (unknown) key is what gets reported.
    deep = "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1)
    msg = error_of([*PING, f"params = {{ x = {deep} }}"], tmp_path)
    assert msg.startswith(f"{NAME}:6: test[0].params.x: unknown key"), msg


# ---- one definition, one test -----------------------------------------------------------------


def test_two_tests_with_one_definition_are_refused(tmp_path: Path) -> None:
    lines = [*PING, "params = { count = 3 }", "", "[[test]]", 'id = "b"', 'tool = "ping"']
    lines += ['target = "192.0.2.1"', 'interval = "1m"', "params = { count = 3 }"]
    msg = error_of(lines, tmp_path)
    assert msg == (
        f"{NAME}:11: test[1].target: test 'b' has the same tool, target and params as test 'a'"
        " (test[0].target, line 4): they would share one archive key; change one, or remove it"
    )


def test_one_definition_through_targets_is_refused(tmp_path: Path) -> None:
    lines = [*PING, "", "[[test]]", 'id = "m"', 'tool = "ping"']
    lines += ['targets = ["192.0.2.9", "192.0.2.1"]', 'interval = "1m"']
    msg = error_of(lines, tmp_path)
    assert msg.startswith(f"{NAME}:10: test[1].targets[1]: test 'm/192.0.2.1' has the same"), msg
    assert "as test 'a' (test[0].target, line 4)" in msg


def test_differing_params_are_two_tests(tmp_path: Path) -> None:
    lines = [*PING, "", "[[test]]", 'id = "b"', 'tool = "ping"', 'target = "192.0.2.1"']
    lines += ['interval = "10s"', "params = { count = 3 }"]
    cfg = config.parse("\n".join(lines) + "\n", Path(NAME), tools.TOOLS, base=tmp_path)
    assert [t.id for t in cfg.tests] == ["a", "b"]
    assert cfg.tests[0].key != cfg.tests[1].key


# ---- the [api] keys of the request limits -------------------------------------------------------


def test_api_keys_set_the_request_limits_and_the_rest_keep_their_defaults(tmp_path: Path) -> None:
    from netsonde.limits import RequestLimits

    text = '[api]\nmax_units = 5\nread_timeout = "2s"\nmax_response_bytes = "1M"\nworkers = 3\n'
    cfg = config.parse(text, Path(NAME), tools.TOOLS, base=tmp_path)
    limits = cfg.api.limits()
    assert (limits.max_units, limits.read_timeout, limits.max_response_bytes) == (5, 2.0, 2**20)
    assert limits.max_elements == RequestLimits().max_elements
    assert (cfg.api.workers, cfg.api.nice, cfg.api.max_worker_rss) == (3, 10, 384 * 2**20)


def test_the_api_serves_in_two_workers_by_default(tmp_path: Path) -> None:
    cfg = config.parse("", Path(NAME), tools.TOOLS, base=tmp_path)
    from netsonde.limits import RequestLimits

    assert cfg.api.workers == 2 and cfg.api.limits() == RequestLimits()


def test_a_bad_limit_names_its_key(tmp_path: Path) -> None:
    assert "api.max_connections" in error_of(["[api]", "max_connections = 1"], tmp_path)
    assert "api.max_worker_rss" in error_of(["[api]", 'max_worker_rss = "lots"'], tmp_path)


def test_a_token_file_problem_names_the_file_and_never_the_token(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("hunter2-short\n")
    msg = error_of(["[api]", f'token_file = "{short}"'], tmp_path)
    assert "api.token_file" in msg and str(short) in msg and "too short" in msg
    assert "hunter2" not in msg
    msg = error_of(["[api]", 'token_file = "missing"'], tmp_path)
    assert str(tmp_path / "missing") in msg and "No such file" in msg
    # A service's section reads its token file the same way.
    from netsonde.services import SECTIONS

    with pytest.raises(ConfigError) as info:
        text = f'[ls]\nenabled = true\ntoken_file = "{short}"\n'
        config.parse(text, Path(NAME), tools.TOOLS, base=tmp_path, sections=SECTIONS)
    msg = str(info.value)
    assert "ls.token_file" in msg and "too short" in msg and "hunter2" not in msg
