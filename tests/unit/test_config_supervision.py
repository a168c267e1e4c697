"""Config sections of the supervisor: [[server]], [[cleanup]], [spool] and the [daemon] keys
for heartbeats, log rotation and restart_every — parsed into typed settings, every mistake one
line naming the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsonde import config
from netsonde import probes as tools
from netsonde.config import Config, ConfigError
from netsonde.model import SchedClass

NAME = "x.toml"


def parse(lines: list[str], base: Path) -> Config:
    return config.parse("\n".join(lines) + "\n", Path(NAME), tools.TOOLS, base=base)


def error_of(lines: list[str], base: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse(lines, base)
    return str(info.value)


def test_everything_parsed(tmp_path: Path) -> None:
    (tmp_path / "spool.token").write_text("a-token-from-a-file-0123\n")
    (tmp_path / "api.token").write_text("an-api-token-from-a-file\n")
    cfg = parse(
        [
            "[api]",
            'token_file = "api.token"',
            "[daemon]",
            "log_max_bytes = 1000",
            "log_backups = 3",
            'heartbeat_timeout = "5s"',
            'restart_every = "1d"',
            "[spool]",
            'url = "http://127.0.0.1:8076/"',
            'protocol = "nmwg"',
            'token_file = "spool.token"',
            "batch_size = 100",
            'max_backoff = "2m"',
            "[[server]]",
            'id = "iperf3"',
            'command = "sleep"',
            'args = ["-s", "-p", "5201"]',
            'restart = "on-failure"',
            'env = { LANG = "C" }',
            "[[cleanup]]",
            'pattern = "^/usr/bin/traceroute "',
            "max_minutes = 2.5",
        ],
        tmp_path,
    )
    assert (cfg.log_max_bytes, cfg.log_backups, cfg.heartbeat_timeout) == (1000, 3, 5.0)
    assert cfg.restart_every == 86400.0
    assert cfg.spool is not None
    assert (cfg.spool.url, cfg.spool.protocol, cfg.spool.batch_size) == (
        "http://127.0.0.1:8076",
        "nmwg",
        100,
    )
    assert cfg.spool.token == "a-token-from-a-file-0123" and cfg.spool.max_backoff == 120.0
    assert cfg.api.token == "an-api-token-from-a-file"
    assert "a-token" not in repr(cfg.spool) and "token-from" not in repr(cfg)
    (server,) = cfg.servers
    assert server.argv[0].endswith("/sleep") and Path(server.argv[0]).is_absolute()
    assert server.argv[1:] == ("-s", "-p", "5201") and server.restart == "on-failure"
    assert server.env == (("LANG", "C"),)
    (rule,) = cfg.cleanup
    assert (rule.pattern, rule.max_minutes) == ("^/usr/bin/traceroute ", 2.5)


def test_defaults(tmp_path: Path) -> None:
    cfg = parse([], tmp_path)
    assert cfg.spool is None and cfg.servers == () and cfg.cleanup == ()
    assert cfg.restart_every is None and cfg.heartbeat_timeout == 10.0


@pytest.mark.parametrize(
    ("lines", "where", "fragment"),
    [
        (
            ["[[server]]", 'id = "x"', 'command = "no-such-program-here"'],
            "3: server[0].command",
            "no executable program",
        ),
        (
            ["[[server]]", 'id = "x"', 'command = "./missing"'],
            "3: server[0].command",
            "no executable",
        ),
        (
            ["[[server]]", 'id = "x"', 'command = "sleep"', 'restart = "sometimes"'],
            "4: server[0].restart",
            "always",
        ),
        (
            [
                "[[server]]",
                'id = "x"',
                'command = "sleep"',
                "[[server]]",
                'id = "x"',
                'command = "sleep"',
            ],
            "5: server[1].id",
            "duplicate",
        ),
        (
            ["[[server]]", 'id = "x"', 'command = "sleep"', 'shell = "yes"'],
            "4: server[0].shell",
            "unknown",
        ),
        (
            ["[[cleanup]]", 'pattern = "ping("', "max_minutes = 1"],
            "2: cleanup[0].pattern",
            "regular expression",
        ),
        (
            ["[[cleanup]]", 'pattern = "ping"', "max_minutes = 0"],
            "3: cleanup[0].max_minutes",
            "greater than 0",
        ),
        (["[spool]", 'url = "ftp://x"'], "2: spool.url", "pattern"),
        (
            ["[spool]", 'url = "http://127.0.0.1:1"', 'protocol = "soap"'],
            "3: spool.protocol",
            "rest",
        ),
        (["[spool]", 'url = "http://127.0.0.1:1"', 'token = "short"'], "3: spool.token", "16"),
        (
            ["[spool]", 'url = "http://127.0.0.1:1"', 'token_file = "nope"'],
            "3: spool.token_file",
            "No such file",
        ),
        (
            ["[daemon]", 'restart_every = "0.5s"'],
            "2: daemon.restart_every",
            "greater than or equal to 1",
        ),
        (
            ["[daemon]", 'heartbeat_timeout = "soon"'],
            "2: daemon.heartbeat_timeout",
            "invalid duration",
        ),
    ],
)
def test_mistakes_name_the_key_and_line(
    tmp_path: Path, lines: list[str], where: str, fragment: str
) -> None:
    msg = error_of(lines, tmp_path)
    assert msg.startswith(f"{NAME}:{where}: "), msg
    assert fragment in msg, msg


def test_iperf3_runs_in_the_exclusive_class_unless_the_test_says_otherwise(
    tmp_path: Path,
) -> None:
    test = ["[[test]]", 'id = "bw"', 'tool = "iperf3"', 'target = "192.0.2.1"', 'interval = "1h"']
    (default,) = parse(test, tmp_path).tests
    assert default.sched_class is SchedClass.EXCLUSIVE
    (chosen,) = parse([*test, 'class = "normal"'], tmp_path).tests
    assert chosen.sched_class is SchedClass.NORMAL
    (ping,) = parse(
        ["[[test]]", 'id = "p"', 'tool = "ping"', 'target = "192.0.2.1"', 'interval = "1m"'],
        tmp_path,
    ).tests
    assert ping.sched_class is SchedClass.BACKGROUND
