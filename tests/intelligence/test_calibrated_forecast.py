"""Calibrated forecasts for any field: interval coverage near nominal, the seasonal baseline where a daily
cycle was learned, time to a declared limit, and the engine's calibrated method."""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest

from drsdtp.intelligence import FieldSpec, ModelSpec, TwinIntelligence
from drsdtp.intelligence.calibrated import DAY_S, forecast_series

HORIZONS = (300.0, 900.0, 1800.0, 3600.0)


def test_the_90_percent_interval_covers_about_90_percent_of_an_ar_stream() -> None:
    rng = np.random.default_rng(11)
    hits: list[bool] = []
    for _ in range(40):
        n, period = 1600, 30.0
        x = np.zeros(n)
        for i in range(1, n):
            x[i] = 0.97 * x[i - 1] + rng.normal(0, 1.0)
        t = np.arange(n) * period
        origin = 999
        fc = forecast_series(t[: origin + 1], x[: origin + 1], t[origin], HORIZONS)
        assert fc is not None
        for k, h in enumerate(HORIZONS):
            actual = float(np.interp(t[origin] + h, t, x))
            hits.append(fc.lower[k] <= actual <= fc.upper[k])
    coverage = float(np.mean(hits))
    assert 0.8 <= coverage <= 0.98, coverage


def test_a_daily_cycle_gives_a_seasonal_baseline_that_beats_the_last_value() -> None:
    rng = np.random.default_rng(2)
    period = 600.0
    t = np.arange(0, 4 * DAY_S, period)
    v = 20 + 5 * np.sin(2 * np.pi * t / DAY_S) + rng.normal(0, 0.2, t.size)
    origin = t.size - 40
    fc = forecast_series(t[:origin], v[:origin], float(t[origin - 1]), HORIZONS)
    assert fc is not None and fc.seasonal
    assert fc.method[-1] == "seasonal"
    actual = float(np.interp(t[origin - 1] + 3600, t, v))
    assert abs(fc.mean[-1] - actual) < abs(v[origin - 1] - actual)
    assert fc.lower[-1] <= actual <= fc.upper[-1]


def test_time_to_a_declared_limit_on_a_rising_stream() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(0, 600 * 60.0, 60.0)
    v = 20 + 0.05 * (t / 60.0) + rng.normal(0, 0.05, t.size)  # 0.05 per minute
    now = float(t[-1])
    level = v[-1]
    fc = forecast_series(t, v, now, HORIZONS, high_limit=float(level) + 1.5, low_limit=0.0)
    assert fc is not None
    high = next(c for c in fc.crossings if c.direction == "above")
    assert high.eta_s is not None and 20 * 60 <= high.eta_s <= 40 * 60  # ~30 min at 0.05/min
    assert high.earliest_s is not None and high.earliest_s <= high.eta_s
    low = next(c for c in fc.crossings if c.direction == "below")
    assert low.eta_s is None


def test_too_little_history_gives_no_forecast_or_no_interval() -> None:
    assert forecast_series(np.arange(5.0), np.ones(5), 4.0, HORIZONS) is None
    t = np.arange(0, 40 * 60.0, 60.0)
    fc = forecast_series(t, np.sin(t), float(t[-1]), (3600.0 * 2,))
    assert fc is not None and math.isnan(fc.lower[0])  # no backtest origin two hours back


def test_the_engine_forecasts_any_field_with_calibrated_intervals() -> None:
    engine = TwinIntelligence()
    spec = FieldSpec("load", expected_period_s=60.0, high_limit=80.0)
    engine.add_model(ModelSpec("generic", (spec,)))
    engine.add_twin("meter-1", "generic")
    rng = np.random.default_rng(5)
    t = np.arange(0, 800 * 60.0, 60.0)
    v = 50 + np.cumsum(rng.normal(0, 0.3, t.size))
    engine.ingest(np.zeros(t.size, np.intp), t, v)
    engine.evaluate(float(t[-1]))
    fc = engine.forecast("meter-1", "load", method="calibrated", horizons_min=(5, 15, 30, 60))
    assert fc.refused is None and fc.method.startswith("calibrated.")
    assert [h.horizon_min for h in fc.horizons] == [5, 15, 30, 60]
    for h in fc.horizons:
        assert h.lower is not None and h.upper is not None and h.lower <= (h.value or 0) <= h.upper
    widths = [(h.upper or 0) - (h.lower or 0) for h in fc.horizons]
    assert widths[-1] > widths[0]  # further out, wider
    assert any(c.threshold == 80.0 for c in fc.crossings)
    json.dumps(fc.to_dict())
    with pytest.raises(ValueError, match="calibrated"):
        engine.forecast("meter-1", "load", method="psychic")


def test_a_learned_daily_and_weekly_baseline_forecasts_into_a_quiet_day() -> None:
    """The detector's learned baseline (daily profile and weekday offsets) as the ``profile`` predictor: an
    hour ahead across midnight into a quiet day, where the reading a day back (a busy day) is 8 too high."""
    from drsdtp.intelligence.detect.seasonal import SeasonalBaseline

    rng = np.random.default_rng(3)
    t = np.arange(0, 19 * DAY_S, 300.0)  # day 19 % 7 == 5: a quiet day starts at the end
    quiet = (np.floor(t / DAY_S) % 7) >= 5
    v = 30 + 10 * np.sin(2 * np.pi * t / DAY_S) - 8 * quiet + rng.normal(0, 0.2, t.size)
    base = SeasonalBaseline(1)
    one, period = np.zeros(1, np.intp), np.array([300.0])
    for k in range(t.size):
        base.learn(one, t[k : k + 1], v[k : k + 1], period, np.ones(1, bool))
    assert base.on_s[0] and base.on_w[0]

    def baseline(times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return base.baseline(np.zeros(times.size, np.intp), times)

    now = 19 * DAY_S - 1800.0
    keep = t <= now
    fc = forecast_series(t[keep], v[keep], now, HORIZONS, baseline=baseline)
    assert fc is not None and fc.method[-1] == "profile"
    expected = 30 + 10 * math.sin(2 * math.pi * (now + 3600) / DAY_S) - 8
    assert abs(fc.mean[-1] - expected) < 1.5
    plain = forecast_series(t[keep], v[keep], now, HORIZONS)
    assert plain is not None and abs(plain.mean[-1] - expected) > 5
