"""Forecasts, intervals, time to threshold, traits and maintenance on synthetic fields."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drsdtp.errors import InvalidValueError
from drsdtp.intelligence import Freshness, Trend
from drsdtp.intelligence.forecast import time_to_threshold
from drsdtp.intelligence.mathutil import erf
from drsdtp.sim.harness import make_feed


def test_erf_matches_known_values() -> None:
    x = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 3.0])
    expected = np.array([-0.995322265, -0.520499878, 0.0, 0.328626759, 0.842700793, 0.999977910])
    np.testing.assert_allclose(erf(x), expected, atol=2e-7)


def test_noiseless_line_is_extrapolated_exactly() -> None:
    feed = make_feed(twins=1, fields=2)
    feed.run(100, lambda k: np.array([10.0 + 0.01 * k, 25.0 - 0.002 * k]), noise=0.0)
    now = (feed.step - 1) * 10.0
    fc = feed.engine.forecast("t0", "s0", horizons_min=(5, 60))
    assert fc.refused is None
    assert fc.method == "linear.trend"
    assert fc.horizons[0].value == pytest.approx(10.0 + 0.001 * (now + 300.0), abs=1e-4)
    assert fc.horizons[1].value == pytest.approx(10.0 + 0.001 * (now + 3600.0), abs=1e-4)
    crossing = next(c for c in fc.crossings if c.direction == "above")
    # s0 rises 0.001/s from 10.99 towards the 30 limit: (30 - 10.99) / 0.001 s.
    assert crossing.eta_min == pytest.approx((30.0 - (10.0 + 0.001 * now)) / 0.001 / 60.0, rel=1e-3)
    assert crossing.message.startswith("s0 will reach 30 in ")
    json.dumps(fc.to_dict())


def test_prediction_intervals_cover_about_95_percent() -> None:
    feed = make_feed(twins=50, fields=4, seed=5)
    slopes = np.random.default_rng(0).uniform(-0.01, 0.01, feed.rows.size)
    feed.run(80, lambda k: 20.0 + slopes * k, noise=0.2)
    last = feed.engine.last
    assert last is not None
    fc = last.forecast
    horizon_steps = fc.horizons_s / 10.0
    t_now = (feed.step - 1) * 10.0
    hits = []
    rng = np.random.default_rng(9)
    for h, steps in enumerate(horizon_steps):
        actual = 20.0 + slopes * (feed.step - 1 + steps) + rng.normal(0, 0.2, feed.rows.size)
        hits.append((fc.lower[:, h] <= actual) & (actual <= fc.upper[:, h]))
    coverage = float(np.mean(hits))
    assert 0.9 < coverage < 0.99
    assert np.all(fc.confidence[:, 0] >= fc.confidence[:, -1])  # further out, less confident
    assert t_now == last.t_s


def test_time_to_threshold_ignores_insignificant_slopes() -> None:
    level = np.array([20.0, 20.0, 20.0, 35.0])
    slope = np.array([0.01, 0.01, -0.01, 0.0])
    sigma = np.array([0.001, 0.02, 0.001, 0.001])
    high, low = time_to_threshold(level, slope, sigma, np.full(4, 10.0), np.full(4, 30.0), 86400.0)
    assert high[0] == pytest.approx(1000.0)
    assert np.isnan(high[1])  # slope within noise: no forecast crossing
    assert low[2] == pytest.approx(1000.0)
    assert high[3] == 0.0  # already above


def test_low_quality_field_forecast_is_refused() -> None:
    feed = make_feed(twins=1, fields=2)
    feed.run(60, lambda k: np.array([20.0, 20.0 + 0.001 * k]))
    v = np.array([500.0, 20.0])
    feed.push(v)
    fc = feed.engine.forecast("t0", "s0")
    assert fc.refused is not None
    assert "OUT_OF_RANGE" in fc.refused
    assert fc.horizons == ()
    assert feed.engine.forecast("t0", "s1").refused is None
    with pytest.raises(InvalidValueError):
        feed.engine.forecast("t0", "s1", method="kernel")


def test_traits_describe_trend_stability_and_freshness() -> None:
    feed = make_feed(twins=1, fields=3)
    feed.run(120, lambda k: np.array([20.0 + 0.01 * k, 20.0 - 0.01 * k, 20.0]), noise=0.02)
    rising, falling, flat = (feed.engine.traits("t0", f"s{i}") for i in range(3))
    assert rising.trend is Trend.RISING
    assert falling.trend is Trend.FALLING
    assert flat.trend is Trend.STABLE
    assert rising.trend_rate_per_min == pytest.approx(0.06, rel=0.1)  # 0.01 per 10 s
    assert rising.drift_rate_per_min == pytest.approx(0.06, rel=0.1)
    assert flat.stability is not None
    assert flat.stability > 0.9
    assert flat.freshness is Freshness.FRESH
    feed.engine.evaluate((feed.step + 10) * 10.0)
    assert feed.engine.traits("t0", "s2").freshness is Freshness.STALE


def test_calibration_remaining_life_from_a_growing_offset() -> None:
    feed = make_feed(twins=1, fields=2, grouped=True)
    feed.run(200, lambda k: np.array([20.0, 20.0]))
    early = feed.engine.maintenance("t0", "s0")
    assert early is None or early.remaining_h is None  # too little history to extrapolate
    # s0 starts drifting slowly: 0.0003 per step = 0.108 per hour; tolerance (default 1.0) reached later.
    feed.run(900, lambda k: np.array([20.0 + 0.0003 * (k - 200), 20.0]))
    est = feed.engine.maintenance("t0", "s0")
    assert est is not None
    assert est.remaining_h is not None
    offset_now = 0.0003 * 900
    expected_h = (1.0 - offset_now) / 0.108
    assert est.remaining_h == pytest.approx(expected_h, rel=0.5)
    assert est.rate_per_h == pytest.approx(0.108, rel=0.5)
    assert "calibration tolerance 1" in est.detail
