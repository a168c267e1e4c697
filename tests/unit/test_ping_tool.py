"""The ping tool's command line and output parsing (iputils-ping 20221126 output)."""

from __future__ import annotations

import pytest

from netsonde.mp.tools import ping
from netsonde.mp.tools.targets import check_host

OUTPUT = """\
PING 127.0.0.1 (127.0.0.1) 100(128) bytes of data.
[1763753000.100200] 108 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.137 ms
[1763753000.400300] 108 bytes from 127.0.0.1: icmp_seq=3 ttl=63 time=0.051 ms
[1763753000.400900] 108 bytes from 127.0.0.1: icmp_seq=3 ttl=63 time=0.652 ms (DUP!)
[1763753000.500100] 108 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=300.5 ms

--- 127.0.0.1 ping statistics ---
4 packets transmitted, 2 received, +1 duplicates, 50% packet loss, time 405ms
rtt min/avg/max/mdev = 0.047/0.106/0.137/0.041 ms
"""


def test_parse_keeps_arrival_order_duplicates_and_ttl() -> None:
    sent, replies = ping.parse_output(OUTPUT)
    assert sent == 4
    assert [(p.seq, p.rtt_ms, p.ttl) for p in replies] == [
        (1, 0.137, 64),
        (3, 0.051, 63),
        (3, 0.652, 63),
        (2, 300.5, 64),
    ]
    assert replies[0].size == 108 and replies[0].recv_us == 1763753000100200


def test_parsed_output_gives_pinger_metrics() -> None:
    sent, replies = ping.parse_output(OUTPUT)
    assert sent is not None
    values = ping.pinger_summary(sent, replies)
    assert values["duplicates"] == 1
    assert values["outOfOrder"] == 1  # seq 2 arrived after seq 3
    assert values["lossPercent"] == 25.0  # seq 4 never came back
    assert values["minRtt"] == 0.051 and values["maxRtt"] == 300.5


def test_parse_ipv6_replies() -> None:
    text = (
        "PING ::1(::1) 56 data bytes\n"
        "[1763753000.000001] 64 bytes from ::1: icmp_seq=1 ttl=64 time=0.027 ms\n"
        "[1763753000.200002] 64 bytes from fe80::1%lo: icmp_seq=2 ttl=255 time=0.5 ms\n"
        "2 packets transmitted, 2 received, 0% packet loss, time 166ms\n"
    )
    sent, replies = ping.parse_output(text)
    assert sent == 2 and [(p.seq, p.rtt_ms, p.ttl) for p in replies] == [
        (1, 0.027, 64),
        (2, 0.5, 255),
    ]


def test_no_summary_means_no_sent_count() -> None:
    assert ping.parse_output("ping: unknown host\n") == (None, [])


def test_command_line_has_no_shell_and_picks_family() -> None:
    params = ping.Params(count=5, interval=0.2, packet_size=100, ttl=32, wait=1)
    argv = ping.command_line("/bin/ping", "::1", params)
    assert argv[0] == "/bin/ping" and argv[-1] == "::1" and "-6" in argv
    assert argv[argv.index("-c") + 1] == "5" and argv[argv.index("-s") + 1] == "100"
    assert argv[argv.index("-t") + 1] == "32" and argv[argv.index("-i") + 1] == "0.2"
    assert argv[argv.index("-w") + 1] == "2"  # (5-1)*0.2 + 1 s, rounded up
    assert "-4" in ping.command_line("/bin/ping", "127.0.0.1", params)
    named = ping.command_line("/bin/ping", "localhost", params)
    assert "-4" not in named and "-6" not in named


@pytest.mark.parametrize(
    "target", ["127.0.0.1", "::1", "localhost", "host-1.example.org", "example.org."]
)
def test_acceptable_targets(target: str) -> None:
    assert check_host(target) == target


@pytest.mark.parametrize(
    "target",
    ["", "-c1", "-oProxyCommand=x", "a b", "host;rm -rf /", "$(id)", "a..b", "x" * 64 + ".org"],
)
def test_hostile_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        check_host(target)
