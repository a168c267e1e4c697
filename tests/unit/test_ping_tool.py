"""The ping tool's parameters, target checks and address choice (no packets sent here; the
tool's runs on real sockets are in tests/integration/test_icmp_engine.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from netsonde.probes import ping
from netsonde.probes.targets import check_host


def test_params_defaults_and_engine_options() -> None:
    p = ping.Params()
    assert (p.count, p.interval, p.packet_size, p.ttl, p.wait) == (10, 1.0, 56, 64, 2.0)
    assert (p.family, p.prime, p.socket) == ("auto", False, "auto")
    assert ping.Params(socket="dgram", prime=True).socket == "dgram"
    with pytest.raises(ValidationError, match="socket"):
        ping.Params(socket="packet")
    with pytest.raises(ValidationError, match="ttl"):
        ping.Params(ttl=0)


def test_default_timeout_covers_the_run_and_the_priming_probe() -> None:
    params = ping.Params(count=5, interval=0.5, wait=1)
    assert ping.default_timeout(params) == 3 + 5.0  # (5-1)*0.5 + 1 s, + 5 s
    primed = params.model_copy(update={"prime": True})
    assert ping.default_timeout(primed) == 4 + 5.0  # (6-1)*0.5 + 1 s, rounded up, + 5 s


def test_literals_are_used_as_they_are_and_checked_against_the_family() -> None:
    assert ping.resolve("127.0.0.1", "auto") == "127.0.0.1"
    assert ping.resolve("::1", "ipv6") == "::1"
    with pytest.raises(ValueError, match=r"^::1: Address family for hostname not supported$"):
        ping.resolve("::1", "ipv4")
    with pytest.raises(ValueError, match=r"127\.0\.0\.1: Address family"):
        ping.resolve("127.0.0.1", "ipv6")


def test_family_mismatch_is_a_result_error_not_an_exception() -> None:
    (result,) = ping.run_many(["::1"], ping.Params(count=1, family="ipv4"))
    assert result.error == "::1: Address family for hostname not supported"
    assert result.sent == 0 and result.replies == []


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


def test_a_ping_result_carries_the_pinger_set_and_the_delay_metrics() -> None:
    from netsonde.metrics import DELAY_KEYS, delay_summary, pinger_summary
    from netsonde.model import PacketSample

    # RTTs 10, 12, lost, 11 ms: the summary is exactly both sets, neither overriding the other.
    replies = [PacketSample(1, 10.0), PacketSample(2, 12.0), PacketSample(4, 11.0)]
    values = ping.summary(4, replies)
    assert values == {**pinger_summary(4, replies), **delay_summary(4, replies)}
    assert set(DELAY_KEYS) <= set(values) and values["lossPercent"] == 25.0
    assert values["ipdvCount"] == 1 and values["ipdvMean"] == 2.0  # only seqs 1→2 are a pair
    assert values["mos"] is not None and 1.0 <= values["mos"] <= 4.5
