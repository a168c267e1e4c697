"""Quality estimates derived from delay and loss: a voice MOS and the Mathis TCP bound.

MOS uses the simplified ITU-T G.107 E-model that most ping-based VoIP estimators use (it
circulates as the "Nessoft"/PingPlotter formula; the R → MOS mapping is G.107 Annex B as is):

    effective = latency + 2·jitter + 10            (ms; 10 ms stands in for the codec)
    R = 93.2 − effective/40                        if effective < 160
    R = 93.2 − (effective − 120)/10                otherwise     (both give 89.2 at 160)
    R = R − 2.5·loss%                              then R is clamped to [0, 100]
    MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R)   clamped to [1, 4.5]

latency and jitter are ONE-WAY figures; a caller that only has RTTs passes RTT/2 (that is
what ``delay_summary`` does, and it says so in ``delayOneWay``).

Mathis et al. 1997 ("The macroscopic behavior of the TCP congestion avoidance algorithm"):
rate ≤ (MSS/RTT)·(C/√p), C = √(3/2). A run with no loss has no finite estimate; we then take
p = 1/N (N = probes sent), i.e. "less than one loss in N", and flag it with its own rule: the
figure is then a lower bound of the Mathis estimate for the path, not an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MATHIS_C = math.sqrt(1.5)
DEFAULT_MSS = 1460  # bytes: Ethernet MTU 1500 − 40 bytes of IPv4 + TCP headers

# Rule codes as stored in the numeric ``mathisRule`` value (Result.values holds numbers only).
MATHIS_RULE_LOSS = 1  # p = measured loss fraction
MATHIS_RULE_ZERO_LOSS = 2  # no loss seen: p = 1/N, a lower bound of the estimate
MATHIS_RULES: dict[int, str] = {
    MATHIS_RULE_LOSS: "loss",
    MATHIS_RULE_ZERO_LOSS: "zero-loss bound 1/N",
}


def r_factor(latency_ms: float, jitter_ms: float, loss_percent: float) -> float:
    """Simplified E-model R from one-way latency, jitter (ms) and loss (percent), in [0, 100]."""
    effective = latency_ms + 2 * jitter_ms + 10
    # The two latency terms meet at effective = 160 ms (4 points either way).
    latency_term = effective / 40 if effective < 160 else (effective - 120) / 10
    r = 93.2 - latency_term - 2.5 * loss_percent
    return min(max(r, 0.0), 100.0)


def mos_from_r(r: float) -> float:
    """G.107 R → MOS mapping; R is clamped to [0, 100] first and MOS to [1, 4.5]."""
    r = min(max(r, 0.0), 100.0)
    mos = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    # The cubic dips below 1 for 0 < R < 6.5 (R = 1 gives 0.994), hence the lower clamp.
    return min(max(mos, 1.0), 4.5)


def mos(latency_ms: float, jitter_ms: float, loss_percent: float) -> float:
    """Estimated voice MOS (1 … 4.5) from one-way latency, jitter (ms) and loss (percent)."""
    return mos_from_r(r_factor(latency_ms, jitter_ms, loss_percent))


@dataclass(frozen=True, slots=True)
class MathisEstimate:
    """A Mathis throughput figure and how it was obtained.

    ``mbps`` is None when there is no estimate (nothing sent or no RTT); ``rule`` is then None.
    ``loss`` is the p that went into the formula (measured, or 1/N under the zero-loss rule).
    """

    mbps: float | None
    mss: int
    rule: str | None
    loss: float | None

    @property
    def rule_code(self) -> int | None:
        """The rule as the number stored in ``mathisRule`` (see ``MATHIS_RULES``)."""
        if self.rule is None:
            return None
        return next(code for code, name in MATHIS_RULES.items() if name == self.rule)


def mathis(rtt_ms: float | None, lost: int, sent: int, *, mss: int = DEFAULT_MSS) -> MathisEstimate:
    """Mathis TCP throughput bound in Mbit/s from the mean RTT and ``lost`` of ``sent`` probes.

    mbps = (8·MSS bits / RTT s)·C/√p / 10⁶ = 8·MSS·C / (1000·RTT_ms·√p).
    """
    if mss <= 0:
        raise ValueError(f"mss must be > 0, got {mss}")
    if not 0 <= lost <= sent:
        raise ValueError(f"need 0 <= lost <= sent, got lost={lost} sent={sent}")
    if sent == 0 or rtt_ms is None or rtt_ms <= 0:
        return MathisEstimate(mbps=None, mss=mss, rule=None, loss=None)
    if lost == 0:
        p, rule = 1 / sent, MATHIS_RULES[MATHIS_RULE_ZERO_LOSS]
    else:
        p, rule = lost / sent, MATHIS_RULES[MATHIS_RULE_LOSS]
    mbps = 8 * mss * MATHIS_C / (1000 * rtt_ms * math.sqrt(p))
    return MathisEstimate(mbps=mbps, mss=mss, rule=rule, loss=p)


def mathis_rule_name(code: int | None) -> str | None:
    """The text of a stored ``mathisRule`` code ("loss", "zero-loss bound 1/N"), None for None."""
    if code is None:
        return None
    try:
        return MATHIS_RULES[int(code)]
    except KeyError:
        raise ValueError(f"unknown mathisRule code {code!r}") from None
