"""The traceroute tool's parser, on outputs captured from traceroute 2.1.2 (Debian) run across
network namespaces: A — R — B (10.99.1.0/24, 10.99.2.0/24; fd00:99::/64, fd00:99:0:1::/64) and
a second router R2 (10.99.3.0/24 – 10.99.4.0/24) with an ECMP route in A for the
multi-address hops. Unreachable kinds come from ``ip route add unreachable|prohibit|throw``
in R with its ICMP rate limit off."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from netsonde.probes import traceroute
from netsonde.probes.traceroute import ParseError, parse_output, path_id, summarise

TWO_HOPS = """\
traceroute to 10.99.2.2 (10.99.2.2), 30 hops max, 60 byte packets
 1  10.99.1.1  0.069 ms  0.003 ms
 2  10.99.2.2  0.012 ms  0.003 ms
"""

IPV6 = """\
traceroute to fd00:99:0:1::2 (fd00:99:0:1::2), 30 hops max, 80 byte packets
 1  fd00:99::1  0.266 ms  0.156 ms
 2  fd00:99:0:1::2  0.147 ms  0.111 ms
"""

# ECMP in A: probes of one hop went through R (10.99.1.1) and R2 (10.99.3.1); the last two
# probes to B were lost to B's ICMP rate limit.
ECMP = """\
traceroute to 10.99.2.2 (10.99.2.2), 30 hops max, 60 byte packets
 1  10.99.3.1  0.036 ms  0.002 ms 10.99.1.1  0.010 ms 10.99.3.1  0.003 ms  0.003 ms  0.002 ms
 2  10.99.2.2  0.011 ms  0.003 ms  0.003 ms  0.018 ms * *
"""

# ECMP again, R2 without a route onward: its probes come back "network unreachable".
ECMP_HALF_UNREACHABLE = """\
traceroute to 10.99.2.2 (10.99.2.2), 30 hops max, 60 byte packets
 1  10.99.1.1  0.173 ms 10.99.3.1  0.138 ms !N 10.99.1.1  0.115 ms  0.109 ms  0.104 ms 10.99.3.1  0.099 ms !N
"""  # noqa: E501  (captured verbatim)

HOST_UNREACHABLE = """\
traceroute to 10.99.3.1 (10.99.3.1), 5 hops max, 60 byte packets
 1  10.99.1.1  0.175 ms !H  0.129 ms !H *
"""

PROHIBITED = """\
traceroute to 10.99.4.1 (10.99.4.1), 3 hops max, 60 byte packets
 1  10.99.1.1  0.151 ms !X  0.059 ms !X  0.053 ms !X
"""

# A blackhole route in R: silence after the first hop.
SILENT = """\
traceroute to 10.99.2.3 (10.99.2.3), 5 hops max, 60 byte packets
 1  10.99.1.1  0.037 ms
 2  *
 3  *
 4  *
 5  *
"""

# -f 2: the first line is hop 2; one probe of three answered.
FIRST_TTL_2 = """\
traceroute to 10.99.2.2 (10.99.2.2), 30 hops max, 60 byte packets
 2  * 10.99.2.2  0.014 ms *
"""

LOOPBACK = """\
traceroute to 127.0.0.1 (127.0.0.1), 30 hops max, 60 byte packets
 1  127.0.0.1  0.020 ms
