"""Hand-computed vectors for the simplified E-model MOS and the Mathis TCP estimate.

E-model: eff = latency + 2·jitter + 10; R = 93.2 − eff/40 (eff < 160) or 93.2 − (eff−120)/10,
minus 2.5·loss%, R clamped to [0, 100]; MOS = 1 + 0.035R + 7e-6·R(R−60)(100−R) in [1, 4.5].
Mathis: Mbit/s = 8·MSS·C / (1000·RTT_ms·√p), C = √1.5.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsonde.metrics.quality import (
    MATHIS_RULES,
    mathis,
    mathis_rule_name,
    mos,
    mos_from_r,
    r_factor,
)

ms = st.floats(min_value=0, max_value=5000, allow_nan=False)
percent = st.floats(min_value=0, max_value=100, allow_nan=False)


# ---- R factor and MOS ------------------------------------------------------------------------


def test_r_factor_best_case() -> None:
    # eff = 0 + 0 + 10 = 10 < 160 → R = 93.2 − 10/40 = 93.2 − 0.25 = 92.95
    assert r_factor(0, 0, 0) == pytest.approx(92.95)


def test_r_factor_at_the_160_ms_threshold() -> None:
    # eff = 150 + 0 + 10 = 160 → second branch: (160 − 120)/10 = 4 → R = 89.2
    assert r_factor(150, 0, 0) == pytest.approx(89.2)
    # eff = 159.96 → first branch: 159.96/40 = 3.999 → R = 89.201 (continuous at 160)
    assert r_factor(149.96, 0, 0) == pytest.approx(89.201)
    # eff = 170 → (170 − 120)/10 = 5 → R = 88.2 (the /40 branch would give 88.95)
    assert r_factor(160, 0, 0) == pytest.approx(88.2)


def test_r_factor_counts_jitter_twice_and_loss() -> None:
    # latency 400, jitter 20, loss 1 %: eff = 400 + 40 + 10 = 450 → (450 − 120)/10 = 33
    # R = 93.2 − 33 − 2.5·1 = 57.7
    assert r_factor(400, 20, 1) == pytest.approx(57.7)


def test_r_factor_is_clamped_at_zero() -> None:
    # 40 % loss alone takes 100 points: 93.2 − 0.25 − 100 = −7.05 → 0
    assert r_factor(0, 0, 40) == 0.0


def test_mos_at_the_r_thresholds() -> None:
    assert mos_from_r(0) == 1.0  # 1 + 0 + 0
    assert mos_from_r(-10) == 1.0  # R clamped to 0
    assert mos_from_r(100) == pytest.approx(4.5)  # 1 + 3.5 + 7e-6·100·40·0
    assert mos_from_r(150) == pytest.approx(4.5)  # R clamped to 100
    assert mos_from_r(60) == pytest.approx(3.1)  # 1 + 2.1 + 0 (R − 60 = 0)
    # R = 1: 1 + 0.035 + 7e-6·1·(−59)·99 = 1.035 − 0.040887 = 0.994113 → clamped to 1
    assert mos_from_r(1) == 1.0


def test_mos_vectors() -> None:
    # R = 92.95: 0.035·92.95 = 3.25325; 92.95·32.95·7.05 = 21592.052625; ·7e-6 = 0.151144368…
    assert mos(0, 0, 0) == pytest.approx(4.404394368375)
    # R = 89.2: 0.035·89.2 = 3.122; 89.2·29.2·10.8 = 28130.112; ·7e-6 = 0.196910784
    assert mos(150, 0, 0) == pytest.approx(4.318910784)
    # R = 57.7: 0.035·57.7 = 2.0195; 57.7·(−2.3)·42.3 = −5613.633; ·7e-6 = −0.039295431
    assert mos(400, 20, 1) == pytest.approx(2.980204569)
    assert mos(0, 0, 40) == 1.0  # R = 0


@given(ms, ms, percent)
def test_mos_and_r_stay_in_range(latency: float, jitter: float, loss: float) -> None:
    assert 0.0 <= r_factor(latency, jitter, loss) <= 100.0
    assert 1.0 <= mos(latency, jitter, loss) <= 4.5


@given(ms, ms, percent, st.floats(min_value=0, max_value=100, allow_nan=False))
def test_mos_never_improves_with_worse_conditions(
    latency: float, jitter: float, loss: float, worse: float
) -> None:
    base = mos(latency, jitter, loss)
    assert mos(latency + worse, jitter, loss) <= base + 1e-12
    assert mos(latency, jitter + worse, loss) <= base + 1e-12
    assert mos(latency, jitter, min(loss + worse, 100)) <= base + 1e-12


# ---- Mathis ----------------------------------------------------------------------------------


def test_mathis_with_measured_loss() -> None:
    # RTT 100 ms, 1 lost of 100 → p = 0.01, √p = 0.1
    # 8·1460·√1.5 / (1000·100·0.1) = 11680·1.2247448714 / 10000 = 1.4305020098
    est = mathis(100, 1, 100)
    assert est.mbps == pytest.approx(1.430502009785376)
    assert (est.mss, est.rule, est.rule_code, est.loss) == (1460, "loss", 1, 0.01)


def test_mathis_exact_factor() -> None:
    # p = 2/3 → C/√p = √1.5/√(2/3) = √2.25 = 1.5; RTT 20 ms: 11680·1.5 / 20000 = 0.876
    assert mathis(20, 2, 3).mbps == pytest.approx(0.876)


def test_mathis_zero_loss_rule() -> None:
    # RTT 10 ms, 0 lost of 10 → p = 1/10; C/√p = √(1.5·10) = √15 = 3.8729833462
    # 11680·√15 / 10000 = 1.168·3.8729833462 = 4.5236445484
    est = mathis(10, 0, 10)
    assert est.mbps == pytest.approx(4.523644548370263)
    assert (est.rule, est.rule_code, est.loss) == ("zero-loss bound 1/N", 2, 0.1)
    # The bound is exactly what one loss in the same run would give.
    assert est.mbps == pytest.approx(mathis(10, 1, 10).mbps)


def test_mathis_scales_with_mss() -> None:
    # Same path as test_mathis_with_measured_loss with a 9000-byte MSS: × 9000/1460
    est = mathis(100, 1, 100, mss=9000)
    assert est.mbps == pytest.approx(1.430502009785376 * 9000 / 1460)
    assert est.mss == 9000


def test_mathis_without_estimate() -> None:
    for est in (mathis(None, 10, 10), mathis(None, 0, 0), mathis(25.0, 0, 0)):
        assert (est.mbps, est.rule, est.rule_code, est.loss) == (None, None, None, None)
        assert est.mss == 1460


def test_mathis_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="mss"):
        mathis(10, 0, 10, mss=0)
    with pytest.raises(ValueError, match="lost"):
        mathis(10, 11, 10)


def test_mathis_rule_names() -> None:
    assert mathis_rule_name(1) == "loss"
    assert mathis_rule_name(2) == "zero-loss bound 1/N"
    assert mathis_rule_name(None) is None
    assert set(MATHIS_RULES) == {1, 2}
    with pytest.raises(ValueError, match="mathisRule"):
        mathis_rule_name(7)


@given(
    st.floats(min_value=0.01, max_value=10_000, allow_nan=False),
    st.integers(min_value=1, max_value=1000),
    st.data(),
)
def test_mathis_falls_with_loss(rtt: float, sent: int, data: st.DataObject) -> None:
    lost = data.draw(st.integers(min_value=1, max_value=sent))
    est = mathis(rtt, lost, sent)
    assert est.mbps is not None and est.mbps > 0
    # Formula check independent of the implementation's arrangement of terms.
    assert est.mbps == pytest.approx(1460 * 8 / (rtt / 1000) * math.sqrt(1.5 * sent / lost) / 1e6)
    if lost < sent:
        more = mathis(rtt, lost + 1, sent).mbps
        assert more is not None and more < est.mbps
