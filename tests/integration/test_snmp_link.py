"""snmp_link against a real snmpd watching a veth pair in a namespace the test owns.

``ip link set vB down`` takes vB down administratively; its peer vA loses carrier. So one
action shows both mappings: vB reads down/maintenance, vA down/normal.

snmpd caches its interface table for a few seconds, so a change is awaited by polling (as the
scheduler would), never by sleeping a fixed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from netsonde.engines.snmp import LinkReading, admin_state, oper_state, poll_interfaces_sync
from netsonde.model import Result
from netsonde.probes import snmp_link
from snmp_fixture import LINK_A, LINK_B, SnmpAgent, snmp_agent

pytestmark = pytest.mark.integration
__all__ = ["snmp_agent"]  # the fixture, re-exported so pytest finds it here

TIMEOUT = 0.3  # seconds per request: loopback answers in well under a millisecond


def _params(agent: SnmpAgent, **over: Any) -> snmp_link.Params:
    fields: dict[str, Any] = {
        "community": agent.community,
        "port": agent.port,
        "interfaces": [LINK_A, LINK_B],
        "timeout": TIMEOUT,
        "retries": 0,
        "link_id": "urn:ogf:network:domain=test:host={target}:port={interface}",
    }
    return snmp_link.Params(**(fields | over))


def _run(agent: SnmpAgent, params: snmp_link.Params) -> Result:
    deadline = time.time() + snmp_link.default_timeout(params)
    return agent.inside(snmp_link.run, agent.host, params, deadline)


def _states(result: Result) -> dict[str, tuple[str, str]]:
    return {link.interface: (link.oper, link.admin) for link in result.links}


def _poll_until(agent: SnmpAgent, want: dict[str, tuple[str, str]], within: float = 10.0) -> Result:
    """Poll every 0.2 s until the readings match ``want`` (snmpd's interface cache lags)."""
    params = _params(agent)
    end = time.monotonic() + within
    while True:
        result = _run(agent, params)
        if _states(result) == want or time.monotonic() > end:
            assert _states(result) == want, result
            return result
        time.sleep(0.2)


def test_link_down_and_up_follow_ip_link(snmp_agent: SnmpAgent) -> None:
    result = _poll_until(snmp_agent, {LINK_A: ("up", "normal"), LINK_B: ("up", "normal")})
    assert result.error is None
    assert result.values == {
        "links": 2, "up": 2, "down": 0, "degraded": 0, "unknown": 0, "maintenance": 0, "errors": 0
    }  # fmt: skip
    ids = [link.link_id for link in result.links]
    assert ids == [f"urn:ogf:network:domain=test:host=127.0.0.1:port={n}" for n in ["vA", "vB"]]
    assert all(isinstance(link.if_index, int) for link in result.links)
    # every observation carries the time the poll's answers came back
    assert len({link.time_us for link in result.links}) == 1
    assert abs(result.links[0].time_us / 1e6 - time.time()) < 5

    snmp_agent.link(LINK_B, "down")
    down = _poll_until(snmp_agent, {LINK_A: ("down", "normal"), LINK_B: ("down", "maintenance")})
    raw = {link.interface: (link.oper_raw, link.admin_raw) for link in down.links}
    assert raw[LINK_B] == (2, 2)  # the agent's own numbers are kept for the record
    assert down.values["down"] == 2 and down.values["maintenance"] == 1

    snmp_agent.link(LINK_B, "up")
    _poll_until(snmp_agent, {LINK_A: ("up", "normal"), LINK_B: ("up", "normal")})


def test_indexes_and_names_mixed(snmp_agent: SnmpAgent) -> None:
    readings = snmp_agent.inside(
        poll_interfaces_sync,
        snmp_agent.host,
        snmp_agent.community,
        [1, LINK_A, 9999, "no-such-if"],
        port=snmp_agent.port,
        timeout=TIMEOUT,
        retries=0,
    )
    assert list(readings) == ["1", LINK_A, "9999", "no-such-if"]
    assert readings["1"] == LinkReading("1", 1, "up", "normal", 1, 1)  # lo
    assert readings[LINK_A].oper == "up"
    for missing in ("9999", "no-such-if"):
        assert readings[missing].oper == "unknown" and readings[missing].error
        assert readings[missing].agent_answered  # the agent answered: no run error
    result = _run(snmp_agent, _params(snmp_agent, interfaces=[LINK_A, "no-such-if"]))
    assert result.error is None and result.values["unknown"] == 1


def _assert_unknown_not_down(result: Result, reason: str) -> None:
    assert result.error is not None and reason in result.error
    for link in result.links:
        assert (link.oper, link.admin) == ("unknown", "unknown")
        assert not link.agent_answered and link.error is not None and reason in link.error
    assert result.values["unknown"] == 2 and result.values["down"] == 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda agent: {"community": "not-" + agent.community}, id="wrong-community"),
        pytest.param(lambda agent: {"port": agent.port + 1}, id="nothing-on-port"),
    ],
)
def test_silent_agent_is_unknown(
    snmp_agent: SnmpAgent, change: Callable[[SnmpAgent], dict[str, Any]]
) -> None:
    result = _run(snmp_agent, _params(snmp_agent, **change(snmp_agent)))
    _assert_unknown_not_down(result, "No SNMP response")
    assert snmp_agent.community not in repr(result)  # neither secret shows up in the result