"""


def probes(hop: traceroute.Hop) -> list[tuple[str | None, float | None, str | None]]:
    return [(p.addr, p.rtt_ms, p.annotation) for p in hop.probes]


def no_path_id(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "pathId"}


def result(text: str, target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dest, hops = parse_output(text)
    return summarise(dest or target, hops)


def test_two_hops() -> None:
    dest, hops = parse_output(TWO_HOPS)
    assert dest == "10.99.2.2"
    assert [h.ttl for h in hops] == [1, 2]
    assert probes(hops[0]) == [("10.99.1.1", 0.069, None), ("10.99.1.1", 0.003, None)]
    values, extra = summarise(dest, hops)
    assert no_path_id(values) == {"hops": 2, "reached": 1, "lastHopRtt": 0.003}
    assert extra["path"] == ["10.99.1.1", "10.99.2.2"]
    assert extra["path_id"] == path_id(["10.99.1.1", "10.99.2.2"])
    assert values["pathId"] == int(extra["path_id"], 16) == 0xB7CC7EF1BC7F
    assert extra["hops"][1] == {
        "ttl": 2,
        "probes": [
            {"addr": "10.99.2.2", "rtt_ms": 0.012, "annotation": None},
            {"addr": "10.99.2.2", "rtt_ms": 0.003, "annotation": None},
        ],
    }


def test_ipv6() -> None:
    values, extra = result(IPV6, "fd00:99:0:1::2")
    assert no_path_id(values) == {"hops": 2, "reached": 1, "lastHopRtt": 0.111}
    assert extra["path"] == ["fd00:99::1", "fd00:99:0:1::2"]


def test_reached_compares_addresses_not_spellings() -> None:
    _, hops = parse_output(IPV6)
    values, _ = summarise("fd00:0099:0000:0001:0000:0000:0000:0002", hops)
    assert values["reached"] == 1


def test_several_addresses_on_one_hop() -> None:
    _, hops = parse_output(ECMP)
    assert probes(hops[0]) == [
        ("10.99.3.1", 0.036, None),
        ("10.99.3.1", 0.002, None),
        ("10.99.1.1", 0.010, None),
        ("10.99.3.1", 0.003, None),
        ("10.99.3.1", 0.003, None),
        ("10.99.3.1", 0.002, None),
    ]
    assert probes(hops[1])[-2:] == [(None, None, None), (None, None, None)]
    values, extra = summarise("10.99.2.2", hops)
    assert no_path_id(values) == {"hops": 2, "reached": 1, "lastHopRtt": 0.003}
    assert extra["path"] == ["10.99.3.1", "10.99.2.2"]  # the first responder per hop


def test_annotations_attach_to_their_probe() -> None:
    _, hops = parse_output(ECMP_HALF_UNREACHABLE)
    assert probes(hops[0]) == [
        ("10.99.1.1", 0.173, None),
        ("10.99.3.1", 0.138, "!N"),
        ("10.99.1.1", 0.115, None),
        ("10.99.1.1", 0.109, None),
        ("10.99.1.1", 0.104, None),
        ("10.99.3.1", 0.099, "!N"),
    ]


@pytest.mark.parametrize(
    ("text", "target", "expected"),
    [
        (
            HOST_UNREACHABLE,
            "10.99.3.1",
            [("10.99.1.1", 0.175, "!H"), ("10.99.1.1", 0.129, "!H"), (None, None, None)],
        ),
        (
            PROHIBITED,
            "10.99.4.1",
            [("10.99.1.1", 0.151, "!X"), ("10.99.1.1", 0.059, "!X"), ("10.99.1.1", 0.053, "!X")],
        ),
    ],
)
def test_unreachable_is_not_reached(text: str, target: str, expected: list[Any]) -> None:
    dest, hops = parse_output(text)
    assert probes(hops[0]) == expected
    values, extra = summarise(dest or target, hops)
    assert values["reached"] == 0
    assert values["hops"] == 1
    assert extra["path"] == ["10.99.1.1"]


def test_silent_hops() -> None:
    values, extra = result(SILENT, "10.99.2.3")
    assert no_path_id(values) == {"hops": 5, "reached": 0, "lastHopRtt": None}
    assert extra["path"] == ["10.99.1.1", "*", "*", "*", "*"]


def test_first_ttl_and_a_lone_answer() -> None:
    values, extra = result(FIRST_TTL_2, "10.99.2.2")
    assert no_path_id(values) == {"hops": 2, "reached": 1, "lastHopRtt": 0.014}
    assert extra["hops"][0]["ttl"] == 2
    assert extra["path"] == ["10.99.2.2"]


def test_loopback() -> None:
    values, extra = result(LOOPBACK, "127.0.0.1")
    assert extra["path"] == ["127.0.0.1"]
    assert no_path_id(values) == {"hops": 1, "reached": 1, "lastHopRtt": 0.02}


def test_path_id_is_stable_and_tells_paths_apart() -> None:
    # Hand-computed: sha256(b"10.99.1.1 10.99.2.2").hexdigest()[:12]
    assert path_id(["10.99.1.1", "10.99.2.2"]) == "b7cc7ef1bc7f"
    assert path_id(["10.99.1.1", "10.99.2.2"]) == path_id(["10.99.1.1", "10.99.2.2"])
    ids = {
        path_id(p)
        for p in (
            ["10.99.1.1", "10.99.2.2"],
            ["10.99.3.1", "10.99.2.2"],
            ["10.99.1.1", "*", "10.99.2.2"],
            ["10.99.1.1"],
        )
    }
    assert len(ids) == 4
    # RTTs and later responders of a hop do not move the id; only the first responders do.
    _, a = result(TWO_HOPS, "10.99.2.2")
    _, b = result(TWO_HOPS.replace("0.069", "9.5"), "10.99.2.2")
    assert a["path_id"] == b["path_id"]


@pytest.mark.parametrize(
    "text",
    [
        " 1  10.99.1.1  0.069 ms  fast\n",
        " 1  0.069 ms\n",  # an RTT without an address
        " 1  \n",
        "traceroute: something unexpected\n",
    ],
)
def test_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_output(text)


def test_command_line() -> None:
    p = traceroute.Params(
        max_hops=5, queries=2, wait=0.5, first_ttl=2, method="tcp", port=443, packet_size=1400
    )
    assert traceroute.command_line("/usr/sbin/traceroute", "10.99.2.2", p) == [
        "/usr/sbin/traceroute", "-n", "-m", "5", "-q", "2", "-w", "0.5", "-f", "2",
        "-T", "-p", "443", "-4", "10.99.2.2", "1400",
    ]  # fmt: skip
    p = traceroute.Params(method="icmp", family="ipv6")
    assert traceroute.command_line("traceroute", "::1", p) == [
        "traceroute", "-n", "-m", "30", "-q", "3", "-w", "2", "-f", "1", "-I", "-6", "::1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"first_ttl": 10, "max_hops": 5},
        {"method": "gre"},
        {"queries": 0},
        {"packet_size": 65001},
        {"wait": 0},
        {"resolve": True},
    ],
)
def test_bad_params_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        traceroute.Params(**bad)


def test_default_timeout_bounds_every_probe_waiting() -> None:
    assert traceroute.default_timeout(traceroute.Params(max_hops=5, queries=2, wait=1)) == 15.0
