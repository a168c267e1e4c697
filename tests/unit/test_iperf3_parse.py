"""The iperf3 tool's report parsing, on JSON captured from iperf3 3.12 between two network
namespaces joined by a veth pair shaped with ``tbf rate 50mbit`` (and, for the lossy UDP
runs, a router namespace whose egress was shaped: forwarded packets are dropped there, while a
local sender is only slowed down by its own qdisc)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from netsonde.model import SchedClass
from netsonde.probes import iperf3

DATA = Path(__file__).parent / "data" / "iperf3"


def report(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def test_tcp_throughput_is_the_receivers() -> None:
    values, extra = iperf3.summarise(report("tcp"))
    # end.sum_received.bits_per_second = 47806911.8973279; sum_sent = 50531803.911019914
    assert values == {
        "throughput_mbps": 47.806912,
        "sender_mbps": 50.531804,
        "retransmits": 0,
    }
    assert extra["protocol"] == "tcp"
    assert extra["reverse"] is False
    assert extra["tcp_mss"] == 1448
    assert extra["congestion"] == "bbr"  # this kernel's default
    assert extra["local"] == "10.99.7.1"
    assert extra["remote"] == "10.99.7.2"
    # Not reversed: the client (host) sent, the server (remote) received.
    assert extra["cpu"]["sender_percent"] == pytest.approx(0.1867041207862033)
    assert extra["cpu"]["receiver_percent"] == pytest.approx(2.8072154151500284)


def test_tcp_reverse_swaps_the_cpu_roles() -> None:
    values, extra = iperf3.summarise(report("tcp_rev"))
    assert values["throughput_mbps"] == 47.713065
    assert extra["reverse"] is True
    assert extra["cpu"]["sender_percent"] == pytest.approx(0.17226095418371837)  # the server
    assert extra["cpu"]["receiver_percent"] == pytest.approx(2.4723435717900935)


def test_tcp_parallel_streams_are_summed_and_retransmits_counted() -> None:
    values, extra = iperf3.summarise(report("tcp_p2_r"))
    assert extra["streams"] == 2
    assert values["throughput_mbps"] == 47.80165
    assert values["retransmits"] == 197
    streams = report("tcp_p2_r")["end"]["streams"]
    assert sum(s["sender"]["retransmits"] for s in streams) == 197


def test_tcp_omitted_seconds_are_not_in_the_sum() -> None:
    values, extra = iperf3.summarise(report("tcp_p3"))
    assert extra["streams"] == 3
    assert values["throughput_mbps"] == 47.650806
    assert extra["seconds"] == pytest.approx(2.0, abs=0.05)  # -t 2 -O 1: 2 s, not 3


def test_udp_received_rate_jitter_and_loss_are_iperf3s() -> None:
    values, extra = iperf3.summarise(report("udp"))
    assert extra["protocol"] == "udp"
    assert "retransmits" not in values
    assert values["throughput_mbps"] == 19.992495
    assert values["sender_mbps"] == 19.993344
    assert values["lossPercent"] == 0
    assert values["jitter_ms"] == pytest.approx(0.005324, abs=1e-6)


def test_udp_loss_behind_a_shaped_router() -> None:
    values, _ = iperf3.summarise(report("udp_loss"))
    # 80 Mbit/s offered into a 50 Mbit/s tbf: 5211 datagrams lost. iperf3 divides by the
    # 13807 the client sent (sum_sent.packets), not the 13803 the server counted (the last
    # few were in flight); packets is that denominator.
    assert values["lost_packets"] == 5211
    assert values["packets"] == 13807
    assert values["lossPercent"] == pytest.approx(100 * 5211 / 13807, abs=1e-6)
    assert values["sender_mbps"] == pytest.approx(79.965466)
    assert values["throughput_mbps"] == pytest.approx(48.557932)
    assert values["jitter_ms"] == pytest.approx(0.342145, abs=1e-6)


def test_udp_two_streams() -> None:
    values, extra = iperf3.summarise(report("udp_loss_p2"))
    assert extra["streams"] == 2
    assert values["lossPercent"] == pytest.approx(100 * 27693 / 39984, abs=1e-6)  # 39984 sent
    assert values["throughput_mbps"] < values["sender_mbps"]


def test_udp_report_with_only_sum_still_parses() -> None:
    # Older iperf3 releases have no sum_sent/sum_received for UDP.
    old = report("udp_loss")
    del old["end"]["sum_sent"], old["end"]["sum_received"]
    values, _ = iperf3.summarise(old)
    assert values["sender_mbps"] == values["throughput_mbps"] == pytest.approx(79.965466)
    assert values["lossPercent"] == pytest.approx(37.741725)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("refused", "iperf3: unable to connect to server: Connection refused"),
        ("down", "iperf3: unable to connect to server: Network is unreachable"),
        ("cto", "iperf3: unable to connect to server: Connection timed out"),
    ],
)
def test_iperf3s_error_becomes_the_result_error(name: str, message: str) -> None:
    with pytest.raises(iperf3.ReportError) as e:
        iperf3.summarise(report(name))
    assert str(e.value) == message


def test_a_report_without_an_end_is_an_error() -> None:
    partial = report("tcp")
    partial["end"] = {}
    with pytest.raises(iperf3.ReportError, match="lacks"):
        iperf3.summarise(partial)


def test_command_line() -> None:
    p = iperf3.Params(
        port=5300,
        duration=3,
        protocol="udp",
        bandwidth=20_000_000,
        parallel=2,
        reverse=True,
        omit=1,
        bytes_per_read=1200,
        connect_timeout=1.5,
    )
    assert iperf3.command_line("/usr/bin/iperf3", "fd00:99::2", p) == [
        "/usr/bin/iperf3", "-c", "fd00:99::2", "-J", "-p", "5300", "-t", "3",
        "--connect-timeout", "1500", "-u", "-b", "20000000", "-P", "2", "-R",
        "-O", "1", "-l", "1200", "-6",
    ]  # fmt: skip
    assert iperf3.command_line("iperf3", "10.99.7.2", iperf3.Params()) == [
        "iperf3", "-c", "10.99.7.2", "-J", "-p", "5201", "-t", "10",
        "--connect-timeout", "5000", "-4",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"bandwidth": "fast"},
        {"bandwidth": "10 M"},
        {"protocol": "sctp"},
        {"parallel": 0},
        {"duration": 0},
        {"streams": 2},
    ],
)
def test_bad_params_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        iperf3.Params(**bad)


def test_default_timeout_covers_the_whole_test() -> None:
    p = iperf3.Params(duration=10, omit=2, connect_timeout=5)
    assert iperf3.default_timeout(p) == 27.0
    assert iperf3.TOOL.default_class is SchedClass.EXCLUSIVE


def test_bad_target_refused() -> None:
    with pytest.raises(ValueError):
        iperf3.check_target("-s")
