"""E2EMon range periods by one sweep: the same periods as the definition (the states of the ranges
covering each instant, combined, equal neighbours joined), on random overlapping histories."""

from __future__ import annotations

import random

import pytest

from netsonde.services.status.nmwg import _periods, combine_states
from netsonde.services.status.store import LinkState

OPER = ("up", "down", "degraded", "unknown")
ADMIN = ("normaloperation", "maintenance", "troubleshooting", "unknown")


def by_definition(
    found: dict[str, list[LinkState]], ids: list[str]
) -> list[tuple[int, int, str, str]]:
    """Per instant from the first start to the last end: what covers it, combined."""
    ranges = [s for link in ids for s in found.get(link, [])]
    instants = range(min(s.start for s in ranges), max(s.end for s in ranges) + 1)
    out: list[tuple[int, int, str, str]] = []
    for t in instants:
        covering = [(s.oper, s.admin) for s in ranges if s.start <= t <= s.end]
        if not covering:
            continue
        oper, admin = combine_states(covering)
        if out and out[-1][1] == t - 1 and out[-1][2:] == (oper, admin):
            out[-1] = (out[-1][0], t, oper, admin)
        else:
            out.append((t, t, oper, admin))
    return out


def history(rng: random.Random, link: str) -> list[LinkState]:
    out = []
    for _ in range(rng.randrange(1, 8)):
        start = rng.randrange(0, 60)
        end = start + rng.randrange(0, 15)
        out.append(LinkState(link, start, end, rng.choice(OPER), rng.choice(ADMIN), "full"))
    return sorted(out, key=lambda s: s.start)


@pytest.mark.parametrize("seed", range(40))
def test_sweep_matches_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    ids = ["a", "b", "c"][: rng.randrange(1, 4)]
    found = {link: history(rng, link) for link in ids}
    assert _periods(found, ids, lambda: None) == by_definition(found, ids)


def test_an_empty_range_covers_nothing() -> None:
    found = {
        "a": [LinkState("a", 10, 5, "down", "unknown", "full")],
        "b": [LinkState("b", 0, 20, "up", "normaloperation", "full")],
    }
    assert _periods(found, ["a", "b"], lambda: None) == [(0, 20, "up", "normaloperation")]


def test_the_sweep_checks_for_cancellation() -> None:
    class Stop(Exception):
        pass

    def cancelled() -> None:
        raise Stop

    states = [LinkState("a", t, t, "up", "unknown", "full") for t in range(0, 40, 2)]
    with pytest.raises(Stop):
        _periods({"a": states}, ["a"], cancelled)