def test_silent_agent_keeps_the_link_ids_of_an_answered_poll(snmp_agent: SnmpAgent) -> None:
    # An index is its own ifIndex even when the agent says nothing; a name's is not known.
    template = {"link_id": "urn:x:port={interface}:index={if_index}"}
    params = _params(snmp_agent, interfaces=[LINK_A, 1], **template)
    answered = _run(snmp_agent, params)
    silent = _run(snmp_agent, _params(snmp_agent, interfaces=[LINK_A, 1], port=1, **template))
    assert answered.error is None and silent.error is not None
    assert [o.link_id for o in silent.links] == ["urn:x:port=vA:index=", "urn:x:port=1:index=1"]
    assert [o.link_id for o in answered.links][1] == "urn:x:port=1:index=1"


def test_stopped_agent_is_unknown(snmp_agent: SnmpAgent) -> None:
    _poll_until(snmp_agent, {LINK_A: ("up", "normal"), LINK_B: ("up", "normal")})
    snmp_agent.stop()
    _assert_unknown_not_down(_run(snmp_agent, _params(snmp_agent)), "No SNMP response")


def test_deadline_turns_into_unknown(snmp_agent: SnmpAgent) -> None:
    params = _params(snmp_agent, community="wrong", timeout=5.0)
    result = snmp_agent.inside(snmp_link.run, snmp_agent.host, params, time.time() + 1.0)
    _assert_unknown_not_down(result, "poll not done within")


# Pure parts, next to the tool they belong to (no agent needed).


def test_state_mapping() -> None:
    opers = [oper_state(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, None)]
    assert opers[:7] == ["up", "down", "degraded", "unknown", "degraded", "down", "down"]
    assert opers[7:] == ["unknown", "unknown"]  # a number IF-MIB does not define; no value
    admins = [admin_state(n) for n in (1, 2, 3, 4, None)]
    assert admins == ["normal", "maintenance", "troubleshooting", "unknown", "unknown"]


def test_params_keep_the_community_secret() -> None:
    params = snmp_link.Params(community="s3cret", interfaces=["eth0", 2])
    assert "s3cret" not in repr(params)
    assert "s3cret" not in str(params.model_dump(mode="json"))
    assert params.interfaces == ["eth0", 2]


@pytest.mark.parametrize(
    "bad",
    [
        {"interfaces": []},
        {"interfaces": ["eth0", "eth0"]},
        {"interfaces": [0]},
        {"link_id": "urn:x:{host}"},
        {"surprise": 1},
    ],
)
def test_params_reject(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        snmp_link.Params(**({"community": "c", "interfaces": ["eth0"]} | bad))
